"""The local outbox: delivered mail is written as .eml files, for the embedded default."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ..errors import DeliveryError
from ..storage.store import Claim

__all__ = ["OutboxTransport"]


class OutboxTransport:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, claim: Claim) -> Path:
        # Named after the message row, so a redelivery after a crash overwrites, never doubles.
        created = claim.message.created_at.strftime("%Y%m%d-%H%M%S")
        return self.folder / f"{created}-{claim.message.id}.eml"

    async def deliver(self, claim: Claim) -> str:
        return await asyncio.to_thread(self._write, claim)

    def _write(self, claim: Claim) -> str:
        path = self.path_for(claim)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.write(claim.raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise DeliveryError(f"cannot write to the outbox: {exc}", permanent=False) from exc
        return f"written to {path}"
