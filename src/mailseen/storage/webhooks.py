"""Webhook endpoints and their durable outbox.

Events are written in the transaction of what they tell of: a view batch (through
:class:`ViewHooks`, kept by the pixel writer), a copy delivered, failed or bounced, a reply
(each through one call, :func:`status_events` or :func:`reply_events`). Only ids and the
verdict are written then; the webhook worker makes the payload when it first sends the event.
Nothing is written unless an enabled endpoint subscribes to the event."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, or_, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import Session

from ..core.webhooks import new_event_id
from ..errors import NotFound
from ..records import (
    ClickIn,
    CopyRecord,
    Judged,
    MailboxRecord,
    MessageRecord,
    ViewIn,
    WebhookClaim,
    WebhookDelivery,
    WebhookEvent,
    WebhookFacts,
    WebhookIn,
    WebhookRecord,
)
from .base import StoreBase, copy_record, mailbox_record, message_record
from .models import Copy, Mailbox, Message, WebhookEndpoint, WebhookOutbox
from .privacy import bump_privacy

__all__ = ["ViewHooks", "WebhookStore", "click_events", "queue_events", "reply_events",
           "status_events"]

_endpoints = cast(Table, WebhookEndpoint.__table__)
_copies = cast(Table, Copy.__table__)
_messages = cast(Table, Message.__table__)
# Enabled endpoints, for deciding whom an event goes to (a small table, read whole).
_SUBSCRIBED = select(_endpoints.c.id, _endpoints.c.mailbox_id, _endpoints.c.events,
                     _endpoints.c.every_view).where(_endpoints.c.enabled.is_(True))
_VIEW_COUNTS = (select(_copies.c.id, _copies.c.view_count)
                .where(_copies.c.id.in_(bindparam("ids", expanding=True))))
_BOXES = (select(_messages.c.id, _messages.c.mailbox_id)
          .where(_messages.c.id.in_(bindparam("ids", expanding=True))))
# One view's event, as the pixel writer inserts it through the driver (storage/views.py).
INSERT_SQL = ("INSERT INTO webhook_outbox (endpoint_id, event, event_id, copy_id, facts_json, "
           "created_at, queued_at, status, attempts, next_attempt_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?)")
_STATUS_EVENTS: dict[str, WebhookEvent] = {"sent": "message.delivered",
                                           "failed": "message.failed",
                                           "bounced": "message.bounced"}
# How long a subscription set read outside the pixel writer may be used: endpoints change
# rarely, and each delivery would otherwise read them again.
_SUBSCRIBED_SECONDS = 2.0
_SEEN_SIZE = 100_000

# (endpoint id, its mailbox or None for all, the events it takes, every view or the first)
Subscriber = tuple[int, int | None, frozenset[str], bool]


def _subscribers(rows: Iterable[Any]) -> list[Subscriber]:
    return [(eid, box, frozenset(events.split()), bool(every))
            for eid, box, events, every in rows]


def facts_json(f: WebhookFacts) -> str:
    """The facts as the outbox keeps them; their time is the row's ``created_at``."""
    data: dict[str, Any] = {"message": f.message_id, "copy": f.copy_id}
    if f.verdict is not None:
        data.update(verdict=f.verdict, reason=f.reason, client=f.client, first=f.first)
    if f.anonymous:
        data["anonymous"] = True
    if f.note:
        data["note"] = f.note
    return _to_json(data)


_to_json = json.JSONEncoder(separators=(",", ":")).encode


def read_facts(text: str, at: datetime) -> WebhookFacts:
    d = json.loads(text)
    return WebhookFacts(d["message"], d.get("copy"), at,
                        d.get("verdict"), d.get("reason", ""), d.get("client", ""),
                        bool(d.get("first")), bool(d.get("anonymous")), d.get("note", ""))


def queue_events(s: Session, event: WebhookEvent,
                 facts: Sequence[tuple[int, WebhookFacts]], at: datetime) -> None:
    """Queue ``event`` for every enabled endpoint that takes it, for each (mailbox, facts),
    in the caller's transaction (what click tracking and reminders call)."""
    subs = [sub for sub in _subscribers(s.execute(_SUBSCRIBED)) if event in sub[2]]
    for box, f in facts:
        text = facts_json(f)
        for eid, only, _, _ in subs:
            if only is None or only == box:
                s.add(WebhookOutbox(endpoint_id=eid, event=event, event_id=new_event_id(),
                                    copy_id=f.copy_id, facts_json=text, created_at=f.at,
                                    queued_at=at, status="pending", attempts=0,
                                    next_attempt_at=at))


def _anyone_takes(s: Session, event: WebhookEvent) -> bool:
    return any(event in sub[2] for sub in _cached_subscribers(s))


_cache: dict[str, tuple[float, list[Subscriber]]] = {}


def takes_status(conn: Connection, status: str) -> bool:
    """Whether any endpoint takes the event a copy's new delivery status tells of: the
    worker asks before it makes the session :func:`status_events` needs."""
    event = _STATUS_EVENTS.get(status)
    return event is not None and any(event in sub[2] for sub in _cached_subscribers(conn))


def _cached_subscribers(s: Session | Connection) -> list[Subscriber]:
    """The enabled endpoints, read at most every two seconds per database (each process's
    own changes clear it at once: :func:`_forget`)."""
    url = str((s.get_bind() if isinstance(s, Session) else s).engine.url)
    found = _cache.get(url)
    if found is None or time.monotonic() - found[0] > _SUBSCRIBED_SECONDS:
        found = _cache[url] = (time.monotonic(), _subscribers(s.execute(_SUBSCRIBED)))
    return found[1]


def _forget() -> None:
    _cache.clear()


def status_events(s: Session, status: str, copy_ids: Sequence[int], at: datetime) -> None:
    """Queue the event a copy's new delivery status tells of (delivered, failed, bounced),
    in the caller's transaction; nothing when no endpoint takes it."""
    event = _STATUS_EVENTS.get(status)
    if event is None or not copy_ids or not _anyone_takes(s, event):
        return
    rows = s.execute(select(Copy.id, Copy.message_id, Message.mailbox_id)
                     .join(Message, Message.id == Copy.message_id)
                     .where(Copy.id.in_(list(copy_ids))).order_by(Copy.id))
    queue_events(s, event, [(box, WebhookFacts(mid, cid, at)) for cid, mid, box in rows], at)


def click_events(s: Session, clicks: Sequence[tuple[ClickIn, Judged]]) -> None:
    """Queue ``message.clicked`` for each human click, in the click batch's transaction
    (the URL followed goes in the event's note); nothing when no endpoint takes it."""
    human = [(c, j) for c, j in clicks if j.verdict == "human"]
    if not human or not _anyone_takes(s, "message.clicked"):
        return
    ids = sorted({c.message_id for c, _ in human})
    boxes = {mid: box for mid, box in s.execute(
        select(Message.id, Message.mailbox_id).where(Message.id.in_(ids)))}
    queue_events(s, "message.clicked", [
        (boxes[c.message_id], WebhookFacts(c.message_id, None if c.anonymous else c.copy_id,
                                           c.at, j.verdict, j.reason, j.client,
                                           anonymous=c.anonymous, note=c.url))
        for c, j in human if c.message_id in boxes], max(c.at for c, _ in human))


def reply_events(s: Session, message_ids: Sequence[int], replier: str, at: datetime) -> None:
    """Queue ``message.replied`` for each message a person replied to: their own copy's
    when they had one, else the message's."""
    if not message_ids or not _anyone_takes(s, "message.replied"):
        return
    facts = []
    for mid, box in s.execute(select(Message.id, Message.mailbox_id)
                              .where(Message.id.in_(list(message_ids))).order_by(Message.id)):
        copy_id = s.scalar(select(Copy.id).where(Copy.message_id == mid,
                                                 func.lower(Copy.recipient) == replier)
                           .limit(1))
        facts.append((box, WebhookFacts(mid, copy_id, at)))
    queue_events(s, "message.replied", facts, at)


class ViewHooks:
    """The pixel writer's side: which endpoints take ``message.viewed``, read again when
    ``privacy_version`` moves (every change of an endpoint moves it), and the outbox rows
    for a batch of views, written in the batch's transaction. Used by one thread."""

    def __init__(self) -> None:
        self.version = -1
        self.subscribers: list[Subscriber] = []
        self.boxes: dict[int, int] = {}  # message id: mailbox id, for endpoints of one
        # Copies known to have had a human view: none of their views can be a first, so
        # they are not asked about again (a view count only grows, but for reclassifying,
        # which moves privacy_version no more than it needs to: forgotten with the rest).
        self.seen: set[int] = set()
        # Event ids made cheaply (a random prefix per writer, then a count): an id only
        # has to be unique, and one per view would otherwise cost a call for random bytes.
        self._prefix = "msg_" + new_event_id()[4:12]
        self._count = itertools.count(1)

    def forget(self) -> None:
        """After a batch that was not written: what it taught may not be true."""
        self.boxes.clear()
        self.seen.clear()

    def refresh(self, conn: Connection, version: int) -> None:
        if version != self.version:
            self.subscribers = [sub for sub in _subscribers(conn.execute(_SUBSCRIBED))
                                if "message.viewed" in sub[2]]
            self.version = version
            self.forget()

    def write(self, conn: Connection, insert: Callable[[list[tuple[Any, ...]]], None],
              judged: Sequence[tuple[ViewIn, Judged]], times: Sequence[Any]) -> None:
        """Queue ``message.viewed`` for the human views of ``judged`` (after the copies'
        summaries were updated): a copy's first for every subscriber, each view for those
        that asked for every view. Anonymous views name no copy. ``times``: each view's
        time as the view row binds it (the event's time, and its row's)."""
        human = [(v, j, at) for (v, j), at in zip(judged, times, strict=True)
                 if j.verdict == "human"]
        if not human:
            return
        per_copy: dict[int, int] = {}
        seen = self.seen
        for v, _, _ in human:
            if v.copy_id is not None and v.copy_id not in seen:
                per_copy[v.copy_id] = per_copy.get(v.copy_id, 0) + 1
        firsts: set[int] = set()
        if per_copy:
            # Read after this batch's update of the copies (whose row locks are held till
            # commit): a count equal to this batch's is a copy nobody had seen.
            if len(seen) > _SEEN_SIZE:
                seen.clear()
            for cid, n in conn.execute(_VIEW_COUNTS, {"ids": sorted(per_copy)}):
                if n == per_copy[cid]:
                    firsts.add(cid)
                seen.add(cid)
        missing = sorted({v.message_id for v, _, _ in human} - self.boxes.keys())
        if missing and any(sub[1] is not None for sub in self.subscribers):
            self.boxes.update({mid: box for mid, box in conn.execute(_BOXES, {"ids": missing})})
        rows: list[tuple[Any, ...]] = []
        # The facts but for the time (the row's created_at): the same for a copy's views
        # by one client, so encoded once per batch.
        texts: dict[tuple[Any, ...], str] = {}
        for v, j, at in human:
            first = v.copy_id is not None and v.copy_id in firsts
            if first:
                firsts.discard(cast(int, v.copy_id))  # the first of several in one batch only
            box = self.boxes.get(v.message_id)
            copy_id = None if v.anonymous else v.copy_id
            for eid, only, _, every in self.subscribers:
                if not (first or every) or (only is not None and only != box):
                    continue
                key = (v.message_id, copy_id, j.reason, j.client, first, v.anonymous)
                text = texts.get(key)
                if text is None:
                    text = texts[key] = facts_json(WebhookFacts(
                        v.message_id, copy_id, v.at, j.verdict, j.reason, j.client, first,
                        v.anonymous))
                event_id = f"{self._prefix}{next(self._count):016x}"
                rows.append((eid, "message.viewed", event_id, copy_id, text, at, at, at))
        if rows:
            insert(rows)


def _endpoint_record(row: WebhookEndpoint, secret: str) -> WebhookRecord:
    return WebhookRecord(
        url=row.url, events=tuple(row.events.split()),  # type: ignore[arg-type]
        mailbox_id=row.mailbox_id, format=row.format,  # type: ignore[arg-type]
        every_view=row.every_view, description=row.description, id=row.id, secret=secret,
        enabled=row.enabled, created_at=row.created_at, disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason, failing_since=row.failing_since,
        last_success_at=row.last_success_at)


def _delivery(row: WebhookOutbox) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id, endpoint_id=row.endpoint_id, event=row.event,  # type: ignore[arg-type]
        event_id=row.event_id, created_at=row.created_at,
        status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts, next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at, response_status=row.response_status,
        last_error=row.last_error, body=row.body)


class WebhookStore(StoreBase):
    # -- endpoints ------------------------------------------------------------------------

    def _changed(self, s: Session) -> None:
        bump_privacy(s)  # the pixel writer reads its subscriptions again
        _forget()

    def add_webhook(self, hook: WebhookIn, secret: str) -> WebhookRecord:
        with self._tx() as s:
            row = WebhookEndpoint(created_at=self.clock.now(), enabled=True,
                                  secret_enc=self.cipher.encrypt(secret), disabled_reason="")
            _apply(row, hook)
            s.add(row)
            self._changed(s)
            s.flush()
            return _endpoint_record(row, secret)

    def _endpoint(self, s: Session, endpoint_id: int) -> WebhookEndpoint:
        row = s.get(WebhookEndpoint, endpoint_id)
        if row is None:
            raise NotFound(f"no webhook {endpoint_id}")
        return row

    def get_webhook(self, endpoint_id: int) -> WebhookRecord:
        with self._tx() as s:
            row = self._endpoint(s, endpoint_id)
            return _endpoint_record(row, self.cipher.decrypt(row.secret_enc))

    def list_webhooks(self) -> list[WebhookRecord]:
        with self._tx() as s:
            return [_endpoint_record(r, self.cipher.decrypt(r.secret_enc))
                    for r in s.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))]

    def disabled_webhooks(self) -> list[tuple[int, str, str]]:
        with self._tx() as s:
            return [(i, url, why) for i, url, why in s.execute(
                select(WebhookEndpoint.id, WebhookEndpoint.url, WebhookEndpoint.disabled_reason)
                .where(WebhookEndpoint.enabled.is_(False)).order_by(WebhookEndpoint.id))]

    def update_webhook(self, endpoint_id: int, hook: WebhookIn) -> WebhookRecord:
        with self._tx() as s:
            row = self._endpoint(s, endpoint_id)
            _apply(row, hook)
            self._changed(s)
            return _endpoint_record(row, self.cipher.decrypt(row.secret_enc))

    def set_webhook_secret(self, endpoint_id: int, secret: str) -> WebhookRecord:
        with self._tx() as s:
            row = self._endpoint(s, endpoint_id)
            row.secret_enc = self.cipher.encrypt(secret)
            return _endpoint_record(row, secret)

    def delete_webhook(self, endpoint_id: int) -> None:
        with self._tx() as s:
            row = self._endpoint(s, endpoint_id)
            s.execute(delete(WebhookOutbox).where(WebhookOutbox.endpoint_id == endpoint_id))
            s.delete(row)
            self._changed(s)

    def set_webhook_enabled(self, endpoint_id: int, enabled: bool, reason: str = ""
                            ) -> WebhookRecord:
        """Enable an endpoint (what waits for it is due at once) or disable it (with why:
        events stop being written for it, and those waiting wait)."""
        now = self.clock.now()
        with self._tx() as s:
            row = self._endpoint(s, endpoint_id)
            row.enabled = enabled
            if enabled:
                row.disabled_at, row.disabled_reason, row.failing_since = None, "", None
                s.execute(update(WebhookOutbox).where(
                    WebhookOutbox.endpoint_id == endpoint_id,
                    WebhookOutbox.status == "pending").values(next_attempt_at=now,
                                                              queued_at=now))
            else:
                row.disabled_at, row.disabled_reason = now, reason
            self._changed(s)
            return _endpoint_record(row, self.cipher.decrypt(row.secret_enc))

    # -- the outbox -----------------------------------------------------------------------

    def queue_webhook_event(self, event: WebhookEvent, facts: WebhookFacts) -> None:
        """Queue an event made outside a storage transaction (a test event, reminders)."""
        with self._tx() as s:
            box = s.scalar(select(Message.mailbox_id).where(Message.id == facts.message_id))
            if box is None:
                raise NotFound(f"no message {facts.message_id}")
            queue_events(s, event, [(box, facts)], self.clock.now())

    def claim_webhooks(self, limit: int, lease: timedelta) -> list[WebhookClaim]:
        """Claim up to ``limit`` due events of enabled endpoints (those whose worker died
        are due again once their lease ran out). Safe with many workers: rows other
        sessions are claiming are skipped on PostgreSQL, and the UPDATE repeats the
        condition."""
        now = self.clock.now()
        due = or_((WebhookOutbox.status == "pending") & (WebhookOutbox.next_attempt_at <= now),
                  (WebhookOutbox.status == "sending") & (WebhookOutbox.lease_until < now))
        with self._tx() as s:
            ids = list(s.scalars(
                select(WebhookOutbox.id)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookOutbox.endpoint_id)
                .where(due, WebhookEndpoint.enabled.is_(True))
                .order_by(WebhookOutbox.next_attempt_at, WebhookOutbox.id).limit(limit)
                .with_for_update(skip_locked=True, of=WebhookOutbox)))
            if not ids:
                return []
            s.execute(update(WebhookOutbox).where(WebhookOutbox.id.in_(ids), due).values(
                status="sending", lease_until=now + lease,
                attempts=WebhookOutbox.attempts + 1))
            rows = s.scalars(select(WebhookOutbox).where(
                WebhookOutbox.id.in_(ids), WebhookOutbox.status == "sending",
                WebhookOutbox.lease_until == now + lease).order_by(WebhookOutbox.id)).all()
            endpoints: dict[int, WebhookRecord] = {}
            claims = []
            for row in rows:
                s.refresh(row)
                hook = endpoints.get(row.endpoint_id)
                if hook is None:
                    ep = self._endpoint(s, row.endpoint_id)
                    hook = endpoints[row.endpoint_id] = _endpoint_record(
                        ep, self.cipher.decrypt(ep.secret_enc))
                claims.append(WebhookClaim(_delivery(row), hook,
                                           read_facts(row.facts_json, row.created_at),
                                           row.queued_at))
            return claims

    def subject_of(self, facts: WebhookFacts
                   ) -> tuple[MessageRecord, CopyRecord | None, MailboxRecord] | None:
        """The message, copy and mailbox an event is about; None if the message is gone."""
        with self._tx() as s:
            msg = s.get(Message, facts.message_id)
            if msg is None:
                return None
            copy = s.get(Copy, facts.copy_id) if facts.copy_id is not None else None
            box = s.get(Mailbox, msg.mailbox_id)
            assert box is not None
            return (message_record(msg), copy_record(copy) if copy is not None else None,
                    mailbox_record(box))

    def set_webhook_body(self, delivery_id: int, body: str) -> None:
        with self._tx() as s:
            s.execute(update(WebhookOutbox).where(WebhookOutbox.id == delivery_id)
                      .values(body=body))

    def webhook_delivered(self, delivery_id: int, endpoint_id: int, status: int) -> None:
        now = self.clock.now()
        with self._tx() as s:
            s.execute(update(WebhookOutbox).where(WebhookOutbox.id == delivery_id).values(
                status="delivered", lease_until=None, next_attempt_at=None,
                last_attempt_at=now, response_status=status, last_error=None))
            s.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
                      .values(failing_since=None, last_success_at=now))

    def webhook_failed(self, delivery_id: int, endpoint_id: int, status: int | None,
                       error: str, retry_at: datetime | None) -> datetime:
        """Record a failed attempt: due again at ``retry_at``, or given up (None). Returns
        since when the endpoint has been failing without a success."""
        now = self.clock.now()
        with self._tx() as s:
            s.execute(update(WebhookOutbox).where(WebhookOutbox.id == delivery_id).values(
                status="pending" if retry_at else "failed", lease_until=None,
                next_attempt_at=retry_at, last_attempt_at=now, response_status=status,
                last_error=error[:1000]))
            row = s.get(WebhookEndpoint, endpoint_id, with_for_update=True)
            if row is None:
                return now
            if row.failing_since is None:
                row.failing_since = now
            return row.failing_since

    def webhook_log(self, endpoint_id: int, limit: int = 100, offset: int = 0
                    ) -> list[WebhookDelivery]:
        with self._tx() as s:
            self._endpoint(s, endpoint_id)
            return [_delivery(r) for r in s.scalars(
                select(WebhookOutbox).where(WebhookOutbox.endpoint_id == endpoint_id)
                .order_by(WebhookOutbox.id.desc()).limit(limit).offset(offset))]

    def get_webhook_delivery(self, endpoint_id: int, delivery_id: int) -> WebhookDelivery:
        with self._tx() as s:
            row = s.get(WebhookOutbox, delivery_id)
            if row is None or row.endpoint_id != endpoint_id:
                raise NotFound(f"no delivery {delivery_id} of webhook {endpoint_id}")
            return _delivery(row)

    def resend_webhook(self, endpoint_id: int, delivery_id: int) -> WebhookDelivery:
        """Send an event again (an admin's "send again"): with the same id and body, and a
        new day of attempts."""
        now = self.clock.now()
        with self._tx() as s:
            row = s.get(WebhookOutbox, delivery_id)
            if row is None or row.endpoint_id != endpoint_id:
                raise NotFound(f"no delivery {delivery_id} of webhook {endpoint_id}")
            if row.status != "sending":
                row.status, row.attempts, row.next_attempt_at = "pending", 0, now
                row.queued_at = now
            s.flush()
            return _delivery(row)

    def webhook_events_of(self, copy_ids: Sequence[int]) -> list[WebhookDelivery]:
        """The events about these copies, oldest first (a person's export)."""
        if not copy_ids:
            return []
        with self._tx() as s:
            return [_delivery(r) for r in s.scalars(
                select(WebhookOutbox).where(WebhookOutbox.copy_id.in_(sorted(copy_ids)))
                .order_by(WebhookOutbox.id))]

    def erase_webhook_events(self, copy_ids: Sequence[int]) -> int:
        """Delete the events about these copies, sent or not (a person's erasure)."""
        if not copy_ids:
            return 0
        with self._tx() as s:
            done = s.execute(delete(WebhookOutbox).where(
                WebhookOutbox.copy_id.in_(sorted(copy_ids))))
            return cast(CursorResult[Any], done).rowcount

    def prune_webhook_log(self, before: datetime) -> int:
        """Delete the log's entries made before ``before`` that are done with (delivered
        or given up on). Returns how many."""
        with self._tx() as s:
            done = s.execute(delete(WebhookOutbox).where(
                WebhookOutbox.created_at < before,
                WebhookOutbox.status.in_(("delivered", "failed"))))
            return cast(CursorResult[Any], done).rowcount

    def webhook_counts(self) -> dict[str, int]:
        with self._tx() as s:
            return dict(s.execute(select(WebhookOutbox.status, func.count())
                                  .group_by(WebhookOutbox.status)).tuples().all())


def _apply(row: WebhookEndpoint, hook: WebhookIn) -> None:
    row.url, row.mailbox_id, row.events = hook.url, hook.mailbox_id, " ".join(hook.events)
    row.format, row.every_view, row.description = hook.format, hook.every_view, hook.description

