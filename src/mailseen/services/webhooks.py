"""Webhooks: the endpoints admins register, and the worker that sends the outbox.

Events are queued by storage in the transaction of what they tell of (docs/integrations.md);
the worker claims them, makes each payload once (naming a recipient only where privacy
allows it now), signs it as Standard Webhooks says and posts it. A failure is tried again
with backoff for a day; an endpoint that failed every attempt at an event for that whole day,
or answered 410 Gone, is disabled, and its Settings page says why."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from ..clock import Clock, wait
from ..core.webhooks import (
    EVENTS,
    FORMATS,
    EventSubject,
    chat_body,
    event_payload,
    new_secret,
    next_attempt,
    signed_headers,
)
from ..errors import InvalidInput, MailseenError, NotFound
from ..records import (
    UserRecord,
    WebhookClaim,
    WebhookDelivery,
    WebhookFacts,
    WebhookIn,
    WebhookRecord,
)
from ..storage import Store
from ..transports.webhook import HttpPoster, PostResult
from .consents import Consents
from .mailboxes import require_admin

__all__ = ["LOG_DAYS", "WebhookWorker", "Webhooks"]

log = logging.getLogger(__name__)
MAX_URL = 2000
# How long the delivery log keeps what was delivered or given up on (the retention
# setting's purge removes it sooner when it is shorter), and how often the worker prunes it.
LOG_DAYS = 30
_PRUNE_EVERY = timedelta(hours=1)


def _check(store: Store, hook: WebhookIn) -> WebhookIn:
    url = hook.url.strip()
    scheme, sep, rest = url.partition("://")
    if (not sep or scheme.lower() not in ("http", "https") or not rest
            or any(c.isspace() for c in url)):
        raise InvalidInput("url: an http:// or https:// address", field="url")
    if len(url) > MAX_URL:
        raise InvalidInput(f"url: at most {MAX_URL} characters", field="url")
    events = tuple(dict.fromkeys(hook.events))
    if not events:
        raise InvalidInput("events: choose at least one event", field="events")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise InvalidInput(f"events: unknown event {unknown[0]!r} (one of {', '.join(EVENTS)})",
                           field="events")
    if hook.format not in FORMATS:
        raise InvalidInput(f"format: one of {', '.join(FORMATS)}", field="format")
    if len(hook.description) > 200 or "\n" in hook.description:
        raise InvalidInput("description: one line of at most 200 characters",
                           field="description")
    if hook.mailbox_id is not None:
        try:
            store.get_mailbox(hook.mailbox_id)
        except NotFound as exc:
            raise InvalidInput(f"mailbox: no mailbox {hook.mailbox_id}",
                               field="mailbox_id") from exc
    return replace(hook, url=url, events=events, description=hook.description.strip())


class Webhooks:
    """Registering endpoints and reading their delivery logs: admins only."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, actor: UserRecord | None, hook: WebhookIn) -> WebhookRecord:
        require_admin(actor)
        return self.store.add_webhook(_check(self.store, hook), new_secret())

    def all(self, actor: UserRecord | None) -> list[WebhookRecord]:
        require_admin(actor)
        return self.store.list_webhooks()

    def get(self, actor: UserRecord | None, endpoint_id: int) -> WebhookRecord:
        require_admin(actor)
        return self.store.get_webhook(endpoint_id)

    def update(self, actor: UserRecord | None, endpoint_id: int, hook: WebhookIn
               ) -> WebhookRecord:
        require_admin(actor)
        self.store.get_webhook(endpoint_id)
        return self.store.update_webhook(endpoint_id, _check(self.store, hook))

    def delete(self, actor: UserRecord | None, endpoint_id: int) -> None:
        require_admin(actor)
        self.store.delete_webhook(endpoint_id)

    def set_enabled(self, actor: UserRecord | None, endpoint_id: int, enabled: bool
                    ) -> WebhookRecord:
        require_admin(actor)
        who = actor.name or actor.email if actor is not None else "the installation"
        return self.store.set_webhook_enabled(endpoint_id, enabled,
                                              "" if enabled else f"disabled by {who}")

    def rotate_secret(self, actor: UserRecord | None, endpoint_id: int) -> WebhookRecord:
        require_admin(actor)
        return self.store.set_webhook_secret(endpoint_id, new_secret())

    def log(self, actor: UserRecord | None, endpoint_id: int, limit: int = 100,
            offset: int = 0) -> list[WebhookDelivery]:
        require_admin(actor)
        return self.store.webhook_log(endpoint_id, limit, offset)

    def resend(self, actor: UserRecord | None, endpoint_id: int, delivery_id: int
               ) -> WebhookDelivery:
        """Send an event again, with its id and body (an admin's "send again")."""
        require_admin(actor)
        return self.store.resend_webhook(endpoint_id, delivery_id)

    def disabled(self, actor: UserRecord | None) -> list[WebhookRecord]:
        """The endpoints that were disabled, for the admins' attention."""
        return [h for h in self.all(actor) if not h.enabled]

    def disabled_summary(self, actor: UserRecord | None) -> list[tuple[int, str, str]]:
        """(id, url, why) of the disabled endpoints: what every admin page shows, read
        without their secrets."""
        require_admin(actor)
        return self.store.disabled_webhooks()


class WebhookWorker:
    """Sends the outbox: claims due events (several workers may run), posts them a batch at
    a time, records each answer. Runs beside the delivery worker."""

    def __init__(self, store: Store, consents: Consents, poster: HttpPoster | None = None,
                 *, clock: Clock | None = None, batch: int = 16,
                 lease: timedelta = timedelta(minutes=2), idle_poll: float = 1.0) -> None:
        self.store = store
        self.consents = consents
        self.poster = poster or HttpPoster()
        self.clock = clock or store.clock
        self.batch = batch
        self.lease = lease
        self.idle_poll = idle_poll
        self._pruned_at: datetime | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set; the batch in hand is finished first."""
        while not stop.is_set():
            try:
                await self.prune()
                busy = await self.run_once()
            except MailseenError as exc:  # the database is down: wait and try again
                log.warning("webhooks paused: %s", exc)
                busy = 0
            if not busy:
                await wait(self.clock, self.idle_poll, stop)

    async def prune(self) -> int:
        """Drop the log's entries older than :data:`LOG_DAYS`, at most once an hour."""
        now = self.clock.now()
        if self._pruned_at is not None and now - self._pruned_at < _PRUNE_EVERY:
            return 0
        self._pruned_at = now
        return await asyncio.to_thread(self.store.prune_webhook_log,
                                       now - timedelta(days=LOG_DAYS))

    async def run_once(self) -> int:
        """Send one batch of due events; how many were tried."""
        claims = await asyncio.to_thread(self.store.claim_webhooks, self.batch, self.lease)
        await asyncio.gather(*(self._send(c) for c in claims))
        return len(claims)

    async def drain(self) -> int:
        """Try everything due now once (failures wait for their next attempt)."""
        count = 0
        while n := await self.run_once():
            count += n
        return count

    async def _send(self, claim: WebhookClaim) -> None:
        d, hook = claim.delivery, claim.endpoint
        try:
            body = d.body
            if body is None:
                body = await asyncio.to_thread(self._body, claim)
                if body is None:
                    await asyncio.to_thread(self.store.webhook_failed, d.id, hook.id, None,
                                            "the message was deleted", None)
                    return
            data = body.encode()
            headers = signed_headers(hook.secret, d.event_id, int(self.clock.now().timestamp()),
                                     data)
            result = await self.poster.post(hook.url, data, headers)
            await asyncio.to_thread(self._record, claim, result)
        except MailseenError as exc:  # the database: the lease runs out, it is tried again
            log.warning("webhook %s to %s: %s", d.event_id, hook.url, exc)

    def _body(self, claim: WebhookClaim) -> str | None:
        subject = self.subject(claim.facts)
        if subject is None:
            return None
        payload = event_payload(claim.delivery.event, claim.facts, subject)
        body = chat_body(claim.endpoint.format, payload)
        self.store.set_webhook_body(claim.delivery.id, body)  # the same on every attempt
        return body

    def subject(self, facts: WebhookFacts) -> EventSubject | None:
        """What an event is about, naming its recipient only when their copy has a personal
        pixel and they may still be followed (no refusal since, no aggregate policy)."""
        found = self.store.subject_of(facts)
        if found is None:
            return None
        msg, copy, box = found
        recipient = None
        if copy is not None and copy.personal and not facts.anonymous:
            assert copy.recipient is not None
            _, [decision] = self.consents.decide(box, [copy.recipient])
            if decision.pixel == "personal":
                recipient = copy.recipient
        return EventSubject(
            message_id=msg.id, rfc_message_id=msg.message_id, subject=msg.subject,
            mailbox=box.address, mailbox_id=box.id, recipient=recipient,
            copy_id=copy.id if copy is not None else None,
            human_views=msg.view_count, machine_fetches=msg.machine_count,
            status=msg.status, copy_status=copy.status if copy is not None else None,
            error=(copy.last_error if copy is not None else msg.last_error))

    def _record(self, claim: WebhookClaim, result: PostResult) -> None:
        d, hook = claim.delivery, claim.endpoint
        if result.ok:
            assert result.status is not None
            self.store.webhook_delivered(d.id, hook.id, result.status)
            return
        now = self.clock.now()
        retry_at = None if result.status == 410 else next_attempt(d.attempts, claim.queued_at,
                                                                   now)
        failing_since = self.store.webhook_failed(d.id, hook.id, result.status, result.note,
                                                  retry_at)
        log.info("webhook %s to %s failed (attempt %d): %s", d.event_id, hook.url, d.attempts,
                 result.note)
        reason = ""
        if result.status == 410:
            reason = "the endpoint answered 410 Gone"
        elif retry_at is None and failing_since <= claim.queued_at:
            reason = f"every attempt failed for a day (last: {result.note})"
        if reason:
            log.warning("webhook endpoint %s disabled: %s", hook.url, reason)
            self.store.set_webhook_enabled(hook.id, False, reason)

