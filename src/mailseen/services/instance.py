"""One mailseen installation, wired together from its settings: what every adapter holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..clock import SYSTEM, Clock
from ..config import Settings
from ..core.compose import parse_address
from ..core.netdata import ClassifierData, load_data
from ..core.tokens import ClickSigner, TokenSigner
from ..storage import Database, Store
from ..transports import Transport
from ..transports.outbox import OutboxTransport
from ..transports.smtp import SmtpTransport
from .accounts import Accounts
from .classification import Judge, reclassify
from .clicks import ClickJudge, ClickRecorder
from .consents import Consents
from .delivery import DeliveryWorker
from .inbound import Ingestor, Renderer
from .mailboxes import ImapProbe, Mailboxes
from .messages import Messages
from .privacy import Privacy, RetentionJob
from .recorder import ViewRecorder
from .reminders import ReminderJob, Reminders, relay_of
from .secrets import SecretBox
from .sending import Sender
from .submission import Submissions
from .webhooks import Webhooks, WebhookWorker

__all__ = ["Instance"]


@dataclass
class Instance:
    settings: Settings
    db: Database
    store: Store  # for services and tests only: the edges go through the services below
    signer: TokenSigner
    mailboxes: Mailboxes
    messages: Messages
    sender: Sender
    accounts: Accounts
    ingestor: Ingestor
    consents: Consents
    privacy: Privacy
    webhooks: Webhooks
    reminders: Reminders
    transports: dict[str, Transport] = field(default_factory=dict)
    clock: Clock = SYSTEM
    _classifier_data: ClassifierData | None = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True,
             clock: Clock = SYSTEM, render: Renderer | None = None,
             imap_probe: ImapProbe | None = None) -> Instance:
        """Everything wired to one ``clock``: the system's, or a test's manual one.
        ``render``: how received mail is made ready to show as it arrives (see
        services/inbound); without it, when first shown. ``imap_probe``: how an IMAP
        account's settings are tested (receivers/imap.py's ImapChecker, which services
        cannot import); without it, testing IMAP says it is not available."""
        secret = settings.secret()
        db = Database(settings.database)
        if migrate:
            db.upgrade()
        store = Store(db, SecretBox(secret), clock)
        signer = TokenSigner(secret)
        smtp = SmtpTransport(settings.smtp_timeout, settings.ca_file,
                             per_connection=settings.smtp_messages_per_connection,
                             idle_timeout=settings.smtp_idle_seconds,
                             monotonic=clock.monotonic)
        mailboxes = Mailboxes(store, smtp_probe=smtp.check, imap_probe=imap_probe)
        consents = Consents(store, mailboxes, signer, settings.base_url)
        reminders = Reminders(store, clock)
        sender = Sender(store, mailboxes, signer, settings.base_url, consents=consents,
                        reminders=reminders, click_signer=ClickSigner(secret))
        transports: dict[str, Transport] = {
            "outbox": OutboxTransport(settings.outbox_dir), "smtp": smtp}
        messages = Messages(store, mailboxes, sender.is_own_pixel)
        accounts = Accounts(store, memory_kib=settings.password_memory_kib)
        return cls(settings, db, store, signer, mailboxes, messages, sender, accounts,
                   Ingestor(store, sender, render=render), consents, Privacy(store),
                   Webhooks(store), reminders, transports, clock)

    def upgrade(self) -> None:
        """Bring the database schema up to date."""
        self.db.upgrade()

    def reclassify(self) -> tuple[int, int]:
        """Judge every stored pixel hit again with the current rules and data: (hits
        judged, verdicts changed)."""
        return reclassify(self.store, Judge(self.settings.data_dir))

    def classifier_data(self) -> ClassifierData:
        """The networks and user agents hits and clicks are judged by, loaded once (about
        18 MB and most of a second) for both recorders."""
        if self._classifier_data is None:
            data_dir = self.settings.data_dir
            self._classifier_data = load_data(data_dir / "netdata" if data_dir else None)
        return self._classifier_data

    def view_recorder(self) -> ViewRecorder:
        """A recorder for pixel hits, judging them with this installation's data."""
        return ViewRecorder(self.store, Judge(data=self.classifier_data()),
                            details=self.privacy.details)

    def click_recorder(self) -> ClickRecorder:
        """A recorder for clicks of tracked links, judging them with this installation's
        data."""
        return ClickRecorder(self.store, ClickJudge(data=self.classifier_data()),
                             details=self.privacy.details)

    def worker(self) -> DeliveryWorker:
        s = self.settings
        return DeliveryWorker(self.store, self.transports, retry_base=s.retry_base_seconds,
                              retry_max=s.retry_max_seconds, max_attempts=s.max_attempts,
                              batch=s.delivery_batch, per_relay=s.smtp_connections_per_relay,
                              clock=self.clock, render=self.sender.copy_bytes)

    def submissions(self) -> Submissions:
        """The rules of SMTP submission, with this installation's limits."""
        s = self.settings
        return Submissions(self.accounts, self.mailboxes, self.sender, self.clock,
                           max_recipients=s.submission_max_recipients,
                           per_minute=s.submission_per_minute)
    def retention_job(self) -> RetentionJob:
        """The daily purge of old views' personal details, run beside the delivery worker."""
        return RetentionJob(self.privacy, self.clock)

    def webhook_worker(self) -> WebhookWorker:
        """The sender of webhook events, run beside the delivery worker."""
        return WebhookWorker(self.store, self.consents, clock=self.clock)

    def reminder_job(self) -> ReminderJob:
        """Reminders and notices to senders, run beside the delivery worker; through the
        ``notify_relay`` setting when set (a bad one is refused here, at start)."""
        s = self.settings
        relay = relay_of(s.notify_relay) if s.notify_relay else None
        sender = parse_address(s.notify_from, "notify_from") if s.notify_from else ""
        return ReminderJob(self.store, self.transports, self.clock, relay=relay, sender=sender)

    def close(self) -> None:
        self.db.dispose()
