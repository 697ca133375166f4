"""Group commit for pixel hits: a view is durable before its response is sent, and
concurrent hits share one transaction, so the cost of a commit (an fsync) is paid per batch
rather than per hit."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from ..storage import Store, ViewIn
from ..storage.store import Judge as StoreJudge
from .classification import Judge

__all__ = ["ViewRecorder"]

log = logging.getLogger(__name__)

# Gathering a batch (see ViewRecorder._gather) ends after this many event-loop turns in which
# no view arrived, or after this long, whichever comes first.
_CALM_TURNS = 32  # an idle turn takes a few microseconds
_GATHER_LIMIT = 0.005  # seconds


class ViewRecorder:
    """Collects views while the event loop has requests to handle, then writes them together.

    One writer thread does all the writing, so batches never compete for the database.
    """

    def __init__(self, store: Store, judge: StoreJudge | None = None,
                 max_batch: int = 1000) -> None:
        self.store = store
        # Classifying happens in the writer thread, off the event loop, batch by batch.
        self.judge: StoreJudge = judge if judge is not None else Judge()
        self.max_batch = max_batch
        self._pending: list[tuple[ViewIn, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mailseen-views")
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailseen-view-recorder")

    async def stop(self) -> None:
        """Write what is pending, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def record(self, view: ViewIn) -> None:
        """Return once ``view`` is committed; raise if writing it failed."""
        await self.submit(view)

    def submit(self, view: ViewIn) -> asyncio.Future[None]:
        """Queue ``view``; the future is done once it is committed (or failed to be), for
        callers that answer from a callback rather than a task per request."""
        if self._task is None or self._closing:
            raise RuntimeError("the view recorder is not running")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((view, fut))
        self._wake.set()
        return fut

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
        size, calm = len(self._pending), 0
        while calm < _CALM_TURNS and size < self.max_batch and loop.time() < deadline:
            await asyncio.sleep(0)
            if len(self._pending) == size:
                calm += 1
            else:
                size, calm = len(self._pending), 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._gather()
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    await loop.run_in_executor(
                        self._executor, self.store.record_views, [v for v, _ in batch],
                        self.judge)
                except Exception as exc:  # every waiter learns it; the pixel still answers
                    log.error("recording %d views failed: %s", len(batch), exc)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
            if self._closing:
                return
