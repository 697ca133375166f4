"""Delivery: the queue in the database, the SMTP relay transport against a real aiosmtpd
server (STARTTLS, implicit TLS, AUTH), the local outbox, retries and failures. Time is a
manual clock the tests move: backoffs and leases are the production ones."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtplib.protocol import LINE_ENDINGS_REGEX, PERIOD_REGEX

from mailseen.clock import SYSTEM, Clock, ManualClock
from mailseen.core.compose import Draft
from mailseen.errors import InvalidInput, MailseenError
from mailseen.records import Envelope, MailboxIn, Outcome, Relay
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance
from mailseen.transports.smtp import SmtpTransport, _on_the_wire

from .conftest import eventually, make_settings
from .smtp_server import RecordingHandler, SmtpServer
from .web_client import PASSWORD, WebClient

USERS = {"relay-user": "s3cret pass"}


@pytest.fixture
def smtp(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    mode = getattr(request, "param", "starttls")
    server = SmtpServer(mode, USERS).start(tmp_path)
    yield server
    server.stop()


def _open(tmp_path: Path, database_url: str, smtp: SmtpServer | None = None,
          clock: Clock = SYSTEM) -> Instance:
    extra = {"ca_file": smtp.ca_file} if smtp else {}
    return Instance.open(make_settings(tmp_path, database_url, **extra), migrate=False,
                         clock=clock)


def _smtp_box(inst: Instance, smtp: SmtpServer, tls: str = "starttls",
              password: str = "s3cret pass", port: int | None = None) -> int:
    box = inst.store.add_mailbox(MailboxIn(
        "sales@example.com", "Sales", transport="smtp", smtp_host="127.0.0.1",
        smtp_port=port or smtp.port, smtp_tls=tls,  # type: ignore[arg-type]
        smtp_username="relay-user", smtp_password=password, tracking="enabled"))
    return box.id


def _parts_without_pixel(raw: bytes) -> list[str]:
    """Each body part's decoded text, with our pixel's <img> taken out."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return [re.sub(r'<img src="[^"]*/t/[A-Za-z0-9_-]+\.gif"[^>]*>\s*', "",
                   part.get_content()) for part in parsed.walk()
            if not part.is_multipart()]


def _draft(**kw: object) -> Draft:
    base: dict[str, object] = {"from_addr": "", "to": ["alice@example.org"],
                               "bcc": ["boss@example.net"], "subject": "Quote",
                               "text": "hello", "html": "<p>hello</p>"}
    base.update(kw)
    return Draft(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("smtp", ["starttls", "implicit"], indirect=True)
async def test_smtp_relay_delivers_with_tls_and_auth(tmp_path: Path, database_url: str,
                                                    smtp: SmtpServer) -> None:
    inst = _open(tmp_path, database_url, smtp)
    box = inst.store.get_mailbox(_smtp_box(inst, smtp, tls=smtp.mode))
    msg = inst.sender.send_draft(box, _draft(cc=["carol@example.org"]))
    assert await inst.worker().drain() == 3  # tracked: one copy per recipient
    by_rcpt = {tuple(m.rcpt_tos): m for m in smtp.messages}
    assert sorted(by_rcpt) == [("alice@example.org",), ("boss@example.net",),
                               ("carol@example.org",)]
    stored = inst.store.get_raw(msg.id)
    assert b"/t/" not in stored  # kept as written; each copy gets its pixel on the way out
    pixels = set()
    for got in smtp.messages:
        assert got.authenticated_as == "relay-user"
        assert got.mail_from == "sales@example.com"
        head = got.data.partition(b"\r\n\r\n")[0]
        assert head == stored.partition(b"\r\n\r\n")[0]  # headers byte for byte
        parsed = email.message_from_bytes(got.data, policy=email.policy.default)
        assert parsed["Bcc"] is None  # Bcc recipients get it without a Bcc header
        assert parsed["Message-ID"] == msg.message_id  # one Message-ID: replies thread
        assert parsed["To"] == "alice@example.org" and parsed["Cc"] == "carol@example.org"
        [pixel] = re.findall(rb"/t/[A-Za-z0-9_-]+\.gif", got.data)
        pixels.add(pixel)
        # The copy is the stored message with its pixel in, and nothing else changed.
        assert _parts_without_pixel(got.data) == _parts_without_pixel(stored)
    assert len(pixels) == 3  # a pixel of its own for each recipient
    done = inst.store.get_message(msg.id)
    assert done.status == "sent" and done.sent_at is not None and done.attempts == 1
    inst.close()


HOSTILE_ID = "<a =?UTF-8?Q?=0ABcc:_spy@evil.example=0AX-Pad:?= b@example.org>"


@pytest.mark.parametrize("smtp", ["plain"], indirect=True)
def test_a_reply_to_a_hostile_message_id_reaches_the_chosen_recipient_only(
        tmp_path: Path, database_url: str, smtp: SmtpServer) -> None:
    """The reply form sent as it came, to a message whose Message-ID hides an encoded Bcc:
    the relay is asked for the sender of that message, nobody else."""
    inst = _open(tmp_path, database_url)
    box = inst.store.add_mailbox(MailboxIn("support@example.com", transport="smtp",
                                           smtp_host="127.0.0.1", smtp_port=smtp.port,
                                           smtp_tls="none"))
    raw = (f"From: carla@example.org\r\nTo: support@example.com\r\nSubject: Help\r\n"
           f"Message-ID: {HOSTILE_ID}\r\nReferences: {HOSTILE_ID}\r\n\r\nHelp!\r\n")
    asked = Ingestor(inst.store, inst.sender).ingest(box, raw.encode(), "imap").message
    user = inst.accounts.create_user("m@example.com", PASSWORD)
    inst.store.set_memberships(user.id, [box.id])
    action = f"/conversations/{asked.conversation_id}/reply"
    with WebClient(inst) as web:
        web.sign_in("m@example.com")
        page = web.get(action)
        sent = web.client.post(action, data=page.form(action))
    assert sent.status_code == 200, sent.text
    assert asyncio.run(inst.worker().drain()) == 1
    [got] = smtp.messages
    assert got.rcpt_tos == ["carla@example.org"]
    assert b"evil" not in got.data
    inst.close()


@pytest.mark.parametrize("smtp", ["plain"], indirect=True)
@pytest.mark.parametrize("hostile", [
    {"subject": "=?UTF-8?Q?x=0ABcc:_evil@evil.example?="},
    {"from_name": "=?UTF-8?Q?Sales=0ABcc:_evil@evil.example?="},
    {"to": ["=?UTF-8?Q?x=0ABcc=3A_evil=40evil.example=0A?= <alice@example.org>"]},
    {"in_reply_to": HOSTILE_ID}, {"references": HOSTILE_ID},
])
def test_a_value_hiding_a_bcc_never_adds_an_envelope_recipient(
        tmp_path: Path, database_url: str, smtp: SmtpServer,
        hostile: dict[str, object]) -> None:
    inst = _open(tmp_path, database_url)
    box = inst.store.add_mailbox(MailboxIn("sales@example.com", "Sales", transport="smtp",
                                           smtp_host="127.0.0.1", smtp_port=smtp.port,
                                           smtp_tls="none"))
    with pytest.raises(InvalidInput) as refused:
        inst.sender.send_draft(box, _draft(**hostile))
    assert refused.value.field == next(iter(hostile))
    inst.sender.send_draft(box, _draft())  # the same draft without the hostile value
    assert asyncio.run(inst.worker().drain()) == 1
    assert [sorted(m.rcpt_tos) for m in smtp.messages] == [
        ["alice@example.org", "boss@example.net"]]
    inst.close()


async def test_temporary_failure_retries_with_backoff_then_delivers(
        tmp_path: Path, database_url: str, smtp: SmtpServer, clock: ManualClock) -> None:
    inst = _open(tmp_path, database_url, smtp, clock)
    box = inst.store.get_mailbox(_smtp_box(inst, smtp))
    msg = inst.sender.send_draft(box, _draft(bcc=[]))
    smtp.handler.reply = "451 4.3.0 mailbox busy, try later"
    worker = inst.worker()
    assert await worker.drain() == 1
    queued = inst.store.get_message(msg.id)
    assert queued.status == "queued" and queued.attempts == 1
    assert "451" in (queued.last_error or "")
    assert queued.next_attempt_at == clock.now() + timedelta(seconds=worker.backoff(1))
    assert await worker.drain() == 0  # not due yet: backoff is respected
    clock.advance(worker.backoff(1) - 1)
    assert await worker.drain() == 0  # a second before it is due
    smtp.handler.reply = None
    clock.advance(1)
    assert await worker.drain() == 1
    sent = inst.store.get_message(msg.id)
    assert sent.status == "sent" and sent.attempts == 2
    assert len(smtp.messages) == 1
    inst.close()


def test_backoff_doubles_up_to_the_cap(tmp_path: Path, database_url: str) -> None:
    inst = _open(tmp_path, database_url)
    w = inst.worker()
    assert [w.backoff(n) for n in (1, 2, 3, 10)] == [30, 60, 120, 3600]
    inst.close()


async def test_permanent_failure_marks_the_message_failed_with_the_reply(
        tmp_path: Path, database_url: str, smtp: SmtpServer) -> None:
    inst = _open(tmp_path, database_url, smtp)
    box = inst.store.get_mailbox(_smtp_box(inst, smtp))
    msg = inst.sender.send_draft(box, _draft(bcc=[]))
    smtp.handler.reply = "554 5.7.1 message rejected as spam"
    assert await inst.worker().drain() == 1
    failed = inst.store.get_message(msg.id)
    assert failed.status == "failed"
    assert failed.last_error == "554 5.7.1 message rejected as spam"
    inst.close()


async def test_wrong_password_is_a_permanent_failure(tmp_path: Path, database_url: str,
                                                     smtp: SmtpServer) -> None:
    inst = _open(tmp_path, database_url, smtp)
    box = inst.store.get_mailbox(_smtp_box(inst, smtp, password="wrong"))
    msg = inst.sender.send_draft(box, _draft())
    await inst.worker().drain()
    failed = inst.store.get_message(msg.id)
    assert failed.status == "failed"
    assert (failed.last_error or "").startswith(
        f"the relay at 127.0.0.1:{smtp.port} refused the user name or password (535 ")
    assert smtp.messages == []
    inst.close()


async def test_unreachable_relay_retries_then_gives_up(tmp_path: Path, database_url: str,
                                                       clock: ManualClock) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inst = _open(tmp_path, database_url, clock=clock)
    box = inst.store.add_mailbox(MailboxIn("ops@example.com", transport="smtp",
                                           smtp_host="127.0.0.1", smtp_port=port,
                                           smtp_tls="none"))
    msg = inst.sender.send_draft(box, _draft())
    worker = inst.worker()
    for _ in range(inst.settings.max_attempts):
        assert await worker.drain() == 1
        clock.advance(worker.retry_max)
    failed = inst.store.get_message(msg.id)
    assert failed.status == "failed"
    assert failed.attempts == inst.settings.max_attempts
    assert (failed.last_error or "").startswith("gave up after 3 attempts")
    inst.close()


async def test_outbox_writes_eml_files_named_after_the_message(
        tmp_path: Path, database_url: str) -> None:
    inst = _open(tmp_path, database_url)
    box = inst.store.add_mailbox(MailboxIn("support@example.com"))
    msg = inst.sender.send_draft(box, _draft())
    assert await inst.worker().drain() == 1
    [path] = inst.settings.outbox_dir.glob("*.eml")
    assert path.name.endswith(f"-{msg.id}.eml")
    assert path.read_bytes() == inst.store.get_raw(msg.id)
    inst.close()


async def test_a_claim_whose_worker_died_is_delivered_after_its_lease(
        tmp_path: Path, database_url: str, clock: ManualClock) -> None:
    inst = _open(tmp_path, database_url, clock=clock)
    box = inst.store.add_mailbox(MailboxIn("support@example.com"))
    msg = inst.sender.send_draft(box, _draft())
    # A worker claims it and dies before finishing: the row stays "sending".
    worker = inst.worker()
    claim = inst.store.claim_next(worker.lease)
    assert claim is not None and claim.message.id == msg.id
    assert inst.store.claim_next(worker.lease) is None  # leased: nobody else takes it
    clock.advance(worker.lease.total_seconds() - 1)
    assert await worker.drain() == 0  # a second before the lease runs out
    clock.advance(2)
    assert await worker.drain() == 1
    done = inst.store.get_message(msg.id)
    assert done.status == "sent" and done.attempts == 2
    inst.close()


async def test_concurrent_workers_deliver_each_message_exactly_once(
        tmp_path: Path, database_url: str, smtp: SmtpServer) -> None:
    inst = _open(tmp_path, database_url, smtp)
    box = inst.store.get_mailbox(_smtp_box(inst, smtp))
    ids = [inst.sender.send_draft(box, _draft(subject=f"n{i}", bcc=[])).id for i in range(30)]
    others = [_open(tmp_path, database_url, smtp) for _ in range(3)]
    counts = await asyncio.gather(*[o.worker().drain() for o in others])
    assert sum(counts) == 30
    subjects = sorted(email.message_from_bytes(m.data)["Subject"] for m in smtp.messages)
    assert subjects == sorted(f"n{i}" for i in range(30))
    assert all(inst.store.get_message(i).status == "sent" for i in ids)
    for o in [inst, *others]:
        o.close()


def test_claims_that_lose_races_never_report_an_empty_queue_early(
        tmp_path: Path, database_url: str) -> None:
    """None from a claim means nothing is due: a worker told None idles for a second and
    `mailseen worker --once` stops. A claim that loses races tries the next message."""
    inst = _open(tmp_path, database_url)
    box = inst.store.add_mailbox(MailboxIn("support@example.com"))
    ids = [inst.sender.send_draft(box, _draft(subject=f"n{i}", bcc=[])).id for i in range(80)]
    claimed: list[int] = []
    left_when_told_none: list[int] = []

    def claim_until_none() -> None:
        while (claim := inst.store.claim_next(timedelta(minutes=5))) is not None:
            claimed.append(claim.message.id)
        left_when_told_none.append(inst.store.queue_counts().get("queued", 0))

    threads = [threading.Thread(target=claim_until_none) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == ids  # each claimed once …
    assert left_when_told_none == [0] * 8  # … and nobody was told "empty" while some waited
    inst.close()


def test_a_claim_gives_up_on_a_message_another_session_keeps_locked(
        tmp_path: Path, database_url: str) -> None:
    """Due copies that other workers are claiming are skipped and waited for briefly; one
    locked for long (a stalled session) is neither spun on for ever nor claimed twice."""
    inst = _open(tmp_path, database_url)
    box = inst.store.add_mailbox(MailboxIn("support@example.com"))
    mid = inst.sender.send_draft(box, _draft()).id
    if not inst.db.is_sqlite:  # SQLite has one writer: no row locks to skip
        with inst.db.engine.connect() as other:
            other.exec_driver_sql(f"SELECT id FROM copies WHERE message_id = {mid} FOR UPDATE")
            result: list[object] = []
            claimer = threading.Thread(
                target=lambda: result.append(inst.store.claim_next(timedelta(minutes=5))))
            claimer.start()
            claimer.join(20)
            assert not claimer.is_alive() and result == [None]
            other.rollback()
    claim = inst.store.claim_next(timedelta(minutes=5))  # once free, it is claimed
    assert claim is not None and claim.message.id == mid
    inst.close()


async def test_worker_stops_on_request_after_finishing(tmp_path: Path, database_url: str,
                                                       clock: ManualClock) -> None:
    inst = _open(tmp_path, database_url, clock=clock)
    box = inst.store.add_mailbox(MailboxIn("support@example.com"))
    msg = inst.sender.send_draft(box, _draft())
    stop = asyncio.Event()
    worker = inst.worker()
    task = asyncio.create_task(worker.run(stop))
    await clock.until_sleeping()  # idle: the queue is empty
    assert inst.store.get_message(msg.id).status == "sent"
    stop.set()  # ends the idle wait at once: the clock does not move
    await asyncio.wait_for(task, 5)
    inst.close()


async def test_a_running_worker_looks_again_after_its_idle_poll_and_on_wake(
        tmp_path: Path, database_url: str, smtp: SmtpServer, clock: ManualClock) -> None:
    inst = _open(tmp_path, database_url, smtp, clock)
    box = inst.store.get_mailbox(_smtp_box(inst, smtp))
    smtp.handler.reply = "451 4.3.0 mailbox busy, try later"
    first = inst.sender.send_draft(box, _draft(subject="first"))
    stop = asyncio.Event()
    worker = inst.worker()
    task = asyncio.create_task(worker.run(stop))
    await clock.until_sleeping()
    assert clock.sleeping == [worker.idle_poll]
    assert inst.store.get_message(first.id).status == "queued"  # to retry in 30 s
    smtp.handler.reply = None
    for _ in range(int(worker.backoff(1) / worker.idle_poll)):  # a look every idle_poll
        clock.advance(worker.idle_poll)
        await clock.until_sleeping()
    assert inst.store.get_message(first.id).status == "sent"

    second = inst.sender.send_draft(box, _draft(subject="second"))
    worker.wake()  # what the web app does when a message is queued
    await eventually(lambda: inst.store.get_message(second.id).status == "sent")
    assert clock.monotonic() == worker.backoff(1)  # sent without the clock moving
    stop.set()
    await asyncio.wait_for(task, 5)
    inst.close()


# -- kept connections, batches, paused relays ---------------------------------------------------

class DroppingHandler(RecordingHandler):
    """A relay that closes the connection after every ``every`` messages of a session, once
    its 250 is out (as relays that cap messages per connection do), and counts the DATA
    commands it answers."""

    def __init__(self, every: int = 0) -> None:
        super().__init__()
        self.every = every
        self.data_commands = 0
        self.per_session: dict[int, int] = {}

    async def handle_DATA(self, server: Any, session: Session, envelope: SmtpEnvelope) -> str:
        self.data_commands += 1
        reply = await super().handle_DATA(server, session, envelope)
        n = self.per_session[id(session)] = self.per_session.get(id(session), 0) + 1
        if self.every and n % self.every == 0 and reply.startswith("250"):
            asyncio.get_running_loop().call_soon(server.transport.close)
        return reply


def _relay(tmp_path: Path, handler: RecordingHandler, name: str = "relay") -> SmtpServer:
    server = SmtpServer("none")
    server.handler = handler
    (tmp_path / name).mkdir()
    return server.start(tmp_path / name)


def _plain_box(inst: Instance, server: SmtpServer, address: str = "sales@example.com") -> int:
    return inst.store.add_mailbox(MailboxIn(
        address, transport="smtp", smtp_host="127.0.0.1", smtp_port=server.port,
        smtp_tls="none")).id


def _queue(inst: Instance, box_id: int, count: int) -> list[int]:
    box = inst.store.get_mailbox(box_id)
    return [inst.sender.send_draft(box, _draft(subject=f"n{i}", to=[f"c{i}@example.org"],
                                               bcc=[])).id for i in range(count)]


@pytest.mark.parametrize(("settings", "connections"), [
    ({}, 1),  # one connection carries the whole queue
    ({"smtp_messages_per_connection": 2}, 4),  # a new one after every two messages
    ({"smtp_connections_per_relay": 2}, 2),  # two at once, each carrying half
    # more at once than keep a database connection each for their marks
    ({"smtp_connections_per_relay": 5}, 5),
    ({"delivery_batch": 3}, 1),  # kept from one batch to the next
])
async def test_one_kept_connection_carries_message_after_message(
        tmp_path: Path, database_url: str, settings: dict[str, int], connections: int) -> None:
    relay = _relay(tmp_path, DroppingHandler())
    inst = Instance.open(make_settings(tmp_path, database_url, **settings), migrate=False)
    try:
        ids = _queue(inst, _plain_box(inst, relay), 7)
        assert await inst.worker().drain() == 7
        assert relay.connections == connections
        assert sorted(email.message_from_bytes(m.data)["Subject"] for m in relay.messages) == [
            f"n{i}" for i in range(7)]
        assert all((m := inst.store.get_message(i)).status == "sent" and m.attempts == 1
                   for i in ids)
        # every database connection the worker took for its marks was given back
        assert "Current Checked out connections: 0" in inst.db.engine.pool.status()
    finally:
        inst.close()
        relay.stop()


async def test_a_running_worker_keeps_its_connection_until_it_has_been_idle_a_while(
        tmp_path: Path, database_url: str, clock: ManualClock) -> None:
    relay = _relay(tmp_path, DroppingHandler())
    inst = Instance.open(make_settings(tmp_path, database_url, smtp_idle_seconds=10),
                         migrate=False, clock=clock)
    box = _plain_box(inst, relay)
    worker = inst.worker()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(3):
            [mid] = _queue(inst, box, 1)
            worker.wake()
            await eventually(lambda mid=mid: inst.store.get_message(mid).status == "sent")
            await clock.until_sleeping()
            clock.advance(worker.idle_poll)  # a little idle time between messages
        assert relay.connections == 1  # kept from one message to the next
        for _ in range(10):  # ten seconds with nothing to send: the worker lets it go
            await clock.until_sleeping()
            clock.advance(worker.idle_poll)
        await clock.until_sleeping()
        [mid] = _queue(inst, box, 1)
        worker.wake()
        await eventually(lambda: inst.store.get_message(mid).status == "sent")
        assert relay.connections == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        inst.close()
        relay.stop()
    assert len(relay.messages) == 4


async def test_a_relay_that_drops_the_connection_mid_queue_gets_a_new_one(
        tmp_path: Path, database_url: str) -> None:
    relay = _relay(tmp_path, DroppingHandler(every=3))
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False)
    try:
        ids = _queue(inst, _plain_box(inst, relay), 8)
        assert await inst.worker().drain() == 8
        # Nothing failed and nothing was sent twice: each drop cost a new connection only.
        assert relay.connections == 3
        assert len(relay.messages) == 8 == len({m.data for m in relay.messages})
        assert all((m := inst.store.get_message(i)).status == "sent" and m.attempts == 1
                   for i in ids)
    finally:
        inst.close()
        relay.stop()


async def test_a_throttling_relay_is_paused_not_hammered_and_other_relays_go_on(
        tmp_path: Path, database_url: str, clock: ManualClock) -> None:
    busy, quiet = DroppingHandler(), DroppingHandler()
    busy.reply = "451 4.7.1 too many messages, slow down"
    throttling, healthy = _relay(tmp_path, busy, "busy"), _relay(tmp_path, quiet, "quiet")
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    try:
        held = _queue(inst, _plain_box(inst, throttling), 6)
        others = _queue(inst, _plain_box(inst, healthy, "ops@example.com"), 3)
        worker = inst.worker()
        # Two refusals in a row and the relay is paused: its other copies wait, no attempt
        # spent on them; the other relay's messages go.
        assert await worker.drain() == 2 + 3
        assert busy.data_commands == 2
        assert all(inst.store.get_message(i).status == "sent" for i in others)
        pause_end = clock.now() + timedelta(seconds=worker.backoff(1))
        waiting = [inst.store.get_message(i) for i in held]
        assert all(m.status == "queued" and m.next_attempt_at == pause_end for m in waiting)
        assert sorted(m.attempts for m in waiting) == [0, 0, 0, 0, 1, 1]
        clock.advance(worker.backoff(1) - 1)
        assert await worker.drain() == 0  # not before the pause ends
        busy.reply = None
        clock.advance(1)
        assert await worker.drain() == 6
        assert busy.data_commands == 2 + 6
        assert all(inst.store.get_message(i).status == "sent" for i in held)
    finally:
        inst.close()
        throttling.stop()
        healthy.stop()


async def test_an_unreachable_relay_is_paused_at_the_first_failure(
        tmp_path: Path, database_url: str, clock: ManualClock) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    try:
        box = inst.store.add_mailbox(MailboxIn("ops@example.com", transport="smtp",
                                               smtp_host="127.0.0.1", smtp_port=port,
                                               smtp_tls="none"))
        ids = _queue(inst, box.id, 4)
        worker = inst.worker()
        assert await worker.drain() == 1  # one try; the relay's trouble holds the rest
        assert sorted(inst.store.get_message(i).attempts for i in ids) == [0, 0, 0, 1]
        clock.advance(worker.backoff(1))
        assert await worker.drain() == 1  # one try again, the pause twice as long
        clock.advance(worker.backoff(1))
        assert await worker.drain() == 0
        clock.advance(worker.backoff(2) - worker.backoff(1))
        assert await worker.drain() == 1
    finally:
        inst.close()


class _DataCountingServer(SmtpServer):
    """A relay counting the DATA commands it is given (before the message itself)."""

    data_commands = 0

    def _session(self) -> SMTP:
        server = self

        class Counting(SMTP):
            async def smtp_DATA(self, arg: str) -> None:
                server.data_commands += 1
                await super().smtp_DATA(arg)

        self.connections += 1
        return Counting(self.handler, hostname="mail.test", **self.kwargs)


async def test_the_envelope_goes_while_the_commit_runs_and_the_message_only_after_it(
        tmp_path: Path) -> None:
    """A kept session gives the relay MAIL, RCPT and DATA while the worker's commit runs,
    and the message only once the commit says go: when it says not to send, or fails,
    the connection is hung up in the middle of DATA (the relay discards the transaction:
    nothing is delivered) and the next message goes on a new connection."""
    relay = _DataCountingServer("none").start(tmp_path)
    session = SmtpTransport(timeout=10).session()
    where = Relay("127.0.0.1", relay.port, "none", None, None)
    try:
        async def commit(go: bool, n: int) -> bool:
            # the commit ends only once the relay has had DATA for this message, the n-th
            await eventually(lambda: relay.data_commands == n)
            return go

        async def broken() -> bool:
            raise MailseenError("the database went away")

        def envelope(n: int) -> Envelope:
            return Envelope("sales@example.com", ("erin@example.org",),
                            f"Subject: {n}\r\n\r\n.leading dot\r\nbody {n}\r\n".encode(),
                            f"key-{n}")

        go = asyncio.ensure_future
        assert await session.deliver(envelope(1), where, ready=go(commit(True, 1)))
        assert await session.deliver(envelope(2), where, ready=go(commit(False, 2))) is None
        with pytest.raises(MailseenError):
            await session.deliver(envelope(3), where, ready=go(broken()))
        assert await session.deliver(envelope(4), where, ready=go(commit(True, 4)))
        await eventually(lambda: len(relay.messages) == 2)
        assert [m.data.splitlines()[0] for m in relay.messages] == [
            b"Subject: 1", b"Subject: 4"]
        assert b"\r\n.leading dot\r\n" in relay.messages[0].data  # as written, unstuffed
        for raw in (b"a\r\n.b\r\n", b"a\n.b\n\n", b".a\rb\r\n\r\r\n..c", b"a\r\nb"):
            # on the wire as aiosmtplib's own DATA would send it
            wire = PERIOD_REGEX.sub(b"..", LINE_ENDINGS_REGEX.sub(b"\r\n", raw))
            wire += b"" if wire.endswith(b"\r\n") else b"\r\n"
            assert _on_the_wire(raw) == wire + b".\r\n"
        assert relay.data_commands == 4
        assert relay.connections == 3  # one, then a new one after each hang-up
    finally:
        await session.close()
        relay.stop()


class _StopAtFirst(RecordingHandler):
    """A relay that asks the worker to stop once it has the first message."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        super().__init__()
        self.loop, self.stop = loop, stop

    async def handle_DATA(self, server: Any, session: Session, envelope: SmtpEnvelope) -> str:
        self.loop.call_soon_threadsafe(self.stop.set)
        return await super().handle_DATA(server, session, envelope)


async def test_the_batch_reserved_ahead_is_given_back_when_the_worker_stops(
        tmp_path: Path, database_url: str) -> None:
    """A running worker with a full batch reserves the next one while it delivers; when it
    stops, that one is given back, due again at once for any worker, not held until its
    reservation runs out (five minutes)."""
    stop = asyncio.Event()
    relay = _relay(tmp_path, _StopAtFirst(asyncio.get_running_loop(), stop))
    inst = Instance.open(make_settings(tmp_path, database_url, delivery_batch=2),
                         migrate=False)
    try:
        ids = _queue(inst, _plain_box(inst, relay), 6)
        worker = inst.worker()
        await asyncio.wait_for(worker.run(stop), 20)
        sent = [i for i in ids if inst.store.get_message(i).status == "sent"]
        assert len(sent) == 1  # the one in hand when asked to stop
        assert await inst.worker().drain() == 5  # the rest at once, reserved ahead or not
        assert len(relay.messages) == 6 == len({m.data for m in relay.messages})
    finally:
        inst.close()
        relay.stop()


def test_a_copy_whose_reservation_ran_out_is_not_started_by_its_first_worker(
        tmp_path: Path, database_url: str, clock: ManualClock) -> None:
    """Reserved, then taken over by another worker once the reservation ran out: the first
    worker's start of it (recording its last copy in the same call) is refused and leaves
    the message as the other worker has it, on both backends' ways of writing marks."""
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    try:
        box = inst.store.add_mailbox(MailboxIn("sales@example.com"))
        first, second = _queue(inst, box.id, 2)
        lease = timedelta(minutes=5)
        old = {c.message.id: c for c in inst.store.reserve(10, lease)}
        assert inst.store.advance(None, old[first], lease)  # started, in hand
        clock.advance(lease.total_seconds() + 1)
        taken = {c.message.id: c for c in inst.store.reserve(10, lease)}  # another worker
        assert set(taken) == {first, second}
        done = Outcome(old[first].copy.id, first, "sent", "250 OK", None, 1, True)
        assert not inst.store.advance(done, old[second], lease)
        assert inst.store.get_message(second).status == "queued"  # not marked as being sent
        assert inst.store.get_message(first).status == "sent"  # the outcome was recorded
        assert inst.store.advance(None, taken[second], lease)  # the other worker's start
        assert inst.store.get_message(second).status == "sending"
    finally:
        inst.close()
