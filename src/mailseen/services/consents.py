"""Whom tracking may follow: the tracking policy (global and per mailbox), each recipient's
consent, the do-not-track list, and the refusal link in tracked mail. The one door the
edges use for all of it; the rules themselves are core/consent.py's, the words of the
refusal line and page core/refusal.py's.

Policy and do-not-track changes are for admins; any signed-in user may record what a
recipient said (a support agent hears "don't track me" first), and the record says who."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast, get_args

from ..core.compose import parse_address
from ..core.consent import (
    POLICIES,
    DoNotTrack,
    PolicyChoice,
    RecipientDecision,
    Rule,
    address_key,
    decide_recipients,
    effective_policy,
    parse_rule,
)
from ..core.tokens import TokenSigner
from ..errors import InvalidInput, NotFound
from ..records import (
    ConsentEventRecord,
    ConsentHow,
    ConsentState,
    DoNotTrackRecord,
    MailboxRecord,
    SettingChangeRecord,
    TrackingPolicy,
    UserRecord,
)
from ..storage import Store
from ..storage.privacy import POLICY_SETTING
from .audit import log_changes, who
from .mailboxes import Mailboxes, require_admin

__all__ = ["MAX_IMPORT_ROWS", "Consents", "LinkTarget"]

STATES: tuple[ConsentState, ...] = get_args(ConsentState)
MAX_IMPORT_ROWS = 100_000


@dataclass(frozen=True)
class LinkTarget:
    """What a refusal link points to: whose tracking, for which mailbox, and where it
    stands now."""

    address: str  # the recipient as addressed
    key: str
    mailbox: MailboxRecord
    state: ConsentState
    since: datetime | None


class Consents:
    def __init__(self, store: Store, mailboxes: Mailboxes, signer: TokenSigner,
                 base_url: str) -> None:
        self.store = store
        self.mailboxes = mailboxes
        self.signer = signer
        self.base_url = base_url.rstrip("/")

    # -- the policy ------------------------------------------------------------------------

    def global_policy(self) -> TrackingPolicy:
        value = self.store.get_setting(POLICY_SETTING, "everyone")
        return cast(TrackingPolicy, value) if value in POLICIES else "everyone"

    def set_global_policy(self, actor: UserRecord | None, policy: str) -> TrackingPolicy:
        require_admin(actor)
        if policy not in POLICIES:
            raise InvalidInput(f"tracking_policy: one of {', '.join(POLICIES)}",
                               field="tracking_policy")
        old = self.global_policy()
        self.store.set_setting(POLICY_SETTING, policy)
        self.store.privacy_changed()
        log_changes(self.store, actor, "global", {"tracking_policy": (old, policy)})
        return cast(TrackingPolicy, policy)

    def policy_for(self, box: MailboxRecord) -> PolicyChoice:
        return effective_policy(self.global_policy(), box.tracking_policy)

    def decide(self, box: MailboxRecord, recipients: Sequence[str]
               ) -> tuple[PolicyChoice, list[RecipientDecision]]:
        """What each recipient's copy of a message from ``box`` will carry, and why."""
        choice = self.policy_for(box)
        states = self.store.consent_states(address_key(r) for r in recipients)
        return choice, decide_recipients(choice.policy, recipients, states, self.rules())

    def rules(self) -> DoNotTrack:
        return DoNotTrack(Rule(r.kind, r.key, r.text) for r in self.store.list_do_not_track())

    # -- consent records -------------------------------------------------------------------

    def set_consent(self, actor: UserRecord | None, address: str, state: str,
                    how: ConsentHow = "api", note: str = "") -> ConsentEventRecord:
        key = _key(address, "address")
        return self.store.add_consents([(key, _state(state, "state"), _note(note))], how,
                                       who(actor), actor.id if actor else None)[0]

    def import_csv(self, actor: UserRecord | None, text: str, how: ConsentHow = "csv"
                   ) -> int:
        """Consents from CSV (address,state[,note]; a header line is optional). Every line
        is checked before any is recorded: one bad line records nothing and says which."""
        require_admin(actor)
        rows: list[tuple[str, ConsentState, str]] = []
        errors: list[str] = []
        try:
            lines = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as exc:  # a NUL byte, a quote left open at the end …
            raise InvalidInput(f"file: not CSV ({exc})", field="file") from exc
        for number, fields in enumerate(lines, 1):
            if not fields or not any(f.strip() for f in fields):
                continue
            if number == 1 and fields[0].strip().lower() in ("address", "email", "e-mail"):
                continue
            if len(fields) < 2:
                errors.append(f"line {number}: give an address and a state")
                continue
            try:
                rows.append((_key(fields[0], "address"), _state(fields[1], "state"),
                             _note(fields[2] if len(fields) > 2 else "")))
            except InvalidInput as exc:
                errors.append(f"line {number}: {exc}")
            if len(rows) + len(errors) > MAX_IMPORT_ROWS:
                raise InvalidInput(f"file: at most {MAX_IMPORT_ROWS} lines at once",
                                   field="file")
        if errors:
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise InvalidInput("file: nothing imported; " + "; ".join(errors[:3]) + more,
                               field="file")
        if not rows:
            raise InvalidInput("file: no consent lines in it", field="file")
        self.store.add_consents(rows, how, who(actor), actor.id if actor else None)
        return len(rows)

    def consent_of(self, address: str) -> tuple[ConsentState, list[ConsentEventRecord]]:
        key = _key(address, "address")
        history = self.store.consent_history(key)
        return (history[-1].state if history else "unknown"), history

    def refused(self, addresses: Iterable[str]) -> set[str]:
        """The address keys among ``addresses`` whose recipients refused tracking."""
        states = self.store.consent_states(address_key(a) for a in addresses)
        return {key for key, state in states.items() if state == "refused"}

    def consents(self, state: str | None = None, limit: int = 200, offset: int = 0
                 ) -> list[tuple[str, ConsentState, datetime]]:
        return self.store.list_consents(_state(state, "state") if state else None, limit,
                                        offset)

    def verify(self, actor: UserRecord | None) -> tuple[int, int | None]:
        """Check the consent events' chain: (events checked, first broken event or None)."""
        require_admin(actor)
        return self.store.verify_consents()

    # -- the do-not-track list -------------------------------------------------------------

    def do_not_track(self) -> list[DoNotTrackRecord]:
        return self.store.list_do_not_track()

    def add_do_not_track(self, actor: UserRecord | None, entry: str) -> DoNotTrackRecord:
        require_admin(actor)
        rule = _rule(entry)
        added = self.store.add_do_not_track(rule.kind, rule.key, rule.text, who(actor))
        log_changes(self.store, actor, "global", {"do-not-track": ("", f"+ {rule.text}")})
        return added

    def remove_do_not_track(self, actor: UserRecord | None, entry: str) -> DoNotTrackRecord:
        require_admin(actor)
        rule = _rule(entry)
        try:
            removed = self.store.remove_do_not_track(rule.kind, rule.key)
        except NotFound as exc:
            raise NotFound(f"{rule.text} is not on the do-not-track list") from exc
        log_changes(self.store, actor, "global", {"do-not-track": ("", f"- {rule.text}")})
        return removed

    # -- the settings audit log ------------------------------------------------------------

    def audit_log(self, actor: UserRecord | None, limit: int = 200, offset: int = 0
                  ) -> list[SettingChangeRecord]:
        require_admin(actor)
        return self.store.setting_changes(limit, offset)

    # -- the refusal link ------------------------------------------------------------------

    def link_target(self, token: str) -> LinkTarget:
        """Whose tracking a refusal link is about; NotFound for a link that is not ours
        or whose copy no longer exists (the page says so, in words)."""
        ref = self.signer.check(token)
        found = self.store.copy_of_key(ref.copy_key) if ref and ref.copy_key else None
        if found is None or found[0].recipient is None:
            raise NotFound("no such link")
        copy, mailbox_id = found
        assert copy.recipient is not None
        key = address_key(copy.recipient)
        history = self.store.consent_history(key)
        return LinkTarget(copy.recipient, key, self.store.get_mailbox(mailbox_id),
                          history[-1].state if history else "unknown",
                          history[-1].at if history else None)

    def answer_link(self, token: str, state: str) -> LinkTarget:
        """The recipient's own answer, from the page the link opens (a POST: a scanner
        that follows links changes nothing)."""
        target = self.link_target(token)
        if state not in ("refused", "granted"):
            raise InvalidInput("state: refused or granted", field="state")
        self.store.add_consents([(target.key, cast(ConsentState, state),
                                  f"from the link in mail of {target.mailbox.address}")],
                                "link", "the recipient")
        return self.link_target(token)


def _key(address: str, field: str) -> str:
    return address_key(parse_address(address.strip(), field))


def _state(value: str, field: str) -> ConsentState:
    state = value.strip().lower()
    if state not in STATES:
        raise InvalidInput(f"{field}: granted, refused or unknown (not {value!r})", field=field)
    return cast(ConsentState, state)


def _note(text: str) -> str:
    note = " ".join(text.split())
    if len(note) > 1000:
        raise InvalidInput("note: at most 1000 characters", field="note")
    return note


def _rule(entry: str) -> Rule:
    try:
        return parse_rule(entry)
    except ValueError as exc:
        raise InvalidInput(f"entry: {exc}", field="entry") from exc


