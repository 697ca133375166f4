"""SMTP submission (RFC 6409) for the team's own mail clients, built on aiosmtpd.

Port 587 with STARTTLS, and port 465 with implicit TLS (RFC 8314) when configured. AUTH
PLAIN and LOGIN are offered only over TLS (or on a loopback address when no certificate is
set: it refuses to listen elsewhere without one); users log in with an app password. Every
reply carries an enhanced status code (RFC 2034, 3463). The aiosmtpd hooks only unpack the
dialogue: :class:`mailseen.services.submission.Submissions` decides, and queues the
message through the one send pipeline; the client hears 250 only once it is committed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ..errors import InvalidInput, MailseenError
from ..records import MailboxRecord, MessageRecord, UserRecord
from ..services.accounts import SignInRefused
from ..services.submission import Refused, Submissions
from .smtpd import listen, server_tls

__all__ = ["SubmissionServer", "is_loopback"]

log = logging.getLogger(__name__)



def _no_deprecation_notes(record: logging.LogRecord) -> bool:
    """aiosmtpd notes on every AUTH that a field it sets itself is deprecated."""
    return "login_data is deprecated" not in str(record.msg)


logging.getLogger("mail.log").addFilter(_no_deprecation_notes)

TRY_LATER = "451 4.3.0 cannot queue the message now; try again later"
_REPLIES = {
    "sender": "553 5.7.1 {}",
    "from": "550 5.7.1 {}",
    "rate": "451 4.7.1 {}",
    "recipients": "554 5.5.3 {}; nothing was sent",
    "line-endings": "554 5.6.0 message refused: {}",
    "remind": "554 5.6.0 message refused: {}",
}
# aiosmtpd's own replies, with the enhanced status codes RFC 2034 asks of a server that
# announces ENHANCEDSTATUSCODES; any other 4xx/5xx without one gets the class's X.0.0.
_STOCK = {
    "250 OK": "250 2.0.0 OK",
    "221 Bye": "221 2.0.0 Bye",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "530 Must issue a STARTTLS command first":
        "530 5.7.0 Must issue a STARTTLS command first",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "503 Already authenticated": "503 5.5.1 Already authenticated",
    "500 Line too long (see RFC5321 4.5.3.1.6)":
        "500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)",
    "500 Command line too long": "500 5.5.2 Command line too long",
}
_HAS_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}\b")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Envelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.mailbox: MailboxRecord | None = None
        self.too_many = False  # a recipient past the limit was refused: refuse DATA too


class _Smtp(SMTP):
    """aiosmtpd's SMTP, with AUTH checked off the event loop (a database look-up) and every
    reply worded with an enhanced status code."""

    def __init__(self, handler: SubmissionHandler, **kw: Any) -> None:
        self._pending: LoginPassword | None = None
        self._submission = handler
        self._too_big = f"552 5.3.4 message too big: at most {kw['data_size_limit']} bytes"
        super().__init__(handler, authenticator=self._hold, **kw)

    def _create_envelope(self) -> Envelope:
        return _Envelope()

    def _hold(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
              data: Any) -> AuthResult:
        self._pending = data if isinstance(data, LoginPassword) else None
        return AuthResult(success=False, handled=True)

    async def _verify(self, result: AuthResult) -> AuthResult:
        pending, self._pending = self._pending, None
        if pending is None:
            return result
        assert self.session is not None
        return await self._submission.login(pending, self.session)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(_, args))

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = self._enhanced(status)
        await super().push(status)

    def _enhanced(self, status: str) -> str:
        if status in _STOCK:
            return _STOCK[status]
        if status.startswith("552 Error:"):  # the SIZE of MAIL FROM, or the data itself
            return self._too_big
        if status[:1] in "45" and status[3:4] == " " and not _HAS_ENHANCED.match(status):
            return f"{status[:3]} {status[0]}.0.0 {status[4:]}"
        return status


# Files a copy of a queued message in its mailbox's Sent folder (receivers/imap.SentFiler).
FileSent = Callable[[int, bytes], Awaitable[bool]]


class SubmissionHandler:
    def __init__(self, submissions: Submissions, file_sent: FileSent | None = None) -> None:
        self.submissions = submissions
        self.file_sent = file_sent
        self._filing: set[asyncio.Task[None]] = set()

    async def login(self, data: LoginPassword, session: Session) -> AuthResult:
        username = data.login.decode("utf-8", "replace")
        password = data.password.decode("utf-8", "replace")
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        try:
            user = await asyncio.to_thread(self.submissions.login, username, password, peer)
        except SignInRefused as exc:
            log.info("submission: login refused for %r from %s: %s", username, peer, exc)
            if exc.retry_after is not None:
                return AuthResult(success=False, handled=False, message=(
                    f"454 4.7.0 too many failed logins; try again in {exc.retry_after} "
                    "seconds"))
            return AuthResult(success=False, handled=False, message=(
                "535 5.7.8 wrong user name or app password (log in with your email "
                "address and an app password, not your mailseen password)"))
        except MailseenError as exc:
            log.warning("submission: cannot check a login: %s", exc)
            return AuthResult(success=False, handled=False,
                              message="454 4.7.0 cannot check the password now; try later")
        log.info("submission: %s logged in from %s", user.email, peer)
        return AuthResult(success=True, auth_data=user)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        user = session.auth_data
        if not session.authenticated or not isinstance(user, UserRecord):
            return "530 5.7.0 Authentication required: log in with an app password"
        assert isinstance(envelope, _Envelope)
        if not address or address == "<>":
            return "553 5.7.1 a null sender cannot be submitted"
        try:
            self.submissions.check_rate(user)
            envelope.mailbox = await asyncio.to_thread(self.submissions.mailbox_for, user,
                                                       address)
        except Refused as exc:
            log.info("submission: MAIL FROM %s by %s refused: %s", address, user.email, exc)
            return _REPLIES[exc.why].format(exc)
        except MailseenError as exc:
            log.warning("submission: cannot check a sender: %s", exc)
            return TRY_LATER
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        assert isinstance(envelope, _Envelope)
        if len(envelope.rcpt_tos) >= self.submissions.max_recipients:
            envelope.too_many = True
            # RFC 5321 4.5.3.1.10: a client should send the rest in another message.
            return (f"452 4.5.3 too many recipients: at most "
                    f"{self.submissions.max_recipients} per message")
        local, at, domain = address.rpartition("@")
        if not (local and at and domain) or any(c.isspace() for c in address):
            return "501 5.1.3 bad recipient address"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        user = session.auth_data
        assert isinstance(user, UserRecord) and isinstance(envelope, _Envelope)
        assert envelope.mailbox is not None
        if envelope.too_many:
            return _REPLIES["recipients"].format(
                f"more than {self.submissions.max_recipients} recipients; send to fewer "
                "at once")
        raw = envelope.original_content or b""
        try:
            record = await asyncio.to_thread(self.submissions.submit, user, envelope.mailbox,
                                             list(envelope.rcpt_tos), raw)
        except Refused as exc:
            log.info("submission: message from %s refused: %s", user.email, exc)
            return _REPLIES[exc.why].format(exc)
        except InvalidInput as exc:  # not a message, mostly: sending it again will not help
            return "554 5.6.0 " + " ".join(str(exc).split())
        except Exception:
            log.exception("submission: cannot queue a message from %s", user.email)
            return TRY_LATER
        log.info("submission: %s queued message %d as %s for %d recipient(s)", user.email,
                 record.id, envelope.mailbox.address, len(envelope.rcpt_tos))
        if envelope.mailbox.imap_sent_append and self.file_sent is not None:
            # After the reply: the message is queued, and the client need not wait on IMAP.
            task = asyncio.create_task(self._file(envelope.mailbox.id, record))
            self._filing.add(task)
            task.add_done_callback(self._filing.discard)
        return f"250 2.0.0 OK queued as {record.id}"

    async def _file(self, mailbox_id: int, record: MessageRecord) -> None:
        assert self.file_sent is not None
        try:
            raw = await asyncio.to_thread(self.submissions.filed_copy, record)
            await self.file_sent(mailbox_id, raw)
        except Exception:
            log.exception("submission: cannot file message %d in the Sent folder", record.id)

    async def finish(self) -> None:
        """Wait for the Sent copies still being filed."""
        if self._filing:
            await asyncio.gather(*self._filing, return_exceptions=True)


class SubmissionServer:
    """One listener: STARTTLS (``implicit=False``) or implicit TLS; without a certificate,
    plain, on loopback only."""

    def __init__(self, submissions: Submissions, *, host: str = "127.0.0.1",
                 port: int = 587, implicit: bool = False, tls_cert: str | None = None,
                 tls_key: str | None = None, max_size: int = 25 * 1024 * 1024,
                 hostname: str | None = None, file_sent: FileSent | None = None) -> None:
        self.handler = SubmissionHandler(submissions, file_sent)
        self.host, self.port, self.implicit = host, port, implicit
        self.max_size = max_size
        self.hostname = hostname
        self.tls = server_tls(tls_cert, tls_key, "submission", "submission_tls_cert",
                              "submission_tls_key")
        if implicit and self.tls is None:
            raise InvalidInput("submission_tls: implicit TLS needs submission_tls_cert and "
                               "submission_tls_key", "submission_tls_cert")
        if self.tls is None and not is_loopback(host):
            raise InvalidInput(
                f"submission: without a TLS certificate (submission_tls_cert) it listens "
                f"only on a loopback address, not {host}: passwords would cross the "
                "network in the clear", "submission_tls_cert")
        self._server: asyncio.Server | None = None

    def _protocol(self, hostname: str) -> SMTP:
        starttls = self.tls is not None and not self.implicit
        return _Smtp(self.handler, hostname=hostname, ident="mailseen submission",
                     data_size_limit=self.max_size, enable_SMTPUTF8=True, decode_data=False,
                     tls_context=self.tls if starttls else None, require_starttls=starttls,
                     # Logging in is required by handle_MAIL: aiosmtpd's own check warns
                     # whenever AUTH may be offered without STARTTLS, as here by design.
                     # Over implicit TLS (or loopback without a certificate) aiosmtpd cannot
                     # tell the socket is safe, so it would never offer AUTH.
                     auth_require_tls=starttls)

    async def start(self) -> int:
        """Serve on the running loop; the bound port (useful with ``port=0``)."""
        self._server = await listen(self.host, self.port, self.hostname, self._protocol,
                                    self.tls if self.implicit else None)
        port = int(self._server.sockets[0].getsockname()[1])
        how = ("implicit TLS" if self.implicit else "STARTTLS" if self.tls
               else "no TLS, loopback only")
        log.info("SMTP submission listening on %s:%d (%s)", self.host, port, how)
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.handler.finish()

    async def __aenter__(self) -> SubmissionServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
