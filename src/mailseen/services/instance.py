"""One mailseen installation, wired together from its settings: what every adapter holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Settings
from ..core.tokens import TokenSigner
from ..storage import Database, Store
from ..transports import Transport
from ..transports.outbox import OutboxTransport
from ..transports.smtp import SmtpTransport
from .accounts import Accounts
from .delivery import DeliveryWorker
from .inbound import Ingestor, Renderer
from .secrets import SecretBox
from .sending import Sender

__all__ = ["Instance"]


@dataclass
class Instance:
    settings: Settings
    db: Database
    store: Store
    signer: TokenSigner
    sender: Sender
    accounts: Accounts
    ingestor: Ingestor
    transports: dict[str, Transport] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True,
             render: Renderer | None = None) -> Instance:
        """``render``: how received mail is made ready to show as it arrives (see
        services/inbound); without it, when first shown."""
        secret = settings.secret()
        db = Database(settings.database)
        if migrate:
            db.upgrade()
        store = Store(db, SecretBox(secret))
        signer = TokenSigner(secret)
        sender = Sender(store, signer, settings.base_url)
        transports: dict[str, Transport] = {
            "outbox": OutboxTransport(settings.outbox_dir),
            "smtp": SmtpTransport(settings.smtp_timeout, settings.ca_file),
        }
        return cls(settings, db, store, signer, sender, Accounts(store),
                   Ingestor(store, sender, render=render), transports)

    def worker(self) -> DeliveryWorker:
        s = self.settings
        return DeliveryWorker(self.store, self.transports, retry_base=s.retry_base_seconds,
                              retry_max=s.retry_max_seconds, max_attempts=s.max_attempts)

    def close(self) -> None:
        self.db.dispose()
