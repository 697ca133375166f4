"""Delivery through an SMTP relay with aiosmtplib: STARTTLS, implicit TLS, AUTH; and a
test of a relay's settings that says which step failed."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

import aiosmtplib

from ..errors import DeliveryError, MailseenError
from ..records import ConnectionCheck, Envelope, Relay

__all__ = ["SmtpSession", "SmtpTransport"]

# What aiosmtplib's ``data`` does to a message's lines before sending it.
_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_TLS_WORDS = {"implicit": "TLS from the start", "starttls": "STARTTLS",
              "none": "no encryption"}


def failure_in_words(exc: BaseException, host: str, port: int, timeout: float) -> str:
    """Why reaching a relay failed, in the words the team reads on the message."""
    where = f"the relay at {host}:{port}"
    causes = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(c, socket.gaierror) for c in causes):
        return f"the relay's name {host} could not be found"
    if any(isinstance(c, ConnectionRefusedError) for c in causes) or (
            isinstance(exc, aiosmtplib.SMTPConnectError) and "refused" in str(exc).lower()):
        return f"{where} refused the connection"
    if any(isinstance(c, (TimeoutError, aiosmtplib.SMTPTimeoutError)) for c in causes):
        return f"{where} did not answer within {timeout:g} seconds"
    if any(isinstance(c, ssl.SSLError) for c in causes):
        return f"TLS with {where} failed: {exc}"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return f"{where} closed the connection: {exc}"
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return f"could not connect to {where}: {exc}"
    return f"{where}: {type(exc).__name__}: {exc}"


class SmtpTransport:
    """Delivery through SMTP relays. A :meth:`session` keeps its connection to a relay
    for the next message (``per_connection`` messages at most, and not once it has been
    idle ``idle_timeout`` seconds on ``monotonic``'s scale, which relays cut off)."""

    def __init__(self, timeout: float = 60.0, ca_file: str | None = None, *,
                 per_connection: int = 100, idle_timeout: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.ca_file = ca_file or None
        self.per_connection = max(1, per_connection)
        self.idle_timeout = idle_timeout
        self.monotonic = monotonic
        self._context: ssl.SSLContext | None = None

    def tls_context(self) -> ssl.SSLContext:
        # One for every connection: making one reads the system's CA certificates.
        if self._context is None:
            ctx = ssl.create_default_context()
            if self.ca_file:
                ctx.load_verify_locations(self.ca_file)
            self._context = ctx
        return self._context

    def session(self) -> SmtpSession:
        return SmtpSession(self)

    async def deliver(self, envelope: Envelope, relay: Relay | None) -> str | None:
        session = self.session()
        try:
            return await session.deliver(envelope, relay)
        finally:
            await session.close()

    async def check(self, relay: Relay, timeout: float) -> ConnectionCheck:
        """Connect to ``relay``, do TLS as set, log in when a user name is set, and say
        what worked or the first step that failed. Nothing is sent; each step waits at most
        ``timeout`` seconds."""
        if not relay.host:
            return ConnectionCheck("smtp", False, "no SMTP server set")
        where = f"{relay.host}:{_port(relay)}"
        client = aiosmtplib.SMTP(
            hostname=relay.host, port=_port(relay), timeout=timeout,
            use_tls=relay.tls == "implicit", start_tls=False,  # STARTTLS is a step of its own
            tls_context=self.tls_context() if relay.tls != "none" else None)
        try:
            failure = await self._steps(client, relay, where)
        finally:
            await _hang_up(client)
        if failure is not None:
            return ConnectionCheck("smtp", False, failure)
        done = f"connected to {where}, {_TLS_WORDS[relay.tls]}"
        return ConnectionCheck("smtp", True, f"{done}, signed in as {relay.username}"
                               if relay.username else f"{done}; no user name set, so no login")

    async def _steps(self, client: aiosmtplib.SMTP, relay: Relay, where: str) -> str | None:
        """The first step that failed, in words, or None."""
        try:
            await client.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            return f"cannot connect to {where}: the server answered {exc.code} {exc.message}"
        except UnicodeError:
            return f"cannot connect to {where}: not a valid server name"
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return f"cannot connect to {where}: {_reason(exc)}"
        if relay.tls == "starttls":
            try:
                await client.starttls()
            except aiosmtplib.SMTPResponseException as exc:
                return f"STARTTLS refused: {exc.code} {exc.message}"
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                if not client.supports_extension("starttls") and not isinstance(
                        exc, (OSError, TimeoutError)):
                    return f"cannot connect to {where}: the server does not offer STARTTLS"
                return f"cannot connect to {where}: {_reason(exc)}"
        if relay.username:
            try:
                await client.login(relay.username, relay.password or "")
            except aiosmtplib.SMTPAuthenticationError as exc:
                if exc.code == 535:
                    return "login failed: wrong username or password"
                return f"login failed: {exc.code} {exc.message}"
            except aiosmtplib.SMTPResponseException as exc:
                return f"login failed: {exc.code} {exc.message}"
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                if not client.supports_extension("auth"):
                    return ("login failed: the server offers no login (AUTH)"
                            + ("; it may offer one after STARTTLS" if relay.tls == "none"
                               else ""))
                return f"login failed: {_reason(exc)}"
        return None


async def _hang_up(client: aiosmtplib.SMTP, limit: float = 1.0) -> None:
    """QUIT (when still connected), close, and wait, briefly, until the connection is
    really gone: a TLS connection finishes its shutdown on the event loop after
    ``close()``, and a loop that stops first (a command that delivers and exits) leaves its
    socket open."""
    protocol = client.protocol
    with suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        if client.is_connected:
            await client.quit()
    client.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while getattr(protocol, "transport", None) is not None and loop.time() < deadline:
        await asyncio.sleep(0.005)


class _Stale(Exception):
    """A kept connection turned out closed before the relay was told anything of the
    message: nothing was handed over, so a new connection may try it at once."""


class SmtpSession:
    """One kept connection (at most) to the relay of the last message."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self._client: aiosmtplib.SMTP | None = None
        self._relay: Relay | None = None
        self._sent = 0
        self._last = transport.monotonic()
        self.connections = 0  # opened so far, for tests and the benchmark

    def idle_for(self, now: float) -> float:
        return now - self._last

    async def close_if_idle(self, now: float) -> None:
        if self._client is not None and self.idle_for(now) >= self.transport.idle_timeout:
            await self.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _hang_up(client)

    def _drop(self) -> None:
        """Forget the connection without a word: it failed."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def deliver(self, envelope: Envelope, relay: Relay | None,
                      ready: Awaitable[bool] | None = None) -> str | None:
        if relay is None or not relay.host:
            raise DeliveryError("the mailbox has no SMTP host set", permanent=True)
        t = self.transport
        port = _port(relay)
        client = self._client
        if client is not None and (relay != self._relay or self._sent >= t.per_connection
                                   or self.idle_for(t.monotonic()) >= t.idle_timeout
                                   or not client.is_connected):
            await self.close()
        try:
            try:
                sent = await self._send(envelope, relay, port, ready)
            except _Stale:
                self._drop()  # the relay let an idle connection go: one new one
                sent = await self._send(envelope, relay, port, ready)
        except MailseenError:
            raise  # ``ready`` failed (the database), not the relay
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise DeliveryError(f"all recipients refused: {text}",
                                permanent=all(500 <= c < 600 for c in codes)) from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            self._drop()
            raise DeliveryError(
                f"the relay at {relay.host}:{port} refused the user name or password "
                f"({exc.code} {exc.message})", permanent=500 <= exc.code < 600,
                relay=True) from exc
        except aiosmtplib.SMTPResponseException as exc:
            closing = exc.code == 421 or not (self._client and self._client.is_connected)
            if closing:  # "service not available, closing": the relay's, not the message's
                self._drop()
            raise DeliveryError(f"{exc.code} {exc.message}", permanent=500 <= exc.code < 600,
                                relay=closing) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            raise DeliveryError(failure_in_words(exc, relay.host, port, t.timeout),
                                permanent=False, relay=True) from exc
        except UnicodeError as exc:  # a server name the resolver cannot even encode
            self._drop()
            raise DeliveryError(f"the relay's name {relay.host!r} is not a valid server name",
                                permanent=True) from exc
        finally:
            self._last = t.monotonic()
        if sent is None:
            return None
        refused, reply = sent
        self._sent += 1
        note = reply
        if refused:
            note += " (refused: " + "; ".join(
                f"{rcpt}: {resp.code} {resp.message}" for rcpt, resp in refused.items()) + ")"
        return note

    async def _send(self, envelope: Envelope, relay: Relay, port: int,
                    ready: Awaitable[bool] | None
                    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str] | None:
        client = self._client
        kept = client is not None
        if client is None:
            client = await self._connect(relay, port)
        return await _transaction(client, envelope, kept, ready)

    async def _connect(self, relay: Relay, port: int) -> aiosmtplib.SMTP:
        t = self.transport
        mode = relay.tls
        client = aiosmtplib.SMTP(
            hostname=relay.host, port=port, timeout=t.timeout,
            use_tls=mode == "implicit", start_tls=mode == "starttls",
            tls_context=t.tls_context() if mode != "none" else None,
        )
        self._client, self._relay, self._sent = client, relay, 0
        self.connections += 1
        await client.connect()
        if relay.username:
            await client.login(relay.username, relay.password or "")
        return client


async def _transaction(client: aiosmtplib.SMTP, envelope: Envelope, kept: bool,
                       ready: Awaitable[bool] | None
                       ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str] | None:
    """MAIL, RCPT, DATA, as aiosmtplib's sendmail does (and RSET after a refusal, so the
    connection serves the next message), but telling a kept connection found closed at
    MAIL (:class:`_Stale`) from a failure once the relay has been told of the message,
    and awaiting ``ready`` once the relay has said go ahead (354) and before the message
    itself goes: what ``ready`` waits for (a commit) overlaps the whole envelope. When it
    says not to send, or fails, the connection is closed: in the middle of DATA only
    hanging up ends a transaction without a message (RFC 5321 4.1.1.4), and None is
    returned."""
    options = [f"size={len(envelope.raw)}"] if client.supports_extension("size") else []
    try:
        await client.mail(envelope.sender, options=options)
    except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
        if kept:
            raise _Stale from exc
        raise
    except aiosmtplib.SMTPResponseException:
        with suppress(aiosmtplib.SMTPException, ConnectionError):
            await client.rset()
        raise
    try:
        refused: dict[str, aiosmtplib.SMTPResponse] = {}
        errors = []
        for address in envelope.recipients:
            try:
                await client.rcpt(address)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[address] = aiosmtplib.SMTPResponse(exc.code, exc.message)
                errors.append(exc)
        if len(errors) == len(envelope.recipients):
            raise aiosmtplib.SMTPRecipientsRefused(errors)
        if ready is None:
            response = await client.data(envelope.raw)
        else:
            start = await client.execute_command(b"DATA")
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            try:
                go = await ready
            except BaseException:  # the database failed: nothing is sent
                client.close()
                raise
            if not go:
                client.close()
                return None
            response = await _content(client, envelope.raw)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        with suppress(aiosmtplib.SMTPException, ConnectionError):
            await client.rset()
        raise
    return refused, response.message


async def _content(client: aiosmtplib.SMTP, raw: bytes) -> aiosmtplib.SMTPResponse:
    """The message after the relay's 354, as aiosmtplib's ``data`` sends it (line ends as
    CRLF, leading dots doubled, the final dot), and the relay's reply to it."""
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    protocol.write(_on_the_wire(raw))
    try:
        response = await protocol.read_response(timeout=client.timeout)
    except aiosmtplib.SMTPServerDisconnected:
        client.close()
        raise
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def _on_the_wire(raw: bytes) -> bytes:
    """``raw`` as DATA carries it: CRLF line ends, leading dots doubled, the final dot.
    The regular expressions run only where there is something to change (a stored message
    has CRLF line ends and rarely a line starting with a dot): counting is cheaper."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        raw = _LINE_END.sub(b"\r\n", raw)
    if raw.startswith(b".") or b"\n." in raw:
        raw = _LEADING_DOT.sub(b"..", raw)
    return raw + (b".\r\n" if raw.endswith(b"\r\n") else b"\r\n.\r\n")


def _port(relay: Relay) -> int:
    return relay.port or {"implicit": 465, "starttls": 587}.get(relay.tls, 25)


def _reason(exc: BaseException) -> str:
    """What went wrong with a connection, in words: the cause aiosmtplib wrapped."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({cause.verify_message})"
    if isinstance(cause, ssl.SSLError):
        return f"TLS failed ({cause.reason or cause})"
    if isinstance(cause, (TimeoutError, aiosmtplib.SMTPTimeoutError)):
        return "timed out"
    if isinstance(cause, socket.gaierror):
        return f"unknown host ({cause.strerror})"
    if isinstance(cause, aiosmtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    return str(cause) or type(cause).__name__
