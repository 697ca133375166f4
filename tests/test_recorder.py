"""The view recorder's group commit: batches, their commits, and what callers wait on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailseen.records import Judged, MailboxIn, ViewIn
from mailseen.services.instance import Instance
from mailseen.services.recorder import Commit, ViewRecorder


def _sent_message(instance: Instance) -> int:
    box = instance.store.add_mailbox(MailboxIn("r@example.com", tracking="enabled"))
    raw = b"From: r@example.com\r\nTo: b@example.org\r\nContent-Type: text/html\r\n\r\n<p>x</p>"
    return instance.sender.submit(box, raw, queue=False).id


def _human(view: ViewIn, sent_at: datetime | None) -> Judged:
    return Judged("human", "test", "test")


async def test_views_past_the_batch_limit_go_in_later_batches_each_committed_in_turn(
        instance: Instance) -> None:
    mid = _sent_message(instance)
    written: list[int] = []
    record_views = instance.store.view_writer

    class Counting:
        """The real writer, noting each batch's size."""

        def __init__(self) -> None:
            self.writer = record_views()

        def resolve(self, views: list[ViewIn]) -> list[tuple[ViewIn, datetime | None]]:
            return self.writer.resolve(views)

        def write(self, judged: list[tuple[ViewIn, Judged]]) -> int:
            written.append(len(judged))
            return self.writer.write(judged)

        def close(self) -> None:
            self.writer.close()

    instance.store.view_writer = Counting  # type: ignore[method-assign,assignment]
    recorder = ViewRecorder(instance.store, _human, max_batch=3)
    await recorder.start()
    at = datetime.now(UTC) + timedelta(hours=1)
    commits = [recorder.submit(ViewIn(mid, 0, at + timedelta(seconds=n), "GET",
                                      f"192.0.2.{n}", "UA", {})) for n in range(10)]
    # Views join the newest batch while it has room: 3 + 3 + 3 + 1, four commits.
    assert len({id(c) for c in commits}) == 4
    assert commits[0] is commits[2] and commits[2] is not commits[3]
    order: list[int] = []
    for n, commit in enumerate(commits):
        commit.on_done(lambda n=n: order.append(n))
    await recorder.record(ViewIn(mid, 0, at, "GET", "192.0.2.99", "UA", {}))
    await recorder.stop()
    assert all(c.done and c.error is None for c in commits)
    assert order == list(range(10))  # batches commit, and wake their callers, in order
    assert sum(written) == 11 and max(written) <= 3
    assert instance.store.get_message(mid).view_count == 11


async def test_a_failed_batch_fails_its_waiters_and_the_next_batch_still_commits(
        instance: Instance) -> None:
    mid = _sent_message(instance)
    real = instance.store.view_writer
    failures = [RuntimeError("disk on fire")]

    class Flaky:
        def __init__(self) -> None:
            self.writer = real()

        def resolve(self, views: list[ViewIn]) -> list[tuple[ViewIn, datetime | None]]:
            return self.writer.resolve(views)

        def write(self, judged: list[tuple[ViewIn, Judged]]) -> int:
            if failures:
                raise failures.pop()
            return self.writer.write(judged)

        def close(self) -> None:
            self.writer.close()

    instance.store.view_writer = Flaky  # type: ignore[method-assign,assignment]
    recorder = ViewRecorder(instance.store, _human)
    await recorder.start()
    at = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await recorder.record(ViewIn(mid, 0, at, "GET", "192.0.2.1", "UA", {}))
    await recorder.record(ViewIn(mid, 0, at, "GET", "192.0.2.2", "UA", {}))
    await recorder.stop()
    assert instance.store.get_message(mid).view_count == 1


def test_a_commit_calls_back_once_done_and_at_once_when_already_done() -> None:
    commit, calls = Commit(), []
    commit.on_done(lambda: calls.append("early"))
    commit.on_done(lambda: 1 / 0)  # a failing callback does not stop the others
    commit.on_done(lambda: calls.append("second"))
    assert calls == []
    commit.finish(None)
    assert calls == ["early", "second"] and commit.done and commit.error is None
    commit.on_done(lambda: calls.append("late"))
    assert calls == ["early", "second", "late"]


async def test_submitting_to_a_stopped_recorder_is_refused(instance: Instance) -> None:
    recorder = ViewRecorder(instance.store, _human)
    await recorder.start()
    await recorder.stop()
    with pytest.raises(RuntimeError, match="not running"):
        recorder.submit(ViewIn(1, 0, datetime.now(UTC), "GET", None, None, {}))
