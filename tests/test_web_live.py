"""Live pages in-process: the change cursor moves for everything a page shows (views, machine
fetches, mail stored either way, delivery states) and for nothing else in its scope; a member
learns nothing of another mailbox through it; /live answers as the page's script expects.
The browser side is tests/test_browser_live.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from mailseen.core.compose import Draft
from mailseen.errors import InvalidInput, NotFound
from mailseen.records import (
    CopyRecord,
    Judged,
    MailboxIn,
    MailboxRecord,
    MessageRecord,
    UserRecord,
    ViewIn,
)
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance
from mailseen.services.live import LiveChanges, LiveScope

from .web_client import PASSWORD, WebClient

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537"


def _mailbox(instance: Instance, address: str) -> MailboxRecord:
    return instance.store.add_mailbox(MailboxIn(address=address, tracking="enabled"))


def _send(instance: Instance, box: MailboxRecord, subject: str = "Quote",
          to: tuple[str, ...] = ("carla@example.org",)) -> MessageRecord:
    return instance.sender.send_draft(box, Draft(from_addr=box.address, to=list(to),
                                                 subject=subject, html="<p>Hello</p>"))


def _reply(instance: Instance, box: MailboxRecord, to: MessageRecord | None,
           subject: str = "Re: Quote", n: int = 1, *, automatic: bool = False
           ) -> MessageRecord:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "carla@example.org", box.address, subject
    if automatic:
        msg["Auto-Submitted"] = "auto-replied"
    msg["Message-ID"] = f"<reply-{box.id}-{n}@example.org>"
    if to is not None:
        msg["In-Reply-To"] = to.message_id
    msg.set_content("Thanks")
    return Ingestor(instance.store, instance.sender).ingest(box, msg.as_bytes(), "imap").message


def _copy(instance: Instance, message: MessageRecord) -> CopyRecord:
    """The message's first copy: with one recipient, theirs."""
    return instance.store.copies_of([message.id])[message.id][0]


def _view(instance: Instance, message: MessageRecord, verdict: str = "human", *,
          shared: bool = False) -> None:
    """A hit on the pixel of the message's first copy, or (``shared``) on a pixel every
    recipient shared (the ``tag`` filter's, older messages')."""
    judged = Judged(verdict, "", "")  # type: ignore[arg-type]
    copy = None if shared else _copy(instance, message)
    instance.store.record_views([ViewIn(
        message.id, copy.position if copy else 0, datetime.now(UTC), "GET", "192.0.2.9",
        BROWSER, {}, copy_key=copy.token_key or 0 if copy else 0,
        copy_id=copy.id if copy else None)], [judged])


def _member(instance: Instance, *boxes: MailboxRecord) -> UserRecord:
    user = instance.accounts.create_user("ann@example.com", PASSWORD)
    instance.store.set_memberships(user.id, [b.id for b in boxes])
    return instance.store.get_user(user.id)


class Watcher:
    """A page watching one scope, as its script does: each look starts at the last answer."""

    def __init__(self, instance: Instance, actor: UserRecord | None, scope: LiveScope) -> None:
        self.instance, self.actor, self.scope = instance, actor, scope
        self.cursor = instance.messages.live_cursor(actor, scope)

    def look(self) -> LiveChanges:
        found = self.instance.messages.live_changes(self.actor, self.scope, self.cursor)
        self.cursor = found.cursor
        return found

    def changed(self) -> bool:
        return self.look().changed


def test_an_open_conversation_moves_for_everything_it_shows_and_nothing_else(
        instance: Instance) -> None:
    box = _mailbox(instance, "sales@example.com")
    sent = _send(instance, box)
    other = _send(instance, box, "Another conversation")
    for m in (sent, other):
        instance.store.mark_sent(_copy(instance, m).id)
    assert sent.conversation_id is not None
    page = Watcher(instance, None, LiveScope("conversation", sent.conversation_id))

    assert not page.changed()  # nothing happened
    _view(instance, other)  # elsewhere in the same mailbox
    assert not page.changed()
    _view(instance, sent)
    found = page.look()
    assert found.changed and [v.message_id for v in found.views] == [sent.id]
    _view(instance, sent, "machine")
    assert page.changed()
    _reply(instance, box, sent)
    assert page.changed()
    assert not page.changed()  # each change is told once

    # Each delivery state, as the delivery worker moves through them.
    follow_up = _send_in(instance, box, sent)
    assert page.changed()  # queued
    claim = instance.store.claim_next(timedelta(minutes=1))
    assert claim is not None and claim.message.id == follow_up.id
    assert page.changed()  # being sent
    instance.store.mark_retry(claim.copy.id, "the relay refused the connection",
                              datetime.now(UTC))
    assert page.changed()  # waiting to be tried again
    instance.store.mark_failed(claim.copy.id, "550 no such user")
    assert page.changed()
    assert instance.store.retry_now([claim.copy.id]) == 1  # an admin's "retry now"
    assert page.changed()
    assert instance.store.cancel([claim.copy.id]) == 1
    assert page.changed()
    _bounce(instance, box, sent)  # a delivery report: the first copy bounced after all
    assert _copy(instance, sent).status == "bounced"
    assert page.changed()
    assert not page.changed()


def _bounce(instance: Instance, box: MailboxRecord, sent: MessageRecord) -> None:
    report = (f"From: postmaster@mx.example.org\r\nTo: {box.address}\r\nSubject: Failure\r\n"
              f"Message-ID: <dsn-1@mx.example.org>\r\nMIME-Version: 1.0\r\n"
              f"Content-Type: multipart/report; report-type=delivery-status; boundary=R\r\n"
              f"\r\n--R\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n--R\r\n"
              f"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
              f"Final-Recipient: rfc822; carla@example.org\r\nAction: failed\r\n"
              f"Status: 5.1.1\r\n\r\n--R\r\nContent-Type: message/rfc822\r\n\r\n"
              f"From: {box.address}\r\nTo: carla@example.org\r\n"
              f"Message-ID: {sent.message_id}\r\nSubject: Quote\r\n\r\nHello\r\n--R--\r\n")
    Ingestor(instance.store, instance.sender).ingest(box, report.encode(), "imap")


def _send_in(instance: Instance, box: MailboxRecord, first: MessageRecord) -> MessageRecord:
    """An outbound message in ``first``'s conversation (threaded by In-Reply-To)."""
    sent = instance.sender.send_draft(box, Draft(
        from_addr=box.address, to=["carla@example.org"], subject="Re: Quote", text="More",
        in_reply_to=first.message_id))
    assert sent.conversation_id == first.conversation_id
    return sent


def test_a_listing_moves_for_new_mail_both_ways_views_and_sending(instance: Instance) -> None:
    box = _mailbox(instance, "sales@example.com")
    elsewhere = _mailbox(instance, "support@example.com")
    mine = Watcher(instance, None, LiveScope("mailbox", box.id))
    everything = Watcher(instance, None, LiveScope("all"))

    _reply(instance, elsewhere, None, "New question")  # a new conversation elsewhere
    assert not mine.changed() and everything.changed()
    inbound = _reply(instance, box, None, "New question", 2)
    assert mine.changed() and everything.changed()
    sent = _send(instance, box)
    assert mine.changed() and everything.changed()
    claim = instance.store.claim_next(timedelta(minutes=1))
    assert claim is not None and claim.message.id == sent.id
    assert mine.changed() and everything.changed()
    instance.store.mark_sent(claim.copy.id)
    assert mine.changed() and everything.changed()
    _view(instance, sent)
    assert mine.changed() and everything.changed()
    assert inbound.direction == "in"
    assert not mine.changed() and not everything.changed()


def test_a_cursor_that_cannot_be_read_starts_afresh(instance: Instance) -> None:
    box = _mailbox(instance, "sales@example.com")
    sent = _send(instance, box)
    for cursor in ("", "garbage", "1.2", "-1.0.ab", "9" * 40 + ".0."):
        found = instance.messages.live_changes(None, LiveScope("all"), cursor)
        assert not found.changed and found.views == []
        _view(instance, sent)
        assert instance.messages.live_changes(None, LiveScope("all"), found.cursor).changed


def test_scopes_are_read_strictly() -> None:
    assert LiveScope.parse("conversation:12") == LiveScope("conversation", 12)
    assert str(LiveScope.parse("mailbox:3")) == "mailbox:3"
    assert LiveScope.parse("all").kind == "all" and LiveScope.parse("none").kind == "none"
    for bad in ("", "conversation", "conversation:", "mailbox:-1", "all:1", "users:1",
                "conversation:1 ", "1" * 30):
        with pytest.raises(InvalidInput):
            LiveScope.parse(bad)


def test_a_member_follows_only_their_mailboxes(instance: Instance) -> None:
    alpha = _mailbox(instance, "alpha@example.com")
    bravo = _mailbox(instance, "bravo@example.com")
    ann = _member(instance, alpha)
    theirs = _send(instance, bravo, "Bravo secret")
    assert theirs.conversation_id is not None
    for scope in (LiveScope("conversation", theirs.conversation_id),
                  LiveScope("mailbox", bravo.id)):
        with pytest.raises(NotFound):
            instance.messages.live_cursor(ann, scope)
        with pytest.raises(NotFound):
            instance.messages.live_changes(ann, scope, "0.0.")

    page = Watcher(instance, ann, LiveScope("all"))
    _view(instance, theirs)
    _reply(instance, bravo, theirs)
    found = page.look()
    assert not found.changed and found.views == [] and found.messages == []
    ours = _send(instance, alpha)
    _view(instance, ours)
    found = page.look()
    assert found.changed and [v.message_id for v in found.views] == [ours.id]
    assert [m.message_id for m in found.messages] == [ours.id]


# -- the endpoint ------------------------------------------------------------------------

def test_live_needs_a_session_and_answers_what_the_script_expects(
        web: WebClient, instance: Instance) -> None:
    box = _mailbox(instance, "sales@example.com")
    one = _send(instance, box, "For one", ("carla@example.org",))
    two = _send(instance, box, "For two", ("erin@example.org", "frank@example.org"))
    three = _send(instance, box, "Shared", ("erin@example.org", "frank@example.org"))
    assert web.client.get("/live?scope=all").status_code == 401  # not a sign-in page
    instance.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    web.sign_in("ada@example.com")

    start = web.client.get("/live", params={"scope": "all"})
    assert start.status_code == 200 and start.headers["cache-control"] == "no-store"
    assert start.json()["changed"] is False and start.json()["notes"] == []
    page = web.get("/conversations")
    live = page.soup.select_one("[data-live]")
    assert live["data-live"] == "all"
    cursor = live["data-live-cursor"]
    assert cursor == start.json()["cursor"]

    _view(instance, one)
    _view(instance, two)
    _view(instance, three, shared=True)
    _view(instance, two, "machine")  # a machine fetch is not a view: no notification
    _reply(instance, box, one, "Re: For one")
    _reply(instance, box, two, "Out of the office", 2, automatic=True)  # no notification
    answer = web.client.get("/live", params={"scope": "all", "cursor": cursor}).json()
    assert answer["changed"] is True
    assert [(n["title"], n["url"]) for n in answer["notes"]] == [
        ("carla@example.org viewed For one", f"/conversations/{one.conversation_id}"),
        ("erin@example.org viewed For two", f"/conversations/{two.conversation_id}"),
        # A pixel every recipient shared cannot say which of them it was.
        ("One of the recipients viewed Shared", f"/conversations/{three.conversation_id}"),
        ("carla@example.org wrote: Re: For one", f"/conversations/{one.conversation_id}")]
    assert len({n["tag"] for n in answer["notes"]}) == 4
    again = web.client.get("/live", params={"scope": "all", "cursor": answer["cursor"]}).json()
    assert again == {"cursor": answer["cursor"], "changed": False, "notes": []}

    bad = web.client.get("/live", params={"scope": "everything"})
    assert bad.status_code == 400 and bad.json()["field"] == "scope"
    gone = web.client.get("/live", params={"scope": "conversation:999999"})
    assert gone.status_code == 404


def test_live_tells_a_member_nothing_of_another_mailbox(
        web: WebClient, instance: Instance) -> None:
    alpha = _mailbox(instance, "alpha@example.com")
    bravo = _mailbox(instance, "bravo@example.com")
    _member(instance, alpha)
    theirs = _send(instance, bravo, "Bravo secret")
    web.sign_in("ann@example.com")
    cursor = web.client.get("/live", params={"scope": "all"}).json()["cursor"]
    _view(instance, theirs)
    _reply(instance, bravo, theirs)
    resp = web.client.get("/live", params={"scope": "all", "cursor": cursor})
    assert resp.json()["changed"] is False and resp.json()["notes"] == []
    for scope in (f"conversation:{theirs.conversation_id}", f"mailbox:{bravo.id}"):
        resp = web.client.get("/live", params={"scope": scope, "cursor": cursor})
        assert resp.status_code == 404 and "Bravo" not in resp.text
