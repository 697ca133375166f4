"""The conversation listing: newest first, paged, filtered by the eye's status and by a search,
over every mailbox (an admin's) or some (a member's), checked against the demo's rows sorted
and filtered in Python; and through the real page."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mailseen.core.compose import Draft
from mailseen.records import Judged, MailboxIn, ViewIn
from mailseen.services.classification import record_views
from mailseen.services.demo import ADMIN_EMAIL, DemoResult
from mailseen.services.instance import Instance
from mailseen.storage.models import Conversation, Message, MessageWords

from .web_client import PASSWORD, WebClient


def _expected(instance: Instance, mailbox_ids: Sequence[int], status: str | None = None,
              search: str | None = None) -> list[int]:
    """Conversation ids the listing should show, in order, worked out row by row."""
    with instance.db.session() as s:
        latest = {m.id: m for m in s.scalars(select(Message))}
        people: dict[int | None, list[str]] = {}
        words = {w.message_id: w.words for w in s.scalars(select(MessageWords))}
        for m in latest.values():  # everyone on, and the words of, every message in it
            people.setdefault(m.conversation_id, []).extend(
                [m.from_addr, m.to_json, m.cc_json, m.bcc_json, words.get(m.id, "")])
        rows = []
        for c in s.scalars(select(Conversation)):
            m = latest.get(c.latest_sent_id) if c.latest_sent_id else None
            viewed = m is not None and (m.view_count > 0 or m.replied_at is not None)
            kind = (None if m is None else "viewed" if m.tracked and viewed
                    else "waiting" if m.tracked else "untracked")
            if c.mailbox_id not in mailbox_ids:
                continue
            if status == "viewed" and not viewed:
                continue
            if status in ("waiting", "untracked") and kind != status:
                continue
            if search and not any(search.lower() in text.lower()
                                  for text in (c.subject, c.other_party,
                                               *people.get(c.id, []))):
                continue
            rows.append((c.last_activity_at, c.id))
    return [cid for _, cid in sorted(rows, reverse=True)]


def _paged(instance: Instance, mailbox_ids: Sequence[int], size: int, **kw: str | None
           ) -> list[int]:
    """Every page of ``size`` in turn, as the listing asks for them."""
    found: list[int] = []
    while True:
        page = instance.store.conversation_page(mailbox_ids, limit=size, offset=len(found),
                                                **kw)  # type: ignore[arg-type]
        found += [c.id for c, _ in page]
        if len(page) < size:
            return found


@pytest.mark.parametrize("status", [None, "viewed", "waiting", "untracked"])
def test_pages_follow_each_other_newest_first_for_every_mailbox_or_some(
        small: DemoResult, instance: Instance, status: str | None) -> None:
    every = [b.id for b in instance.store.list_mailboxes()]
    assert len(_expected(instance, every, status)) > 7  # more than one page
    for ids in (every, every[:2], every[1:2]):
        assert _paged(instance, ids, 7, status=status) == _expected(instance, ids, status)


def test_each_conversation_comes_with_its_latest_sent_message(small: DemoResult,
                                                              instance: Instance) -> None:
    every = [b.id for b in instance.store.list_mailboxes()]
    page = instance.store.conversation_page(every, limit=100)
    assert len(page) == small.conversations
    for conv, message in page:
        assert (message.id if message else None) == conv.latest_sent_id
    assert any(m is None for _, m in page)  # a customer wrote first: nothing sent yet


def test_search_and_status_narrow_the_same_pages(small: DemoResult,
                                                 instance: Instance) -> None:
    every = [b.id for b in instance.store.list_mailboxes()]
    subject = instance.store.conversation_page(every, limit=1, offset=5)[0][0].subject
    word = subject.split()[0].upper()  # any case matches
    for ids in (every, every[:1]):
        for status in (None, "waiting"):
            assert _paged(instance, ids, 3, status=status, search=word) == _expected(
                instance, ids, status, word)
    assert instance.store.conversation_page(every, search="100%_nobody") == []
    assert instance.store.conversation_page([], limit=10) == []


def test_the_listing_page_shows_a_deep_page_in_order(small: DemoResult, web: WebClient,
                                                     instance: Instance) -> None:
    password = next(a.password for a in small.accounts if a.email == ADMIN_EMAIL)
    assert password is not None
    web.sign_in(ADMIN_EMAIL, password)
    every = [b.id for b in instance.store.list_mailboxes()]
    want = _expected(instance, every)
    shown = [int(li["data-conversation-id"])
             for n in (1, 2, 3) for li in web.get(f"/conversations?page={n}").all(
                 "li.conversation")]
    assert shown == want
    waiting = web.get("/conversations?status=waiting&page=2")
    assert [int(li["data-conversation-id"]) for li in waiting.all("li.conversation")] == (
        _expected(instance, every, "waiting")[25:50])


def test_a_machine_only_eye_names_the_latest_of_many_fetches(web: WebClient,
                                                             instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn(address="support@example.com",
                                               tracking="enabled"))
    fetched, seen = (instance.sender.send_draft(box, Draft(
        from_addr=box.address, to=["customer@example.org"], subject=subject, text="Hi",
        html="<p>Hi</p>")) for subject in ("Fetched", "Seen"))
    asyncio.run(instance.worker().drain())  # delivered: only then may the eye say more
    t0 = datetime.now(UTC) - timedelta(hours=2)
    clients = ["Barracuda"] * 150 + ["Mimecast"] + ["Outlook"]
    views = [ViewIn(message_id=m.id, recipient=0, at=t0 + timedelta(seconds=n), method="GET",
                    ip="198.51.100.7", user_agent=client)
             for m in (fetched, seen) for n, client in enumerate(clients)
             if m is seen or client != "Outlook"]

    def judge(view: ViewIn, sent_at: datetime | None) -> Judged:
        human = view.user_agent == "Outlook"
        return Judged("human" if human else "machine", "", view.user_agent or "")

    record_views(instance.store, views, judge)
    assert instance.store.machine_clients([fetched.id, seen.id]) == {
        fetched.id: "Mimecast", seen.id: "Mimecast"}
    assert instance.store.machine_clients([]) == {}
    instance.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    web.sign_in("admin@example.com")
    eyes = {int(li["data-conversation-id"]): li.select_one(".status")
            for li in web.get("/conversations").all("li.conversation")}
    assert eyes[fetched.conversation_id]["data-kind"] == "machine"
    assert "Fetched by Mimecast" in eyes[fetched.conversation_id].text
    assert eyes[seen.conversation_id]["data-kind"] == "viewed"
