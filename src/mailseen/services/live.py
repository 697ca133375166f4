"""Live pages: the change cursor a page watches, and what moved it.

A cursor is a short string, ``<view id>.<message id>.<digest>``: the newest view and message
the page has been told about, and a digest of the rows whose state changes in place (see
:mod:`mailseen.storage.live`). Pages hold it as an opaque token. Reached through
``Messages.live_cursor`` and ``Messages.live_changes``, which check who may see what.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ..errors import InvalidInput
from ..storage import Store
from ..storage.live import LiveMessage, LiveView

__all__ = ["LiveChanges", "LiveMessage", "LiveScope", "LiveView"]

ScopeKind = Literal["conversation", "mailbox", "all", "none"]
_SCOPE = re.compile(r"(conversation|mailbox):([0-9]{1,18})|all|none")
_CURSOR = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})\.([0-9a-f]{0,32})")


@dataclass(frozen=True)
class LiveScope:
    """What a live page shows: one conversation, one mailbox, every mailbox the user may
    see ("all"), or nothing that changes ("none": a page that only wants notifications)."""

    kind: ScopeKind
    id: int = 0

    @classmethod
    def parse(cls, text: str) -> LiveScope:
        """``conversation:12``, ``mailbox:3``, ``all`` or ``none``."""
        found = _SCOPE.fullmatch(text)
        if found is None:
            raise InvalidInput("scope: conversation:ID, mailbox:ID, all or none", field="scope")
        if found.group(1):
            return cls(found.group(1), int(found.group(2)))  # type: ignore[arg-type]
        return cls(text)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}" if self.kind in ("conversation", "mailbox") else self.kind


@dataclass(frozen=True)
class LiveChanges:
    """The answer to "anything new since this cursor?"."""

    cursor: str
    # Something the scope shows changed: the page should be shown again.
    changed: bool
    # New views and messages in every mailbox the actor may see, whatever the scope (a page
    # of one conversation still notifies of views elsewhere), oldest first.
    views: list[LiveView] = field(default_factory=list)
    messages: list[LiveMessage] = field(default_factory=list)


def digest(store: Store, scope: LiveScope, mailbox_ids: list[int]) -> str:
    if scope.kind == "conversation":
        return store.conversation_digest(scope.id)
    if scope.kind == "mailbox":
        return store.unsettled_digest([scope.id])
    if scope.kind == "all":
        return store.unsettled_digest(mailbox_ids)
    return ""


def start(store: Store, scope: LiveScope, mailbox_ids: list[int]) -> str:
    view_id, message_id = store.newest_ids()
    return f"{view_id}.{message_id}.{digest(store, scope, mailbox_ids)}"


def changes(store: Store, scope: LiveScope, mailbox_ids: list[int], cursor: str
            ) -> LiveChanges:
    found = _CURSOR.fullmatch(cursor)
    if found is None:  # none yet, or mangled: watch from now on
        return LiveChanges(start(store, scope, mailbox_ids), changed=False)
    rows = store.live_rows(int(found.group(1)), int(found.group(2)), mailbox_ids)
    now = digest(store, scope, mailbox_ids)
    touched: list[LiveView | LiveMessage] = [*rows.views, *rows.messages]
    if scope.kind == "conversation":
        moved = any(r.conversation_id == scope.id for r in touched)
    elif scope.kind == "mailbox":
        moved = any(r.mailbox_id == scope.id for r in touched)
    else:
        moved = scope.kind == "all" and bool(touched)
    return LiveChanges(f"{rows.next_view_id}.{rows.next_message_id}.{now}",
                       changed=moved or now != found.group(3),
                       views=rows.views, messages=rows.messages)
