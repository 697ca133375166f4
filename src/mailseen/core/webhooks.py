"""Webhooks as the Standard Webhooks specification says (https://www.standardwebhooks.com):
the signature, the payload of each event, the chat formats, and when to try again.

A receiver checks ``webhook-signature`` ("v1," + base64 HMAC-SHA256, keyed with the base64
part of the endpoint's "whsec_" secret, over "{webhook-id}.{webhook-timestamp}.{body}");
docs/integrations.md shows one in Python and one with openssl."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..records import WEBHOOK_EVENTS, WebhookEvent, WebhookFacts, WebhookFormat

__all__ = ["RETRY_DELAYS", "RETRY_FOR", "EventSubject", "chat_body", "event_payload",
           "new_event_id", "new_secret", "next_attempt", "sign", "signed_headers",
           "standard_body"]

SECRET_PREFIX = "whsec_"
# After a failure, wait this long before the next attempt (the last delay repeats), and give
# up once a day has passed since the event was queued: the schedule the specification's
# authors (Svix) use, cut to a day.
RETRY_DELAYS = (timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30),
                timedelta(hours=2), timedelta(hours=5), timedelta(hours=10))
RETRY_FOR = timedelta(days=1)
FORMATS: tuple[WebhookFormat, ...] = ("standard", "slack", "teams")
EVENTS = WEBHOOK_EVENTS


def new_secret() -> str:
    """A signing secret: "whsec_" and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_event_id() -> str:
    """The webhook-id of one event to one endpoint: the same on every attempt, so that a
    receiver can drop what it already had (delivery is at least once)."""
    return "msg_" + secrets.token_hex(12)


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{event_id}.{timestamp}.".encode() + body
    mac = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, event_id: str, timestamp: int, body: bytes
                   ) -> dict[str, str]:
    return {"content-type": "application/json", "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, event_id, timestamp, body)}


def next_attempt(attempts: int, queued_at: datetime, now: datetime) -> datetime | None:
    """When to try again after ``attempts`` failed attempts, or None to give up."""
    delay = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1] if attempts else timedelta(0)
    at = now + delay
    return at if at - queued_at <= RETRY_FOR else None


@dataclass(frozen=True)
class EventSubject:
    """What an event is about, looked up when it is first sent. ``recipient`` is None when
    privacy forbids naming one (a refusal, a copy without a personal pixel, an aggregate
    mailbox): the payload then carries counts only."""

    message_id: int
    rfc_message_id: str
    subject: str
    mailbox: str
    mailbox_id: int
    recipient: str | None
    copy_id: int | None
    human_views: int
    machine_fetches: int
    status: str
    copy_status: str | None = None
    error: str | None = None


def _time(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(event: WebhookEvent, facts: WebhookFacts, subject: EventSubject
                  ) -> dict[str, Any]:
    """The Standard Webhooks payload: {"type", "timestamp", "data"}."""
    data: dict[str, Any] = {
        "message": {"id": subject.message_id, "message_id": subject.rfc_message_id,
                    "subject": subject.subject, "mailbox": subject.mailbox,
                    "status": subject.status},
        "recipient": subject.recipient,
        "copy_id": subject.copy_id if subject.recipient is not None else None,
        "at": _time(facts.at),
    }
    if subject.recipient is None:
        data["counts"] = {"human_views": subject.human_views,
                          "machine_fetches": subject.machine_fetches}
    if facts.verdict is not None:
        view: dict[str, Any] = {"verdict": facts.verdict, "first": facts.first}
        if subject.recipient is not None:  # counts only when nobody may be named
            view.update(reason=facts.reason, client=facts.client)
        data["view"] = view
    if subject.error and event in ("message.failed", "message.bounced"):
        data["error"] = subject.error
    if facts.note and event == "message.clicked":
        data["url"] = facts.note  # the link followed
    elif facts.note:
        data["note"] = facts.note
    return {"type": event, "timestamp": _time(facts.at), "data": data}


def standard_body(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


_VERBS = {"message.delivered": "Delivered", "message.failed": "Failed",
          "message.bounced": "Bounced", "message.viewed": "Viewed",
          "message.clicked": "Link clicked", "message.replied": "Replied",
          "message.not_viewed": "Not viewed yet", "message.not_replied": "Not replied yet"}


def chat_line(payload: Mapping[str, Any]) -> str:
    """One line for a person: "Viewed: “Subject” by alice@example.org (Apple Mail)"."""
    data = payload["data"]
    who = data["recipient"] or "a recipient"
    line = f"{_VERBS.get(payload['type'], payload['type'])}: “{data['message']['subject']}”"
    line += f" ({data['message']['mailbox']})"
    if payload["type"] in ("message.viewed", "message.clicked", "message.replied"):
        line += f" by {who}"
    else:
        line += f" to {who}"
    view = data.get("view")
    if view and view.get("client"):
        line += f", {view['client']}"
    if data.get("error"):
        line += f": {data['error']}"
    return line


def chat_body(fmt: WebhookFormat, payload: Mapping[str, Any]) -> str:
    """The body for ``fmt``: the Standard Webhooks JSON, a Slack incoming-webhook message,
    or a Microsoft Teams one (a MessageCard, which every Teams incoming webhook accepts)."""
    if fmt == "slack":
        return standard_body({"text": chat_line(payload)})
    if fmt == "teams":
        line = chat_line(payload)
        return standard_body({"@type": "MessageCard", "@context": "https://schema.org/extensions",
                              "summary": line, "text": line})
    return standard_body(payload)
