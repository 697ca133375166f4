"""What live pages ask for: has anything shown changed since the page last looked?

Three cheap questions answer it (see ``Messages.live_changes`` for the contract): which views
and which messages are newer than the ids the page last saw (a range of the primary key,
however large the tables), and a digest of the rows whose state changes in place (delivery
states, counts), kept small by reading only one conversation or only the messages whose
delivery is not final.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import case, func, select

from ..records import CopyStatus, Status
from .base import StoreBase
from .models import ClickEvent, Copy, Message, ViewEvent

# Statuses a message or copy leaves by itself (the worker moves it on): what the listing's
# digest follows. Every other change shows up elsewhere: a retry or a cancel of a waiting
# copy changes these counts, a bounce arrives as a new message, a failure ends "sending".
# Failed, bounced and cancelled copies are left out on purpose: they pile up over the years
# (0.5% of a million messages), and reading them on every poll cost the listing 20 ms at
# scale; a failed copy cancelled by another admin shows at the next change or reload.
_MOVING = ("queued", "sending")
_UNSETTLED = tuple(s for s in typing.get_args(Status) if s in _MOVING)
_UNSETTLED_COPIES = tuple(s for s in typing.get_args(CopyStatus) if s in _MOVING)


class LiveView(NamedTuple):
    view_id: int
    message_id: int
    conversation_id: int | None
    mailbox_id: int
    verdict: str
    # Whose copy's pixel it was; None for a pixel every recipient shared.
    recipient: str | None


class LiveMessage(NamedTuple):
    message_id: int
    conversation_id: int | None
    mailbox_id: int
    direction: str


class LiveRows(NamedTuple):
    """Views and messages after the ids asked about, in the mailboxes asked about, and the
    ids to ask after next time."""

    views: list[LiveView]
    messages: list[LiveMessage]
    next_view_id: int
    next_message_id: int


class LiveStore(StoreBase):
    def newest_ids(self) -> tuple[int, int]:
        """The largest view id and message id: where a page rendered now starts watching."""
        with self._tx() as s:
            return (int(s.scalar(select(func.max(ViewEvent.id))) or 0),
                    int(s.scalar(select(func.max(Message.id))) or 0))

    def live_rows(self, view_after: int, message_after: int, mailbox_ids: Sequence[int],
                  limit: int = 500) -> LiveRows:
        """Views and messages of ``mailbox_ids`` newer than the given ids, oldest first, at
        most ``limit`` of each.

        The next ids move past rows of other mailboxes too, so the range read next time stays
        short however busy the rest of the installation is. The newest ids are read first and
        bound the ranges: a row committed while this runs is left for next time, not skipped.
        (On PostgreSQL ids are handed out before commit, so a row whose transaction commits
        after a larger id's can still be passed over; the next change shows it.)"""
        with self._tx() as s:
            top_view = int(s.scalar(select(func.max(ViewEvent.id))) or 0)
            top_message = int(s.scalar(select(func.max(Message.id))) or 0)
            views = [LiveView(*row) for row in s.execute(
                select(ViewEvent.id, ViewEvent.message_id, Message.conversation_id,
                       Message.mailbox_id, ViewEvent.verdict, Copy.recipient)
                .join(Message, Message.id == ViewEvent.message_id)
                .outerjoin(Copy, Copy.id == ViewEvent.copy_id)
                .where(ViewEvent.id > view_after, ViewEvent.id <= top_view,
                       Message.mailbox_id.in_(mailbox_ids))
                .order_by(ViewEvent.id).limit(limit)).tuples()]
            messages = [LiveMessage(*row) for row in s.execute(
                select(Message.id, Message.conversation_id, Message.mailbox_id,
                       Message.direction)
                .where(Message.id > message_after, Message.id <= top_message,
                       Message.mailbox_id.in_(mailbox_ids))
                .order_by(Message.id).limit(limit)).tuples()]
        next_view = views[-1].view_id if len(views) == limit else top_view
        next_message = messages[-1].message_id if len(messages) == limit else top_message
        return LiveRows(views, messages, max(view_after, next_view),
                        max(message_after, next_message))

    def conversation_digest(self, conversation_id: int) -> str:
        """A digest of every column of every message in the conversation and of each of
        their copies, and of their clicks (how many, the newest, how many by people): it
        changes when anything about one of them does (a delivery state, a count, a reply, a
        click)."""
        in_conversation = select(Message.id).where(Message.conversation_id == conversation_id)
        with self._tx() as s:
            messages = s.execute(select(*Message.__table__.columns)
                                 .where(Message.conversation_id == conversation_id)
                                 .order_by(Message.id)).tuples().all()
            copies = s.execute(select(*Copy.__table__.columns)
                               .where(Copy.message_id.in_(in_conversation))
                               .order_by(Copy.id)).tuples().all()
            clicks = s.execute(select(func.count(), func.max(ClickEvent.id),
                                      func.sum(case((ClickEvent.verdict == "human", 1),
                                                    else_=0)))
                               .where(ClickEvent.message_id.in_(in_conversation))
                               ).tuples().all()
        return _digest([*messages, *copies, *clicks])

    def unsettled_digest(self, mailbox_ids: Sequence[int]) -> str:
        """A digest of the messages and copies of ``mailbox_ids`` whose delivery is not
        final, counted by status: it changes when one is queued, tried again, fails, is
        bounced, cancelled or sent."""
        # The mailbox as an expression (id + 0), not the column: SQLite's statistics say
        # only how many rows a status has on average, so given the column it reads every
        # message of the mailboxes by their index (75 ms at 100,000 messages) rather than
        # the few unsettled ones by the status index (1 ms).
        box = (Message.mailbox_id + 0).label("box")
        with self._tx() as s:
            messages = s.execute(
                select(box, Message.status, func.count(), func.sum(Message.attempts),
                       func.sum(Message.id))
                .where(Message.status.in_(_UNSETTLED), box.in_(mailbox_ids))
                .group_by(box, Message.status).order_by(box, Message.status)).tuples().all()
            copies = s.execute(
                select(box, Copy.status, func.count(), func.sum(Copy.attempts),
                       func.sum(Copy.id))
                .join(Message, Message.id == Copy.message_id)
                .where(Copy.status.in_(_UNSETTLED_COPIES), box.in_(mailbox_ids))
                .group_by(box, Copy.status).order_by(box, Copy.status)).tuples().all()
        return _digest([*messages, ("copies",), *copies])


def _digest(rows: Sequence[tuple[object, ...]]) -> str:
    return hashlib.blake2b(repr([tuple(r) for r in rows]).encode(), digest_size=6).hexdigest()
