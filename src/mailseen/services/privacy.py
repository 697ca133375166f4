"""Privacy: what is stored of a view, how long its personal details are kept, and the
requests of the people mailseen tracks (what is stored about me, erase it). One door for
the CLI, the API and the web app; docs/privacy.md says what each answers.

Export and erasure are lists of sections, each gathered (or erased) by its own function
over the :class:`Subject`: a new kind of record about a person is one more entry."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import getaddresses
from typing import Any, get_args

from ..clock import Clock, wait
from ..core.compose import parse_address
from ..core.consent import DoNotTrack, Rule, address_key
from ..errors import InvalidInput
from ..records import (
    AgentDetail,
    CopyRecord,
    IpDetail,
    MessageRecord,
    PurgeRun,
    Retention,
    UserRecord,
    ViewDetails,
    ViewRecord,
)
from ..storage import Store
from .audit import log_changes
from .mailboxes import require_admin

__all__ = ["ERASED", "ERASE_STEPS", "EXPORT_SECTIONS", "DetailsCache", "Erasure", "Privacy",
           "RetentionJob", "Subject"]

log = logging.getLogger(__name__)

IP_SETTING = "privacy.view_ip"
AGENT_SETTING = "privacy.view_user_agent"
RETENTION_SETTING = "privacy.retention_days"
LAST_PURGE_SETTING = "privacy.last_purge"
# Views older than this were all cleared by an earlier run: the daily job starts there.
PURGED_BEFORE_SETTING = "privacy.purged_before"
IP_DETAILS: tuple[IpDetail, ...] = get_args(IpDetail)
AGENT_DETAILS: tuple[AgentDetail, ...] = get_args(AgentDetail)
MAX_RETENTION_DAYS = 36500
# What an erased copy names instead of its recipient.
ERASED = "erased"
# How long the pixel's writer trusts the view-details setting it read (another process, a
# pixel node, may have changed it); a change made through this process's Privacy applies
# at the next batch.
DETAILS_RELOAD_SECONDS = 10.0
PURGE_EVERY = timedelta(days=1)
PURGE_CHECK_SECONDS = 3600.0


def read_view_details(store: Store) -> ViewDetails:
    ip = store.get_setting(IP_SETTING, "full")
    agent = store.get_setting(AGENT_SETTING, "full")
    return ViewDetails(ip if ip in IP_DETAILS else "full",  # type: ignore[arg-type]
                       agent if agent in AGENT_DETAILS else "full")  # type: ignore[arg-type]


class DetailsCache:
    """The view-details setting as the pixel's writer thread reads it: at most once per
    :data:`DETAILS_RELOAD_SECONDS`, not per hit or per batch."""

    def __init__(self, store: Store, reload_seconds: float = DETAILS_RELOAD_SECONDS) -> None:
        self.store = store
        self.reload_seconds = reload_seconds
        self._details = ViewDetails()
        self._read_at: float | None = None

    def __call__(self) -> ViewDetails:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at > self.reload_seconds:
            self._details = read_view_details(self.store)
            self._read_at = now
        return self._details

    def forget(self) -> None:
        """Read the setting again before the next batch (it was just changed)."""
        self._read_at = None


# -- the person a request is about ----------------------------------------------------------

@dataclass(frozen=True)
class Subject:
    """One person, as stored: their address key, the copies sent to them, and the messages
    naming them, each with where ("from", "to", "cc", "bcc", "envelope")."""

    key: str
    copies: list[CopyRecord]
    messages: list[tuple[MessageRecord, list[str]]]


def _keys(addresses: list[str]) -> set[str]:
    return {address_key(a) for _, a in getaddresses(addresses) if a}


def _roles(message: MessageRecord, key: str) -> list[str]:
    fields = (("from", [message.from_addr]), ("to", message.to), ("cc", message.cc),
              ("bcc", message.bcc), ("envelope", message.envelope_to))
    return [name for name, values in fields if key in _keys(values)]


def find_subject(store: Store, address: str) -> Subject:
    key = address_key(parse_address(address, "address"))
    local = key.rpartition("@")[0]
    copies = [c for c in store.copies_to(local)
              if c.recipient is not None and address_key(c.recipient) == key]
    messages = [(m, roles) for m in store.messages_naming(local)
                if (roles := _roles(m, key))]
    return Subject(key, copies, messages)


# -- export ----------------------------------------------------------------------------------

def _message_out(m: MessageRecord, roles: list[str]) -> dict[str, Any]:
    return {"id": m.id, "mailbox_id": m.mailbox_id, "direction": m.direction,
            "message_id": m.message_id, "subject": m.subject, "from": m.from_addr,
            "to": m.to, "cc": m.cc, "bcc": m.bcc, "envelope_to": m.envelope_to,
            "created_at": m.created_at, "sent_at": m.sent_at, "status": m.status,
            "tracked": m.tracked, "tracking_reason": m.tracking_reason,
            "replied_at": m.replied_at, "conversation_id": m.conversation_id,
            "named_as": roles}


def _copy_out(c: CopyRecord) -> dict[str, Any]:
    return {"id": c.id, "message_id": c.message_id, "position": c.position,
            "recipient": c.recipient, "status": c.status, "sent_at": c.sent_at,
            "last_error": c.last_error, "tracked": c.token_key is not None,
            "view_count": c.view_count, "first_viewed_at": c.first_viewed_at,
            "last_viewed_at": c.last_viewed_at, "machine_count": c.machine_count,
            "first_machine_at": c.first_machine_at, "last_machine_at": c.last_machine_at,
            "replied_at": c.replied_at}


def _view_out(v: ViewRecord) -> dict[str, Any]:
    return {"id": v.id, "message_id": v.message_id, "copy_id": v.copy_id, "at": v.at,
            "method": v.method, "ip": v.ip, "user_agent": v.user_agent, "headers": v.headers,
            "verdict": v.verdict, "reason": v.reason, "client": v.client}


def _sent_to_them(store: Store, who: Subject) -> object:
    return [_message_out(m, r) for m, r in who.messages if m.direction == "out"]


def _received_from_them(store: Store, who: Subject) -> object:
    return [_message_out(m, r) for m, r in who.messages
            if m.direction == "in" and "from" in r]


def _received_naming_them(store: Store, who: Subject) -> object:
    return [_message_out(m, r) for m, r in who.messages
            if m.direction == "in" and "from" not in r]


def _copies(store: Store, who: Subject) -> object:
    return [_copy_out(c) for c in who.copies]


def _views(store: Store, who: Subject) -> object:
    return [_view_out(v) for v in store.views_of_copies([c.id for c in who.copies])]


def _webhook_events(store: Store, who: Subject) -> object:
    return [{"event": d.event, "endpoint": d.endpoint_id, "created_at": d.created_at.isoformat(),
             "status": d.status, "body": d.body}
            for d in store.webhook_events_of([c.id for c in who.copies])]


def _clicks(store: Store, who: Subject) -> object:
    return [{"id": k.id, "message_id": k.message_id, "copy_id": k.copy_id, "at": k.at,
             "url": k.url, "method": k.method, "ip": k.ip, "user_agent": k.user_agent,
             "verdict": k.verdict, "reason": k.reason, "client": k.client}
            for k in store.clicks_of_copies([c.id for c in who.copies])]


def _consent(store: Store, who: Subject) -> object:
    return [{"state": e.state, "at": e.at.isoformat(), "how": e.how, "by": e.by,
             "note": e.note} for e in store.consent_history(who.key)]


def _do_not_track(store: Store, who: Subject) -> object:
    rule = DoNotTrack(Rule(r.kind, r.key, r.text) for r in store.list_do_not_track()
                      ).match(who.key)
    return None if rule is None else {"entry": rule.text, "kind": rule.kind}


# (name in the export, what gathers it): in the order the export lists them.
ExportSection = tuple[str, Callable[[Store, Subject], object]]
EXPORT_SECTIONS: list[ExportSection] = [
    ("messages_sent_to_them", _sent_to_them),
    ("copies", _copies),
    ("views", _views),
    ("webhook_events", _webhook_events),
    ("clicks", _clicks),
    ("messages_received_from_them", _received_from_them),
    ("messages_received_naming_them", _received_naming_them),
    ("consent", _consent),
    ("do_not_track", _do_not_track),
]


# -- erasure ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Erasure:
    """What erasing a person's data did (``removed``) and what it left (``kept``), by kind."""

    address: str
    removed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)


def _erase_views_and_copies(store: Store, who: Subject) -> dict[str, int]:
    ids = [c.id for c in who.copies]
    clicks = store.erase_clicks(ids)  # first: erasing the copies takes their keys
    views, copies = store.erase_copies(ids, ERASED)
    removed = {"views": views, "copy_recipients": copies}
    return {**removed, "clicks": clicks} if clicks else removed  # named where there were any


# What erasing runs, in order; each returns {what: how many} it removed.
EraseStep = Callable[[Store, Subject], dict[str, int]]
def _erase_consent(store: Store, who: Subject) -> dict[str, int]:
    """Consent events lose the address and note (the chain stays whole); a current refusal
    is kept as it is, so that it goes on being honoured: the law asks for that much."""
    erased, _ = store.erase_consents(who.key)
    return {"consent_events": erased}


def _erase_webhook_events(store: Store, who: Subject) -> dict[str, int]:
    """The webhook events about their copies, sent or waiting (named only when there
    were some: most installations have no webhooks)."""
    removed = store.erase_webhook_events([c.id for c in who.copies])
    return {"webhook_events": removed} if removed else {}


ERASE_STEPS: list[EraseStep] = [_erase_webhook_events, _erase_views_and_copies, _erase_consent]


def _kept(who: Subject) -> dict[str, int]:
    """The messages naming the person, which erasure keeps: the team's own record of its
    correspondence (their bytes, subject and headers are the mail itself)."""
    out = sum(1 for m, _ in who.messages if m.direction == "out")
    return {"messages_sent_to_them": out, "messages_received": len(who.messages) - out}


# -- the service -----------------------------------------------------------------------------

class Privacy:
    def __init__(self, store: Store, details: DetailsCache | None = None) -> None:
        self.store = store
        self.clock = store.clock
        self.details = details or DetailsCache(store)

    # settings: every change goes through set_view_details or set_retention

    def view_details(self) -> ViewDetails:
        return read_view_details(self.store)

    def set_view_details(self, actor: UserRecord | None, *, ip: str | None = None,
                         user_agent: str | None = None) -> ViewDetails:
        """Change what is stored of each view from now on (None: leave as it is)."""
        require_admin(actor)
        if ip is not None and ip not in IP_DETAILS:
            raise InvalidInput("ip: full, truncated or none", field="ip")
        if user_agent is not None and user_agent not in AGENT_DETAILS:
            raise InvalidInput("user_agent: full or family", field="user_agent")
        before = self.view_details()
        if ip is not None:
            self.store.set_setting(IP_SETTING, ip)
        if user_agent is not None:
            self.store.set_setting(AGENT_SETTING, user_agent)
        self.details.forget()
        after = self.view_details()
        log_changes(self.store, actor, "global", {"view_ip": (before.ip, after.ip),
                                                  "view_user_agent": (before.user_agent,
                                                                      after.user_agent)})
        return after

    def retention(self) -> Retention:
        text = self.store.get_setting(RETENTION_SETTING, "")
        days = int(text) if text.isdigit() and int(text) > 0 else None
        return Retention(days, self._last_run())

    def set_retention(self, actor: UserRecord | None, days: int | None) -> Retention:
        """Keep the personal details of views ``days`` days (None: for ever)."""
        require_admin(actor)
        if days is not None and (isinstance(days, bool) or not isinstance(days, int)
                                 or not 1 <= days <= MAX_RETENTION_DAYS):
            raise InvalidInput(f"retention_days: a number of days from 1 to "
                               f"{MAX_RETENTION_DAYS}, or none to keep them",
                               field="retention_days")
        old = self.retention().days
        self.store.set_setting(RETENTION_SETTING, "" if days is None else str(days))
        # The next purge looks at every old view again, not only those since the last run.
        self.store.set_setting(PURGED_BEFORE_SETTING, "")
        log_changes(self.store, actor, "global", {"retention_days": (
            "forever" if old is None else old, "forever" if days is None else days)})
        return self.retention()

    # the retention purge

    def purge(self, actor: UserRecord | None, *, every_view: bool = True) -> PurgeRun | None:
        """Clear the personal details of views older than the retention period; None when
        details are kept for ever. ``every_view=False`` (the daily job) looks only at views
        since the last run's limit."""
        require_admin(actor)
        days = self.retention().days
        if days is None:
            return None
        now = self.clock.now()
        before = now - timedelta(days=days)
        since = None
        if not every_view:
            since = _time(self.store.get_setting(PURGED_BEFORE_SETTING, ""))
            if since is not None and since > before:  # cleared further already
                since = before
        views = self.store.purge_view_details(before, since)
        # The webhook log's bodies name recipients and their clients: kept no longer.
        self.store.prune_webhook_log(before)
        self.store.purge_click_details(before)  # clicks are few: one statement
        run = PurgeRun(now, before, views)
        self.store.set_setting(LAST_PURGE_SETTING, json.dumps(
            {"at": now.isoformat(), "before": before.isoformat(), "views": views}))
        self.store.set_setting(PURGED_BEFORE_SETTING, before.isoformat())
        return run

    def purge_due(self) -> bool:
        """Whether the daily purge should run now."""
        if self.retention().days is None:
            return False
        last = self._last_run()
        return last is None or self.clock.now() - last.at >= PURGE_EVERY

    def _last_run(self) -> PurgeRun | None:
        try:
            data = json.loads(self.store.get_setting(LAST_PURGE_SETTING, "null"))
            if not data:
                return None
            return PurgeRun(datetime.fromisoformat(data["at"]),
                            datetime.fromisoformat(data["before"]), int(data["views"]))
        except (ValueError, KeyError, TypeError):
            return None

    # data-subject requests

    def export(self, actor: UserRecord | None, address: str) -> dict[str, Any]:
        """Everything stored about the person at ``address``, section by section."""
        require_admin(actor)
        who = find_subject(self.store, address)
        out: dict[str, Any] = {"address": who.key, "exported_at": self.clock.now()}
        for name, gather in EXPORT_SECTIONS:
            out[name] = gather(self.store, who)
        return out

    def erase(self, actor: UserRecord | None, address: str) -> Erasure:
        """Remove the personal data of the person at ``address``: the views of their copies,
        their address on those copies (replaced by :data:`ERASED`), and the address and notes
        of their consent events (a current refusal is kept)."""
        require_admin(actor)
        who = find_subject(self.store, address)
        removed: dict[str, int] = {}
        for step in ERASE_STEPS:
            for what, count in step(self.store, who).items():
                removed[what] = removed.get(what, 0) + count
        kept = _kept(who)
        if self.store.consent_states([who.key]).get(who.key) == "refused":
            kept["consent_refusal"] = 1  # kept in full, so that it goes on being honoured
        return Erasure(who.key, removed, kept)


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


class RetentionJob:
    """The daily purge, run beside the delivery worker: looks every hour whether a day
    has passed since the last run (in any process), and purges if so."""

    def __init__(self, privacy: Privacy, clock: Clock | None = None,
                 check_seconds: float = PURGE_CHECK_SECONDS) -> None:
        self.privacy = privacy
        self.clock = clock or privacy.clock
        self.check_seconds = check_seconds

    async def run_once(self) -> PurgeRun | None:
        if not await asyncio.to_thread(self.privacy.purge_due):
            return None
        run = await asyncio.to_thread(self.privacy.purge, None, every_view=False)
        if run is not None:
            log.info("retention purge: cleared the details of %d view(s) older than %s",
                     run.views, run.before)
        return run

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # the database is down: try again at the next check
                log.warning("retention purge failed: %s", exc)
            await wait(self.clock, self.check_seconds, stop)
