"""Messages in both directions and the conversations that thread them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from ..core.consent import address_key
from ..errors import NotFound
from ..records import (
    ConversationRecord,
    CopyRecord,
    Ingested,
    MessageRecord,
    NewCopy,
    NewMessage,
    PixelKind,
    Splice,
)
from .base import (
    StoreBase,
    conversation_record,
    copy_record,
    every_mailbox,
    message_record,
    viewed_copies,
)
from .bulk import BulkLoader, bulk_loader, last_ids
from .models import Conversation, Copy, Message, MessageData, MessageWords, ViewEvent
from .queue import settle
from .reminders import follow_up
from .webhooks import reply_events, status_events

_MSGID = re.compile(r"<[^<>\s]+>")


def count_viewed_copies(s: Session, message_ids: Sequence[int]) -> None:
    """Recount how many personal copies of each message a person saw (a view or a reply)."""
    s.execute(update(Message).where(Message.id.in_(sorted(set(message_ids))))
              .values(viewed_copies=viewed_copies()))


def referenced_ids(in_reply_to: str | None, references: str | None) -> list[str]:
    """Message-IDs a message points back to, nearest first."""
    found = _MSGID.findall(in_reply_to or "")
    refs = _MSGID.findall(references or "")
    return list(dict.fromkeys([*found, *reversed(refs)]))


def _new_row(new: NewMessage, t: datetime) -> Message:
    return Message(
        mailbox_id=new.mailbox_id, message_id=new.message_id, subject=new.subject,
        from_addr=new.from_addr, to_json=json.dumps(new.to), cc_json=json.dumps(new.cc),
        bcc_json=json.dumps(new.bcc), envelope_json=json.dumps(new.envelope_to),
        in_reply_to=new.in_reply_to, references=new.references, source=new.source,
        attempts=0, created_at=t, tracked=False, tracking_reason="", view_count=0,
        machine_count=0, direction=new.direction, automatic=new.automatic,
        auto_reason=new.auto_reason, sent_by=new.sent_by, sent_by_user_id=new.sent_by_user_id,
    )


class MessageStore(StoreBase):
    def _thread(self, s: Session, new: NewMessage, hint_ids: Sequence[int] = ()
                ) -> Conversation:
        """The conversation ``new`` belongs to: that of a message it references, else that
        of a message whose pixel it quotes (``hint_ids``), else a new one."""
        refs = referenced_ids(new.in_reply_to, new.references)
        conv_id = None
        if refs:
            rows = s.execute(select(Message.message_id, Message.conversation_id).where(
                Message.mailbox_id == new.mailbox_id, Message.message_id.in_(refs),
                Message.conversation_id.is_not(None))).all()
            by_ref = {mid: cid for mid, cid in rows}
            conv_id = next((by_ref[r] for r in refs if r in by_ref), None)
        if conv_id is None and hint_ids:
            conv_id = s.scalar(select(Message.conversation_id).where(
                Message.id.in_(hint_ids), Message.mailbox_id == new.mailbox_id,
                Message.conversation_id.is_not(None)).limit(1))
        if conv_id is not None:
            conv = s.get(Conversation, conv_id)
            if conv is not None:
                return conv
        other = (new.to or [""])[0] if new.direction == "out" else new.from_addr
        t = self.clock.now()
        conv = Conversation(mailbox_id=new.mailbox_id, subject=new.subject, other_party=other,
                            created_at=t, last_activity_at=t)
        s.add(conv)
        s.flush()
        return conv

    def add_message(self, new: NewMessage, raw: bytes, copies: Sequence[NewCopy], *,
                    tracked: bool, reason: str, queued: bool = True,
                    clicks: bool = False, splice: Splice | None = None) -> MessageRecord:
        """Store an outbound message and its copies, and queue the copies, atomically. With
        ``queued=False`` the copies are recorded as already sent (by other software);
        ``clicks``: the links of its personal copies go through the click redirect;
        ``splice``: what tagging it for its copies changes (core/splice.py)."""
        with self._tx() as s:
            row = _new_row(new, self.clock.now())
            row.status = "queued" if queued else "sent"
            row.next_attempt_at = row.created_at if queued else None
            row.sent_at = None if queued else row.created_at
            row.tracked, row.tracking_reason = tracked, reason
            row.clicks_tracked = clicks and tracked
            row.copies = sum(1 for c in copies if c.personal)
            conv = self._thread(s, new)
            row.conversation_id = conv.id
            s.add(row)
            s.flush()
            data = MessageData(message_id=row.id, raw=raw)
            if splice is not None:
                data.splice_start, data.splice_end = splice.start, splice.end
                data.splice_insert, data.splice_key = splice.insert, splice.key
            s.add(data)
            if new.words:
                s.add(MessageWords(message_id=row.id, words=new.words))
            for c in copies:
                s.add(Copy(message_id=row.id, position=c.position, recipient=c.recipient,
                           token_key=c.token_key, pixel=c.pixel, reason=c.reason,
                           recipient_key=address_key(c.recipient) if c.recipient else None,
                           envelope_json=json.dumps(c.envelope) if c.envelope else None,
                           status=row.status, attempts=0,
                           next_attempt_at=row.next_attempt_at, sent_at=row.sent_at,
                           view_count=0, machine_count=0))
            conv.latest_sent_id = row.id
            conv.last_activity_at = row.created_at
            s.flush()
            return message_record(row)

    def add_copy(self, message_id: int, recipient: str | None, token_key: int | None,
                 pixel: PixelKind = "personal", reason: str = "") -> CopyRecord:
        """The copy of a message other software sends (the ``tag`` filter) for
        ``recipient`` (None: the copy every recipient shares), recorded as sent; the one
        already recorded, when the filter runs again on the same message."""
        with self._tx() as s:
            msg = s.get(Message, message_id, with_for_update=True)
            if msg is None:
                raise NotFound(f"no message with id {message_id}")
            copies = list(s.scalars(select(Copy).where(Copy.message_id == message_id)))
            same = [c for c in copies if (c.recipient or "").lower() == (recipient or "").lower()
                    and (c.recipient is None) == (recipient is None)]
            if same:
                return copy_record(same[0])
            position = 0 if recipient is None else max(
                [c.position for c in copies] + [0]) + 1
            row = Copy(message_id=message_id, position=position, recipient=recipient,
                       token_key=token_key, pixel=pixel if token_key else "none",
                       reason=reason,
                       recipient_key=address_key(recipient) if recipient else None,
                       status="sent", attempts=0,
                       sent_at=self.clock.now(), view_count=0, machine_count=0)
            s.add(row)
            if recipient is not None and token_key and pixel == "personal":
                msg.copies += 1
            s.flush()
            return copy_record(row)

    def messages_of_copies(self, keys: Sequence[int]) -> dict[int, int]:
        """The message of each copy key that exists: {key: message id}."""
        if not keys:
            return {}
        with self._tx() as s:
            rows = s.execute(select(Copy.token_key, Copy.message_id)
                             .where(Copy.token_key.in_(list(keys)))).tuples().all()
            return {key: mid for key, mid in rows if key is not None}

    def copy_of_key(self, key: int) -> tuple[CopyRecord, int] | None:
        """The copy a token names, with its message's mailbox id."""
        with self._tx() as s:
            row = s.execute(select(Copy, Message.mailbox_id)
                            .join(Message, Message.id == Copy.message_id)
                            .where(Copy.token_key == key)).first()
            return None if row is None else (copy_record(row[0]), row[1])

    def mark_bounced(self, mailbox_id: int, message_id: str | None, fallback_ids: Sequence[int],
                     bounces: Sequence[tuple[str, str]]) -> list[int]:
        """Mark the copies a delivery report gave up on as bounced, with the reason:
        ``bounces`` is (recipient, reason) pairs, the message is the mailbox's outbound one
        with ``message_id`` (else one of ``fallback_ids``, the messages whose pixels the
        report quotes). A recipient's own copy if there is one, else the copy every
        recipient shared. Returns the ids of the messages changed."""
        with self._tx() as s:
            ids: list[int] = []
            if message_id:
                ids = list(s.scalars(select(Message.id).where(
                    Message.mailbox_id == mailbox_id, Message.direction == "out",
                    Message.message_id == message_id).order_by(Message.id.desc()).limit(1)))
            if not ids and fallback_ids:
                ids = list(s.scalars(select(Message.id).where(
                    Message.mailbox_id == mailbox_id, Message.direction == "out",
                    Message.id.in_(list(fallback_ids)))))
            changed = []
            bounced: list[int] = []
            for mid in ids:
                copies = list(s.scalars(select(Copy).where(Copy.message_id == mid)
                                        .with_for_update()))
                envelope = {a.lower() for a in json.loads(
                    s.scalar(select(Message.envelope_json).where(Message.id == mid)) or "[]")}
                for recipient, reason in bounces:
                    own = [c for c in copies if (c.recipient or "").lower() == recipient]
                    shared = [c for c in copies if c.recipient is None and recipient in envelope]
                    for c in own or shared[:1]:
                        if c.status in ("sent", "queued", "sending", "failed"):
                            # A copy several recipients shared bounced for one of them.
                            c.status = "bounced"
                            c.last_error = reason if own else f"{recipient}: {reason}"
                            c.next_attempt_at = c.lease_until = None
                            bounced.append(c.id)
                            if mid not in changed:
                                changed.append(mid)
                s.flush()
                if mid in changed:
                    s.execute(select(Message.id).where(Message.id == mid).with_for_update())
                    settle(s, mid)
            status_events(s, "bounced", bounced, self.clock.now())  # webhooks
            return changed

    def copies_of(self, message_ids: Sequence[int]) -> dict[int, list[CopyRecord]]:
        """Each message's copies, in position order."""
        found: dict[int, list[CopyRecord]] = {mid: [] for mid in message_ids}
        if not message_ids:
            return found
        with self._tx() as s:
            for row in s.scalars(select(Copy).where(Copy.message_id.in_(message_ids))
                                 .order_by(Copy.message_id, Copy.position)):
                found[row.message_id].append(copy_record(row))
        return found

    def find_outbound(self, mailbox_id: int, message_id: str) -> MessageRecord | None:
        """The newest outbound message of a mailbox with this Message-ID, if any."""
        with self._tx() as s:
            row = s.scalar(select(Message).where(
                Message.mailbox_id == mailbox_id, Message.direction == "out",
                Message.message_id == message_id).order_by(Message.id.desc()).limit(1))
            return None if row is None else message_record(row)

    def add_inbound(self, new: NewMessage, raw: bytes, hint_ids: Sequence[int] = ()
                    ) -> Ingested:
        """Store a received message once (the same Message-ID again is a duplicate), thread
        it, and when a person (not an auto-reply) replied, mark what they replied to as
        seen."""
        try:
            with self._tx() as s:
                existing = s.scalar(select(Message).where(
                    Message.mailbox_id == new.mailbox_id, Message.direction == "in",
                    Message.message_id == new.message_id))
                if existing is not None:
                    return Ingested(message_record(existing), True, [])
                row = _new_row(new, self.clock.now())
                row.status, row.sent_at = "received", row.created_at
                conv = self._thread(s, new, hint_ids)
                row.conversation_id = conv.id
                s.add(row)
                s.flush()
                s.add(MessageData(message_id=row.id, raw=raw))
                if new.words:
                    s.add(MessageWords(message_id=row.id, words=new.words))
                conv.last_activity_at = row.created_at
                replied: list[int] = []
                if not new.automatic:
                    replied = self._mark_replied(s, new, hint_ids)
                s.flush()
                return Ingested(message_record(row), False, replied)
        except IntegrityError:  # the same message arrived by another path meanwhile
            with self._tx() as s:
                existing = s.scalar(select(Message).where(
                    Message.mailbox_id == new.mailbox_id, Message.direction == "in",
                    Message.message_id == new.message_id))
                if existing is None:
                    raise
                return Ingested(message_record(existing), True, [])

    def _mark_replied(self, s: Session, new: NewMessage, hint_ids: Sequence[int]) -> list[int]:
        refs = referenced_ids(new.in_reply_to, None) or referenced_ids(None, new.references)[:1]
        conditions = []
        if refs:
            conditions.append(Message.message_id.in_(refs))
        if hint_ids:
            conditions.append(Message.id.in_(hint_ids))
        if not conditions:
            return []
        ids = list(s.scalars(select(Message.id).where(
            Message.mailbox_id == new.mailbox_id, Message.direction == "out", or_(*conditions))))
        if ids:
            now = self.clock.now()
            s.execute(update(Message).where(Message.id.in_(ids), Message.replied_at.is_(None))
                      .values(replied_at=now))
            # The reply is that recipient's: their copy was seen (whatever its pixel said).
            replier = new.from_addr.strip().lower()
            s.execute(update(Copy).where(Copy.message_id.in_(ids), Copy.replied_at.is_(None),
                                         func.lower(Copy.recipient) == replier)
                      .values(replied_at=now))
            count_viewed_copies(s, ids)
            reply_events(s, ids, replier, now)  # webhooks
        return ids

    def get_message(self, message_id: int) -> MessageRecord:
        with self._tx() as s:
            row = s.get(Message, message_id)
            if row is None:
                raise NotFound(f"no message with id {message_id}")
            return message_record(row)

    def get_raw(self, message_id: int) -> bytes:
        with self._tx() as s:
            row = s.get(MessageData, message_id)
            if row is None:
                raise NotFound(f"no message with id {message_id}")
            return row.raw

    def list_messages(self, *, mailbox_id: int | None = None, status: str | None = None,
                      limit: int = 50, before_id: int | None = None,
                      conversation_id: int | None = None,
                      mailbox_ids: Sequence[int] | None = None) -> list[MessageRecord]:
        q = select(Message).order_by(Message.id.desc()).limit(limit)
        if mailbox_id is not None:
            q = q.where(Message.mailbox_id == mailbox_id)
        if status is not None:
            q = q.where(Message.status == status)
        if before_id is not None:
            q = q.where(Message.id < before_id)
        if conversation_id is not None:
            q = q.where(Message.conversation_id == conversation_id)
        if mailbox_ids is not None:
            q = q.where(Message.mailbox_id.in_(mailbox_ids))
        with self._tx() as s:
            return [message_record(r) for r in s.scalars(q)]

    def conversation_messages(self, conversation_id: int) -> list[MessageRecord]:
        with self._tx() as s:
            return [message_record(r) for r in s.scalars(
                select(Message).where(Message.conversation_id == conversation_id)
                .order_by(Message.created_at, Message.id))]

    def get_conversation(self, conversation_id: int) -> ConversationRecord:
        with self._tx() as s:
            row = s.get(Conversation, conversation_id)
            if row is None:
                raise NotFound(f"no conversation with id {conversation_id}")
            return conversation_record(row)

    def conversation_page(self, mailbox_ids: Sequence[int], *, status: str | None = None,
                          search: str | None = None, limit: int = 50, offset: int = 0
                          ) -> list[tuple[ConversationRecord, MessageRecord | None]]:
        """Conversations newest first, each with the latest message the team sent in it.
        ``status``: "viewed", "waiting" (tracked, not viewed), "untracked", or "follow-up"
        (a reminder fired and still stands)."""
        if not mailbox_ids:
            return []
        order = (Conversation.last_activity_at.desc(), Conversation.id.desc())
        # The page is chosen on ids alone, then only its rows are read: a deep page skips
        # thousands of index entries instead of thousands of joined rows.
        ids = select(Conversation.id).order_by(*order).limit(limit).offset(offset)
        viewed = (Message.view_count > 0) | Message.replied_at.is_not(None)
        wanted = {"viewed": viewed, "waiting": Message.tracked.is_(True) & ~viewed,
                  "untracked": Message.tracked.is_(False)}.get(status or "")
        if wanted is not None:
            ids = ids.join(Message, Message.id == Conversation.latest_sent_id).where(wanted)
        elif status == "follow-up":
            ids = ids.where(follow_up(Conversation.id))
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace(
                "_", "\\_") + "%"
            # Any recipient or sender of any message in it: the second recipient of a
            # message finds it as well as the first.
            m = aliased(Message)  # apart from the status filter's join
            someone = (select(m.id).where(
                m.conversation_id == Conversation.id,
                or_(*(column.ilike(pattern, escape="\\") for column in (
                    m.to_json, m.cc_json, m.bcc_json, m.from_addr))))
                .exists())
            # Words of any message's body in it.
            words = (select(MessageWords.message_id)
                     .join(m, m.id == MessageWords.message_id)
                     .where(m.conversation_id == Conversation.id,
                            MessageWords.words.ilike(pattern, escape="\\"))
                     .exists())
            ids = ids.where(or_(Conversation.subject.ilike(pattern, escape="\\"),
                                Conversation.other_party.ilike(pattern, escape="\\"),
                                someone, words))
        with self._tx() as s:
            # Every mailbox (an admin's listing): no mailbox condition, so the page is read
            # newest first straight from ix_conversations_recent. A long IN list would lead
            # SQLite without statistics to read and sort every conversation of every mailbox.
            if not every_mailbox(s, mailbox_ids):
                ids = ids.where(Conversation.mailbox_id.in_(mailbox_ids))
            page = ids.subquery()
            q = (select(Conversation, Message)
                 .join(page, page.c.id == Conversation.id)
                 .outerjoin(Message, Message.id == Conversation.latest_sent_id)
                 .order_by(*order))
            return [(conversation_record(c), None if m is None else message_record(m))
                    for c, m in s.execute(q).tuples()]

    def machine_clients(self, message_ids: Sequence[int]) -> dict[int, str]:
        """The client named by each message's latest machine fetch."""
        if not message_ids:
            return {}
        # Only each message's latest fetch, read newest first: a message a scanner fetched
        # hundreds of times would otherwise send every fetch back to be thrown away.
        latest = (select(ViewEvent.client)
                  .where(ViewEvent.message_id == Message.id, ViewEvent.verdict == "machine")
                  .order_by(ViewEvent.id.desc()).limit(1).scalar_subquery())
        with self._tx() as s:
            rows = s.execute(select(Message.id, latest)
                             .where(Message.id.in_(message_ids))).tuples().all()
            return {mid: client for mid, client in rows if client is not None}

    def backdate(self, times: dict[int, datetime], replied: dict[int, datetime]) -> None:
        """Move messages (and their conversations) to when they happened: demo data that
        tells a month's story. ``replied`` gives some of them the time a person replied."""
        spans: dict[int, list[datetime]] = {}
        with self._tx() as s:
            for mid, at in times.items():
                values: dict[str, Any] = {"created_at": at, "sent_at": at}
                copy_values: dict[str, Any] = {"sent_at": at}
                if mid in replied:
                    values["replied_at"] = copy_values["replied_at"] = replied[mid]
                s.execute(update(Message).where(Message.id == mid).values(**values))
                s.execute(update(Copy).where(Copy.message_id == mid, Copy.sent_at.is_not(None))
                          .values(**copy_values))
            count_viewed_copies(s, list(replied))
            for cid, mid in s.execute(select(Message.conversation_id, Message.id)
                                      .where(Message.id.in_(list(times)))):
                spans.setdefault(cid, []).append(times[mid])
            for cid, when in spans.items():
                s.execute(update(Conversation).where(Conversation.id == cid).values(
                    created_at=min(when), last_activity_at=max(when)))

    def last_ids(self) -> dict[str, int]:
        """The largest id of conversations, messages and views: bulk-loaded rows number on."""
        return last_ids(self.db)

    def bulk_loader(self, progress: Callable[[int], None]
                    ) -> AbstractContextManager[BulkLoader]:
        """A loader of many rows at once (demo data at scale); see :mod:`.bulk`."""
        return bulk_loader(self.db, progress)
