"""Group commit for pixel hits: a view is durable before its response is sent, and
concurrent hits share one transaction, so the cost of a commit (an fsync) is paid per batch
rather than per hit."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from ..storage import Store, ViewIn

__all__ = ["ViewRecorder"]

log = logging.getLogger(__name__)


class ViewRecorder:
    """Collects views while the previous batch is being written, then writes them together.

    One writer thread does all the writing, so batches never compete for the database.
    """

    def __init__(self, store: Store, max_batch: int = 1000) -> None:
        self.store = store
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
        if self._task is None or self._closing:
            raise RuntimeError("the view recorder is not running")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((view, fut))
        self._wake.set()
        await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    await loop.run_in_executor(
                        self._executor, self.store.record_views, [v for v, _ in batch])
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
