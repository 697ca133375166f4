"""Ways a message leaves: the local outbox and SMTP relays. Only ``smtp`` knows aiosmtplib."""

from __future__ import annotations

from typing import Protocol

from ..storage.store import Claim


class Transport(Protocol):
    async def deliver(self, claim: Claim) -> str:
        """Hand the message over; return a short note (the server's reply, the file).

        Raises :class:`mailseen.errors.DeliveryError`.
        """
        ...
