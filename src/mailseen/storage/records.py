"""Plain records that cross the storage boundary, so no adapter sees an ORM object."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

TrackingMode = Literal["global", "enabled", "disabled"]
Transport = Literal["outbox", "smtp"]
TlsMode = Literal["none", "starttls", "implicit"]
Status = Literal["queued", "sending", "sent", "failed"]


@dataclass(frozen=True)
class MailboxIn:
    address: str
    display_name: str = ""
    transport: Transport = "outbox"
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_tls: TlsMode = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    tracking: TrackingMode = "global"


@dataclass(frozen=True)
class MailboxRecord:
    id: int
    address: str
    display_name: str
    transport: Transport
    smtp_host: str | None
    smtp_port: int | None
    smtp_tls: TlsMode
    smtp_username: str | None
    has_smtp_password: bool
    tracking: TrackingMode
    created_at: datetime


@dataclass(frozen=True)
class NewMessage:
    mailbox_id: int
    message_id: str
    subject: str
    from_addr: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    envelope_to: list[str]
    in_reply_to: str | None
    references: str | None
    source: str


@dataclass(frozen=True)
class MessageRecord:
    id: int
    mailbox_id: int
    message_id: str
    subject: str
    from_addr: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    envelope_to: list[str]
    in_reply_to: str | None
    references: str | None
    source: str
    status: Status
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    tracked: bool
    tracking_reason: str
    first_viewed_at: datetime | None
    last_viewed_at: datetime | None
    view_count: int


@dataclass(frozen=True)
class ViewIn:
    """One pixel hit, as the pixel endpoint saw it."""

    message_id: int
    recipient: int
    at: datetime
    method: str
    ip: str | None
    user_agent: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ViewRecord:
    id: int
    message_id: int
    recipient: int
    at: datetime
    method: str
    ip: str | None
    user_agent: str | None
    headers: dict[str, str]
