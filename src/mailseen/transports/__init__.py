"""Ways a message leaves: the local outbox and SMTP relays. Only ``smtp`` knows aiosmtplib.

A transport gets the envelope and the bytes (and, for a relay, where and how to log in),
never a stored record: what leaves is exactly what the send pipeline decided."""

from __future__ import annotations

from typing import Protocol

from ..records import Envelope, Relay


class Transport(Protocol):
    async def deliver(self, envelope: Envelope, relay: Relay | None) -> str:
        """Hand the message over; return a short note (the server's reply, the file).

        Raises :class:`mailseen.errors.DeliveryError`.
        """
        ...
