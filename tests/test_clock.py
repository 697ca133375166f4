"""The clock passed in: a manual clock's sleeps end when the test moves time, and waiting on
a clock or events ends with whichever comes first."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest

from mailseen.clock import SYSTEM, Clock, ManualClock, wait

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def test_a_manual_sleep_ends_only_when_time_is_moved_past_it() -> None:
    clock = ManualClock(START)
    sleeper = asyncio.create_task(clock.sleep(30))
    await clock.until_sleeping()
    assert clock.sleeping == [30]
    clock.advance(29)
    await asyncio.sleep(0)
    assert not sleeper.done() and clock.sleeping == [1]
    clock.advance(1)
    await sleeper
    assert clock.now() == START + timedelta(seconds=30) and clock.monotonic() == 30
    assert clock.sleeping == []


async def test_a_manual_clock_does_not_go_back() -> None:
    with pytest.raises(ValueError, match="does not go back"):
        ManualClock().advance(-1)


async def test_wait_ends_on_an_event_or_on_time() -> None:
    clock = ManualClock(START)
    event = asyncio.Event()
    waiting = asyncio.create_task(wait(clock, 60, event))
    await clock.until_sleeping()
    event.set()
    assert await waiting is True
    assert clock.sleeping == []  # the timer is cancelled, not left behind

    event.clear()
    waiting = asyncio.create_task(wait(clock, 60, event))
    await clock.until_sleeping()
    clock.advance(60)
    assert await waiting is False


async def test_a_sleep_on_another_threads_loop_is_woken_there() -> None:
    clock = ManualClock(START)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        slept = asyncio.run_coroutine_threadsafe(clock.sleep(5), loop)
        await clock.until_sleeping()
        clock.advance(5)
        await asyncio.wrap_future(slept)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_the_system_clock_tells_aware_utc_time() -> None:
    clock: Clock = SYSTEM
    assert clock.now().tzinfo is UTC
    assert clock.monotonic() <= clock.monotonic()
