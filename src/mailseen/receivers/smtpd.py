"""The SMTP receiver (aiosmtpd), for MX or forwarding setups.

It accepts mail for the addresses of mailseen's mailboxes and nothing else: a recipient in
one of their domains that is no mailbox gets ``550 5.1.1``, any other domain ``550 5.7.1
relaying denied``, so the receiver can never be used to pass mail on. The aiosmtpd hooks only
unpack the envelope; :func:`route` and :func:`receive` decide, and tests call them directly.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ..errors import InvalidInput, MailseenError
from ..records import MailboxRecord
from ..services.inbound import Ingestor
from ..services.mailboxes import Mailboxes

__all__ = ["MAX_RECIPIENTS", "SmtpReceiver", "listen", "receive", "route", "server_tls"]

log = logging.getLogger(__name__)


def _no_message_lines(record: logging.LogRecord) -> bool:
    """aiosmtpd logs every line of DATA at debug level: message bodies would reach the logs
    of anyone debugging the SMTP dialogue. The dialogue itself is kept."""
    return not str(record.msg).startswith("DATA readline")


# A logger's filters apply before its records propagate, whatever handlers are set up.
logging.getLogger("mail.log").addFilter(_no_message_lines)

NO_SUCH_MAILBOX = "550 5.1.1 no such mailbox"
RELAYING_DENIED = "550 5.7.1 relaying denied"
TRY_LATER = "451 4.3.0 cannot store the message now; try again later"
# RFC 5321 4.5.3.1.8: a server must take at least 100 recipients per message; past them the
# client is told to send the rest in another transaction (4.5.3.1.10, RFC 3463 X.5.3).
MAX_RECIPIENTS = 100
TOO_MANY_RECIPIENTS = "452 4.5.3 too many recipients; send the rest in another message"


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def route(mailboxes: Sequence[MailboxRecord], address: str) -> MailboxRecord | str:
    """The mailbox ``address`` is for (case-insensitively), or the SMTP refusal."""
    wanted = address.strip().lower()
    for box in mailboxes:
        if box.address.lower() == wanted:
            return box
    if "@" in wanted and _domain(wanted) in {_domain(b.address) for b in mailboxes}:
        return NO_SUCH_MAILBOX
    return RELAYING_DENIED


def receive(ingestor: Ingestor, mailboxes: Sequence[MailboxRecord], raw: bytes,
            envelope_to: list[str] | None = None) -> str:
    """Store ``raw`` for each of ``mailboxes``; the SMTP reply. When storing fails for any
    of them the sender is told to retry: the ones already stored see a duplicate then."""
    for box in mailboxes:
        try:
            ingestor.ingest(box, raw, "smtp", envelope_to)
        except InvalidInput as exc:  # NotAMessage, mostly: sending it again will not help
            return "554 5.6.0 " + " ".join(str(exc).split())
        except Exception:
            log.exception("cannot store a message received for %s", box.address)
            return TRY_LATER
    return "250 2.0.0 OK"


async def listen(host: str, port: int, hostname: str | None,
                 protocol: Callable[[str], SMTP], tls: ssl.SSLContext | None = None
                 ) -> asyncio.Server:
    """Serve SMTP sessions made by ``protocol(our name)`` on the running loop; the name is
    ``hostname``, else this machine's, looked up once (aiosmtpd would look it up, blocking,
    on every connection). ``tls``: implicit TLS."""
    name: str = hostname if hostname else await asyncio.to_thread(socket.getfqdn)
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(lambda: protocol(name), host, port, ssl=tls)
    except OSError as exc:
        raise MailseenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def server_tls(cert: str | None, key: str | None, what: str, cert_field: str,
               key_field: str) -> ssl.SSLContext | None:
    """The TLS context a server of ours offers, from a certificate (with its chain) and
    its key, both PEM files; None when neither is given. ``what`` and the fields name the
    setting in the error a half-given or unreadable pair raises."""
    if not (cert or key):
        return None
    if not (cert and key):
        raise InvalidInput(f"{what} needs both a certificate and a key file",
                           key_field if cert else cert_field)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot load the TLS certificate {cert} and key {key}: {exc}",
                           cert_field) from exc
    return context


class ReceiveHandler:
    def __init__(self, mailboxes: Mailboxes, ingestor: Ingestor) -> None:
        self.mailboxes = mailboxes
        self.ingestor = ingestor
        # RCPT commands per transaction, refused ones too: each costs a look-up, and a
        # client probing for addresses must not get an unbounded number of them per message.
        self._rcpts: weakref.WeakKeyDictionary[Envelope, int] = weakref.WeakKeyDictionary()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        seen = self._rcpts.get(envelope, 0)
        if seen >= MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS
        self._rcpts[envelope] = seen + 1
        try:
            found = route(await asyncio.to_thread(self.mailboxes.all), address)
        except MailseenError as exc:
            log.warning("cannot check recipient %s: %s", address, exc)
            return TRY_LATER
        if isinstance(found, str):
            log.info("refused RCPT %s from %s: %s", address, session.peer, found)
            return found
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            mailboxes = await asyncio.to_thread(self.mailboxes.all)
        except MailseenError as exc:
            log.warning("cannot accept a message: %s", exc)
            return TRY_LATER
        targets: dict[int, MailboxRecord] = {}
        for address in envelope.rcpt_tos:
            found = route(mailboxes, address)
            if not isinstance(found, str):  # a mailbox deleted since RCPT is skipped
                targets[found.id] = found
        raw = envelope.original_content or b""
        return await asyncio.to_thread(receive, self.ingestor, list(targets.values()), raw,
                                       list(envelope.rcpt_tos))


class SmtpReceiver:
    def __init__(self, mailboxes: Mailboxes, ingestor: Ingestor, *, host: str = "127.0.0.1",
                 port: int = 2525, tls_cert: str | None = None, tls_key: str | None = None,
                 max_size: int = 25 * 1024 * 1024, hostname: str | None = None) -> None:
        self.handler = ReceiveHandler(mailboxes, ingestor)
        self.host = host
        self.port = port
        self.max_size = max_size
        self.hostname = hostname
        self.tls = server_tls(tls_cert, tls_key, "STARTTLS", "tls_cert", "tls_key")
        self._server: asyncio.Server | None = None

    def _protocol(self, loop: asyncio.AbstractEventLoop, hostname: str) -> SMTP:
        return SMTP(self.handler, hostname=hostname, ident="mailseen",
                    data_size_limit=self.max_size, enable_SMTPUTF8=True, decode_data=False,
                    tls_context=self.tls, require_starttls=False,
                    # No AUTH: the receiver takes mail for its own mailboxes only.
                    auth_exclude_mechanism=["LOGIN", "PLAIN"], loop=loop)

    async def start(self) -> int:
        """Serve on the running loop; the bound port (useful with ``port=0``)."""
        loop = asyncio.get_running_loop()
        self._server = await listen(self.host, self.port, self.hostname,
                                    lambda name: self._protocol(loop, name))
        port = int(self._server.sockets[0].getsockname()[1])
        log.info("SMTP receiver listening on %s:%d%s", self.host, port,
                 " (STARTTLS offered)" if self.tls else "")
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SmtpReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
