"""The vocabulary every layer speaks: plain records and the names of their states.

Each concept is declared here once. Storage fills these from its rows (no caller sees an ORM
object), services pass them between the edges and storage, and the pure core reads the few it
needs (the header facts of a message, the tracking mode). This module imports nothing of
mailseen's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

TrackingMode = Literal["global", "enabled", "disabled"]
# Whom a personal pixel may follow, once tracking is on: every recipient but those who
# refused, the same said as opt-out, only those who agreed (opt-in), or nobody: one shared
# token per send that names no recipient, no IP or user agent kept, counts only.
TrackingPolicy = Literal["everyone", "unless-refused", "with-consent", "aggregate"]
# A mailbox's policy: its own, or "global" to follow the global one.
MailboxPolicy = Literal["global", "everyone", "unless-refused", "with-consent", "aggregate"]
# What a recipient said about being tracked; "unknown" while nothing is recorded.
ConsentState = Literal["granted", "refused", "unknown"]
# What a recipient's copy carries: a pixel of its own, a pixel shared by the send that
# names nobody, or none.
PixelKind = Literal["personal", "aggregate", "none"]
Transport = Literal["outbox", "smtp"]
TlsMode = Literal["none", "starttls", "implicit"]
Status = Literal["queued", "sending", "sent", "failed", "cancelled", "received"]
# A copy's delivery: waiting (queued, or retrying after a temporary failure), being handed
# over, accepted by the relay, refused for good, bounced back later, or withdrawn by an admin.
CopyStatus = Literal["queued", "sending", "sent", "failed", "bounced", "cancelled"]
Direction = Literal["out", "in"]
Verdict = Literal["human", "machine"]
# What is stored of a view's client: the IP address whole, its network only (IPv4 /24,
# IPv6 /48) or nothing; the user agent whole or the client's family only.
IpDetail = Literal["full", "truncated", "none"]
AgentDetail = Literal["full", "family"]


@dataclass(frozen=True)
class MailboxSettings:
    """What a mailbox is set to, but for its passwords, which are written and never read."""

    address: str
    display_name: str = ""
    transport: Transport = "outbox"
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_tls: TlsMode = "starttls"
    smtp_username: str | None = None
    tracking: TrackingMode = "global"
    # Click tracking (docs/tracking.md, "Click tracking"): like open tracking, the mailbox
    # wins both ways; "global" follows the global setting.
    click_tracking: TrackingMode = "global"
    imap_host: str | None = None
    imap_port: int | None = None
    imap_tls: TlsMode = "implicit"
    imap_username: str | None = None
    imap_folder: str = "INBOX"
    # Other addresses the team sends as from this mailbox through SMTP submission (an old
    # address, a per-person alias), comma-separated.
    aliases: str = ""
    # The IMAP folder the team's own clients file their sent mail in ("Sent"); when set, the
    # poller reads it so that mail sent around mailseen shows in its conversation too.
    imap_sent_folder: str = ""
    # File a copy of each message its mail clients submit in that folder (for clients that
    # keep none of their own).
    imap_sent_append: bool = False
    # Privacy (docs/privacy.md): whom tracking follows, and the line at the bottom of
    # tracked mail where a recipient can refuse it (in the mailbox's language).
    tracking_policy: MailboxPolicy = "global"
    refusal_line: bool = False
    refusal_text: str = ""
    language: str = "en"
    privacy_url: str = ""
    # Follow-up reminders for what this mailbox sends, unless the sender says otherwise:
    # remind the sender when a message is not viewed / not replied to in this many days.
    remind_not_viewed_days: int | None = None
    remind_not_replied_days: int | None = None


@dataclass(frozen=True)
class MailboxIn(MailboxSettings):
    """A mailbox's settings as given by a user. A password of None means "unchanged" and
    an empty one "remove"."""

    smtp_password: str | None = None
    imap_password: str | None = None


SECRET_FIELDS = ("smtp_password", "imap_password")


@dataclass(frozen=True, kw_only=True)
class MailboxRecord(MailboxSettings):
    """A stored mailbox: its settings, whether it has passwords, how its IMAP polling went."""

    id: int
    created_at: datetime
    has_smtp_password: bool = False
    has_imap_password: bool = False
    imap_status: str = ""
    imap_error: str | None = None
    imap_checked_at: datetime | None = None


@dataclass(frozen=True)
class ImapState:
    """Where polling a mailbox's IMAP folder got to, with its credentials."""

    mailbox_id: int
    host: str
    port: int | None
    tls: TlsMode
    username: str
    password: str
    folder: str
    uidvalidity: int | None
    last_uid: int
    # The Sent folder, read too when set, and where reading it got to.
    sent_folder: str = ""
    sent_uidvalidity: int | None = None
    sent_last_uid: int = 0


@dataclass(frozen=True)
class ConnectionCheck:
    """What testing a mailbox's SMTP relay or IMAP account found. ``message`` says in
    plain words what worked ("connected to smtp.example.com:587, STARTTLS, signed in as
    ada") or the first thing that failed ("login failed: wrong username or password")."""

    what: Literal["smtp", "imap"]
    ok: bool
    message: str


@dataclass(frozen=True)
class HeaderFacts:
    """What mailseen keeps of a message's header: the same for a message composed here,
    handed over whole, or received. ``message_id`` is the Message-ID with its brackets."""

    message_id: str
    subject: str
    from_addr: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    in_reply_to: str | None
    references: str | None


@dataclass(frozen=True)
class NewMessage(HeaderFacts):
    """A message about to be stored: its header facts and where it goes."""

    mailbox_id: int
    envelope_to: list[str]
    source: str
    direction: Direction = "out"
    automatic: bool = False
    auto_reason: str = ""
    sent_by: str = ""  # who sent it: a user's name, or the way in ("API token", …)
    sent_by_user_id: int | None = None
    words: str = ""  # the body's words, for search


@dataclass(frozen=True)
class MessageRecord(HeaderFacts):
    id: int
    mailbox_id: int
    envelope_to: list[str]
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
    machine_count: int = 0
    first_machine_at: datetime | None = None
    last_machine_at: datetime | None = None
    replied_at: datetime | None = None
    direction: Direction = "out"
    conversation_id: int | None = None
    automatic: bool = False
    auto_reason: str = ""
    # Copies that went to one recipient each (0: the message left as one shared copy), how
    # many of those a person saw, and how many could not be delivered (failed, bounced).
    copies: int = 0
    viewed_copies: int = 0
    failed_copies: int = 0
    sent_by: str = ""
    sent_by_user_id: int | None = None
    # Whether the links of its personal copies lead through our click redirect (decided
    # when it was queued, so that every attempt sends the same bytes).
    clicks_tracked: bool = False

    @property
    def viewed(self) -> bool:
        """Seen by a person: a human view of the pixel, or a human reply."""
        return self.view_count > 0 or self.replied_at is not None


@dataclass(frozen=True)
class NewCopy:
    """One copy of an outbound message as it is queued. Position 0 is the message as a
    whole, sent once to every envelope recipient (untracked mail, or a pixel shared by all:
    the ``tag`` filter); positions 1.. are one recipient each, with a pixel of their own.
    ``token_key`` is what that pixel's token names (random, so a token tells nothing of how
    many messages there are); None for a copy without a pixel."""

    position: int
    recipient: str | None
    token_key: int | None
    # What the copy carries and why ("tracked: erin@example.org consented to tracking");
    # a shared copy that goes to only some of the envelope names them in ``envelope``.
    pixel: PixelKind = field(default="none", kw_only=True)
    reason: str = field(default="", kw_only=True)
    envelope: tuple[str, ...] | None = field(default=None, kw_only=True)

    @property
    def personal(self) -> bool:
        """One recipient's copy with a pixel of its own: its views name that person."""
        return self.pixel == "personal" and self.recipient is not None


@dataclass(frozen=True)
class CopyRecord(NewCopy):
    """A stored copy: its delivery state and what its pixel saw."""

    id: int
    message_id: int
    status: CopyStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    view_count: int = 0
    first_viewed_at: datetime | None = None
    last_viewed_at: datetime | None = None
    machine_count: int = 0
    first_machine_at: datetime | None = None
    last_machine_at: datetime | None = None
    replied_at: datetime | None = None

    @property
    def shared(self) -> bool:
        """A copy for every recipient at once: its views are "one of the recipients"."""
        return self.recipient is None

    @property
    def viewed(self) -> bool:
        return self.view_count > 0 or self.replied_at is not None


@dataclass(frozen=True)
class ConversationRecord:
    id: int
    mailbox_id: int
    subject: str
    other_party: str
    created_at: datetime
    last_activity_at: datetime
    latest_sent_id: int | None


# Built for every pixel hit, so slotted and not frozen: a frozen dataclass's __init__ costs
# four times as much. Treat them as values all the same.
@dataclass(slots=True)
class ViewIn:
    """One pixel hit, as the pixel endpoint saw it."""

    message_id: int
    recipient: int
    at: datetime
    method: str
    ip: str | None
    user_agent: str | None
    headers: dict[str, str] = field(default_factory=dict)
    # A token of a copy names its key (message_id and recipient are then filled in from the
    # copy when the hit is written); an older token names the message (key 0).
    copy_key: int = 0
    copy_id: int | None = None
    # Counted but tied to nobody (an aggregate pixel): its address, user agent and headers
    # are judged in memory and never written.
    anonymous: bool = False


@dataclass(slots=True)
class ClickIn(ViewIn):
    """One request of a click redirect: a pixel hit's facts (``copy_key`` from the token),
    and which link it was and where it leads."""

    link: int = 0
    url: str = ""


@dataclass(frozen=True)
class ClickRecord:
    """A stored click: whose copy (its position and recipient), which link, and the verdict
    (only human clicks count)."""

    id: int
    message_id: int
    copy_id: int | None
    recipient: int
    recipient_address: str | None
    link: int
    url: str
    at: datetime
    method: str
    ip: str | None
    user_agent: str | None
    verdict: Verdict
    reason: str
    client: str


@dataclass(slots=True)  # one per pixel hit, like ViewIn
class Judged:
    """What classifying a hit said of it."""

    verdict: Verdict
    reason: str
    client: str


@dataclass(frozen=True)
class ViewRecord:
    id: int
    message_id: int
    recipient: int  # the copy's position (0: a pixel every recipient shared)
    at: datetime
    method: str
    ip: str | None
    user_agent: str | None
    headers: dict[str, str]
    verdict: Verdict = "human"
    reason: str = ""
    client: str = ""
    copy_id: int | None = None


@dataclass(frozen=True)
class ViewDetails:
    """What is stored of each view (a global setting)."""

    ip: IpDetail = "full"
    user_agent: AgentDetail = "full"

    @property
    def full(self) -> bool:
        return self.ip == "full" and self.user_agent == "full"


@dataclass(frozen=True)
class PurgeRun:
    """A run of the retention purge: when, up to which time, how many views it cleared."""

    at: datetime
    before: datetime
    views: int


@dataclass(frozen=True)
class Retention:
    """How long the personal details of views are kept (None: for ever), and the last
    purge."""

    days: int | None
    last_run: PurgeRun | None = None


Role = Literal["admin", "member"]


@dataclass(frozen=True)
class UserRecord:
    id: int
    email: str
    name: str
    role: Role
    created_at: datetime
    mailbox_ids: tuple[int, ...] = ()
    notify: NotifyMode = "off"  # what they are told of the messages they sent

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class AppPasswordRecord:
    """An app password as it may be shown: never its value, which is shown once."""

    id: int
    user_id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class SessionRecord:
    user: UserRecord
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class Ingested:
    """What storing a received message did."""

    message: MessageRecord
    duplicate: bool
    replied_to: list[int]  # outbound messages this human reply proves were seen


@dataclass(frozen=True)
class Queued:
    """What delivering a copy needs of its message: who it is for and how it goes."""

    id: int
    mailbox_id: int
    created_at: datetime
    envelope_to: list[str]
    clicks_tracked: bool = False


@dataclass(frozen=True)
class Splice:
    """What tagging a stored message for its copies changes: ``raw[start:end]`` replaced
    by ``insert`` (core/splice.py), made with the tag ``key`` names."""

    start: int
    end: int
    insert: bytes
    key: str


@dataclass(frozen=True)
class Claim:
    """A copy of a message claimed for delivery, with what its transport needs. ``raw`` is
    the message as stored; the copy's own pixel is put in as it is handed over."""

    message: Queued
    copy: CopyRecord
    raw: bytes
    mailbox: MailboxRecord
    smtp_password: str | None
    # A claim taken in a batch is reserved until then: still queued, nobody else's, and
    # only marked as being sent (an attempt) when its turn comes (``Store.advance``).
    reserved_until: datetime | None = None
    alone: bool = False  # the message's only copy: its state is the message's
    splice: Splice | None = None  # how to make its copies without tagging (core/splice.py)


@dataclass(frozen=True)
class Outcome:
    """How an attempt at a copy ended: ``sent`` (``note`` the relay's reply), ``queued``
    again (to retry at ``retry_at``, ``note`` the error) or ``failed`` (``note`` why)."""

    copy_id: int
    message_id: int
    status: Literal["sent", "queued", "failed"]
    note: str | None = None
    retry_at: datetime | None = None
    attempts: int = 0  # the copy's, this one included
    alone: bool = False  # the message's only copy (see Claim)


@dataclass(frozen=True)
class Relay:
    """An SMTP relay and how to log in to it."""

    host: str | None
    port: int | None
    tls: TlsMode
    username: str | None
    password: str | None


@dataclass(frozen=True)
class Envelope:
    """What a transport hands over: the envelope and the bytes, nothing of the store.

    ``recipients`` are the ones the user chose, never read back from ``raw``; ``key`` names
    the message stably, so a redelivery after a crash overwrites rather than doubles."""

    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    key: str


# Upper bounds (seconds) of the time-to-first-view buckets; one more bucket holds the rest.
DELAY_LIMITS = (3600, 6 * 3600, 24 * 3600, 3 * 24 * 3600)


@dataclass(frozen=True)
class MailboxShare:
    mailbox_id: int
    sent: int  # outbound messages delivered in the period
    tracked: int
    viewed: int  # tracked, and seen by a person: a human view or a human reply


@dataclass(frozen=True)
class SenderShare:
    """A sender's messages in a report: who (a user's name, or the way in), how many were
    delivered, tracked, and seen by a person."""

    sent_by: str
    sent: int
    tracked: int
    viewed: int


@dataclass(frozen=True)
class Report:
    since: datetime
    days: int
    by_mailbox: list[MailboxShare] = field(default_factory=list)
    by_sender: list[SenderShare] = field(default_factory=list)
    views_per_day: list[tuple[date, int]] = field(default_factory=list)  # every day, oldest first
    machine_fetches: int = 0
    first_view_buckets: list[int] = field(default_factory=lambda: [0] * (len(DELAY_LIMITS) + 1))

    @property
    def sent(self) -> int:
        return sum(b.sent for b in self.by_mailbox)

    @property
    def tracked(self) -> int:
        return sum(b.tracked for b in self.by_mailbox)

    @property
    def viewed(self) -> int:
        return sum(b.viewed for b in self.by_mailbox)


ConsentHow = Literal["api", "csv", "web", "cli", "link", "erase"]


@dataclass(frozen=True)
class ConsentEventRecord:
    """One change of a recipient's consent to tracking: when, how (the API, a CSV import,
    the web app, the command line, the recipient's own link) and by whom."""

    id: int
    address: str  # as consent records are keyed (core.consent.address_key)
    state: ConsentState
    at: datetime
    how: ConsentHow
    by: str  # a user's name, an API token's, "command line" or "the recipient"
    note: str = ""


@dataclass(frozen=True)
class DoNotTrackRecord:
    id: int
    kind: Literal["address", "domain", "suffix"]
    key: str
    text: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class SettingChangeRecord:
    """One change of a tracking or privacy setting, as the settings audit log shows it."""

    id: int
    at: datetime
    user: str
    scope: str  # "global", or the mailbox's address
    setting: str
    old: str
    new: str



# -- webhooks (docs/integrations.md) ---------------------------------------------------------

# What a webhook endpoint can be told of. Each names one recipient's copy where privacy
# allows: delivered (the relay accepted it), failed (refused for good), bounced (a delivery
# report came back), viewed (a person's view: the first of the copy, or every one), clicked
# (a person followed a tracked link), replied (a person, not an auto-reply), and the
# reminders' "not viewed" / "not replied" when their deadline passed.
WebhookEvent = Literal["message.delivered", "message.failed", "message.bounced",
                       "message.viewed", "message.clicked", "message.replied",
                       "message.not_viewed", "message.not_replied"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = (
    "message.delivered", "message.failed", "message.bounced", "message.viewed",
    "message.clicked", "message.replied", "message.not_viewed", "message.not_replied")
# How the body is written: Standard Webhooks JSON, or a chat's incoming-webhook message.
WebhookFormat = Literal["standard", "slack", "teams"]
# An event's delivery to one endpoint: waiting (or retrying), being sent, delivered, or
# given up on after a day of failures.
WebhookStatus = Literal["pending", "sending", "delivered", "failed"]


@dataclass(frozen=True)
class WebhookIn:
    """An endpoint as an admin registers it: where, which events, for which mailbox (None:
    every mailbox), and whether ``message.viewed`` fires on every view or the first only."""

    url: str
    events: tuple[WebhookEvent, ...]
    mailbox_id: int | None = None
    format: WebhookFormat = "standard"
    every_view: bool = False
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class WebhookRecord(WebhookIn):
    """A stored endpoint: its signing secret ("whsec_" + base64) and its health."""

    id: int
    secret: str
    enabled: bool
    created_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str = ""
    failing_since: datetime | None = None
    last_success_at: datetime | None = None


@dataclass(frozen=True)
class WebhookFacts:
    """What happened, as written beside it (in the view's or the delivery's transaction):
    only ids and the verdict, so that writing it costs little; the payload is made from
    them when the event is first sent."""

    message_id: int
    copy_id: int | None
    at: datetime
    verdict: Verdict | None = None
    reason: str = ""
    client: str = ""
    first: bool = False
    anonymous: bool = False
    note: str = ""


@dataclass(frozen=True)
class WebhookDelivery:
    """One event for one endpoint, in the outbox: its delivery log entry."""

    id: int
    endpoint_id: int
    event: WebhookEvent
    event_id: str  # the webhook-id header: the same on every attempt
    created_at: datetime
    status: WebhookStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    response_status: int | None
    last_error: str | None
    body: str | None


@dataclass(frozen=True)
class WebhookClaim:
    """An event claimed for sending: the endpoint, and the body if made already (else the
    facts to make it of)."""

    delivery: WebhookDelivery
    endpoint: WebhookRecord
    facts: WebhookFacts
    queued_at: datetime


# -- follow-up reminders and notifications ----------------------------------------------------

# What a reminder waits for: a person's view (or reply, which shows it was seen), or a reply.
ReminderKind = Literal["not_viewed", "not_replied"]
REMINDER_KINDS: tuple[ReminderKind, ...] = ("not_viewed", "not_replied")
# Waiting for its deadline; fired (the deadline passed with nothing: the conversation is to
# follow up); cancelled (seen or answered by the deadline).
ReminderState = Literal["waiting", "fired", "cancelled"]
# What a user is told of the messages they sent: nothing, each first view as it happens, or
# a daily digest of what was viewed, replied and is still waiting.
NotifyMode = Literal["off", "immediately", "daily"]


@dataclass(frozen=True)
class ReminderRecord:
    id: int
    message_id: int
    kind: ReminderKind
    due_at: datetime
    state: ReminderState
    user_id: int | None
    fired_at: datetime | None = None
    notified_at: datetime | None = None
    notify_error: str | None = None
