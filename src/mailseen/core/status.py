"""The eye: one message's tracking status in the words and icon the team sees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["Eye", "eye_for", "relative_time"]

Kind = Literal["viewed", "machine", "waiting", "untracked", "none"]


@dataclass(frozen=True)
class Eye:
    kind: Kind
    label: str  # the tooltip / accessible text

    @property
    def icon(self) -> str:
        """Name of the icon: solid eye, outline eye, a robot for machine-only, none."""
        return {"viewed": "eye-solid", "machine": "eye-machine", "waiting": "eye-outline",
                "untracked": "", "none": ""}[self.kind]


def relative_time(when: datetime, now: datetime) -> str:
    seconds = max(0, int((now - when).total_seconds()))
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400 * 7, "week"),
                       (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def eye_for(*, tracked: bool, tracking_reason: str, view_count: int,
            last_viewed_at: datetime | None, replied_at: datetime | None, machine_count: int,
            machine_client: str | None, now: datetime) -> Eye:
    """Status of a message the team sent. Human views win; a reply proves it was seen even
    without images; machine fetches alone never say "viewed"."""
    if view_count and last_viewed_at is not None:
        views = f"{view_count} view{'s' if view_count != 1 else ''}"
        return Eye("viewed", f"Viewed {relative_time(last_viewed_at, now)} · {views}")
    if replied_at is not None:
        return Eye("viewed", f"Replied {relative_time(replied_at, now)} · seen")
    if not tracked:
        reason = tracking_reason or "tracking off"
        return Eye("untracked", f"Not tracked: {reason.removeprefix('not trackable: ')}")
    if machine_count:
        what = machine_client if machine_client and machine_client != "unknown" else (
            "an automated client")
        return Eye("machine", f"Fetched by {what} — viewing not confirmed")
    return Eye("waiting", "Sent, not viewed yet")
