"""What data-subject requests and the retention purge read and change: the copies, messages
and views of one person, and the personal details of old views."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, or_, select, update

from ..records import CopyRecord, MessageRecord, ViewRecord
from .base import StoreBase, copy_record, message_record, view_record
from .models import Copy, Message, ViewEvent

# The headers a purged view keeps: only the note that it was purged (core/privacy.py).
PURGED_HEADERS = json.dumps({"x-mailseen-details": "purged"}, separators=(",", ":"))


def _like(fragment: str) -> str:
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class PersonalStore(StoreBase):
    def copies_to(self, local_part: str) -> list[CopyRecord]:
        """Copies whose recipient's address starts with ``local_part`` and "@" (any case):
        the candidates for one person, whom the caller picks out by address key."""
        pattern = _like(f"{local_part}@").removeprefix("%")
        with self._tx() as s:
            rows = s.scalars(select(Copy).where(Copy.recipient.ilike(pattern, escape="\\"))
                             .order_by(Copy.message_id, Copy.position))
            return [copy_record(r) for r in rows]

    def messages_naming(self, local_part: str) -> list[MessageRecord]:
        """Messages whose sender or recipients (To, Cc, Bcc, envelope) hold ``local_part``
        and "@" (any case), oldest first: the candidates for one person."""
        fragment = f"{local_part}@"
        in_json = _like(json.dumps(fragment)[1:-1])  # as the JSON columns store it
        plain = _like(fragment)
        with self._tx() as s:
            rows = s.scalars(select(Message).where(or_(
                Message.from_addr.ilike(plain, escape="\\"),
                *[column.ilike(in_json, escape="\\")
                  for column in (Message.to_json, Message.cc_json, Message.bcc_json,
                                 Message.envelope_json)])).order_by(Message.id))
            return [message_record(r) for r in rows]

    def views_of_copies(self, copy_ids: Sequence[int]) -> list[ViewRecord]:
        """The views of the pixels of these copies, oldest first."""
        if not copy_ids:
            return []
        with self._tx() as s:
            rows = s.scalars(select(ViewEvent).where(ViewEvent.copy_id.in_(sorted(copy_ids)))
                             .order_by(ViewEvent.at, ViewEvent.id))
            return [view_record(r) for r in rows]

    def erase_copies(self, copy_ids: Sequence[int], marker: str) -> tuple[int, int]:
        """Delete the views of these copies and make the copies name nobody: the recipient
        becomes ``marker``, the pixel's key goes (later fetches are not recorded) and so
        does the relay's reply (it may quote the address). Counts on the copies and their
        messages stay. Returns (views deleted, copies changed)."""
        if not copy_ids:
            return 0, 0
        ids = sorted(copy_ids)
        with self._tx() as s:
            views = s.execute(delete(ViewEvent).where(ViewEvent.copy_id.in_(ids)))
            copies = s.execute(update(Copy).where(Copy.id.in_(ids)).values(
                recipient=marker, token_key=None, last_error=None))
            return (cast(CursorResult[Any], views).rowcount,
                    cast(CursorResult[Any], copies).rowcount)

    def purge_view_details(self, before: datetime, since: datetime | None = None,
                           batch: int = 2000) -> int:
        """Clear the personal details of views older than ``before`` (and not older than
        ``since``, where an earlier run stopped): IP address, user agent, headers and the
        link to the copy and its position. Verdicts, times and every count stay. Done in
        batches, each its own transaction, so the pixel's writes are never held up long.
        Returns how many views were cleared."""
        cleared = 0
        cursor = since
        while True:
            with self._tx() as s:
                q = (select(ViewEvent.id, ViewEvent.at)
                     .where(ViewEvent.at < before, ViewEvent.headers_json != PURGED_HEADERS)
                     .order_by(ViewEvent.at, ViewEvent.id).limit(batch))
                if cursor is not None:
                    q = q.where(ViewEvent.at >= cursor)
                rows = s.execute(q).all()
                if not rows:
                    return cleared
                s.execute(update(ViewEvent).where(ViewEvent.id.in_([r.id for r in rows]))
                          .values(ip=None, user_agent=None, headers_json=PURGED_HEADERS,
                                  copy_id=None, recipient=0))
            cleared += len(rows)
            cursor = rows[-1].at
            if len(rows) < batch:
                return cleared
