"""Delivery through an SMTP relay with aiosmtplib: STARTTLS, implicit TLS, AUTH."""

from __future__ import annotations

import socket
import ssl

import aiosmtplib

from ..errors import DeliveryError
from ..records import Envelope, Relay

__all__ = ["SmtpTransport"]


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
    def __init__(self, timeout: float = 60.0, ca_file: str | None = None) -> None:
        self.timeout = timeout
        self.ca_file = ca_file or None

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.ca_file:
            ctx.load_verify_locations(self.ca_file)
        return ctx

    async def deliver(self, envelope: Envelope, relay: Relay | None) -> str:
        if relay is None or not relay.host:
            raise DeliveryError("the mailbox has no SMTP host set", permanent=True)
        mode = relay.tls
        port = relay.port or {"implicit": 465, "starttls": 587}.get(mode, 25)
        client = aiosmtplib.SMTP(
            hostname=relay.host, port=port, timeout=self.timeout,
            use_tls=mode == "implicit", start_tls=mode == "starttls",
            tls_context=self._tls_context() if mode != "none" else None,
        )
        try:
            async with client:
                if relay.username:
                    await client.login(relay.username, relay.password or "")
                refused, reply = await client.sendmail(
                    envelope.sender, list(envelope.recipients), envelope.raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise DeliveryError(f"all recipients refused: {text}",
                                permanent=all(500 <= c < 600 for c in codes)) from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"the relay at {relay.host}:{port} refused the user name or password "
                f"({exc.code} {exc.message})", permanent=500 <= exc.code < 600) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{exc.code} {exc.message}",
                                permanent=500 <= exc.code < 600) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(failure_in_words(exc, relay.host, port, self.timeout),
                                permanent=False) from exc
        note = reply
        if refused:
            note += " (refused: " + "; ".join(
                f"{rcpt}: {resp.code} {resp.message}" for rcpt, resp in refused.items()) + ")"
        return note
