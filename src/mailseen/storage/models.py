"""Tables. Times are stored as naive UTC and handed out as aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


# BIGINT primary keys on PostgreSQL, INTEGER (rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

intpk = Annotated[int, mapped_column(BigId, primary_key=True, autoincrement=True)]
utc = Annotated[datetime, mapped_column(UTCDateTime())]
utc_null = Annotated[datetime | None, mapped_column(UTCDateTime(), nullable=True)]
str_null = Annotated[str | None, mapped_column(Text, nullable=True)]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class AppSetting(Base):
    __tablename__ = "app_settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Mailbox(Base):
    __tablename__ = "mailboxes"
    id: Mapped[intpk]
    address: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    transport: Mapped[str] = mapped_column(String(10), default="outbox")
    smtp_host: Mapped[str_null]
    smtp_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    smtp_tls: Mapped[str] = mapped_column(String(10), default="starttls")
    smtp_username: Mapped[str_null]
    smtp_password_enc: Mapped[str_null]
    tracking: Mapped[str] = mapped_column(String(10), default="global")
    click_tracking: Mapped[str] = mapped_column(String(10), default="global",
                                                server_default="global")
    # Whom tracking follows (records.MailboxPolicy), and the refusal line in tracked mail.
    tracking_policy: Mapped[str] = mapped_column(String(16), default="global",
                                                 server_default="global")
    refusal_line: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    refusal_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    privacy_url: Mapped[str] = mapped_column(Text, default="", server_default="")
    remind_not_viewed_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remind_not_replied_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[utc]
    # Receiving by IMAP: the account, and where polling got to.
    imap_host: Mapped[str_null]
    imap_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    imap_tls: Mapped[str] = mapped_column(String(10), default="implicit")
    imap_username: Mapped[str_null]
    imap_password_enc: Mapped[str_null]
    imap_folder: Mapped[str] = mapped_column(String(200), default="INBOX")
    imap_uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    imap_last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    imap_status: Mapped[str] = mapped_column(String(20), default="")
    imap_error: Mapped[str_null]
    imap_checked_at: Mapped[utc_null]
    aliases: Mapped[str] = mapped_column(Text, default="", server_default="")
    imap_sent_folder: Mapped[str] = mapped_column(Text, default="", server_default="")
    imap_sent_uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    imap_sent_last_uid: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    imap_sent_append: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=text("false"))


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[intpk]
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id"))
    subject: Mapped[str] = mapped_column(Text, default="")
    other_party: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[utc]
    last_activity_at: Mapped[utc]
    # The newest message the team sent here: its status is the conversation's eye.
    latest_sent_id: Mapped[int | None] = mapped_column(BigId, nullable=True)

    __table_args__ = (
        Index("ix_conversations_listing", "mailbox_id", "last_activity_at"),
        # The listing across many mailboxes (an admin's): newest first straight from the index.
        Index("ix_conversations_recent", "last_activity_at", "id"),
    )


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[intpk]
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id"), index=True)
    message_id: Mapped[str] = mapped_column(String(998), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    from_addr: Mapped[str] = mapped_column(Text, default="")
    to_json: Mapped[str] = mapped_column(Text, default="[]")
    cc_json: Mapped[str] = mapped_column(Text, default="[]")
    bcc_json: Mapped[str] = mapped_column(Text, default="[]")
    envelope_json: Mapped[str] = mapped_column(Text, default="[]")
    in_reply_to: Mapped[str_null]
    references: Mapped[str_null]
    source: Mapped[str] = mapped_column(String(20), default="api")
    status: Mapped[str] = mapped_column(String(10), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str_null]
    created_at: Mapped[utc]
    next_attempt_at: Mapped[utc_null]
    lease_until: Mapped[utc_null]
    sent_at: Mapped[utc_null]
    tracked: Mapped[bool] = mapped_column(Boolean, default=False)
    tracking_reason: Mapped[str] = mapped_column(Text, default="")
    clicks_tracked: Mapped[bool] = mapped_column(Boolean, default=False,
                                                 server_default=false())
    first_viewed_at: Mapped[utc_null]
    last_viewed_at: Mapped[utc_null]
    view_count: Mapped[int] = mapped_column(Integer, default=0)  # human views only
    machine_count: Mapped[int] = mapped_column(Integer, default=0)
    first_machine_at: Mapped[utc_null]
    last_machine_at: Mapped[utc_null]
    replied_at: Mapped[utc_null]  # a person replied: seen, even with images blocked
    direction: Mapped[str] = mapped_column(String(3), default="out")
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id"), nullable=True, index=True)
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_reason: Mapped[str] = mapped_column(Text, default="")
    # Summaries of the copies (kept by storage as they change, so listings read no copies):
    # personal copies, those a person saw, those that could not be delivered.
    copies: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    viewed_copies: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed_copies: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Who sent it: the user's name when a user did (kept if the user is deleted later), or
    # the way in ("API token", "command line", "tag filter").
    sent_by: Mapped[str] = mapped_column(Text, default="", server_default="")
    sent_by_user_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), nullable=True)

    __table_args__ = (
        Index("ix_messages_queue", "status", "next_attempt_at"),
        # Reports: the messages sent in a period.
        Index("ix_messages_sent", "status", "sent_at"),
        # An inbound message seen twice (IMAP and SMTP, a re-poll) is one message.
        Index("uq_messages_inbound", "mailbox_id", "message_id", unique=True,
              sqlite_where=text("direction = 'in'"), postgresql_where=text("direction = 'in'")),
    )


class Copy(Base):
    """One copy of an outbound message: what the delivery queue holds, and what a pixel
    token names. See :class:`mailseen.records.NewCopy`."""

    __tablename__ = "copies"
    id: Mapped[intpk]
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    recipient: Mapped[str_null]
    token_key: Mapped[int | None] = mapped_column(BigInteger, nullable=True, unique=True)
    # What the copy carries (records.PixelKind) and why, in the user's words; the recipient
    # as consent records are keyed (core.consent.address_key), for the check at the pixel.
    pixel: Mapped[str] = mapped_column(String(10), default="none", server_default="none")
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    recipient_key: Mapped[str_null]
    # A shared copy that goes to some of the envelope only (the others have copies of
    # their own): those recipients, as JSON; None for the whole envelope.
    envelope_json: Mapped[str_null]
    status: Mapped[str] = mapped_column(String(10), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str_null]
    next_attempt_at: Mapped[utc_null]
    lease_until: Mapped[utc_null]
    sent_at: Mapped[utc_null]
    last_attempt_at: Mapped[utc_null]  # when a delivery attempt last ended, either way
    view_count: Mapped[int] = mapped_column(Integer, default=0)  # human views only
    first_viewed_at: Mapped[utc_null]
    last_viewed_at: Mapped[utc_null]
    machine_count: Mapped[int] = mapped_column(Integer, default=0)
    first_machine_at: Mapped[utc_null]
    last_machine_at: Mapped[utc_null]
    replied_at: Mapped[utc_null]

    __table_args__ = (
        Index("uq_copies_message_position", "message_id", "position", unique=True),
        Index("ix_copies_queue", "status", "next_attempt_at"),
        # A mailbox's latest delivery attempt (is its relay failing?), newest first.
        Index("ix_copies_attempted", "last_attempt_at"),
    )


class MessageData(Base):
    """The bytes to deliver, kept apart so listing messages never reads them."""

    __tablename__ = "message_data"
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    # What tagging it for its copies changes (core/splice.py): raw[splice_start:splice_end]
    # becomes splice_insert, made with the tag splice_key names. None: copies are tagged as
    # they are made (untracked, too far-flung a change, or stored before this was kept).
    splice_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    splice_end: Mapped[int | None] = mapped_column(Integer, nullable=True)
    splice_insert: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    splice_key: Mapped[str | None] = mapped_column(String(16), nullable=True)


class MessageWords(Base):
    """The words of a message's body, for search: kept apart so that listing messages never
    reads them."""

    __tablename__ = "message_words"
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    words: Mapped[str] = mapped_column(Text)


class MessageDisplay(Base):
    """A message made ready to show (sanitised once, not on every view): derived from
    message_data, so it may be dropped and made again; ``version`` names the rules."""

    __tablename__ = "message_display"
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    html: Mapped[str_null]
    html_images: Mapped[str_null]
    text: Mapped[str_null]
    blocked_images: Mapped[int] = mapped_column(Integer, default=0)
    attachments_json: Mapped[str] = mapped_column(Text, default="[]")
    note: Mapped[str] = mapped_column(Text, default="")


class ViewEvent(Base):
    """Append-only: one row per pixel hit on a genuine token of an existing message."""

    __tablename__ = "view_events"
    id: Mapped[intpk]
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"))
    recipient: Mapped[int] = mapped_column(Integer, default=0)
    copy_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("copies.id", ondelete="CASCADE"), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    method: Mapped[str] = mapped_column(String(10))
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    user_agent: Mapped[str_null]
    headers_json: Mapped[str] = mapped_column(Text, default="{}")
    verdict: Mapped[str] = mapped_column(String(7), default="human")
    reason: Mapped[str] = mapped_column(Text, default="")
    client: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        # Reports count views per day and verdict: each count reads one slice of this index.
        # Time first: with verdict first, SQLite without statistics takes it for the machine
        # fetches of a few messages (message_id IN … AND verdict = …) and reads them all.
        Index("ix_view_events_at_verdict", "at", "verdict"),
        # A message's views; its latest machine fetch (the listing's eye) read newest first,
        # stopping at the first one, however many a scanner made.
        Index("ix_view_events_message", "message_id", "id"),
    )


class ClickEvent(Base):
    """Append-only: one row per request of a click redirect with a genuine token of an
    existing copy, human or machine (only human clicks count)."""

    __tablename__ = "click_events"
    id: Mapped[intpk]
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"))
    copy_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("copies.id", ondelete="CASCADE"), nullable=True)
    recipient: Mapped[int] = mapped_column(Integer, default=0)
    link: Mapped[int] = mapped_column(Integer, default=0)
    url: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    method: Mapped[str] = mapped_column(String(10))
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    user_agent: Mapped[str_null]
    headers_json: Mapped[str] = mapped_column(Text, default="{}")
    verdict: Mapped[str] = mapped_column(String(7), default="human")
    reason: Mapped[str] = mapped_column(Text, default="")
    client: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        Index("ix_click_events_message", "message_id", "id"),
        Index("ix_click_events_copy", "copy_id", "at"),
    )


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[utc]
    last_used_at: Mapped[utc_null]
    # The user whose rights the token carries; None: an installation-wide admin token.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True)


class AppPassword(Base):
    """A password a user gives a mail client for SMTP submission (never their web
    password). Only its hash is stored: see services/accounts.py for why a fast one."""

    __tablename__ = "app_passwords"
    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[utc]
    last_used_at: Mapped[utc_null]


class User(Base):
    __tablename__ = "users"
    id: Mapped[intpk]
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(10), default="member")
    created_at: Mapped[utc]
    # What they are told of the messages they sent (records.NotifyMode), and up to when
    # they were told: the next notice or digest covers what happened after.
    notify: Mapped[str] = mapped_column(String(12), default="off", server_default="off")
    notified_until: Mapped[utc_null]


class Membership(Base):
    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True, index=True)


class WebSession(Base):
    """A signed-in browser. The cookie holds a random id; only its hash is stored."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[utc]
    expires_at: Mapped[utc]


class LoginFailure(Base):
    """Failed sign-ins, by account and by client address, for throttling."""

    __tablename__ = "login_failures"
    id: Mapped[intpk]
    key: Mapped[str] = mapped_column(String(400), index=True)
    at: Mapped[utc]


class ConsentEvent(Base):
    """Append-only: every change of a recipient's consent to tracking, with when, how and
    by whom. Each row carries a hash of itself and of the row before it, so a row edited or
    removed outside mailseen breaks the chain (``mailseen consent verify``)."""

    __tablename__ = "consent_events"
    id: Mapped[intpk]
    address_key: Mapped[str] = mapped_column(String(320), index=True)
    state: Mapped[str] = mapped_column(String(10))
    at: Mapped[utc]
    how: Mapped[str] = mapped_column(String(10))
    by_user_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    by_name: Mapped[str] = mapped_column(Text, default="")
    note: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Consent(Base):
    """Each recipient's current consent: derived from consent_events, written with them."""

    __tablename__ = "consents"
    address_key: Mapped[str] = mapped_column(String(320), primary_key=True)
    state: Mapped[str] = mapped_column(String(10))
    at: Mapped[utc]
    event_id: Mapped[int] = mapped_column(BigId)


class DoNotTrackEntry(Base):
    __tablename__ = "do_not_track"
    id: Mapped[intpk]
    kind: Mapped[str] = mapped_column(String(10))
    key: Mapped[str] = mapped_column(String(320))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[utc]
    created_by: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("uq_do_not_track_kind_key", "kind", "key", unique=True),)


class SettingChange(Base):
    """Append-only: who changed which tracking or privacy setting, when, from what to what."""

    __tablename__ = "settings_audit"
    id: Mapped[intpk]
    at: Mapped[utc]
    user_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    user_name: Mapped[str] = mapped_column(Text, default="")
    scope: Mapped[str] = mapped_column(Text)
    setting: Mapped[str] = mapped_column(String(100))
    old: Mapped[str] = mapped_column(Text, default="")
    new: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_settings_audit_at", "at"),)


class WebhookEndpoint(Base):
    """Where events are sent (docs/integrations.md). ``events`` is the names subscribed to,
    space-separated; the secret is kept encrypted, like relay passwords."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[intpk]
    url: Mapped[str] = mapped_column(Text)
    mailbox_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("mailboxes.id", ondelete="CASCADE"), nullable=True)
    events: Mapped[str] = mapped_column(Text)
    every_view: Mapped[bool] = mapped_column(Boolean, default=False)
    format: Mapped[str] = mapped_column(String(10), default="standard")
    description: Mapped[str] = mapped_column(Text, default="")
    secret_enc: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[utc]
    disabled_at: Mapped[utc_null]
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    # Failing since this time with no success in between; None while it works.
    failing_since: Mapped[utc_null]
    last_success_at: Mapped[utc_null]


class WebhookOutbox(Base):
    """The durable outbox: one row per event per endpoint, written in the same transaction
    as what it tells of, sent by the webhook worker (a conditional UPDATE claims it), kept as
    the endpoint's delivery log."""

    __tablename__ = "webhook_outbox"
    id: Mapped[intpk]
    endpoint_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(40))
    # The copy it is about, if any: what erasing a person's data finds their events by.
    copy_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    facts_json: Mapped[str] = mapped_column(Text)
    body: Mapped[str_null]
    created_at: Mapped[utc]
    # When the current round of attempts began (creation, or an admin's "send again").
    queued_at: Mapped[utc]
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[utc_null]
    lease_until: Mapped[utc_null]
    last_attempt_at: Mapped[utc_null]
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str_null]

    __table_args__ = (
        Index("ix_webhook_outbox_due", "status", "next_attempt_at"),
        Index("ix_webhook_outbox_endpoint", "endpoint_id", "id"),
        # No index on copy_id or created_at: each costs every view's event a write, and
        # only erasure and the hourly pruning would read them.
    )


class Reminder(Base):
    """A follow-up reminder: when ``due_at`` passes and the message was not viewed (or not
    replied to), the sender is told and the conversation is to follow up."""

    __tablename__ = "reminders"
    id: Mapped[intpk]
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    due_at: Mapped[utc]
    state: Mapped[str] = mapped_column(String(10), default="waiting")
    user_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    fired_at: Mapped[utc_null]
    notified_at: Mapped[utc_null]
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0)
    notify_error: Mapped[str_null]

    __table_args__ = (Index("ix_reminders_due", "state", "due_at"),)
