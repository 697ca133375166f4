"""The API's request and response bodies, and how records become them."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import fields
from datetime import date, datetime
from typing import Annotated, Any, Literal, get_type_hints

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ...core.compose import Attachment, parse_address
from ...errors import InvalidInput
from ...records import (
    WEBHOOK_EVENTS,
    AgentDetail,
    ClickRecord,
    ConsentState,
    CopyRecord,
    CopyStatus,
    HeaderFacts,
    IpDetail,
    MailboxPolicy,
    MessageRecord,
    NotifyMode,
    ReminderKind,
    ReminderState,
    TrackingMode,
    TrackingPolicy,
    ViewRecord,
    WebhookEvent,
    WebhookFormat,
    WebhookIn,
    WebhookStatus,
)

__all__ = ["DeliveryChange", "EraseBody", "ErasureOut", "Id", "MailboxBody", "MailboxOut",
           "MailboxPatch", "MessageBody", "MessageDetail", "MessageOut",
           "PrivacySettingsBody", "PrivacySettingsOut", "Problem", "RecipientOut",
           "SettingsBody", "ViewOut", "message_out", "recipient_out", "view_out"]

Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


# -- schemas ----------------------------------------------------------------------------

class Problem(BaseModel):
    error: str
    field: str | None = None


class SettingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_enabled: bool = Field(description="Open tracking for mailboxes that use the "
                                               "global setting.")
    tracking_policy: TrackingPolicy | None = Field(
        None, description="Whom tracking follows for mailboxes that use the global policy: "
                          "everyone, unless-refused, with-consent or aggregate (left out: "
                          "unchanged).")
    click_tracking_enabled: bool | None = Field(
        None, description="Click tracking (links of tracked mail through the click "
                          "redirect) for mailboxes that use the global setting (left out: "
                          "unchanged).")


class SettingsOut(SettingsBody):
    public_url: str = Field(description="The base URL pixel URLs start with "
                                        "(MAILSEEN_PUBLIC_URL, else http://HOST:PORT).")
    public_url_reach: Literal["ok", "warning", "unreachable"] = Field(
        description='Whether recipients can fetch pixels there: "unreachable" (loopback, a '
                    'private network, a local name: no view will be recorded), "warning" '
                    '(plain http) or "ok".')
    public_url_problem: str | None = Field(description="What is wrong, in one sentence.")


class PrivacySettingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ip: IpDetail | None = Field(None, description='What is stored of a view\'s IP address: '
                                '"full", "truncated" (IPv4 /24, IPv6 /48) or "none".')
    user_agent: AgentDetail | None = Field(
        None, description='What is stored of a view\'s user agent: "full", or "family" (the '
                          'client without versions, "Outlook on Windows").')
    retention_days: int | None = Field(
        None, description="Days after which a view's IP address, user agent, headers and "
                          "recipient are cleared (counts stay); null keeps them for ever.")


class PurgeOut(BaseModel):
    at: datetime
    before: datetime = Field(description="Views older than this were cleared.")
    views: int = Field(description="How many views' details this run cleared.")


class PrivacySettingsOut(BaseModel):
    ip: IpDetail
    user_agent: AgentDetail
    retention_days: int | None
    last_purge: PurgeOut | None = Field(description="The retention purge's last run.")


class EraseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(max_length=320, description="The person's email address.")


class ErasureOut(BaseModel):
    address: str = Field(description="The address as matched: lowercase, domain in ASCII.")
    removed: dict[str, int] = Field(description="What was removed, by kind: views, "
                                                "copy_recipients (replaced by \"erased\").")
    kept: dict[str, int] = Field(description="What naming them was kept: the messages.")


class MailboxBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(max_length=320)
    display_name: str = Field("", max_length=200)
    transport: Literal["outbox", "smtp"] = "outbox"
    smtp_host: str | None = Field(None, max_length=255)
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "implicit"] = "starttls"
    smtp_username: str | None = Field(None, max_length=320)
    smtp_password: str | None = Field(None, max_length=1000, description="Write-only.")
    tracking: TrackingMode = "global"
    click_tracking: TrackingMode = Field(
        "global", description="Click tracking: global (the global setting), enabled or "
                              "disabled; the links of tracked personal copies only.")
    imap_host: str | None = Field(None, max_length=255, description="Receive by IMAP.")
    imap_port: int | None = Field(None, ge=1, le=65535)
    imap_tls: Literal["none", "starttls", "implicit"] = "implicit"
    imap_username: str | None = Field(None, max_length=320)
    imap_password: str | None = Field(None, max_length=1000, description="Write-only.")
    imap_folder: str = Field("INBOX", min_length=1, max_length=200)
    imap_sent_folder: str = Field("", max_length=200, description=(
        "The IMAP folder the team's clients file sent mail in; read so that mail sent "
        "around mailseen shows, untracked. Empty: not read."))
    imap_sent_append: bool = Field(False, description=(
        "File a copy of each message submitted by SMTP in imap_sent_folder."))
    aliases: str = Field("", max_length=4000, description=(
        "Other addresses mail clients may send as from this mailbox through SMTP "
        "submission, comma-separated."))
    tracking_policy: MailboxPolicy = Field(
        "global", description="Whom tracking follows: global (the global policy), everyone, "
                              "unless-refused, with-consent or aggregate.")
    refusal_line: bool = Field(False, description="Add a line with a one-click refusal link "
                                                  "to tracked mail.")
    refusal_text: str = Field("", max_length=500, description="The line's sentence (empty: "
                                                              "the standard one).")
    language: Literal["en", "fr", "it", "de", "es"] = Field(
        "en", description="Of the refusal line and page.")
    privacy_url: str = Field("", max_length=2000, description="The team's privacy notice, "
                                                              "linked from the refusal page.")
    remind_not_viewed_days: int | None = Field(
        None, ge=1, le=365, description="Remind senders when a message is not viewed in this "
                                        "many days, unless they say otherwise.")
    remind_not_replied_days: int | None = Field(
        None, ge=1, le=365, description="The same for a reply.")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return parse_address(v, "address")


class MailboxPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, max_length=320)
    display_name: str | None = Field(None, max_length=200)
    transport: Literal["outbox", "smtp"] | None = None
    smtp_host: str | None = Field(None, max_length=255)
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "implicit"] | None = None
    smtp_username: str | None = Field(None, max_length=320)
    smtp_password: str | None = Field(None, max_length=1000)
    tracking: TrackingMode | None = None
    click_tracking: TrackingMode | None = None
    imap_host: str | None = Field(None, max_length=255)
    imap_port: int | None = Field(None, ge=1, le=65535)
    imap_tls: Literal["none", "starttls", "implicit"] | None = None
    imap_username: str | None = Field(None, max_length=320)
    imap_password: str | None = Field(None, max_length=1000)
    imap_folder: str | None = Field(None, min_length=1, max_length=200)
    aliases: str | None = Field(None, max_length=4000)
    imap_sent_folder: str | None = Field(None, max_length=200)
    imap_sent_append: bool | None = None
    tracking_policy: MailboxPolicy | None = None
    refusal_line: bool | None = None
    refusal_text: str | None = Field(None, max_length=500)
    language: Literal["en", "fr", "it", "de", "es"] | None = None
    privacy_url: str | None = Field(None, max_length=2000)
    remind_not_viewed_days: int | None = Field(None, ge=1, le=365)
    remind_not_replied_days: int | None = Field(None, ge=1, le=365)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else parse_address(v, "address")


class MailboxOut(BaseModel):
    id: int
    address: str
    display_name: str
    transport: str
    smtp_host: str | None
    smtp_port: int | None
    smtp_tls: str
    smtp_username: str | None
    has_smtp_password: bool
    tracking: str
    effective_tracking: bool
    tracking_reason: str
    click_tracking: str
    effective_click_tracking: bool
    created_at: datetime
    imap_host: str | None
    imap_port: int | None
    imap_tls: str
    imap_username: str | None
    has_imap_password: bool
    imap_folder: str
    imap_status: str = Field(description='"ok", "error" or "" (never polled).')
    imap_error: str | None
    imap_checked_at: datetime | None
    aliases: str = Field("", description="Other addresses it sends as, comma-separated.")
    imap_sent_folder: str = ""
    imap_sent_append: bool = False
    tracking_policy: str
    effective_policy: str = Field(description="The policy in force for this mailbox.")
    refusal_line: bool
    refusal_text: str
    language: str
    privacy_url: str
    remind_not_viewed_days: int | None
    remind_not_replied_days: int | None


class ConnectionTestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    what: Literal["smtp", "imap"] = Field(description="The SMTP relay or the IMAP account.")


class ConnectionTestOut(BaseModel):
    what: Literal["smtp", "imap"]
    ok: bool = Field(description="Connected, did TLS as set and logged in.")
    message: str = Field(description="What worked, or the first step that failed, in words.")


class AttachmentBody(BaseModel):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field("application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")
    data_base64: str

    def decode(self) -> Attachment:
        try:
            data = base64.b64decode(self.data_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("attachments: data_base64 is not valid base64",
                               field="attachments") from exc
        return Attachment(self.filename, self.content_type, data)


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mailbox: str = Field(description="Address of the sending mailbox.")
    to: list[str] = Field(default_factory=list, max_length=500)
    cc: list[str] = Field(default_factory=list, max_length=500)
    bcc: list[str] = Field(default_factory=list, max_length=500)
    subject: str = Field("", max_length=998)
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentBody] = Field(default_factory=list, max_length=100)
    in_reply_to: str | None = Field(None, max_length=998)
    references: str | None = Field(None, max_length=20000)
    track: bool = Field(True, description="False turns tracking off for this message; it "
                        "never turns it on where the mailbox or global setting is off.")
    remind_not_viewed: int | date | None = Field(
        None, description="Remind the sender if no person viewed it within this many days "
                          "(1-365) or by the end of this date (UTC); 0: no reminder; left "
                          "out: the mailbox's default.")
    remind_not_replied: int | date | None = Field(
        None, description="The same for a reply.")

    @field_validator("mailbox")
    @classmethod
    def _mailbox(cls, v: str) -> str:
        return parse_address(v, "mailbox")


class Tracking(BaseModel):
    tracked: bool
    reason: str


# The header facts as the records declare them, so the API cannot drift from them.
_HeaderFactsOut: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "HeaderFacts", **{f.name: (get_type_hints(HeaderFacts)[f.name], ...)
                      for f in fields(HeaderFacts)})


class MessageOut(_HeaderFactsOut):  # type: ignore[misc,valid-type]
    id: int
    mailbox_id: int
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    tracking: Tracking
    clicks_tracked: bool = Field(description="The links of its personal copies lead "
                                             "through the click redirect.")
    viewed: bool = Field(description="Seen by a person: a human view, or a human reply.")
    first_viewed_at: datetime | None
    last_viewed_at: datetime | None
    view_count: int = Field(description="Views judged human.")
    replied_at: datetime | None
    machine_count: int = Field(description="Fetches judged machine (never count as views).")
    first_machine_at: datetime | None
    last_machine_at: datetime | None
    direction: Literal["out", "in"]
    conversation_id: int | None
    automatic: bool = Field(description="An inbound auto-reply or bounce.")
    auto_reason: str
    sent_by: str = Field(description="Who sent it: the user's name, or the way in "
                         "(\"API token\", \"command line\", \"tag filter\").")
    sent_by_user_id: int | None
    copies: int = Field(description="Copies sent one per recipient (0: one copy for all).")
    viewed_copies: int = Field(description="Of those, how many a person saw.")
    failed_copies: int = Field(description="Copies that failed or bounced.")


class RecipientOut(BaseModel):
    """One copy of a sent message: its recipient (null: one copy every recipient shared, so
    its views cannot name a person), delivery and views."""

    recipient: str | None
    position: int
    status: CopyStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    tracked: bool = Field(description="The copy carries a pixel of its own.")
    pixel: Literal["personal", "aggregate", "none"] = Field(
        description="What the copy carries: a pixel of the recipient's own, one shared by the "
                    "send that names nobody (policy aggregate), or none.")
    reason: str = Field(description='Why, in words ("not tracked: no consent recorded for '
                                    'erin@example.org").')
    view_count: int
    first_viewed_at: datetime | None
    last_viewed_at: datetime | None
    machine_count: int
    replied_at: datetime | None
    click_count: int = Field(0, description="Links of this copy a person followed (human "
                                            "clicks).")
    last_clicked_at: datetime | None = None


class ClickOut(BaseModel):
    id: int
    at: datetime
    method: str
    ip: str | None
    user_agent: str | None
    recipient: int = Field(description="Position of the copy whose link it was.")
    recipient_address: str | None
    link: int = Field(description="The link's place in the message, from 0.")
    url: str = Field(description="Where the link led (the URL its token signed).")
    verdict: Literal["human", "machine"]
    reason: str
    client: str


class DeliveryChange(BaseModel):
    changed: int = Field(description="How many copies were queued again or withdrawn.")


class ViewOut(BaseModel):
    id: int
    at: datetime
    method: str
    ip: str | None
    user_agent: str | None
    recipient: int = Field(description="Position of the copy whose pixel it was, as in the "
                           "message's recipients (0: a pixel all recipients shared).")
    recipient_address: str | None = Field(
        description="Whose copy's pixel it was; null when the pixel was shared, so the view "
                    "cannot name a person.")
    headers: dict[str, str]
    verdict: Literal["human", "machine"]
    reason: str
    client: str


class ReminderOut(BaseModel):
    kind: ReminderKind
    due_at: datetime
    state: ReminderState = Field(description="waiting; fired (the deadline passed with no "
                                             "view or reply); cancelled (seen or replied).")
    fired_at: datetime | None


class MessageDetail(MessageOut):
    recipients: list[RecipientOut]
    views: list[ViewOut]
    clicks: list[ClickOut] = Field(description="Clicks of its tracked links, human and "
                                               "machine (only human clicks count).")
    reminders: list[ReminderOut]


class NotifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notify: NotifyMode = Field(description="off, immediately (an e-mail at each first view) "
                                           "or daily (a digest).")


def message_out(m: MessageRecord) -> dict[str, Any]:
    return {
        **{f.name: getattr(m, f.name) for f in fields(HeaderFacts)},
        "id": m.id, "mailbox_id": m.mailbox_id, "status": m.status, "attempts": m.attempts,
        "last_error": m.last_error,
        "created_at": m.created_at, "next_attempt_at": m.next_attempt_at, "sent_at": m.sent_at,
        "tracking": {"tracked": m.tracked, "reason": m.tracking_reason},
        "clicks_tracked": m.clicks_tracked,
        "viewed": m.viewed, "first_viewed_at": m.first_viewed_at,
        "last_viewed_at": m.last_viewed_at, "view_count": m.view_count,
        "replied_at": m.replied_at, "machine_count": m.machine_count,
        "first_machine_at": m.first_machine_at, "last_machine_at": m.last_machine_at,
        "direction": m.direction, "conversation_id": m.conversation_id,
        "automatic": m.automatic, "auto_reason": m.auto_reason, "copies": m.copies,
        "viewed_copies": m.viewed_copies, "failed_copies": m.failed_copies,
        "sent_by": m.sent_by, "sent_by_user_id": m.sent_by_user_id,
    }


def recipient_out(c: CopyRecord, clicks: Sequence[ClickRecord] = ()) -> dict[str, Any]:
    """A copy; ``clicks`` are its message's (those of this copy are counted)."""
    human = [k.at for k in clicks if k.copy_id == c.id and k.verdict == "human"]
    return {"click_count": len(human), "last_clicked_at": max(human, default=None),
            "recipient": c.recipient, "position": c.position, "status": c.status,
            "attempts": c.attempts, "last_error": c.last_error,
            "next_attempt_at": c.next_attempt_at, "sent_at": c.sent_at,
            "tracked": c.token_key is not None, "pixel": c.pixel, "reason": c.reason,
            "view_count": c.view_count,
            "first_viewed_at": c.first_viewed_at, "last_viewed_at": c.last_viewed_at,
            "machine_count": c.machine_count, "replied_at": c.replied_at}


def view_out(v: ViewRecord, whose: dict[int, str | None] | None = None) -> dict[str, Any]:
    """A view; ``whose`` maps the message's copy ids to their recipients."""
    return {"id": v.id, "at": v.at, "method": v.method, "ip": v.ip,
            "user_agent": v.user_agent, "recipient": v.recipient, "headers": v.headers,
            "verdict": v.verdict, "reason": v.reason, "client": v.client,
            "recipient_address": (whose or {}).get(v.copy_id) if v.copy_id else None}


def click_out(k: ClickRecord) -> dict[str, Any]:
    return {"id": k.id, "at": k.at, "method": k.method, "ip": k.ip,
            "user_agent": k.user_agent, "recipient": k.recipient,
            "recipient_address": k.recipient_address, "link": k.link, "url": k.url,
            "verdict": k.verdict, "reason": k.reason, "client": k.client}


class ConsentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(max_length=320)
    state: ConsentState
    note: str = Field("", max_length=1000, description="How the recipient said so.")


class ConsentEventOut(BaseModel):
    id: int
    address: str
    state: ConsentState
    at: datetime
    how: str = Field(description="api, csv, web, cli, link (the recipient's own) or erase.")
    by: str
    note: str


class ConsentOut(BaseModel):
    address: str
    state: ConsentState
    history: list[ConsentEventOut]


class ImportOut(BaseModel):
    imported: int


class DoNotTrackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry: str = Field(max_length=320, description="An address, a domain, or *.domain / *.tld.")


class DoNotTrackOut(BaseModel):
    id: int
    kind: Literal["address", "domain", "suffix"]
    text: str
    created_at: datetime
    created_by: str


class SettingChangeOut(BaseModel):
    id: int
    at: datetime
    user: str
    scope: str
    setting: str
    old: str
    new: str


# -- webhooks -----------------------------------------------------------------------------

class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000, description="Where events are POSTed (http or https).")
    events: list[WebhookEvent] = Field(min_length=1, max_length=len(WEBHOOK_EVENTS),
                                       description="The events to send.")
    mailbox_id: int | None = Field(None, ge=1, le=2**63 - 1,
                                   description="Only this mailbox's events (left out: every "
                                               "mailbox's).")
    format: WebhookFormat = Field("standard", description="standard (signed JSON), slack or "
                                                          "teams (a chat message).")
    every_view: bool = Field(False, description="message.viewed on every human view, not "
                                                "only a copy's first.")
    description: str = Field("", max_length=200)

    def record(self) -> WebhookIn:
        return WebhookIn(self.url, tuple(self.events), self.mailbox_id, self.format,
                         self.every_view, self.description)


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[WebhookEvent]
    mailbox_id: int | None
    format: WebhookFormat
    every_view: bool
    description: str
    secret: str = Field(description='The signing secret: "whsec_" and base64 (docs: '
                                    'integrations.md).')
    enabled: bool
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str = Field(description="Why it was disabled (a day of failures, "
                                             "410 Gone, an admin).")
    failing_since: datetime | None
    last_success_at: datetime | None


class WebhookDeliveryOut(BaseModel):
    id: int
    event: WebhookEvent
    event_id: str = Field(description="The webhook-id header: the same on every attempt.")
    created_at: datetime
    status: WebhookStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    response_status: int | None
    last_error: str | None
    body: str | None = Field(description="What was sent (made at the first attempt).")
