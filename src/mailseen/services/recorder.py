"""Group commit for pixel hits: a view is durable before its response is sent, and
concurrent hits share one transaction, so the cost of a commit (an fsync) is paid per batch
rather than per hit."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..records import ViewIn
from ..storage import Store
from ..storage.views import ViewWriter
from .classification import Details, Judge, JudgeHit, record_judged

__all__ = ["Commit", "ViewRecorder"]

log = logging.getLogger(__name__)

# Gathering a batch (see ViewRecorder._gather) ends after this many event-loop turns in which
# no view arrived, or after this long, whichever comes first.
_CALM_TURNS = 32  # an idle turn takes a few microseconds
_GATHER_LIMIT = 0.005  # seconds


class Commit:
    """The commit of one batch of views, shared by every view in it.

    Callers that answer from callbacks (the pixel node) register one callback per batch rather
    than holding a future per view: once the batch is written, the recorder calls them in the
    event loop's thread, directly.
    """

    __slots__ = ("_callbacks", "done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[], object]] = []

    def on_done(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once this commit is done (or failed); at once if it is."""
        if self.done:
            callback()
        else:
            self._callbacks.append(callback)

    def finish(self, error: BaseException | None) -> None:
        self.done, self.error = True, error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one caller's failure must not keep the others waiting
                log.exception("a view commit callback failed")


class ViewRecorder:
    """Collects views while the event loop has requests to handle, then writes them together.

    One writer thread does all the writing, over one connection it keeps, so batches never
    compete for the database.
    """

    noun = "views"  # what it records, in its log lines

    def __init__(self, store: Store, judge: JudgeHit | None = None,
                 max_batch: int = 1000, details: Details | None = None) -> None:
        self.store = store
        # Classifying happens in the writer thread, off the event loop, batch by batch.
        self.judge: JudgeHit = judge if judge is not None else Judge()
        # What is stored of each view (None: everything), read in the writer thread.
        self.details = details
        self.max_batch = max_batch
        # Batches waiting to be written, oldest first; views join the newest while it has room.
        self._batches: deque[tuple[list[ViewIn], Commit]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mailseen-views")
        self._writer: ViewWriter | None = None
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailseen-view-recorder")

    async def stop(self) -> None:
        """Write what is pending, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.submit(self._close_writer)
        self._executor.shutdown(wait=True)

    async def record(self, view: ViewIn) -> None:
        """Return once ``view`` is committed; raise if writing it failed."""
        commit = self.submit(view)
        if not commit.done:
            written: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake() -> None:
                if not written.done():  # cancelled meanwhile: the client has gone
                    written.set_result(None)

            commit.on_done(wake)
            await written
        if commit.error is not None:
            raise commit.error

    def submit(self, view: ViewIn) -> Commit:
        """Queue ``view``; returns the commit it will be written by."""
        if self._task is None or self._closing:
            raise RuntimeError("the view recorder is not running")
        batches = self._batches
        if not batches or len(batches[-1][0]) >= self.max_batch:
            batches.append(([], Commit()))
            self._wake.set()
        views, commit = batches[-1]
        views.append(view)
        return commit

    def _pending(self) -> int:
        return sum(len(views) for views, _ in self._batches)

    async def _gather(self) -> None:
        """Let the event loop run while it keeps producing views, so that requests which have
        already arrived join this batch instead of waiting for the next one.

        Writing a batch costs far more per transaction than per view, and the writer thread
        shares the GIL (and, on a small server, the core) with the event loop: fewer, fuller
        batches leave more time for answering requests. A lone hit waits only for
        ``_CALM_TURNS`` idle loop turns (about a hundred microseconds); under load, gathering
        stops at ``max_batch`` views or after ``_GATHER_LIMIT`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GATHER_LIMIT
        size, calm = self._pending(), 0
        while calm < _CALM_TURNS and size < self.max_batch and loop.time() < deadline:
            await asyncio.sleep(0)
            now = self._pending()
            if now == size:
                calm += 1
            else:
                size, calm = now, 0

    def _write(self, views: list[ViewIn]) -> int:
        """In the writer thread."""
        if self._writer is None:
            self._writer = self.store.view_writer()
        return record_judged(self._writer, views, self.judge, self.details)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._batches:
                await self._gather()
                views, commit = self._batches.popleft()
                try:
                    await loop.run_in_executor(self._executor, self._write, views)
                except Exception as exc:  # every waiter learns it; the pixel still answers
                    log.error("recording %d %s failed: %s", len(views), self.noun, exc)
                    commit.finish(exc)
                else:
                    commit.finish(None)
            if self._closing:
                return
