"""The eye: one message's tracking status in the words and icon the team sees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ..records import CopyRecord, MessageRecord

__all__ = ["Eye", "delivery_state", "eye_for", "relative_time"]

Kind = Literal["viewed", "machine", "waiting", "pending", "failed", "untracked", "none"]


@dataclass(frozen=True)
class Eye:
    kind: Kind
    label: str  # the tooltip / accessible text

    @property
    def icon(self) -> str:
        """Name of the icon: solid eye, outline eye, a robot for machine-only, a clock for
        not delivered yet, a warning sign for not delivered, none."""
        return {"viewed": "eye-solid", "machine": "eye-machine", "waiting": "eye-outline",
                "pending": "eye-pending", "failed": "eye-failed", "untracked": "",
                "none": ""}[self.kind]


def _span(seconds: int) -> str | None:
    """A length of time in the largest whole unit ("3 hours"), None under a minute."""
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400 * 7, "week"),
                       (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return None


def relative_time(when: datetime, now: datetime) -> str:
    span = _span(max(0, int((now - when).total_seconds())))
    return f"{span} ago" if span else "just now"


def delivery_state(copy: CopyRecord, now: datetime) -> str:
    """Where one copy's delivery stands, in words: nothing says "sent" before the relay
    accepted it."""
    if copy.status == "queued":
        if not copy.attempts:
            return "Waiting to be sent"
        when = ""
        if copy.next_attempt_at is not None:
            seconds = int((copy.next_attempt_at - now).total_seconds())
            span = _span(seconds)
            when = f" in {span}" if span else (" in under a minute" if seconds > 0 else " now")
        return (f"Not delivered yet: attempt {copy.attempts} failed "
                f"({copy.last_error or 'no reason given'}); trying again{when}")
    if copy.status == "sending":
        return "Being handed to the relay"
    if copy.status == "sent":
        return "Sent" + (f" {relative_time(copy.sent_at, now)}" if copy.sent_at else "")
    if copy.status == "failed":
        return f"Failed: {copy.last_error or 'the relay refused it'}"
    if copy.status == "bounced":
        return f"Bounced: {copy.last_error or 'returned as undeliverable'}"
    return "Cancelled: it will not be sent"


def eye_for(message: MessageRecord, machine_client: str | None, now: datetime) -> Eye:
    """Status of a message the team sent. Human views win; a reply proves it was seen even
    without images; machine fetches alone never say "viewed"; nothing says "sent" before a
    relay accepted the message, and a copy that could not be delivered shows."""
    m = message
    whom = ""
    if m.copies > 1:
        whom = f" by {m.viewed_copies} of {m.copies} recipients"
    undelivered = ""
    if m.failed_copies and m.status != "failed":
        undelivered = (f" · {m.failed_copies} of {m.copies or 1} not delivered")
    if m.view_count and m.last_viewed_at is not None:
        views = f"{m.view_count} view{'s' if m.view_count != 1 else ''}"
        return Eye("viewed", f"Viewed{whom} {relative_time(m.last_viewed_at, now)} · {views}"
                   + undelivered)
    if m.replied_at is not None:
        return Eye("viewed", f"Replied {relative_time(m.replied_at, now)} · seen"
                   + undelivered)
    if m.status in ("queued", "sending") and m.sent_at is None:
        if m.attempts and m.last_error:
            return Eye("pending", f"Not delivered yet: retrying ({m.last_error})")
        return Eye("pending", "Not delivered yet: waiting to be sent")
    if m.status == "failed":
        return Eye("failed", f"Not delivered: {m.last_error or 'the relay refused it'}")
    if m.status == "cancelled":
        return Eye("failed", "Not sent: cancelled")
    if undelivered:
        return Eye("failed", "Sent" + undelivered)
    if not m.tracked:
        reason = m.tracking_reason or "tracking off"
        return Eye("untracked", f"Not tracked: {reason.removeprefix('not trackable: ')}")
    if m.machine_count:
        what = machine_client if machine_client and machine_client != "unknown" else (
            "an automated client")
        return Eye("machine", f"Fetched by {what} — viewing not confirmed")
    return Eye("waiting", "Sent, not viewed yet")
