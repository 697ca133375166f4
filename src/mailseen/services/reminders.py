"""Follow-up reminders and notices to the people who send.

A sender asks to be reminded if a message is not viewed, or not replied to, within some
days or by a date (the mailbox may give a default). When the deadline passes with no view by
a person (a reply counts as seen) or no reply by a person, the sender gets an e-mail, the
conversation shows under "Follow up" and the webhook event fires; a view or reply before the
deadline cancels it. Machine fetches and auto-replies never do.

Each user may also be told when a message they sent is first viewed: at once, or in a daily
digest of what was viewed, replied and is still waiting. Notices leave through the sending
mailbox's own transport (the outbox folder or its SMTP relay)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import get_args
from urllib.parse import unquote, urlsplit

from ..clock import Clock, wait
from ..core.compose import Draft, build_message
from ..errors import DeliveryError, InvalidInput, MailseenError
from ..records import (
    Envelope,
    MailboxRecord,
    MessageRecord,
    NotifyMode,
    Relay,
    ReminderKind,
    ReminderRecord,
    UserRecord,
)
from ..storage import Store
from ..transports import Transport

__all__ = ["MAX_DAYS", "NOTIFY_MODES", "RemindChoice", "ReminderJob", "Reminders",
           "parse_deadline", "relay_of"]

log = logging.getLogger(__name__)
MAX_DAYS = 365
NOTIFY_MODES: tuple[NotifyMode, ...] = get_args(NotifyMode)
CHECK_SECONDS = 60.0  # how often the job looks for deadlines passed and views to tell of
DIGEST_EVERY = timedelta(days=1)
RECENT = timedelta(days=30)  # a digest covers the messages sent this long ago at most
RECENT_NOTICE = timedelta(days=7)  # an immediate notice, those sent this long ago at most

Deadline = int | date | None


@dataclass(frozen=True)
class RemindChoice:
    """What the sender asked: a number of days, a date (the end of that day, UTC), 0 for no
    reminder, or None for the mailbox's default."""

    not_viewed: Deadline = None
    not_replied: Deadline = None


def _when(value: Deadline, default: int | None, now: datetime, field: str
          ) -> datetime | None:
    if value is None:
        value = default
    if value is None or value == 0:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        at = datetime.combine(value + timedelta(days=1), time(0), UTC)
        if at <= now:
            raise InvalidInput(f"{field}: a date still to come", field=field)
        return at
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_DAYS:
        return now + timedelta(days=value)
    raise InvalidInput(f"{field}: a number of days from 1 to {MAX_DAYS}, or a date",
                       field=field)


def parse_deadline(text: str, field: str, label: str = "") -> Deadline:
    """A deadline as typed: empty for the mailbox's default, "0" or "never" for none, a
    number of days, or a date (YYYY-MM-DD). ``label``: the field's name in the error."""
    text = text.strip().lower()
    if not text:
        return None
    if text in ("0", "never", "none"):
        return 0
    if text.isdigit() and len(text) <= 3:
        return int(text)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{label or field}: a number of days, a date (YYYY-MM-DD) or "
                           "never", field=field) from None


class Reminders:
    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or store.clock

    def deadlines(self, box: MailboxRecord, choice: RemindChoice | None
                  ) -> list[tuple[ReminderKind, datetime]]:
        choice = choice or RemindChoice()
        now = self.clock.now()
        found: list[tuple[ReminderKind, datetime]] = []
        for kind, value, default in (
                ("not_viewed", choice.not_viewed, box.remind_not_viewed_days),
                ("not_replied", choice.not_replied, box.remind_not_replied_days)):
            at = _when(value, default, now, f"remind_{kind}")
            if at is not None:
                found.append((kind, at))  # type: ignore[arg-type]
        return found

    def schedule(self, message: MessageRecord, actor: UserRecord | None,
                 deadlines: list[tuple[ReminderKind, datetime]]) -> list[ReminderRecord]:
        if not deadlines:
            return []
        return self.store.add_reminders(message.id, deadlines, actor.id if actor else None)

    def of(self, message_ids: list[int]) -> dict[int, list[ReminderRecord]]:
        return self.store.reminders_of(message_ids)

    def set_notify(self, actor: UserRecord, mode: str) -> None:
        """What ``actor`` is told of the messages they send (their own choice)."""
        if mode not in NOTIFY_MODES:
            raise InvalidInput(f"notify: one of {', '.join(NOTIFY_MODES)}", field="notify")
        self.store.set_notify(actor.id, mode)


def relay_of(url: str) -> Relay:
    """The notification relay of the ``notify_relay`` setting: smtp://USER:PASSWORD@HOST:PORT
    (STARTTLS) or smtps://… (TLS from the start)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise InvalidInput("notify_relay: smtp://USER:PASSWORD@HOST:PORT or smtps://…",
                           field="notify_relay")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInput("notify_relay: the port is not a number", field="notify_relay") \
            from exc
    return Relay(parts.hostname, port, "implicit" if parts.scheme == "smtps" else "starttls",
                 unquote(parts.username) if parts.username else None,
                 unquote(parts.password) if parts.password else None)


class ReminderJob:
    """Run beside the delivery worker: every minute, settles the reminders whose deadline
    passed and tells the senders; tells users of first views (at once or in the daily
    digest). Notices leave through ``relay`` (the ``notify_relay`` setting, by the SMTP
    transport) when there is one, else through the sending mailbox's own transport."""

    def __init__(self, store: Store, transports: dict[str, Transport],
                 clock: Clock | None = None, check_seconds: float = CHECK_SECONDS,
                 relay: Relay | None = None, sender: str = "") -> None:
        self.store = store
        self.transports = transports
        self.clock = clock or store.clock
        self.check_seconds = check_seconds
        self.relay = relay
        self.sender = sender

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except MailseenError as exc:  # the database is down: at the next check
                log.warning("reminders paused: %s", exc)
            await wait(self.clock, self.check_seconds, stop)

    async def run_once(self) -> dict[str, int]:
        """One check: {"fired", "cancelled", "reminded", "notices", "digests"}."""
        fired, cancelled = await asyncio.to_thread(self.store.settle_due_reminders)
        done = {"fired": fired, "cancelled": cancelled, "reminded": 0, "notices": 0,
                "digests": 0}
        for reminder, message, box, user in await asyncio.to_thread(
                self.store.reminders_to_notify):
            error = await self._send(box, user, _reminder_mail(reminder, message, box))
            await asyncio.to_thread(self.store.reminder_notified, reminder.id, error)
            done["reminded"] += error is None
        done["notices"] = await self._tell("immediately", RECENT_NOTICE, timedelta(0))
        done["digests"] = await self._tell("daily", RECENT, DIGEST_EVERY)
        return done

    async def _tell(self, mode: str, window: timedelta, every: timedelta) -> int:
        now = self.clock.now()
        sent = 0
        for user in await asyncio.to_thread(self.store.users_notified, mode):
            since = await asyncio.to_thread(self.store.notified_until, user.id)
            since = since or now
            if now - since < every:
                continue
            news = await asyncio.to_thread(self.store.activity_of, user.id, since, now,
                                           window)
            if mode == "immediately":
                news = {"viewed": news["viewed"]}
            if not any(news.values()):
                if mode == "daily":  # nothing to say today: start the next day from now
                    await asyncio.to_thread(self.store.set_notified_until, user.id, now)
                continue
            box = next(b for items in news.values() for _, b in items)
            error = await self._send(box, user, _digest_mail(mode, news, since, now))
            if error is None:
                await asyncio.to_thread(self.store.set_notified_until, user.id, now)
                sent += 1
        return sent

    async def _send(self, box: MailboxRecord, user: UserRecord, mail: tuple[str, str]
                    ) -> str | None:
        """Send a notice to ``user`` through ``box``'s transport: None, or the error."""
        subject, text = mail
        sender = (self.sender or box.address) if self.relay else box.address
        raw = build_message(Draft(from_addr=sender, from_name="mailseen",
                                  to=[user.email], subject=subject, text=text),
                            sender.rpartition("@")[2])
        key = f"notice-{self.clock.now().strftime('%Y%m%d-%H%M%S%f')}-{user.id}"
        envelope = Envelope(sender, (user.email,), raw, key)
        relay, kind = self.relay, "smtp"
        if relay is None:
            kind = box.transport
            if box.transport == "smtp":
                settings = await asyncio.to_thread(self.store.mailbox_settings, box.id)
                relay = Relay(settings.smtp_host, settings.smtp_port, settings.smtp_tls,
                              settings.smtp_username, settings.smtp_password or None)
        transport = self.transports.get(kind)
        if transport is None:
            return f"unknown transport {kind!r}"
        try:
            await transport.deliver(envelope, relay)
        except DeliveryError as exc:
            log.warning("notice to %s through %s failed: %s", user.email, box.address, exc)
            return str(exc)
        return None


def _label(message: MessageRecord) -> str:
    to = ", ".join(message.to or message.envelope_to) or "its recipients"
    return f"“{message.subject or '(no subject)'}” to {to}"


def _reminder_mail(reminder: ReminderRecord, message: MessageRecord, box: MailboxRecord
                   ) -> tuple[str, str]:
    what = "viewed" if reminder.kind == "not_viewed" else "replied to"
    sent = message.sent_at.strftime("%Y-%m-%d") if message.sent_at else "not yet sent"
    subject = f"Follow up: not {what} yet: {message.subject or '(no subject)'}"
    text = (f"Your message {_label(message)}, sent from {box.address} on {sent}, has not "
            f"been {what} by {reminder.due_at.strftime('%Y-%m-%d %H:%M')} UTC.\n\n"
            "It is listed under \"Follow up\" in mailseen until it is.\n")
    return subject, text


def _digest_mail(mode: str, news: dict[str, list[tuple[MessageRecord, MailboxRecord]]],
                 since: datetime, now: datetime) -> tuple[str, str]:
    viewed = news.get("viewed", [])
    if mode == "immediately":
        first = viewed[0][0]
        subject = (f"Viewed: {first.subject or '(no subject)'}" if len(viewed) == 1
                   else f"{len(viewed)} of your messages were viewed")
    else:
        subject = f"mailseen: your messages on {now.strftime('%Y-%m-%d')}"
    lines = []
    for key, heading in (("viewed", "Viewed for the first time"), ("replied", "Replied"),
                         ("waiting", "Waiting: a reminder passed without a view or reply")):
        items = news.get(key, [])
        if not items:
            continue
        lines.append(f"{heading}:")
        for message, box in items:
            at = {"viewed": message.first_viewed_at,
                  "replied": message.replied_at}.get(key)
            when = f" ({at.strftime('%Y-%m-%d %H:%M')} UTC)" if at else ""
            lines.append(f"- {_label(message)}, from {box.address}{when}")
        lines.append("")
    lines.append(f"Since {since.strftime('%Y-%m-%d %H:%M')} UTC. Change what you are told "
                 "in mailseen under your account settings.")
    return subject, "\n".join(lines) + "\n"
