"""Ways a message leaves: the local outbox and SMTP relays. Only ``smtp`` knows aiosmtplib.

A transport gets the envelope and the bytes (and, for a relay, where and how to log in),
never a stored record: what leaves is exactly what the send pipeline decided."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from ..records import Envelope, Relay


class Session(Protocol):
    """Hands over one message after another, keeping what it can between them (an SMTP
    connection to the last relay); one message at a time."""

    async def deliver(self, envelope: Envelope, relay: Relay | None,
                      ready: Awaitable[bool] | None = None) -> str | None:
        """Hand the message over; return a short note (the server's reply, the file).

        ``ready`` is awaited before the message itself goes (an SMTP session has given the
        envelope by then): when it says False, nothing is handed over and None returned.
        Raises :class:`mailseen.errors.DeliveryError`.
        """
        ...

    async def close(self) -> None:
        """Let go of what is kept (politely: QUIT); the session may be used again."""
        ...

    async def close_if_idle(self, now: float) -> None:
        """:meth:`close` when idle long enough that the other end would soon cut it off
        (``now`` on the clock's monotonic scale)."""
        ...


class Transport(Protocol):
    async def deliver(self, envelope: Envelope, relay: Relay | None) -> str | None:
        """Hand one message over on its own; as :meth:`Session.deliver`."""
        ...

    def session(self) -> Session:
        """A session for handing several messages over in turn."""
        ...
