"""A real aiosmtpd server on a free port for tests: plain, STARTTLS or implicit TLS, with
optional AUTH, recording every message it accepts. Behaviour can be switched per test
(refuse with a 4xx/5xx reply)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

logging.getLogger("mail.log").setLevel(logging.ERROR)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    authenticated_as: str | None


@dataclass
class RecordingHandler:
    messages: list[Received] = field(default_factory=list)
    reply: str | None = None  # e.g. "451 try later" or "550 no such user"
    # Refusals of single recipients at RCPT TO, by address.
    reply_for: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        refusal = self.reply_for.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.reply is not None:
            return self.reply
        user = session.auth_data if session.authenticated else None
        assert isinstance(envelope.content, bytes)
        self.messages.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                      envelope.content, user))
        return "250 OK queued"


class SmtpServer:
    def __init__(self, mode: str = "starttls", users: dict[str, str] | None = None) -> None:
        self.mode = mode
        self.users = users or {}
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self.handler = RecordingHandler()
        self.kwargs: dict[str, Any] = {}
        self.ssl = ctx if mode == "implicit" else None
        if mode == "starttls":
            self.kwargs.update(tls_context=ctx, require_starttls=True)
        if self.users:
            # With implicit TLS aiosmtpd cannot tell the socket is encrypted, so it would
            # hide AUTH if it had to wait for STARTTLS.
            self.kwargs.update(authenticator=self._auth, auth_require_tls=mode == "starttls")
        else:
            self.kwargs.update(auth_require_tls=False)
        self.connections = 0  # SMTP sessions accepted so far
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _auth(self, server: Any, session: Any, envelope: Any, mechanism: str,
              auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(user) == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    def start(self, tmp_path: Any) -> SmtpServer:
        # aiosmtpd's Controller cannot bind port 0 (its readiness probe connects to port 0),
        # so run the SMTP protocol on our own loop with create_server.
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self.loop.create_server(
            self._session, "127.0.0.1", 0, ssl=self.ssl), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        path = tmp_path / "smtp-ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        self.ca_file = str(path)
        return self

    def _session(self) -> SMTP:
        self.connections += 1
        return SMTP(self.handler, hostname="mail.test", **self.kwargs)

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages
