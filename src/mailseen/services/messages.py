"""Reading what was sent, received and seen: messages, conversations, views, the listing and
the reports, each only for an actor who may see the mailbox.

``actor`` is the signed-in user, or None for the installation itself. Something that exists
but is not visible is answered as NotFound, the same as something that does not exist."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from ..core.inject import tag_message
from ..core.mailbody import Display
from ..errors import InvalidInput, NotFound
from ..records import (
    ClickRecord,
    ConversationRecord,
    CopyRecord,
    MessageRecord,
    Report,
    UserRecord,
    ViewRecord,
)
from ..storage import Store
from . import live
from .live import LiveChanges, LiveScope
from .mailboxes import Mailboxes, can_see_mailbox, require_admin

__all__ = ["Messages"]

ListingRow = tuple[ConversationRecord, MessageRecord | None]


class Messages:
    def __init__(self, store: Store, mailboxes: Mailboxes,
                 is_own_pixel: Callable[[str], bool]) -> None:
        self.store = store
        self.mailboxes = mailboxes
        self.is_own_pixel = is_own_pixel

    # -- one message --------------------------------------------------------------------

    def get(self, actor: UserRecord | None, message_id: int) -> MessageRecord:
        m = self.store.get_message(message_id)
        _require(actor, m)
        return m

    def raw(self, actor: UserRecord | None, message_id: int) -> bytes:
        """The bytes as stored: what was sent as written (each recipient's copy had its own
        pixel put in on the way out), or what was received."""
        self.get(actor, message_id)
        return self.store.get_raw(message_id)

    def shown_raw(self, actor: UserRecord | None, message: MessageRecord) -> bytes:
        """The message's bytes as the team may see them: our pixels taken out of what we
        sent (received mail had them taken out on the way in), so that displaying it never
        counts as a view."""
        _require(actor, message)
        raw = self.store.get_raw(message.id)
        if message.direction == "out":
            cleaned = tag_message(raw, "", self.is_own_pixel)
            if cleaned.pixels_removed:
                raw = cleaned.data
        return raw

    def display(self, actor: UserRecord | None, message: MessageRecord, version: int,
                render: Callable[[bytes], Display]) -> Display:
        """The message made ready to show: as stored when made by rules of ``version``, else
        made by ``render`` (the web layer's sanitiser, CPU-bound: call this off the event
        loop) from :meth:`shown_raw` and stored."""
        _require(actor, message)
        found = self.store.get_display(message.id)
        if found is not None and found.version == version:
            return found
        made = render(self.shown_raw(actor, message))
        self.store.put_display(message.id, made)
        return made

    def views(self, actor: UserRecord | None, message: MessageRecord, limit: int = 1000
              ) -> list[ViewRecord]:
        """The views of a message read before (no second lookup of it)."""
        _require(actor, message)
        return self.store.list_views(message.id, limit=limit)

    def clicks(self, actor: UserRecord | None, message: MessageRecord, limit: int = 1000
               ) -> list[ClickRecord]:
        """The clicks of a message's tracked links, human and machine, oldest first."""
        _require(actor, message)
        return self.store.list_clicks(message.id, limit=limit)

    def copies(self, actor: UserRecord | None, message: MessageRecord) -> list[CopyRecord]:
        """A message's copies, one per recipient (or one for all), with each one's delivery
        state and what its pixel saw."""
        _require(actor, message)
        return self.store.copies_of([message.id])[message.id]

    def recipients_of(self, actor: UserRecord | None, messages: Sequence[MessageRecord]
                      ) -> dict[int, list[CopyRecord]]:
        """:meth:`copies` of several messages read before, in one query."""
        for m in messages:
            _require(actor, m)
        return self.store.copies_of([m.id for m in messages if m.direction == "out"])

    def retry(self, actor: UserRecord | None, message_id: int) -> int:
        """Try the copies of a message that wait or failed again now (admins only; none
        that were sent). Returns how many were queued."""
        return self._requeue(actor, message_id, self.store.retry_now)

    def cancel(self, actor: UserRecord | None, message_id: int) -> int:
        """Withdraw the copies of a message that wait or failed (admins only). Returns how
        many were withdrawn."""
        return self._requeue(actor, message_id, self.store.cancel)

    def _requeue(self, actor: UserRecord | None, message_id: int,
                 change: Callable[[Sequence[int]], int]) -> int:
        require_admin(actor)
        message = self.get(actor, message_id)
        if message.direction != "out":
            raise InvalidInput("message: only messages the team sent are delivered",
                               field="message")
        copies = self.store.copies_of([message.id])[message.id]
        return change([c.id for c in copies])

    def newest(self, actor: UserRecord | None, *, mailbox_id: int | None = None,
             status: str | None = None, limit: int = 50, before: int | None = None
             ) -> list[MessageRecord]:
        """Newest first; ``before`` pages back by id."""
        if mailbox_id is not None:
            self.mailboxes.require(actor, mailbox_id)
        allowed = None if actor is None or actor.is_admin else actor.mailbox_ids
        return self.store.list_messages(mailbox_id=mailbox_id, status=status, limit=limit,
                                        before_id=before, mailbox_ids=allowed)

    def machine_clients(self, messages: Sequence[MessageRecord | None]) -> dict[int, str]:
        """The client named by the latest machine fetch of each message that only machines
        fetched: what its eye names."""
        return self.store.machine_clients(
            [m.id for m in messages if m is not None and m.direction == "out"
             and m.machine_count and not m.viewed])

    # -- conversations --------------------------------------------------------------------

    def conversation(self, actor: UserRecord | None, conversation_id: int
                     ) -> ConversationRecord:
        conv = self.store.get_conversation(conversation_id)
        if not can_see_mailbox(actor, conv.mailbox_id):
            raise NotFound(f"no conversation with id {conversation_id}")
        return conv

    def in_conversation(self, actor: UserRecord | None, conversation_id: int
                        ) -> list[MessageRecord]:
        """The conversation's messages, oldest first."""
        self.conversation(actor, conversation_id)
        return self.store.conversation_messages(conversation_id)

    def listing(self, actor: UserRecord | None, mailbox_id: int | None = None, *,
                status: str | None = None, search: str | None = None, limit: int = 50,
                offset: int = 0) -> list[ListingRow]:
        """Conversations newest first, each with the latest message the team sent in it, in
        one mailbox or every mailbox the actor may see."""
        if mailbox_id is not None:
            self.mailboxes.require(actor, mailbox_id)
            ids = [mailbox_id]
        else:
            ids = self.mailboxes.visible_ids(actor)
        return self.store.conversation_page(ids, status=status, search=search, limit=limit,
                                            offset=offset)

    # -- reports --------------------------------------------------------------------------

    def report(self, actor: UserRecord | None, mailbox_ids: Sequence[int], since: datetime,
               days: int) -> Report:
        """Figures for those of ``mailbox_ids`` the actor may see."""
        visible = [i for i in mailbox_ids if can_see_mailbox(actor, i)]
        return self.store.report(visible, since, days)

    def pending_counts(self) -> dict[str, int]:
        """Messages still in the queue or needing attention, by status (the health check)."""
        return self.store.pending_counts()

    # -- live pages: the change cursor ----------------------------------------------------

    def live_cursor(self, actor: UserRecord | None, scope: LiveScope) -> str:
        """The change cursor of ``scope`` as of now, for a page to watch from. Take it before
        reading what the page shows: a change made in between then shows up as one.
        NotFound for a conversation or mailbox the actor may not see."""
        return live.start(self.store, scope, self._live_mailboxes(actor, scope))

    def live_changes(self, actor: UserRecord | None, scope: LiveScope, cursor: str
                     ) -> LiveChanges:
        """What moved since ``cursor`` (from :meth:`live_cursor` or an earlier answer): the
        next cursor; whether anything ``scope`` shows changed (a view or machine fetch
        recorded, a message stored in either direction, a delivery state or count changed);
        and the new views and messages in every mailbox the actor may see, for
        notifications. A cursor that cannot be read starts afresh (nothing changed).

        What changes in place is followed through a digest (see storage/live.py): a new
        table whose rows the pages show belongs in it."""
        return live.changes(self.store, scope, self._live_mailboxes(actor, scope), cursor)

    def _live_mailboxes(self, actor: UserRecord | None, scope: LiveScope) -> list[int]:
        if scope.kind == "conversation":
            self.conversation(actor, scope.id)
        elif scope.kind == "mailbox":
            self.mailboxes.require(actor, scope.id)
        return self.mailboxes.visible_ids(actor)


def _require(actor: UserRecord | None, message: MessageRecord) -> None:
    """NotFound, as for a message that does not exist, unless the actor may see it."""
    if not can_see_mailbox(actor, message.mailbox_id):
        raise NotFound(f"no message with id {message.id}")
