"""The IMAP poller against a real Dovecot: new mail by UID, once, across restarts and
UIDVALIDITY changes; IDLE; implicit TLS, STARTTLS and plain; clear statuses and backoff.
The poller runs on a manual clock: its poll interval, IDLE period and backoff pass only when
a test moves time, so "not before a minute" means the clock did not move."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest

from mailseen.clock import ManualClock
from mailseen.core.compose import Draft
from mailseen.receivers.imap import ImapError, ImapPoller, encode_folder
from mailseen.records import ImapState, MailboxIn, MessageRecord
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance

from .conftest import eventually, make_settings
from .dovecot import Dovecot, ImapUser, connections_to, free_port

USER = "sales@example.test"  # the mailbox's address; the IMAP login is a fresh test user
PASSWORD = 'pa"ss w\\ord 1'  # a quote, a backslash and spaces: LOGIN must quote them


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot(PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def user(dovecot: Dovecot) -> ImapUser:
    return dovecot.add_user()


@pytest.fixture
def lone_user() -> Iterator[ImapUser]:
    """A user on a server of its own, for tests that fail logins (see tests/dovecot.py)."""
    server = Dovecot(PASSWORD, users=1).start()
    yield server.add_user()
    server.stop()


def mail(subject: str, *, message_id: str | None = None, **headers: str) -> bytes:
    lines = ["From: Alice <alice@example.org>", f"To: {USER}", f"Subject: {subject}",
             f"Message-ID: {message_id or make_msgid(domain='example.org')}",
             "Date: Thu, 27 Nov 2025 10:00:00 +0000",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
             "", f"Body of {subject}", ""]
    return "\r\n".join(lines).encode()


def add_box(inst: Instance, user: ImapUser, *, tls: str = "implicit",
            password: str | None = None, folder: str = "INBOX", port: int | None = None,
            address: str = USER) -> int:
    if port is None:
        port = user.server.imaps_port if tls == "implicit" else user.server.imap_port
    return inst.store.add_mailbox(MailboxIn(
        address, imap_host="127.0.0.1", imap_port=port, imap_tls=tls,  # type: ignore[arg-type]
        imap_username=user.name, imap_password=user.password if password is None else password,
        imap_folder=folder)).id


def account(inst: Instance, box_id: int) -> ImapState:
    return next(a for a in inst.store.imap_accounts() if a.mailbox_id == box_id)


def poller(inst: Instance, user: ImapUser | None = None, **kw: Any) -> ImapPoller:
    options: dict[str, Any] = {"timeout": 5, "ca_file": user.server.ca_file if user else None}
    options.update(kw)
    return ImapPoller(inst.mailboxes, Ingestor(inst.store, inst.sender), **options)


def inbound(inst: Instance, box_id: int) -> list[MessageRecord]:
    return [m for m in inst.store.list_messages(mailbox_id=box_id, limit=500)
            if m.direction == "in"]


@pytest.fixture
def inst(tmp_path: Path, database_url: str, clock: ManualClock) -> Iterator[Instance]:
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    yield inst
    inst.close()


# -- reading new mail ------------------------------------------------------------------------

@pytest.mark.parametrize("tls", ["implicit", "starttls", "none"])
async def test_new_mail_is_ingested_once(inst: Instance, user: ImapUser, tls: str) -> None:
    box = add_box(inst, user, tls=tls)
    user.append(mail("first"))
    user.append(mail("second"))
    p = poller(inst, user)
    assert await p.poll_once(account(inst, box)) == 2
    got = inbound(inst, box)
    assert sorted(m.subject for m in got) == ["first", "second"]
    assert all(m.source == "imap" and m.status == "received" for m in got)
    record = inst.store.get_mailbox(box)
    assert record.imap_status == "ok" and record.imap_error is None
    assert record.imap_checked_at is not None

    assert await p.poll_once(account(inst, box)) == 0  # nothing new
    user.append(mail("third"))
    assert await p.poll_once(account(inst, box)) == 1
    assert len(inbound(inst, box)) == 3
    assert user.unseen() == 3  # fetched with PEEK: still unread for the team


async def test_a_restart_does_not_ingest_again(tmp_path: Path, database_url: str,
                                               user: ImapUser) -> None:
    first = Instance.open(make_settings(tmp_path, database_url), migrate=False)
    box = add_box(first, user)
    user.append(mail("one"))
    user.append(mail("two"))
    assert await poller(first, user).poll_once(account(first, box)) == 2
    first.close()

    again = Instance.open(make_settings(tmp_path, database_url), migrate=False)
    state = account(again, box)
    assert state.last_uid == 2 and state.uidvalidity is not None
    assert await poller(again, user).poll_once(state) == 0
    user.append(mail("three"))
    assert await poller(again, user).poll_once(account(again, box)) == 1
    assert len(inbound(again, box)) == 3
    again.close()


async def test_a_recreated_folder_is_read_again_without_duplicates(
        inst: Instance, user: ImapUser) -> None:
    user.create("Leads")
    box = add_box(inst, user, folder="Leads")
    a, b = mail("a"), mail("b")
    user.append(a, "Leads")
    user.append(b, "Leads")
    p = poller(inst, user)
    assert await p.poll_once(account(inst, box)) == 2
    before = account(inst, box).uidvalidity

    user.delete("Leads")
    user.create("Leads")
    deadline = time.monotonic() + 10
    while user.uidvalidity("Leads") == before:  # Dovecot's comes from the time of day
        assert time.monotonic() < deadline, "Dovecot kept the UIDVALIDITY"
        time.sleep(0.05)
        user.delete("Leads")
        user.create("Leads")
    for raw in (a, b, mail("c")):
        user.append(raw, "Leads")
    assert user.uidvalidity("Leads") != before
    assert await p.poll_once(account(inst, box)) == 1  # a and b again: duplicates
    assert sorted(m.subject for m in inbound(inst, box)) == ["a", "b", "c"]
    state = account(inst, box)
    assert state.uidvalidity == user.uidvalidity("Leads") and state.last_uid == 3


async def test_mail_older_than_the_mailbox_is_left_alone(inst: Instance,
                                                        user: ImapUser) -> None:
    box = add_box(inst, user)
    old = datetime.now(UTC) - timedelta(days=30)
    user.append(mail("from last month"), date=old)
    user.append(mail("today"))
    assert await poller(inst, user).poll_once(account(inst, box)) == 1
    assert [m.subject for m in inbound(inst, box)] == ["today"]


async def test_a_folder_name_outside_ascii_is_sent_in_modified_utf7(
        inst: Instance, user: ImapUser) -> None:
    assert encode_folder("Entwürfe") == '"Entw&APw-rfe"'
    assert encode_folder('A&B "x"') == '"A&-B \\"x\\""'
    user.create("Entw&APw-rfe")
    user.append(mail("umlaut"), "Entw&APw-rfe")
    box = add_box(inst, user, folder="Entwürfe")
    assert await poller(inst, user).poll_once(account(inst, box)) == 1


async def test_a_message_that_is_not_a_message_is_skipped(inst: Instance,
                                                         user: ImapUser) -> None:
    box = add_box(inst, user)
    user.append(b"just some words, no header at all\r\n")
    user.append(mail("fine"))
    assert await poller(inst, user).poll_once(account(inst, box)) == 1
    assert [m.subject for m in inbound(inst, box)] == ["fine"]
    assert account(inst, box).last_uid == 2  # not read again and again


async def test_a_reply_is_threaded_and_marks_the_sent_message_replied(
        inst: Instance, user: ImapUser) -> None:
    box = add_box(inst, user)
    sent = inst.sender.send_draft(inst.store.get_mailbox(box), Draft(
        from_addr="", to=["alice@example.org"], subject="Quote", text="hello",
        html="<p>hello</p>"))
    assert sent.replied_at is None
    user.append(mail("Re: Quote", In_Reply_To=sent.message_id,
                              References=sent.message_id))
    assert await poller(inst, user).poll_once(account(inst, box)) == 1
    [reply] = inbound(inst, box)
    assert reply.conversation_id == sent.conversation_id
    assert not reply.automatic
    assert inst.store.get_message(sent.id).replied_at is not None


async def test_the_sent_folder_adds_mail_sent_around_mailseen_untracked(
        inst: Instance, user: ImapUser) -> None:
    box = add_box(inst, user)
    inst.mailboxes.update(None, box, {"imap_sent_folder": " Sent "})
    user.create("Sent")
    # Sent through mailseen (the client filed its own copy too): it is ours already.
    ours = inst.sender.send_draft(inst.store.get_mailbox(box), Draft(
        from_addr="", to=["alice@example.org"], subject="Quote", text="hello",
        html="<p>hello</p>"))
    filed = (f"From: {USER}\r\nTo: alice@example.org\r\nSubject: Quote\r\n"
             f"Message-ID: {ours.message_id}\r\n\r\nhello\r\n").encode()
    user.append(filed, folder="Sent")
    # Sent from a phone straight through the provider, in the same conversation.
    around = (f"From: {USER}\r\nTo: alice@example.org\r\nSubject: Re: Quote\r\n"
              f"Message-ID: <phone-1@example.com>\r\nIn-Reply-To: {ours.message_id}\r\n"
              f"References: {ours.message_id}\r\n\r\nOne more thing\r\n").encode()
    user.append(around, folder="Sent")
    user.append(mail("a question"))
    p = poller(inst, user)
    assert await p.poll_once(account(inst, box)) == 1  # the inbox's one
    out = [m for m in inst.store.list_messages(mailbox_id=box, limit=50) if m.direction == "out"]
    [phone] = [m for m in out if m.message_id == "<phone-1@example.com>"]
    assert len(out) == 2 and phone.source == "imap-sent" and phone.status == "sent"
    assert not phone.tracked and phone.tracking_reason == "sent outside mailseen"
    assert phone.conversation_id == ours.conversation_id
    assert phone.envelope_to == ["alice@example.org"]
    state = account(inst, box)
    assert state.sent_folder == "Sent" and state.sent_last_uid == 2
    # Read again (a restart, a new poll): nothing twice.
    assert await p.poll_once(state) == 0
    assert len([m for m in inst.store.list_messages(mailbox_id=box, limit=50)
                if m.direction == "out"]) == 2


async def test_submitted_mail_is_filed_in_the_sent_folder_and_known_there(
        inst: Instance, user: ImapUser) -> None:
    import aiosmtplib

    from mailseen.receivers.imap import SentFiler
    from mailseen.receivers.submission import SubmissionServer

    box = add_box(inst, user)
    user.create("Sent")
    inst.mailboxes.update(None, box, {"imap_sent_folder": "Sent", "imap_sent_append": True,
                                      "tracking": "enabled"})
    alice = inst.accounts.create_user("alice@example.com", "correct horse battery",
                                      role="admin")
    _, password = inst.accounts.create_app_password(None, alice.id, "laptop")
    # Loopback without a certificate, as a webmail on the same machine would submit.
    server = SubmissionServer(inst.submissions(), port=0, hostname="mail.test",
                              file_sent=SentFiler(inst.mailboxes, ca_file=user.server.ca_file))
    port = await server.start()
    raw = (f"From: {USER}\r\nTo: bob@example.org\r\nSubject: Filed\r\n"
           "Content-Type: text/html\r\n\r\n<p>Hello</p>\r\n").encode()  # no Message-ID
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
        await smtp.login("alice@example.com", password)
        await smtp.sendmail(USER, ["bob@example.org", "carol@example.org"], raw)
    await server.stop()  # waits for the copy being filed
    [sent] = [m for m in inst.store.list_messages(mailbox_id=box) if m.direction == "out"]
    assert sent.tracked and sent.copies == 2
    with user.client() as imap:
        imap.select("Sent", readonly=True)
        _, found = imap.search(None, "ALL")
        [number] = found[0].split()
        _, fetched = imap.fetch(number, "(FLAGS RFC822)")
    filed = fetched[0][1]
    assert b"\\Seen" in fetched[0][0] and b"/t/" not in filed  # the untracked original
    assert sent.message_id.encode() in filed
    # Read back from the Sent folder, it is known as the message mailseen sent.
    await poller(inst, user).poll_once(account(inst, box))
    assert [m.id for m in inst.store.list_messages(mailbox_id=box)
            if m.direction == "out"] == [sent.id]


# -- statuses ------------------------------------------------------------------------------

async def test_a_wrong_password_says_login_failed(inst: Instance, lone_user: ImapUser,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user = lone_user
    box = add_box(inst, user, password="not-the-password")
    with pytest.raises(ImapError, match=r"^login failed: wrong username or password$"):
        await poller(inst, user).poll_once(account(inst, box))
    record = inst.store.get_mailbox(box)
    assert record.imap_status == "error"
    assert record.imap_error == "login failed: wrong username or password"
    assert record.imap_checked_at is not None
    assert "not-the-password" not in caplog.text


async def test_passwords_never_reach_the_log(inst: Instance, user: ImapUser,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    box = add_box(inst, user, tls="none")
    user.append(mail("x"))
    assert await poller(inst, user).poll_once(account(inst, box)) == 1
    assert "pa\"ss" not in caplog.text and "w\\\\ord" not in caplog.text


async def test_an_unreachable_port_says_cannot_connect(inst: Instance) -> None:
    port = free_port()
    box = inst.store.add_mailbox(MailboxIn(USER, imap_host="127.0.0.1", imap_port=port,
                                           imap_tls="implicit", imap_password="x")).id
    message = f"cannot connect to 127.0.0.1:{port}: Connection refused"
    with pytest.raises(ImapError) as err:
        await poller(inst).poll_once(account(inst, box))
    assert str(err.value) == message
    assert inst.store.get_mailbox(box).imap_error == message


async def test_a_missing_folder_is_named(inst: Instance, user: ImapUser) -> None:
    box = add_box(inst, user, folder="Nope")
    with pytest.raises(ImapError, match=r"^folder 'Nope' does not exist$"):
        await poller(inst, user).poll_once(account(inst, box))
    assert inst.store.get_mailbox(box).imap_error == "folder 'Nope' does not exist"


async def test_a_folder_name_with_a_line_break_is_refused(inst: Instance,
                                                          user: ImapUser) -> None:
    box = add_box(inst, user, folder="INBOX\r\nA1 DELETE INBOX")
    with pytest.raises(ImapError, match=r"^folder name .* is not valid$"):
        await poller(inst, user).poll_once(account(inst, box))


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_an_untrusted_certificate_is_refused(inst: Instance, user: ImapUser,
                                                   tls: str) -> None:
    box = add_box(inst, user, tls=tls)
    with pytest.raises(ImapError, match=r"^cannot connect to .*: TLS certificate not trusted"):
        await poller(inst, user, ca_file=None).poll_once(account(inst, box))


async def test_implicit_tls_against_a_plain_port_fails_clearly(inst: Instance,
                                                               user: ImapUser) -> None:
    port = user.server.imap_port
    box = add_box(inst, user, tls="implicit", port=port)
    with pytest.raises(ImapError, match=f"^cannot connect to 127.0.0.1:{port}: TLS failed"):
        await poller(inst, user).poll_once(account(inst, box))


# -- the long-running poller ---------------------------------------------------------------

async def _stop(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Stop the poller: it ends without its clock moving (no wait for a poll interval or a
    backoff to pass), after logging out of the server."""
    stop.set()
    await asyncio.wait_for(task, 10)


async def _dropped(port: int) -> None:
    """Check that no connection to ``port`` is left: the poller closed its socket itself,
    not waiting on the server (event-loop turns only, no time)."""
    for _ in range(10):
        if connections_to(port) == 0:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{connections_to(port)} connection(s) to {port} left open")


async def test_idle_picks_up_new_mail_within_seconds(inst: Instance, user: ImapUser,
                                                     clock: ManualClock) -> None:
    box = add_box(inst, user, tls="none")
    user.append(mail("before"))
    stop = asyncio.Event()
    task = asyncio.create_task(poller(inst, user, idle_seconds=60, poll_seconds=60)
                               .run(stop))
    await clock.until_sleeping(2)  # the accounts' re-read, and the IDLE the server took
    assert clock.sleeping == [60, 60]
    assert len(inbound(inst, box)) == 1
    await asyncio.to_thread(user.append, mail("while idling"))
    await eventually(lambda: len(inbound(inst, box)) == 2)  # the clock stands still: IDLE
    await _stop(task, stop)
    assert user.server.plain_logins(user.name) == 1  # one connection throughout


async def test_idle_is_renewed_on_the_same_connection_when_its_period_ends(
        inst: Instance, user: ImapUser, clock: ManualClock) -> None:
    box = add_box(inst, user, tls="none")
    stop = asyncio.Event()
    task = asyncio.create_task(poller(inst, user, idle_seconds=60, poll_seconds=600)
                               .run(stop))
    await clock.until_sleeping(2)
    assert clock.sleeping == [60, 600]  # in IDLE for 60 s; the accounts re-read in 600
    clock.advance(60)
    await clock.until_sleeping(2)  # DONE, a look at the folder, and IDLE again
    assert clock.sleeping == [60, 540]
    assert inst.store.get_mailbox(box).imap_checked_at == clock.now()
    await asyncio.to_thread(user.append, mail("after renewal"))
    await eventually(lambda: len(inbound(inst, box)) == 1)
    await _stop(task, stop)
    assert user.server.plain_logins(user.name) == 1


async def test_a_dropped_connection_is_opened_again_without_an_error(
        inst: Instance, user: ImapUser, clock: ManualClock) -> None:
    box = add_box(inst, user, tls="none")
    stop = asyncio.Event()
    p = poller(inst, user, idle_seconds=60, poll_seconds=60, retry_base=60, retry_max=60)
    task = asyncio.create_task(p.run(stop))
    await clock.until_sleeping(2)  # in IDLE
    assert inst.store.get_mailbox(box).imap_status == "ok"
    await asyncio.to_thread(user.server.kick, user.name)
    await asyncio.to_thread(user.append, mail("after the drop"))
    await eventually(lambda: len(inbound(inst, box)) == 1)  # not after the 60 s backoff
    assert clock.monotonic() == 0
    await _stop(task, stop)
    record = inst.store.get_mailbox(box)
    assert record.imap_status == "ok" and record.imap_error is None
    assert user.server.plain_logins(user.name) == 2


async def test_cancelling_run_stops_at_once(inst: Instance, user: ImapUser,
                                            clock: ManualClock) -> None:
    box = add_box(inst, user)
    task = asyncio.create_task(poller(inst, user).run(asyncio.Event()))
    await clock.until_sleeping(2)  # in IDLE
    assert inst.store.get_mailbox(box).imap_status == "ok"
    assert connections_to(user.server.imaps_port) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Dropped, not logged out: no round trip to the server, nothing left running.
    await _dropped(user.server.imaps_port)


async def test_cancelling_a_slow_tls_login_leaves_no_connection_open(
        inst: Instance, lone_user: ImapUser, clock: ManualClock) -> None:
    port = lone_user.server.imaps_port
    add_box(inst, lone_user, password="wrong")
    p = poller(inst, lone_user)
    task = asyncio.create_task(p.run(asyncio.Event()))
    await clock.until_sleeping(2)  # the first login failed: backing off
    assert inst.store.list_mailboxes()[0].imap_status == "error"
    clock.advance(p.backoff(1))
    # Dovecot holds this second login back for seconds after a failure.
    await eventually(lambda: connections_to(port) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Dropped at once, not left waiting for a TLS goodbye the server is slow to send.
    await _dropped(port)


async def test_without_idle_the_poller_polls(inst: Instance, clock: ManualClock) -> None:
    no_idle = Dovecot(PASSWORD, users=1, extra_config=(
        "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+\n")).start()
    try:
        user = no_idle.add_user()
        box = add_box(inst, user, tls="none")
        stop = asyncio.Event()
        p = poller(inst, user, idle_seconds=60, poll_seconds=30)
        task = asyncio.create_task(p.run(stop))
        await clock.until_sleeping(2)  # logged out, to look again in 30 s
        assert clock.sleeping == [30, 30]
        assert inst.store.get_mailbox(box).imap_status == "ok"
        await asyncio.to_thread(user.append, mail("polled"))
        clock.advance(29)
        await asyncio.sleep(0)
        assert inbound(inst, box) == []  # not looked at before the interval
        clock.advance(1)
        await eventually(lambda: len(inbound(inst, box)) == 1)
        await _stop(task, stop)
        assert inst.store.get_mailbox(box).imap_status == "ok"
        assert no_idle.plain_logins(user.name) >= 2  # a new connection each poll
    finally:
        no_idle.stop()


async def test_run_picks_up_a_new_account_and_a_changed_password(
        inst: Instance, lone_user: ImapUser, clock: ManualClock) -> None:
    user = lone_user
    stop = asyncio.Event()
    p = poller(inst, user, idle_seconds=60, poll_seconds=60, retry_base=60, retry_max=60)
    task = asyncio.create_task(p.run(stop))
    await clock.until_sleeping()  # no accounts yet: waiting to look again
    box = add_box(inst, user, password="wrong")
    p.refresh()
    await eventually(lambda: inst.store.get_mailbox(box).imap_status == "error")
    assert inst.store.get_mailbox(box).imap_error == "login failed: wrong username or password"
    # Not retried for a minute, but a changed password is a new account: read at once.
    await asyncio.to_thread(user.append, mail("after the fix"))  # Dovecot's penalty: slow
    inst.store.update_mailbox(box, lambda m: replace(m, imap_password=PASSWORD))
    p.refresh()
    await eventually(lambda: len(inbound(inst, box)) == 1
                     and inst.store.get_mailbox(box).imap_status == "ok")
    assert clock.monotonic() == 0
    await _stop(task, stop)


class HangUp:
    """A TCP server that accepts and at once closes, counting connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


async def test_run_backs_off_on_errors_and_says_why(inst: Instance,
                                                   clock: ManualClock) -> None:
    server = HangUp()
    box = inst.store.add_mailbox(MailboxIn(USER, imap_host="127.0.0.1", imap_port=server.port,
                                           imap_tls="none", imap_password="x")).id
    stop = asyncio.Event()
    p = poller(inst, retry_base=5, retry_max=20)
    assert [p.backoff(n) for n in (1, 2, 3, 4, 10)] == [5, 10, 20, 20, 20]
    task = asyncio.create_task(p.run(stop))
    for attempt, backoff in enumerate([5, 10, 20, 20], start=1):
        await clock.until_sleeping(2)  # the accounts' re-read, and this backoff
        assert server.count == attempt and clock.sleeping[0] == backoff
        clock.advance(backoff - 1)
        await asyncio.sleep(0)
        assert server.count == attempt  # not a moment before the backoff ends
        clock.advance(1)
    await clock.until_sleeping(2)
    assert server.count == 5  # one attempt per backoff, not hundreds
    await _stop(task, stop)
    server.close()
    record = inst.store.get_mailbox(box)
    assert record.imap_status == "error"
    assert record.imap_error == (f"cannot connect to 127.0.0.1:{server.port}: "
                                 "the server closed the connection")


async def test_run_reports_an_unreachable_server(inst: Instance) -> None:
    port = free_port()
    box = inst.store.add_mailbox(MailboxIn(USER, imap_host="127.0.0.1", imap_port=port,
                                           imap_tls="starttls", imap_password="x")).id
    stop = asyncio.Event()
    task = asyncio.create_task(poller(inst).run(stop))
    await eventually(lambda: inst.store.get_mailbox(box).imap_status == "error")
    assert inst.store.get_mailbox(box).imap_error == (
        f"cannot connect to 127.0.0.1:{port}: Connection refused")
    await _stop(task, stop)
