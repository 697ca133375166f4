"""Whether a message is tracked, and why, in the words the user sees."""

from __future__ import annotations

from dataclasses import dataclass

from ..records import TrackingMode

__all__ = ["Decision", "decide", "not_trackable"]

@dataclass(frozen=True)
class Decision:
    enabled: bool
    reason: str


def decide(global_enabled: bool, mailbox_mode: TrackingMode) -> Decision:
    """The mailbox setting wins both ways; "global" defers to the global setting."""
    if mailbox_mode == "enabled":
        return Decision(True, "enabled by mailbox setting")
    if mailbox_mode == "disabled":
        return Decision(False, "disabled by mailbox setting")
    if global_enabled:
        return Decision(True, "enabled globally")
    return Decision(False, "disabled globally")


def not_trackable(why: str) -> str:
    return f"not trackable: {why}"
