"""The SMTP receiver, with a real SMTP client (aiosmtplib) talking to it on a free port:
who it accepts, STARTTLS, size limit, what it answers when storing fails; and the same
message arriving by SMTP and by IMAP is stored once."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
import pytest
import trustme

from mailseen.errors import StorageUnavailable
from mailseen.receivers.imap import ImapPoller
from mailseen.receivers.smtpd import MAX_RECIPIENTS, SmtpReceiver, receive, route
from mailseen.records import Ingested, MailboxIn, MailboxRecord, MessageRecord
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance
from mailseen.web.site.display import render_display

from .dovecot import Dovecot
from .test_mailbody import many_parts_mail, nested_mail

logging.getLogger("mail.log").setLevel(logging.ERROR)

SALES = "sales@example.test"
SUPPORT = "Support@Example.test"  # stored with capitals: matching ignores case


def mail(subject: str, to: str = SALES, message_id: str | None = None) -> bytes:
    return (f"From: Alice <alice@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: {message_id or make_msgid(domain='example.org')}\r\n"
            f"Date: Thu, 27 Nov 2025 10:00:00 +0000\r\n\r\nHello\r\n").encode()


@dataclass
class Receiver:
    inst: Instance
    server: SmtpReceiver
    port: int
    ca_file: str
    sales: MailboxRecord
    support: MailboxRecord

    def client(self, **kw: object) -> aiosmtplib.SMTP:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        return aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=10,
                               start_tls=False, tls_context=ctx, **kw)  # type: ignore[arg-type]

    def inbound(self, box: MailboxRecord) -> list[MessageRecord]:
        return [m for m in self.inst.store.list_messages(mailbox_id=box.id)
                if m.direction == "in"]


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = [str(tmp_path / n) for n in ("cert.pem", "key.pem", "ca.pem")]
    cert.cert_chain_pems[0].write_to_path(paths[0])
    cert.private_key_pem.write_to_path(paths[1])
    ca.cert_pem.write_to_path(paths[2])
    return paths[0], paths[1], paths[2]


async def _start(inst: Instance, tls_files: tuple[str, str, str],
                 **kw: int) -> AsyncIterator[Receiver]:
    sales = inst.store.add_mailbox(MailboxIn(SALES))
    support = inst.store.add_mailbox(MailboxIn(SUPPORT))
    cert, key, ca = tls_files
    server = SmtpReceiver(inst.mailboxes, Ingestor(inst.store, inst.sender), port=0,
                          tls_cert=cert, tls_key=key, hostname="mx.example.test", **kw)
    port = await server.start()
    yield Receiver(inst, server, port, ca, sales, support)
    await server.stop()


@pytest.fixture
async def rx(instance: Instance, tls_files: tuple[str, str, str]
             ) -> AsyncIterator[Receiver]:
    async for r in _start(instance, tls_files):
        yield r


@pytest.fixture
async def small_rx(instance: Instance, tls_files: tuple[str, str, str]
                   ) -> AsyncIterator[Receiver]:
    async for r in _start(instance, tls_files, max_size=2000):
        yield r


# -- the plain functions -----------------------------------------------------------------

def test_route_accepts_only_mailbox_addresses_ignoring_case(instance: Instance) -> None:
    boxes = [instance.store.add_mailbox(MailboxIn(a)) for a in (SALES, SUPPORT)]
    assert route(boxes, "SALES@example.TEST") == boxes[0]
    assert route(boxes, "support@example.test") == boxes[1]
    assert route(boxes, "nobody@example.test") == "550 5.1.1 no such mailbox"
    assert route(boxes, "nobody@EXAMPLE.test") == "550 5.1.1 no such mailbox"
    assert route(boxes, "sales@example.org") == "550 5.7.1 relaying denied"
    assert route(boxes, "sales@sub.example.test") == "550 5.7.1 relaying denied"
    assert route(boxes, "postmaster") == "550 5.7.1 relaying denied"
    assert route([], SALES) == "550 5.7.1 relaying denied"


class BrokenIngestor(Ingestor):
    def ingest(self, mailbox: MailboxRecord, raw: bytes, source: str) -> Ingested:
        raise StorageUnavailable("database unavailable: disk full")


def test_receive_asks_for_a_retry_when_storing_fails(instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn(SALES))
    ok = Ingestor(instance.store, instance.sender)
    assert receive(ok, [box], mail("hi")) == "250 2.0.0 OK"
    assert receive(ok, [box], b"\x00\x01\x02 binary") .startswith("554 5.6.0 ")
    broken = BrokenIngestor(instance.store, instance.sender)
    assert receive(broken, [box], mail("hi")).startswith("451 4.3.0 ")


# -- over SMTP ---------------------------------------------------------------------------

async def test_mail_for_a_mailbox_is_accepted_and_stored(rx: Receiver) -> None:
    async with rx.client() as smtp:
        _, reply = await smtp.sendmail("alice@example.org", ["SALES@Example.Test"],
                                       mail("hello"))
    assert reply.startswith("2.0.0 OK")
    [got] = rx.inbound(rx.sales)
    assert got.subject == "hello" and got.source == "smtp" and got.status == "received"
    assert rx.inbound(rx.support) == []


async def test_an_unknown_local_part_is_refused(rx: Receiver) -> None:
    async with rx.client() as smtp:
        await smtp.mail("alice@example.org")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
            await smtp.rcpt("nobody@example.test")
    assert err.value.code == 550 and err.value.message == "5.1.1 no such mailbox"


async def test_a_foreign_domain_is_relaying_denied(rx: Receiver) -> None:
    async with rx.client() as smtp:
        await smtp.mail("alice@example.org")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
            await smtp.rcpt("someone@elsewhere.example")
    assert err.value.code == 550 and err.value.message == "5.7.1 relaying denied"


async def test_a_message_to_two_mailboxes_is_stored_for_both(rx: Receiver) -> None:
    raw = mail("to both", to=f"{SALES}, {SUPPORT}")
    async with rx.client() as smtp:
        refused, _ = await smtp.sendmail("alice@example.org",
                                         [SALES, "support@example.test", "x@example.test"],
                                         raw)
    assert list(refused) == ["x@example.test"]
    [a], [b] = rx.inbound(rx.sales), rx.inbound(rx.support)
    assert a.message_id == b.message_id and a.id != b.id
    assert rx.inst.store.get_raw(a.id) == raw


async def test_starttls_is_offered_and_works(rx: Receiver) -> None:
    async with rx.client() as smtp:
        await smtp.ehlo()
        assert smtp.supports_extension("starttls")
        assert not smtp.supports_extension("auth")  # it is no relay: nobody logs in
        await smtp.starttls()
        await smtp.ehlo()
        assert smtp.get_transport_info("sslcontext") is not None
        await smtp.sendmail("alice@example.org", [SALES], mail("secret"))
    assert [m.subject for m in rx.inbound(rx.sales)] == ["secret"]


async def test_an_oversize_message_is_refused(small_rx: Receiver) -> None:
    big = mail("big") + (b"x" * 70 + b"\r\n") * 40
    async with small_rx.client() as smtp:
        await smtp.ehlo()
        assert smtp.supports_extension("size")
        with pytest.raises(aiosmtplib.SMTPResponseException) as err:
            await smtp.sendmail("alice@example.org", [SALES], big)
        assert err.value.code == 552
        # A client that ignores SIZE and sends anyway is refused after DATA.
        await smtp.rset()
        await smtp.mail("alice@example.org")
        await smtp.rcpt(SALES)
        with pytest.raises(aiosmtplib.SMTPDataError) as data_err:
            await smtp.data(big)
        assert data_err.value.code == 552
    assert small_rx.inbound(small_rx.sales) == []


@pytest.mark.parametrize("raw", [nested_mail(1000), many_parts_mail(50_000)],
                         ids=["1000 levels", "50000 parts"])
async def test_mail_too_complex_to_read_is_stored_flagged_not_refused(rx: Receiver,
                                                                     raw: bytes) -> None:
    # As `serve` and `receive` run it: each message made ready to show as it arrives.
    rx.server.handler.ingestor = Ingestor(rx.inst.store, rx.inst.sender, render=render_display)
    async with rx.client() as smtp:
        _, reply = await smtp.sendmail("a@example.org", [SALES], raw.replace(
            b"b@example.com", SALES.encode()))
    assert reply.startswith("2.0.0")  # was 451 (a RecursionError), so retried forever
    [stored] = rx.inbound(rx.sales)
    assert len(rx.inst.store.get_raw(stored.id)) >= len(raw)
    shown = rx.inst.store.get_display(stored.id)
    assert shown is not None and "too complex to display safely" in shown.note
    assert shown.html is None and shown.text is None and shown.attachments == []


async def test_something_that_is_not_a_message_gets_554(rx: Receiver) -> None:
    async with rx.client() as smtp:
        await smtp.mail("alice@example.org")
        await smtp.rcpt(SALES)
        with pytest.raises(aiosmtplib.SMTPDataError) as err:
            await smtp.data(b"this is not a message at all\r\n")
    assert err.value.code == 554
    assert rx.inbound(rx.sales) == []


async def test_a_storage_failure_tells_the_sender_to_retry(rx: Receiver) -> None:
    rx.server.handler.ingestor = BrokenIngestor(rx.inst.store, rx.inst.sender)
    async with rx.client() as smtp:
        with pytest.raises(aiosmtplib.SMTPDataError) as err:
            await smtp.sendmail("alice@example.org", [SALES], mail("later"))
    assert err.value.code == 451


async def test_the_same_message_resent_is_stored_once(rx: Receiver) -> None:
    raw = mail("twice")
    async with rx.client() as smtp:
        await smtp.sendmail("alice@example.org", [SALES], raw)
        await smtp.sendmail("alice@example.org", [SALES], raw)
    assert len(rx.inbound(rx.sales)) == 1


async def test_the_same_message_sent_at_once_over_several_connections_is_stored_once(
        rx: Receiver) -> None:
    raw = mail("racing")

    async def send() -> str:
        async with rx.client() as smtp:
            _, reply = await smtp.sendmail("alice@example.org", [SALES], raw)
            return reply

    replies = await asyncio.gather(*[send() for _ in range(6)])
    assert all(r.startswith("2.0.0") for r in replies)
    assert len(rx.inbound(rx.sales)) == 1


# Values PostgreSQL refuses (a DataError, which would make the sender retry for days):
# the ingest path cleans them first.


def test_a_message_id_longer_than_the_column_is_stored(instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn(SALES))
    raw = mail("long id", message_id="<" + "a" * 1200 + "@example.org>")  # column: 998
    assert receive(Ingestor(instance.store, instance.sender), [box], raw) == "250 2.0.0 OK"
    assert len(instance.store.list_messages(mailbox_id=box.id)) == 1


def test_a_nul_in_an_encoded_subject_is_stored(instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn(SALES))
    raw = mail("x").replace(b"Subject: x", b"Subject: =?utf-8?q?a=00b?=")
    assert receive(Ingestor(instance.store, instance.sender), [box], raw) == "250 2.0.0 OK"
    assert len(instance.store.list_messages(mailbox_id=box.id)) == 1


# -- SMTP and IMAP together ------------------------------------------------------------------

@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot("imap-secret", users=1).start()
    yield server
    server.stop()


async def test_a_message_arriving_by_smtp_and_by_imap_is_stored_once(
        rx: Receiver, dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    rx.inst.store.update_mailbox(rx.sales.id, lambda m: MailboxIn(
        m.address, imap_host="127.0.0.1", imap_port=dovecot.imaps_port, imap_tls="implicit",
        imap_username=user.name, imap_password=user.password))
    raw = mail("both ways")
    async with rx.client() as smtp:
        await smtp.sendmail("alice@example.org", [SALES], raw)
    user.append(raw)  # the same message, also delivered to the IMAP mailbox (a forward copy)
    poller = ImapPoller(rx.inst.mailboxes, Ingestor(rx.inst.store, rx.inst.sender),
                        ca_file=dovecot.ca_file, timeout=5)
    [account] = rx.inst.store.imap_accounts()
    assert await poller.poll_once(account) == 0  # a duplicate
    [got] = rx.inbound(rx.sales)
    assert got.source == "smtp"
    assert rx.inst.store.get_mailbox(rx.sales.id).imap_status == "ok"


async def test_too_many_recipients_get_452_and_the_rest_is_delivered(rx: Receiver) -> None:
    async with rx.client() as smtp:
        await smtp.mail("alice@example.org")
        for n in range(MAX_RECIPIENTS - 1):  # refused ones count too
            with pytest.raises(aiosmtplib.SMTPRecipientRefused):
                await smtp.rcpt(f"nobody{n}@example.test")
        await smtp.rcpt(SALES)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
            await smtp.rcpt(SUPPORT)
        assert err.value.code == 452 and err.value.message.startswith("4.5.3 ")
        code, _ = await smtp.data(mail("many"))
        assert code == 250
        await smtp.mail("alice@example.org")  # a new message starts a new count
        await smtp.rcpt(SUPPORT)
        await smtp.data(mail("the rest", to=SUPPORT))
    assert [m.subject for m in rx.inbound(rx.sales)] == ["many"]
    assert [m.subject for m in rx.inbound(rx.support)] == ["the rest"]


async def test_debug_logging_never_writes_a_message_body(
        rx: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mail.log")  # the whole SMTP dialogue
    marker = "BODY-MARKER-7f3a9c"
    raw = mail("logged?").replace(b"Hello", f"Hello {marker}\r\nsecond line".encode())
    async with rx.client() as smtp:
        _, reply = await smtp.sendmail("alice@example.org", [SALES], raw)
    assert reply.startswith("2.0.0 OK")
    assert rx.inst.store.get_raw(rx.inbound(rx.sales)[0].id) == raw
    assert "recip: " + SALES in caplog.text  # the dialogue is logged ...
    assert marker not in caplog.text  # ... the message is not
