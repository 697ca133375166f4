"""SMTP submission (RFC 6409): who may send, as which mailbox, how much, and handing the
message to the one send pipeline (:meth:`Sender.submit`, as compose does).

The SMTP edge (receivers/submission.py) only unpacks the dialogue and words the replies;
each rule is here, and tests call it directly."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from ..clock import Clock
from ..core.compose import read_facts, take_header
from ..core.submission import line_ending_problem, sender_problem
from ..errors import InvalidInput, MailseenError
from ..records import MailboxRecord, MessageRecord, UserRecord
from .accounts import Accounts
from .mailboxes import Mailboxes, can_see_mailbox, sending_addresses
from .reminders import RemindChoice, parse_deadline
from .sending import Sender

__all__ = ["SOURCE", "Refused", "Submissions"]

SOURCE = "submission"  # how a submitted message came in (messages.source)
_MINUTE = timedelta(minutes=1)

Why = Literal["sender", "from", "rate", "recipients", "line-endings", "remind"]


class Refused(MailseenError):
    """A submission refused by a rule; ``why`` says which (the edge words the reply)."""

    def __init__(self, why: Why, message: str) -> None:
        super().__init__(message)
        self.why = why


# Fields a mail client may add to ask for follow-up reminders (docs/submission.md): each a
# number of days, a date (YYYY-MM-DD) or "never". Taken out before the message is stored.
REMIND_FIELDS = ("X-Mailseen-Remind-Not-Viewed", "X-Mailseen-Remind-Not-Replied")


def remind_fields(raw: bytes) -> tuple[bytes, RemindChoice | None]:
    """The message without the reminder fields, and what they asked (None: none given, the
    mailbox's defaults apply). A value that is not a deadline is refused, naming it."""
    values: list[str | None] = []
    for name in REMIND_FIELDS:
        raw, value = take_header(raw, name)
        values.append(value)
    if values == [None, None]:
        return raw, None
    try:
        deadlines = [parse_deadline(v or "", name.lower(), name)
                     for v, name in zip(values, REMIND_FIELDS, strict=True)]
    except InvalidInput as exc:
        raise Refused("remind", str(exc)) from exc
    return raw, RemindChoice(*deadlines)


class Submissions:
    def __init__(self, accounts: Accounts, mailboxes: Mailboxes, sender: Sender,
                 clock: Clock, *, max_recipients: int = 100, per_minute: int = 30) -> None:
        self.accounts = accounts
        self.mailboxes = mailboxes
        self.sender = sender
        self.clock = clock
        self.max_recipients = max_recipients
        self.per_minute = per_minute
        # When each user's latest messages were queued: the rate limit's window (in this
        # process's memory, so each submission process counts its own).
        self._sent: dict[int, deque[float]] = {}
        self._lock = threading.Lock()  # checked on the event loop, noted in worker threads

    def login(self, username: str, password: str, client: str) -> UserRecord:
        """The user an app password logs in (raises SignInRefused)."""
        return self.accounts.app_password_login(username, password, client)

    def mailbox_for(self, user: UserRecord, address: str) -> MailboxRecord:
        """The mailbox ``user`` sends as when the envelope sender is ``address`` (its
        address or one of its aliases, in any case): one they may work in (members: theirs;
        admins: any)."""
        wanted = address.strip().lower()
        for box in self.mailboxes.all():
            if wanted in sending_addresses(box) and can_see_mailbox(user, box.id):
                return box
        raise Refused("sender", f"<{address}> is not a mailbox you may send as")

    def check_rate(self, user: UserRecord) -> None:
        """Refuse a new message when the user sent ``per_minute`` in the last minute."""
        with self._lock:
            window = self._window(user.id)
            full = len(window) >= self.per_minute
            oldest = window[0] if full else 0.0
        if full:
            wait = int(oldest + _MINUTE.total_seconds() - self._now()) + 1
            raise Refused("rate", f"more than {self.per_minute} messages a minute; try "
                                  f"again in {max(wait, 1)} seconds")

    def check_recipients(self, count: int) -> None:
        if count > self.max_recipients:
            raise Refused("recipients", f"more than {self.max_recipients} recipients; "
                                        "send to fewer at once")

    def submit(self, user: UserRecord, mailbox: MailboxRecord, recipients: Sequence[str],
               raw: bytes) -> MessageRecord:
        """Check the message and queue it through the send pipeline; it is committed when
        this returns. Recipients in the envelope but in no To or Cc field are Bcc: each
        gets their copy like the others, without a Bcc field."""
        self.check_recipients(len(recipients))
        problem = line_ending_problem(raw)
        if problem is not None:
            raise Refused("line-endings", problem)
        problem = sender_problem(raw, sending_addresses(mailbox))
        if problem is not None:
            raise Refused("from", problem)
        self.check_rate(user)
        raw, remind = remind_fields(raw)
        facts = read_facts(raw)
        shown = {a.lower() for a in (*facts.to, *facts.cc)}
        envelope = list(dict.fromkeys(recipients))
        bcc = [r for r in envelope if r.lower() not in shown]
        record = self.sender.submit(mailbox, raw, bcc=bcc, envelope_to=envelope,
                                    source=SOURCE, actor=user, remind=remind)
        with self._lock:
            self._window(user.id).append(self._now())
        return record

    def filed_copy(self, record: MessageRecord) -> bytes:
        """What goes in the Sent folder for a queued message: the message as stored (its
        Message-ID, which the Sent folder's reader knows it by; no pixel, no Bcc field)."""
        return self.sender.store.get_raw(record.id)

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _window(self, user_id: int) -> deque[float]:
        window = self._sent.setdefault(user_id, deque())
        since = self._now() - _MINUTE.total_seconds()
        while window and window[0] <= since:
            window.popleft()
        return window
