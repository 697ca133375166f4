"""Judging hits where they are recorded: a client's repeated views of one message count at
most once a minute, live and on `mailseen reclassify` alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from mailseen.records import MailboxIn, ViewIn
from mailseen.services.classification import (
    REPEAT_REASON,
    Judge,
    RepeatWindow,
    reclassify,
    record_views,
)
from mailseen.services.instance import Instance
from mailseen.storage.models import Message

OUTLOOK = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 Microsoft Outlook 16.0.17231")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SENT = T0 - timedelta(hours=1)


def _view(at: datetime, *, mid: int = 1, ua: str = OUTLOOK, ip: str = "198.51.100.7",
          method: str = "GET") -> ViewIn:
    return ViewIn(message_id=mid, recipient=0, at=at, method=method, ip=ip, user_agent=ua,
                  headers={"accept": "image/*"})


def test_a_repeat_within_a_minute_is_not_counted_again() -> None:
    judge = Judge()
    first = judge(_view(T0), SENT)
    again = judge(_view(T0 + timedelta(seconds=30)), SENT)
    assert first.verdict == "human"
    assert (again.verdict, again.reason) == ("machine", REPEAT_REASON)
    assert again.client == first.client  # still says which client it was
    assert judge(_view(T0 + timedelta(seconds=61)), SENT).verdict == "human"


def test_other_clients_and_other_messages_count_on_their_own() -> None:
    judge = Judge()
    assert judge(_view(T0), SENT).verdict == "human"
    assert judge(_view(T0 + timedelta(seconds=5), ua=OUTLOOK + " x"), SENT).verdict == "human"
    assert judge(_view(T0 + timedelta(seconds=6), ip="203.0.113.5"), SENT).verdict == "human"
    assert judge(_view(T0 + timedelta(seconds=7), mid=2), SENT).verdict == "human"


def test_one_client_hammering_a_token_counts_once_a_minute() -> None:
    judge = Judge()
    verdicts = [judge(_view(T0 + timedelta(seconds=s)), SENT).verdict for s in range(180)]
    assert verdicts.count("human") == 3


def test_machine_fetches_do_not_hide_the_view_after_them() -> None:
    judge = Judge()
    assert judge(_view(T0, method="HEAD"), SENT).verdict == "machine"
    assert judge(_view(T0 + timedelta(seconds=10)), SENT).verdict == "human"


def test_views_from_another_node_arriving_slightly_late_are_still_repeats() -> None:
    judge = Judge()
    assert judge(_view(T0 + timedelta(seconds=2)), SENT).verdict == "human"
    assert judge(_view(T0), SENT).reason == REPEAT_REASON


def test_memory_is_bounded() -> None:
    window = RepeatWindow(limit=100)
    for n in range(1000):
        assert not window.repeat(_view(T0 + timedelta(milliseconds=n), mid=n))
    assert len(window._counted) <= 100
    # Old entries go once the window has passed them, whatever the limit.
    window.repeat(_view(T0 + timedelta(minutes=5), mid=5000))
    assert len(window._counted) == 1


def test_reclassify_gives_the_same_verdicts_as_recording(instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn("support@example.com", tracking="enabled"))
    msg = instance.sender.submit(box, b"From: support@example.com\r\nTo: bob@example.org\r\n"
                                      b"Subject: hi\r\nContent-Type: text/html\r\n\r\n"
                                      b"<p>Hi</p>\r\n")
    with instance.db.engine.begin() as conn:
        conn.execute(update(Message).where(Message.id == msg.id).values(
            status="sent", sent_at=SENT))
    hits = [_view(T0 + timedelta(seconds=s), mid=msg.id) for s in (0, 10, 20, 70, 75)]
    hits.append(_view(T0 + timedelta(seconds=80), mid=msg.id, ua=OUTLOOK + " other"))
    live = Judge()
    for hit in hits:  # one batch per hit, as a quiet server records them
        record_views(instance.store, [hit], live)
    before = instance.store.get_message(msg.id)
    assert (before.view_count, before.machine_count) == (3, 3)
    assert reclassify(instance.store, Judge()) == (6, 0)
    after = instance.store.get_message(msg.id)
    assert (after.view_count, after.machine_count) == (3, 3)
    assert [v.reason == REPEAT_REASON for v in instance.store.list_views(msg.id)] == [
        False, True, True, False, True, False]


def test_one_client_fetching_a_message_for_many_recipients_is_a_burst() -> None:
    # A gateway scans a mailing for every colleague it went to: one message, many pixels.
    judge = Judge()
    verdicts = [judge(ViewIn(message_id=1, recipient=n, at=T0 + timedelta(milliseconds=200 * n),
                             method="GET", ip="198.51.100.7", user_agent=OUTLOOK,
                             headers={"accept": "image/*"}), SENT)
                for n in range(5)]
    assert [v.verdict for v in verdicts] == ["human", "human", "human", "machine", "machine"]
    assert verdicts[3].reason == "one client fetched 4 recipients' or messages' pixels at once"
