"""The local outbox: delivered mail is written as .eml files, for the embedded default."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path

from ..errors import DeliveryError
from ..records import Envelope, Relay

__all__ = ["OutboxTransport"]


class OutboxTransport:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def session(self) -> OutboxTransport:
        return self  # nothing to keep between two files

    async def close(self) -> None:
        pass

    async def close_if_idle(self, now: float) -> None:
        pass

    def path_for(self, envelope: Envelope) -> Path:
        # Named after the message's key, so a redelivery after a crash overwrites, never doubles.
        return self.folder / f"{envelope.key}.eml"

    async def deliver(self, envelope: Envelope, relay: Relay | None = None,
                      ready: Awaitable[bool] | None = None) -> str | None:
        if ready is not None and not await ready:
            return None
        return await asyncio.to_thread(self._write, envelope)

    def _write(self, envelope: Envelope) -> str:
        path = self.path_for(envelope)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.write(envelope.raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise DeliveryError(f"cannot write to the outbox: {exc}", permanent=False) from exc
        return f"written to {path}"
