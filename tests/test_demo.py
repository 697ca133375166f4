"""`mailseen demo`: the small demo is what a new user expects to see (through the real pages),
the scale mode writes consistent, skewed data, and neither fills a database twice by mistake.
Summaries are checked against the events the way `reclassify` would rebuild them."""

from __future__ import annotations

import io
import re
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from mailseen.errors import Conflict
from mailseen.services.demo import ADMIN_EMAIL, MEMBER_EMAIL, DemoResult, fill_small
from mailseen.services.demo_scale import fill_scale
from mailseen.services.instance import Instance
from mailseen.storage.models import Conversation, Message, MessageData, ViewEvent

from .cli_runner import Cli, error, ok
from .web_client import WebClient


def _password(result: DemoResult, email: str) -> str:
    password = next(a.password for a in result.accounts if a.email == email)
    assert password is not None
    return password


def _summaries_match_events(instance: Instance) -> int:
    """Rebuild every message's summary from its events, as `reclassify` does, and compare.
    Returns how many messages have events."""
    e = ViewEvent
    with instance.db.session() as s:
        rebuilt: dict[int, dict[str, Any]] = {}
        for mid, verdict, n, first, last in s.execute(
                select(e.message_id, e.verdict, func.count(), func.min(e.at), func.max(e.at))
                .group_by(e.message_id, e.verdict)):
            prefix = ("view", "viewed") if verdict == "human" else ("machine", "machine")
            rebuilt.setdefault(mid, {}).update({
                f"{prefix[0]}_count": n, f"first_{prefix[1]}_at": first,
                f"last_{prefix[1]}_at": last})
        for m in s.scalars(select(Message)):
            want = rebuilt.get(m.id, {})
            got = {"view_count": m.view_count, "first_viewed_at": m.first_viewed_at,
                   "last_viewed_at": m.last_viewed_at, "machine_count": m.machine_count,
                   "first_machine_at": m.first_machine_at, "last_machine_at": m.last_machine_at}
            expected = {"view_count": 0, "first_viewed_at": None, "last_viewed_at": None,
                        "machine_count": 0, "first_machine_at": None, "last_machine_at": None,
                        **want}
            assert got == expected, f"message {m.id}"
    return len(rebuilt)


# -- small -----------------------------------------------------------------------------------

def test_small_demo_shows_every_kind_of_eye_to_the_admin(small: DemoResult, web: WebClient,
                                                         instance: Instance) -> None:
    assert (small.mailboxes, small.conversations) == (3, 60)
    assert sorted(b.address for b in instance.store.list_mailboxes()) == [
        "billing@example.com", "sales@example.com", "support@example.com"]
    web.sign_in(ADMIN_EMAIL, _password(small, ADMIN_EMAIL))
    kinds: Counter[str] = Counter()
    for page_number in (1, 2, 3):
        page = web.get(f"/conversations?page={page_number}")
        assert page.status == 200
        kinds.update(s["data-kind"] for s in page.all("li.conversation .status"))
    assert sum(kinds.values()) == 60
    # Viewed, not viewed yet, not tracked, fetched by a machine only, and nothing sent yet
    # (a customer wrote first).
    assert set(kinds) == {"viewed", "waiting", "untracked", "machine", "none"}
    assert kinds["viewed"] >= 15 and kinds["machine"] >= 3
    labels = " ".join(web.get("/conversations?status=viewed").soup.get_text(" ").split())
    assert "Replied" in labels and "view" in labels


def test_small_demo_member_sees_only_their_mailboxes(small: DemoResult, web: WebClient,
                                                     instance: Instance) -> None:
    page = web.sign_in(MEMBER_EMAIL, _password(small, MEMBER_EMAIL))
    assert page.status == 200
    boxes = {b.address: b.id for b in instance.store.list_mailboxes()}
    listed = web.get("/conversations?page=1").all("li.conversation .box")
    assert listed and {b.text for b in listed} <= {"Example Support", "Example Sales"}
    assert web.get(f"/mailboxes/{boxes['billing@example.com']}/conversations").status == 404


def test_small_demo_views_come_from_varied_clients_and_match_the_summaries(
        small: DemoResult, instance: Instance) -> None:
    assert small.views > 40
    with instance.db.session() as s:
        clients = set(s.scalars(select(ViewEvent.client)))
        machine = set(s.scalars(select(ViewEvent.client).where(ViewEvent.verdict == "machine")))
    assert {"Apple Mail Privacy Protection", "Gmail (image proxy)"} <= clients
    assert any(c.startswith("Outlook") for c in clients)
    assert any("iPhone" in c or "macOS" in c for c in clients)
    assert machine & {"Mimecast", "Microsoft Defender for Office 365", "Gmail prefetch"}
    assert _summaries_match_events(instance) >= 20


def test_small_demo_labels_the_out_of_office_automatic(small: DemoResult, web: WebClient,
                                                       instance: Instance) -> None:
    with instance.db.session() as s:
        auto = s.scalars(select(Message).where(Message.automatic.is_(True))).first()
        assert auto is not None and auto.subject.startswith("Automatic reply:")
        # An out-of-office proves nothing was read: what it answers is not marked replied.
        sent = s.get(Conversation, auto.conversation_id)
        assert sent is not None and sent.latest_sent_id is not None
        assert s.get(Message, sent.latest_sent_id).replied_at is None  # type: ignore[union-attr]
    web.sign_in(ADMIN_EMAIL, _password(small, ADMIN_EMAIL))
    page = web.get(f"/conversations/{auto.conversation_id}")
    assert "Automatic reply" in [dt.text for dt in page.all("dt")]
    assert "Auto-Submitted: auto-replied" in page.soup.get_text()


def test_history_spreads_over_a_month(small: DemoResult, instance: Instance) -> None:
    with instance.db.session() as s:
        oldest, newest = s.execute(select(func.min(Message.sent_at),
                                          func.max(Message.sent_at))).one()
        queued = s.scalar(select(func.count()).select_from(Message)
                          .where(Message.status != "sent", Message.direction == "out"))
    assert 20 <= (newest - oldest).days <= 30
    assert queued == 0  # delivered to the outbox, so `serve` has nothing left to send


def test_a_database_with_messages_is_refused_without_force(small: DemoResult,
                                                           instance: Instance) -> None:
    with pytest.raises(Conflict, match="--force"):
        fill_small(instance, stream=io.StringIO())
    with pytest.raises(Conflict, match="--force"):
        fill_scale(instance, messages=10, views=10, mailboxes=1, stream=io.StringIO())
    again = fill_scale(instance, messages=50, views=100, mailboxes=2, force=True,
                       stream=io.StringIO())
    # Existing users keep their passwords; the new rows come after the old ones.
    assert all(a.password is None for a in again.accounts)
    with instance.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == small.messages + 50
    _summaries_match_events(instance)


# -- scale -----------------------------------------------------------------------------------

def test_scale_mode_writes_consistent_skewed_data(instance: Instance) -> None:
    result = fill_scale(instance, messages=2000, views=6000, mailboxes=12, seed=7,
                        stream=io.StringIO())
    assert (result.messages, result.views, result.mailboxes) == (2000, 6000, 12)
    assert _summaries_match_events(instance) > 300
    with instance.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 2000
        assert s.scalar(select(func.count()).select_from(MessageData)) == 2000
        assert s.scalar(select(func.count()).select_from(ViewEvent)) == 6000
        sizes = Counter(s.scalars(select(func.count()).select_from(Message)
                                  .group_by(Message.conversation_id)))
        assert set(sizes) <= {1, 2, 3, 4} and sizes[1] > sizes[4] > 0
        # The conversation's eye is its newest message the team sent.
        for conv in s.scalars(select(Conversation)):
            latest = s.scalar(select(func.max(Message.id)).where(
                Message.conversation_id == conv.id, Message.direction == "out"))
            assert conv.latest_sent_id == latest
        sent = list(s.scalars(select(Message).where(
            Message.direction == "out", Message.tracked.is_(True),
            Message.status == "sent")))
        untracked = s.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "out", Message.tracked.is_(False)))
        automatic = s.scalar(select(func.count()).select_from(Message).where(
            Message.automatic.is_(True)))
        sample = s.get(MessageData, sent[0].id)
    assert untracked and automatic
    # Skew: most messages have none to three hits, a few have hundreds.
    hits = sorted(m.view_count + m.machine_count for m in sent)
    assert sum(n <= 3 for n in hits) > len(hits) / 2
    assert hits[-1] >= 100
    # Tracked messages carry their recipient's own pixel: a genuine token naming the
    # message's copy, whose views are that copy's.
    assert sample is not None
    token = re.search(rb"/t/([A-Za-z0-9_-]+)\.gif", sample.raw)
    assert token is not None
    ref = instance.signer.check(token.group(1).decode())
    [copy] = instance.store.copies_of([sent[0].id])[sent[0].id]
    assert ref is not None and ref.copy_key == copy.token_key and copy.recipient
    assert (copy.view_count, copy.machine_count) == (sent[0].view_count, sent[0].machine_count)
    assert [v.copy_id for v in instance.store.list_views(sent[0].id)] == (
        [copy.id] * (copy.view_count + copy.machine_count))


# -- the command -----------------------------------------------------------------------------

def test_cli_demo_prints_the_passwords_that_sign_in(cli: Cli, instance: Instance) -> None:
    out = ok(cli("demo", "--seed", "2"))
    assert "3 mailboxes, 60 conversations" in out
    passwords = dict(re.findall(r"(\S+@example\.com)\s+password: (\S+)", out))
    assert set(passwords) == {ADMIN_EMAIL, MEMBER_EMAIL}
    with WebClient(instance) as web:
        page = web.sign_in(ADMIN_EMAIL, passwords[ADMIN_EMAIL])
        assert page.status == 200 and page.response.url.path == "/conversations"
    assert error(cli("demo")).endswith("use --force to add demo data to it anyway")


def test_cli_demo_at_scale(cli: Cli, instance: Instance) -> None:
    out = ok(cli("demo", "--messages", "400", "--views", "1000", "--mailboxes", "5"))
    assert "5 mailboxes" in out and "400 messages, 1,000 views" in out
    assert len(instance.store.list_mailboxes()) == 5
    _summaries_match_events(instance)
