"""Time, passed in: what the stores, the delivery worker and the IMAP poller ask for the
time and wait on. The edge builds one :class:`SystemClock`; tests pass a :class:`ManualClock`
and move time instead of sleeping past a backoff.

Only waits that stand for a schedule (a backoff, a poll interval, an IDLE period, a lease)
go through the clock. Timeouts that bound a real network or database wait stay on the event
loop's own clock: a manual clock cannot make a server answer.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["SYSTEM", "Clock", "ManualClock", "SystemClock", "wait"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The time of day, timezone-aware in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back: for measuring intervals."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    # datetime.now(UTC) called straight from C: every pixel hit asks for the time, and a
    # Python method around it cost a frame each time.
    now: Callable[[], datetime] = staticmethod(functools.partial(datetime.now, UTC))

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM = SystemClock()


async def wait(clock: Clock, seconds: float, *events: asyncio.Event) -> bool:
    """Wait until one of ``events`` is set or ``seconds`` pass on ``clock``; whether an
    event was set (the worker's "stop or wake, else look again in a while")."""
    if any(e.is_set() for e in events):
        return True
    timer = asyncio.ensure_future(clock.sleep(seconds))
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait([timer, *waits], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (timer, *waits):
            task.cancel()
    return any(e.is_set() for e in events)


class ManualClock:
    """A clock that moves only when :meth:`advance` is called: a sleep returns once the
    test has moved time past its end. It starts at the real time of day (rows written
    with it sort among rows written without it) unless given ``start``.

    ``now()`` may be read from any thread (the stores run in worker threads); sleeps and
    :meth:`advance` belong to event loops, and a sleep on another thread's loop is woken
    on that loop."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime.now(UTC)
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)  # still a point where other tasks run, as on a real clock
            return
        entry = (self._elapsed + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, ending every sleep that is then over. The sleepers
        run when the event loop next gets a turn (the caller's next ``await``)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._elapsed += seconds
        for due, future in list(self._sleepers):
            if due <= self._elapsed:
                future.get_loop().call_soon_threadsafe(_finish, future)

    @property
    def sleeping(self) -> list[float]:
        """How far ahead each unfinished sleep ends, soonest first (a cancelled one is
        not counted)."""
        return sorted(due - self._elapsed for due, future in self._sleepers
                      if due > self._elapsed and not future.done())

    async def until_sleeping(self, count: int = 1, *, within: float = 10) -> None:
        """Return once ``count`` sleeps are waiting on this clock: the code under test has
        done what it can and waits for time. ``within`` bounds the real wait (the code
        runs database calls in threads); past it this raises AssertionError."""
        deadline = time.monotonic() + within
        while len(self.sleeping) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.sleeping)} of {count} sleeps began in time")
            await asyncio.sleep(0.005)


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
