"""Housekeeping that a long-running server does on its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..storage.db import Database

__all__ = ["STATISTICS_EVERY", "keep_statistics"]

log = logging.getLogger(__name__)

# Data grows slowly next to this: a table's shape does not change much in six hours.
STATISTICS_EVERY = 6 * 3600.0


async def keep_statistics(db: Database, stop: asyncio.Event,
                          every: float = STATISTICS_EVERY) -> None:
    """Refresh the planner's statistics now and then every ``every`` seconds until ``stop``.
    A failure (a locked or full database) is logged and tried again next time: statistics
    only make queries faster, nothing depends on them."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(db.refresh_statistics)
        except Exception as exc:  # a locked or full database: next time, then
            log.warning("refreshing query planner statistics failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
