"""Follow-up reminders and what users are told of the messages they sent.

A reminder is settled when its deadline passes: cancelled if the message was seen (a
person's view, or a reply) or answered, as the reminder asks; else fired, which queues its
webhook event in the same transaction and puts the conversation under "Follow up" while it
stays unseen or unanswered. Nothing is done at view or reply time: the pixel does no more
work for reminders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import aliased

from ..records import (
    MailboxRecord,
    MessageRecord,
    ReminderKind,
    ReminderRecord,
    UserRecord,
    WebhookFacts,
)
from .base import StoreBase, mailbox_record, message_record
from .models import Mailbox, Message, Reminder, User
from .users import _user
from .webhooks import queue_events

__all__ = ["ReminderStore", "follow_up"]

_EVENTS: dict[str, Any] = {"not_viewed": "message.not_viewed",
                           "not_replied": "message.not_replied"}
NOTIFY_ATTEMPTS = 5  # a reminder e-mail the relay keeps refusing is given up after this


def _open(kind: Any, message: Any) -> Any:
    """Whether a reminder of ``kind`` still stands for ``message``: not viewed by a person
    (a reply shows it was seen), or not replied to. Auto-replies set no reply time and
    machine fetches count no view, so neither settles it. A message that never left (failed,
    withdrawn) has nothing to follow up."""
    unseen = (message.view_count == 0) & message.replied_at.is_(None)
    return and_(message.status.notin_(("failed", "cancelled")),
                or_(and_(kind == "not_viewed", unseen),
                    and_(kind == "not_replied", message.replied_at.is_(None))))


def follow_up(conversation_id: Any) -> Any:
    """The "Follow up" filter: a message of the conversation had a reminder fire, and is
    still unseen or unanswered as that reminder asked. Read from the fired reminders (a
    range of their index by state), not conversation by conversation."""
    m = aliased(Message)
    return conversation_id.in_(
        select(m.conversation_id).join(Reminder, Reminder.message_id == m.id)
        .where(Reminder.state == "fired", _open(Reminder.kind, m)))


def _record(r: Reminder) -> ReminderRecord:
    return ReminderRecord(r.id, r.message_id, r.kind, r.due_at,  # type: ignore[arg-type]
                          r.state, r.user_id, r.fired_at,  # type: ignore[arg-type]
                          r.notified_at, r.notify_error)


class ReminderStore(StoreBase):
    def add_reminders(self, message_id: int, deadlines: Sequence[tuple[ReminderKind, datetime]],
                      user_id: int | None) -> list[ReminderRecord]:
        with self._tx() as s:
            rows = [Reminder(message_id=message_id, kind=kind, due_at=at, state="waiting",
                             user_id=user_id, notify_attempts=0) for kind, at in deadlines]
            s.add_all(rows)
            s.flush()
            return [_record(r) for r in rows]

    def reminders_of(self, message_ids: Sequence[int]) -> dict[int, list[ReminderRecord]]:
        with self._tx() as s:
            found: dict[int, list[ReminderRecord]] = {m: [] for m in message_ids}
            for r in s.scalars(select(Reminder).where(Reminder.message_id.in_(
                    list(message_ids))).order_by(Reminder.due_at, Reminder.id)):
                found[r.message_id].append(_record(r))
            return found

    def settle_due_reminders(self, limit: int = 200) -> tuple[int, int]:
        """Settle reminders whose deadline passed: (fired, cancelled)."""
        now = self.clock.now()
        fired = cancelled = 0
        with self._tx() as s:
            rows = s.execute(
                select(Reminder, Message.mailbox_id, _open(Reminder.kind, Message))
                .join(Message, Message.id == Reminder.message_id)
                .where(Reminder.state == "waiting", Reminder.due_at <= now)
                .order_by(Reminder.due_at, Reminder.id).limit(limit)
                .with_for_update(skip_locked=True, of=Reminder)).all()
            for reminder, box, still in rows:
                if not still:
                    reminder.state = "cancelled"
                    cancelled += 1
                    continue
                reminder.state, reminder.fired_at = "fired", now
                fired += 1
                queue_events(s, _EVENTS[reminder.kind], [(box, WebhookFacts(
                    reminder.message_id, None, now,
                    note=f"no {'view' if reminder.kind == 'not_viewed' else 'reply'} by "
                         f"{reminder.due_at.isoformat(timespec='minutes')}"))], now)
        return fired, cancelled

    def reminders_to_notify(self, limit: int = 50) -> list[tuple[
            ReminderRecord, MessageRecord, MailboxRecord, UserRecord]]:
        """Fired reminders whose sender has not been told yet (and has an account)."""
        with self._tx() as s:
            rows = s.execute(
                select(Reminder, Message, Mailbox, User)
                .join(Message, Message.id == Reminder.message_id)
                .join(Mailbox, Mailbox.id == Message.mailbox_id)
                .join(User, User.id == Reminder.user_id)
                .where(Reminder.state == "fired", Reminder.notified_at.is_(None),
                       Reminder.notify_attempts < NOTIFY_ATTEMPTS)
                .order_by(Reminder.id).limit(limit)).all()
            return [(_record(r), message_record(m), mailbox_record(b), _user(s, u))
                    for r, m, b, u in rows]

    def reminder_notified(self, reminder_id: int, error: str | None = None) -> None:
        """Told (``error`` None), or one more failed attempt at telling."""
        with self._tx() as s:
            values: dict[str, Any] = ({"notified_at": self.clock.now(), "notify_error": None}
                                      if error is None else {"notify_error": error[:1000]})
            s.execute(update(Reminder).where(Reminder.id == reminder_id).values(
                notify_attempts=Reminder.notify_attempts + 1, **values))

    # -- notices and digests --------------------------------------------------------------

    def users_notified(self, mode: str) -> list[UserRecord]:
        with self._tx() as s:
            return [_user(s, u) for u in s.scalars(select(User).where(User.notify == mode)
                                                   .order_by(User.id))]

    def set_notify(self, user_id: int, mode: str) -> None:
        with self._tx() as s:
            s.execute(update(User).where(User.id == user_id).values(
                notify=mode, notified_until=self.clock.now()))

    def notified_until(self, user_id: int) -> datetime | None:
        with self._tx() as s:
            return s.scalar(select(User.notified_until).where(User.id == user_id))

    def set_notified_until(self, user_id: int, until: datetime) -> None:
        with self._tx() as s:
            s.execute(update(User).where(User.id == user_id).values(notified_until=until))

    def activity_of(self, user_id: int, since: datetime, until: datetime, window: timedelta
                    ) -> dict[str, list[tuple[MessageRecord, MailboxRecord]]]:
        """What happened to the messages ``user_id`` sent in the last ``window``: those
        first viewed by a person in (since, until], those replied to then, and those whose
        reminder fired and still stand ("waiting"). Read over the sent messages' index by
        time, never the whole table."""
        recent = until - window
        with self._tx() as s:
            base = (select(Message, Mailbox).join(Mailbox, Mailbox.id == Message.mailbox_id)
                    .where(Message.status == "sent", Message.sent_at >= recent,
                           Message.sent_by_user_id == user_id))

            def read(q: Any) -> list[tuple[MessageRecord, MailboxRecord]]:
                return [(message_record(m), mailbox_record(b))
                        for m, b in s.execute(q.order_by(Message.sent_at, Message.id))]

            waiting = exists().where(Reminder.message_id == Message.id,
                                     Reminder.state == "fired",
                                     _open(Reminder.kind, Message))
            return {
                "viewed": read(base.where(Message.first_viewed_at > since,
                                          Message.first_viewed_at <= until)),
                "replied": read(base.where(Message.replied_at > since,
                                           Message.replied_at <= until)),
                "waiting": read(base.where(waiting)),
            }
