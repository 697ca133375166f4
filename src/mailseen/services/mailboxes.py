"""Mailboxes and the global mail settings: the one place that validates a mailbox, works out
whether its mail is tracked, and says who may see it.

Every edge (web site, API, CLI, receivers) goes through here; ``actor`` is the signed-in user,
or None for the installation itself (the CLI, an installation-wide API token)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..core.compose import parse_address
from ..core.consent import POLICIES
from ..core.refusal import LANGUAGES
from ..core.tracking import Decision, decide
from ..core.urls import server_name_problem
from ..errors import InvalidInput, MailseenError, NotFound
from ..records import (
    SECRET_FIELDS,
    ConnectionCheck,
    ImapState,
    MailboxIn,
    MailboxRecord,
    MailboxSettings,
    Relay,
    UserRecord,
)
from ..storage import Store
from .audit import log_changes

__all__ = ["CLICK_SETTING", "TRACKING_SETTING", "Forbidden", "ImapProbe", "Mailboxes", "SmtpProbe",
           "can_see_mailbox", "normal_aliases", "require_admin", "sending_addresses"]

# How a connection is tested: the SMTP transport's check, the IMAP receiver's checker. Each
# takes the settings and a timeout per step, and answers in words (records.ConnectionCheck).
SmtpProbe = Callable[[Relay, float], Awaitable[ConnectionCheck]]
ImapProbe = Callable[[ImapState, float], Awaitable[ConnectionCheck]]
TEST_TIMEOUT = 10.0  # seconds per step of a connection test: a person is waiting

TRACKING_SETTING = "tracking_enabled"
CLICK_SETTING = "click_tracking_enabled"
# A mailbox's settings whose changes the settings audit log keeps (docs/privacy.md).
AUDITED = ("tracking", "click_tracking", "tracking_policy", "refusal_line", "refusal_text",
           "language", "privacy_url")
# Fields a change may not set to nothing (a password set to nothing is removed instead).
_REQUIRED = ("address", "display_name", "transport", "smtp_tls", "tracking", "click_tracking",
             "imap_tls", "imap_folder", "tracking_policy", "refusal_line", "refusal_text",
             "language", "privacy_url")


class Forbidden(MailseenError):
    """The actor is signed in but may not do this (only admins may)."""


def can_see_mailbox(user: UserRecord | None, mailbox_id: int) -> bool:
    """None stands for the installation itself (the CLI, an installation-wide token)."""
    return user is None or user.is_admin or mailbox_id in user.mailbox_ids


def require_admin(actor: UserRecord | None) -> None:
    if actor is not None and not actor.is_admin:
        raise Forbidden("only admins may do this")


def normal_aliases(text: str, address: str = "") -> str:
    """A mailbox's aliases in one form: each checked, lower case, once, comma-separated,
    without the mailbox's own address."""
    found: list[str] = []
    for part in text.replace(";", ",").replace("\n", ",").split(","):
        if part.strip():
            alias = parse_address(part.strip(), "aliases").lower()
            if alias != address.lower() and alias not in found:
                found.append(alias)
    return ", ".join(found)


def sending_addresses(box: MailboxSettings) -> set[str]:
    """The addresses (lower case) mail from ``box`` may be sent as: its own and its aliases."""
    return {box.address.lower(), *(a.strip() for a in box.aliases.split(",") if a.strip())}
def _web_url(text: str) -> bool:
    scheme, sep, rest = text.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest) and not any(
        c.isspace() for c in text)


def checked(box: MailboxIn) -> MailboxIn:
    """A mailbox's settings as they may be stored: the rules every edge relies on."""
    address = parse_address(box.address, "address")
    if box.transport not in ("outbox", "smtp"):
        raise InvalidInput("transport: outbox or smtp", field="transport")
    if box.transport == "smtp" and not box.smtp_host:
        raise InvalidInput("smtp_host: needed when transport is smtp", field="smtp_host")
    for name in ("smtp_host", "imap_host"):
        value = getattr(box, name)
        problem = server_name_problem(value) if value else None
        if problem is not None:
            raise InvalidInput(f"{name}: {problem}", field=name)
    aliases = normal_aliases(box.aliases, address)
    if aliases != box.aliases or box.imap_sent_folder != box.imap_sent_folder.strip():
        box = replace(box, aliases=aliases, imap_sent_folder=box.imap_sent_folder.strip())
    if any(c in box.imap_sent_folder for c in "\r\n\0"):
        raise InvalidInput("imap_sent_folder: one line, without control characters",
                           field="imap_sent_folder")
    if box.imap_sent_append and not (box.imap_host and box.imap_sent_folder):
        raise InvalidInput("imap_sent_append: needs an IMAP server and a Sent folder",
                           field="imap_sent_append")
    if box.tracking not in ("global", "enabled", "disabled"):
        raise InvalidInput("tracking: global, enabled or disabled", field="tracking")
    if box.click_tracking not in ("global", "enabled", "disabled"):
        raise InvalidInput("click_tracking: global, enabled or disabled",
                           field="click_tracking")
    if box.tracking_policy not in ("global", *POLICIES):
        raise InvalidInput(f"tracking_policy: global, {', '.join(POLICIES)}",
                           field="tracking_policy")
    if box.language not in LANGUAGES:
        raise InvalidInput(f"language: one of {', '.join(LANGUAGES)}", field="language")
    if box.privacy_url and not _web_url(box.privacy_url):
        raise InvalidInput("privacy_url: an http:// or https:// address", field="privacy_url")
    if len(box.refusal_text) > 500 or any(c in box.refusal_text for c in "\r\n\x00"):
        raise InvalidInput("refusal_text: one line of at most 500 characters",
                           field="refusal_text")
    for name in ("smtp_tls", "imap_tls"):
        if getattr(box, name) not in ("none", "starttls", "implicit"):
            raise InvalidInput(f"{name}: none, starttls or implicit", field=name)
    for name in ("remind_not_viewed_days", "remind_not_replied_days"):
        days = getattr(box, name)
        if days is not None and (isinstance(days, bool) or not 0 < days <= 365):
            raise InvalidInput(f"{name}: a number of days from 1 to 365, or none", field=name)
    return box if address == box.address else replace(box, address=address)


class Mailboxes:
    def __init__(self, store: Store, *, smtp_probe: SmtpProbe | None = None,
                 imap_probe: ImapProbe | None = None,
                 test_timeout: float = TEST_TIMEOUT) -> None:
        self.store = store
        self.clock = store.clock  # what the IMAP poller's schedule runs on
        self.smtp_probe = smtp_probe
        self.imap_probe = imap_probe
        self.test_timeout = test_timeout

    # -- the global setting and the effective decision ------------------------------------

    def global_tracking(self) -> bool:
        return self.store.get_setting(TRACKING_SETTING, "false") == "true"

    def set_global_tracking(self, actor: UserRecord | None, enabled: bool) -> bool:
        require_admin(actor)
        old = self.global_tracking()
        self.store.set_setting(TRACKING_SETTING, "true" if enabled else "false")
        self._audit(actor, "global", {"tracking": (old, enabled)})
        return enabled

    def _audit(self, actor: UserRecord | None, scope: str,
               changes: Mapping[str, tuple[object, object]]) -> None:
        log_changes(self.store, actor, scope, changes)

    def decision(self, box: MailboxRecord, global_enabled: bool | None = None) -> Decision:
        """Whether ``box``'s mail is tracked and why; pass ``global_enabled`` when deciding
        for many mailboxes at once."""
        if global_enabled is None:
            global_enabled = self.global_tracking()
        return decide(global_enabled, box.tracking)

    def global_clicks(self) -> bool:
        return self.store.get_setting(CLICK_SETTING, "false") == "true"

    def set_global_clicks(self, actor: UserRecord | None, enabled: bool) -> bool:
        require_admin(actor)
        old = self.global_clicks()
        self.store.set_setting(CLICK_SETTING, "true" if enabled else "false")
        self._audit(actor, "global", {"click_tracking": (old, enabled)})
        return enabled

    def click_decision(self, box: MailboxRecord) -> Decision:
        """Whether the links of ``box``'s tracked mail go through the click redirect: the
        mailbox setting wins both ways, like open tracking's. Only copies with a personal
        pixel get their links rewritten (docs/tracking.md, "Click tracking")."""
        return decide(self.global_clicks(), box.click_tracking)

    def decisions(self, boxes: list[MailboxRecord]) -> dict[int, Decision]:
        on = self.global_tracking()
        return {b.id: decide(on, b.tracking) for b in boxes}

    # -- reading ------------------------------------------------------------------------

    def all(self) -> list[MailboxRecord]:
        """Every mailbox, for what the whole installation runs (workers, receivers)."""
        return self.store.list_mailboxes()

    def visible(self, actor: UserRecord | None) -> list[MailboxRecord]:
        return [b for b in self.store.list_mailboxes() if can_see_mailbox(actor, b.id)]

    def visible_ids(self, actor: UserRecord | None) -> list[int]:
        return [b.id for b in self.visible(actor)]

    def require(self, actor: UserRecord | None, mailbox_id: int) -> None:
        """Raise NotFound (not Forbidden: no hint that it exists) unless visible."""
        if not can_see_mailbox(actor, mailbox_id):
            raise NotFound(f"no mailbox with id {mailbox_id}")

    def get(self, actor: UserRecord | None, mailbox_id: int) -> MailboxRecord:
        self.require(actor, mailbox_id)
        return self.store.get_mailbox(mailbox_id)

    def named(self, actor: UserRecord | None, ref: str) -> MailboxRecord:
        """A mailbox by address (or id); NotFound when unknown or not visible."""
        box = self.store.find_mailbox(ref)
        if not can_see_mailbox(actor, box.id):
            raise NotFound(f"no mailbox {ref}")
        return box

    def find(self, actor: UserRecord | None, ref: str, field: str = "mailbox"
             ) -> MailboxRecord:
        """A mailbox named in a request: unknown or not visible is the request's fault, an
        error on ``field``."""
        try:
            return self.named(actor, ref)
        except NotFound as exc:
            raise InvalidInput(f"{field}: no mailbox {ref}", field=field) from exc

    def find_many(self, actor: UserRecord | None, refs: str | list[str],
                  field: str = "mailboxes") -> list[int]:
        """Mailbox ids from addresses (a list, or comma-separated)."""
        if isinstance(refs, str):
            refs = [r for r in (p.strip() for p in refs.split(",")) if r]
        return [self.named(actor, r).id for r in refs]

    # -- changing -----------------------------------------------------------------------

    def add(self, actor: UserRecord | None, box: MailboxIn) -> MailboxRecord:
        require_admin(actor)
        return self.store.add_mailbox(checked(box))

    def update(self, actor: UserRecord | None, mailbox_id: int, changes: Mapping[str, Any]
               ) -> MailboxRecord:
        """Change some of a mailbox's settings. A password given as "" is removed; one
        left out or given as None is kept."""
        require_admin(actor)
        self.require(actor, mailbox_id)
        changes = dict(changes)
        for key, value in list(changes.items()):
            if value is None and key in SECRET_FIELDS:
                del changes[key]
            elif value is None and key in _REQUIRED:
                raise InvalidInput(f"{key}: may not be null", field=key)
        before = self.store.get_mailbox(mailbox_id)
        after = self.store.update_mailbox(
            mailbox_id, lambda current: checked(replace(current, **changes)))
        self._audit(actor, after.address, {name: (getattr(before, name), getattr(after, name))
                                           for name in AUDITED})
        if before.tracking_policy != after.tracking_policy:
            self.store.privacy_changed()
        return after

    # -- testing a mailbox's connections ----------------------------------------------

    async def test_smtp(self, actor: UserRecord | None, mailbox: MailboxRecord,
                        changes: Mapping[str, Any] | None = None) -> ConnectionCheck:
        """Connect to the mailbox's SMTP relay, do TLS as set and log in; nothing is sent.
        ``changes``: settings not saved yet (a form being filled in) to test instead of the
        stored ones; a password left out or None is the stored one, "" none."""
        box = await self._to_test(actor, mailbox, changes)
        if not box.smtp_host:
            raise InvalidInput("smtp_host: set an SMTP server to test", field="smtp_host")
        if self.smtp_probe is None:
            raise MailseenError("testing SMTP is not available in this process")
        relay = Relay(box.smtp_host, box.smtp_port, box.smtp_tls, box.smtp_username,
                      box.smtp_password or None)
        return await self.smtp_probe(relay, self.test_timeout)

    async def test_imap(self, actor: UserRecord | None, mailbox: MailboxRecord,
                        changes: Mapping[str, Any] | None = None) -> ConnectionCheck:
        """Connect to the mailbox's IMAP account, do TLS as set, log in and open its folder,
        as the poller would; ``changes`` as for :meth:`test_smtp`."""
        box = await self._to_test(actor, mailbox, changes)
        if not box.imap_host:
            raise InvalidInput("imap_host: set an IMAP server to test", field="imap_host")
        if self.imap_probe is None:
            raise MailseenError("testing IMAP is not available in this process")
        account = ImapState(mailbox.id, box.imap_host, box.imap_port, box.imap_tls,
                            box.imap_username or box.address, box.imap_password or "",
                            box.imap_folder, None, 0)
        return await self.imap_probe(account, self.test_timeout)

    async def _to_test(self, actor: UserRecord | None, mailbox: MailboxRecord,
                       changes: Mapping[str, Any] | None) -> MailboxIn:
        require_admin(actor)
        self.require(actor, mailbox.id)
        stored = await asyncio.to_thread(self.store.mailbox_settings, mailbox.id)
        given = {k: v for k, v in (changes or {}).items()
                 if not (v is None and k in SECRET_FIELDS)}
        for key, value in given.items():
            if value is None and key in _REQUIRED:
                raise InvalidInput(f"{key}: may not be null", field=key)
        return checked(replace(stored, **given))

    # -- what the IMAP poller keeps ----------------------------------------------------

    def delivery_trouble(self, actor: UserRecord | None, boxes: Sequence[MailboxRecord]
                         ) -> dict[int, tuple[str, datetime]]:
        """Those of ``boxes`` the actor may see whose latest delivery attempt failed (their
        relay is failing now): {mailbox id: (the error in words, when)}."""
        return self.store.delivery_trouble([b.id for b in boxes
                                            if can_see_mailbox(actor, b.id)])

    def imap_accounts(self) -> list[ImapState]:
        return self.store.imap_accounts()

    def imap_progress(self, mailbox_id: int, uidvalidity: int, last_uid: int) -> None:
        self.store.imap_progress(mailbox_id, uidvalidity, last_uid)

    def imap_sent_progress(self, mailbox_id: int, uidvalidity: int, last_uid: int) -> None:
        self.store.imap_sent_progress(mailbox_id, uidvalidity, last_uid)

    def imap_report(self, mailbox_id: int, status: str, error: str | None) -> None:
        self.store.imap_report(mailbox_id, status, error)
