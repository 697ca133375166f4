"""Consent records, the do-not-track list and the settings audit log.

Consent events and setting changes are append-only: the application never updates or
deletes their rows (erasure, which the law asks for, is the one exception and says so).
Every change to what decides tracking moves one number, ``privacy_version``, in the same
transaction, so that the pixel writer can tell with one read per batch whether what it
cached is still true."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..core.consent import POLICIES, DoNotTrack, Rule, decide_recipient
from ..errors import Conflict, NotFound
from ..records import (
    ConsentEventRecord,
    ConsentHow,
    ConsentState,
    DoNotTrackRecord,
    PixelKind,
    SettingChangeRecord,
    TrackingPolicy,
)
from .base import StoreBase
from .models import AppSetting, Consent, ConsentEvent, DoNotTrackEntry, Mailbox, SettingChange

__all__ = ["POLICY_SETTING", "PRIVACY_VERSION", "PrivacyGate", "PrivacyStore", "bump_privacy",
           "event_hash"]

PRIVACY_VERSION = "privacy_version"
POLICY_SETTING = "tracking_policy"  # the global policy; "everyone" until set
_GENESIS = "0" * 64
_ERASED = "erased:"  # an erased address or note: what follows is its digest


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def event_hash(prev: str, address: str, state: str, at: datetime, how: str, by: str,
               note: str) -> str:
    """The hash a consent event carries: of the event before it and of its own content, so
    that a row changed or taken out breaks the chain from there on. The address and note
    enter as their digests, so that erasing them (:meth:`PrivacyStore.erase_consents`)
    keeps the chain whole."""
    text = "\x1f".join((prev, _part(address), state, at.isoformat(timespec="microseconds"),
                        how, by, _part(note)))
    return digest(text)


def _part(text: str) -> str:
    return text.removeprefix(_ERASED) if text.startswith(_ERASED) else digest(text)


def bump_privacy(s: Session) -> None:
    """Tell the pixel writer that what decides tracking has changed (same transaction)."""
    row = s.get(AppSetting, PRIVACY_VERSION, with_for_update=True)
    if row is None:
        s.add(AppSetting(key=PRIVACY_VERSION, value="1"))
    else:
        row.value = str(int(row.value) + 1)


def _event_record(r: ConsentEvent) -> ConsentEventRecord:
    return ConsentEventRecord(id=r.id, address=r.address_key,
                              state=r.state,  # type: ignore[arg-type]
                              at=r.at, how=r.how,  # type: ignore[arg-type]
                              by=r.by_name, note=r.note)


class PrivacyStore(StoreBase):
    # -- consent --------------------------------------------------------------------------

    def add_consents(self, changes: Sequence[tuple[str, ConsentState, str]], how: ConsentHow,
                     by: str, by_user_id: int | None = None) -> list[ConsentEventRecord]:
        """Record consent changes [(address key, state, note)] in one transaction, each as
        an event chained to the one before, and make each the address's current state."""
        out = []
        with self._tx() as s:
            # The newest event, locked through the version row so that two writers cannot
            # both chain onto it.
            bump_privacy(s)
            last = s.scalar(select(ConsentEvent).order_by(ConsentEvent.id.desc()).limit(1))
            prev = last.hash if last is not None else _GENESIS
            now = self.clock.now()
            for address, state, note in changes:
                h = event_hash(prev, address, state, now, how, by, note)
                row = ConsentEvent(address_key=address, state=state, at=now, how=how,
                                   by_user_id=by_user_id, by_name=by, note=note,
                                   prev_hash=prev, hash=h)
                s.add(row)
                s.flush()
                current = s.get(Consent, address)
                if current is None:
                    s.add(Consent(address_key=address, state=state, at=now, event_id=row.id))
                else:
                    current.state, current.at, current.event_id = state, now, row.id
                prev = h
                out.append(_event_record(row))
        return out

    def consent_states(self, addresses: Iterable[str]) -> dict[str, ConsentState]:
        """The current state of each of ``addresses`` that has one."""
        keys = sorted(set(addresses))
        if not keys:
            return {}
        with self._tx() as s:
            rows = s.execute(select(Consent.address_key, Consent.state)
                             .where(Consent.address_key.in_(keys)))
            return {k: st for k, st in rows}

    def consent_history(self, address: str) -> list[ConsentEventRecord]:
        with self._tx() as s:
            return [_event_record(r) for r in s.scalars(
                select(ConsentEvent).where(ConsentEvent.address_key == address)
                .order_by(ConsentEvent.id))]

    def list_consents(self, state: ConsentState | None = None, limit: int = 200,
                      offset: int = 0) -> list[tuple[str, ConsentState, datetime]]:
        q = select(Consent.address_key, Consent.state, Consent.at).order_by(Consent.address_key)
        if state is not None:
            q = q.where(Consent.state == state)
        with self._tx() as s:
            return [(a, st, at) for a, st, at in s.execute(q.limit(limit).offset(offset))]

    def verify_consents(self) -> tuple[int, int | None]:
        """Walk the chain of consent events: (events checked, id of the first that does not
        match its hash or its predecessor, or None)."""
        prev, seen, after = _GENESIS, 0, 0
        while True:
            with self._tx() as s:  # in pages: no cursor left open on an early return
                rows = list(s.scalars(select(ConsentEvent).where(ConsentEvent.id > after)
                                      .order_by(ConsentEvent.id).limit(2000)))
            if not rows:
                break
            for r in rows:
                seen += 1
                if r.prev_hash != prev or r.hash != event_hash(
                        r.prev_hash, r.address_key, r.state, r.at, r.how, r.by_name, r.note):
                    return seen, r.id
                prev = r.hash
            after = rows[-1].id
        return seen, None

    def erase_consents(self, address: str) -> tuple[int, bool]:
        """Erasure: the address's consent events keep their place in the chain (and what
        was decided when) but lose the address and note, which become digests. A current
        refusal is kept in full so that it goes on being honoured. Returns (events erased,
        whether a refusal was kept)."""
        with self._tx() as s:
            bump_privacy(s)
            current = s.get(Consent, address)
            keep = current is not None and current.state == "refused"
            q = select(ConsentEvent).where(ConsentEvent.address_key == address)
            if keep and current is not None:
                q = q.where(ConsentEvent.id != current.event_id)
            erased = 0
            for r in s.scalars(q):
                r.address_key, r.note = _ERASED + digest(address), _ERASED + digest(r.note)
                erased += 1
            if current is not None and not keep:
                s.delete(current)
            return erased, keep

    # -- do not track ---------------------------------------------------------------------

    def list_do_not_track(self) -> list[DoNotTrackRecord]:
        with self._tx() as s:
            return [DoNotTrackRecord(r.id, r.kind, r.key, r.text,  # type: ignore[arg-type]
                                     r.created_at, r.created_by)
                    for r in s.scalars(select(DoNotTrackEntry).order_by(DoNotTrackEntry.text))]

    def add_do_not_track(self, kind: str, key: str, text: str, by: str) -> DoNotTrackRecord:
        try:
            with self._tx() as s:
                bump_privacy(s)
                row = DoNotTrackEntry(kind=kind, key=key, text=text,
                                      created_at=self.clock.now(), created_by=by)
                s.add(row)
                s.flush()
                return DoNotTrackRecord(row.id, kind, key, text,  # type: ignore[arg-type]
                                        row.created_at, by)
        except IntegrityError as exc:
            raise Conflict(f"{text} is on the do-not-track list already") from exc

    def remove_do_not_track(self, kind: str, key: str) -> DoNotTrackRecord:
        with self._tx() as s:
            row = s.scalar(select(DoNotTrackEntry).where(DoNotTrackEntry.kind == kind,
                                                         DoNotTrackEntry.key == key))
            if row is None:
                raise NotFound("not on the do-not-track list")
            bump_privacy(s)
            s.delete(row)
            return DoNotTrackRecord(row.id, row.kind, row.key,  # type: ignore[arg-type]
                                    row.text, row.created_at, row.created_by)

    # -- what the pixel writer checks ------------------------------------------------------

    def privacy_version(self) -> int:
        with self._tx() as s:
            row = s.get(AppSetting, PRIVACY_VERSION)
            return int(row.value) if row is not None else 0

    def privacy_changed(self) -> None:
        """For a change made elsewhere (a policy setting) that decides tracking."""
        with self._tx() as s:
            bump_privacy(s)

    # -- settings audit -------------------------------------------------------------------

    def log_setting_changes(self, changes: Sequence[tuple[str, str, str, str]], user: str,
                            user_id: int | None) -> None:
        """Append [(scope, setting, old, new)]."""
        if not changes:
            return
        with self._tx() as s:
            now = self.clock.now()
            for scope, setting, old, new in changes:
                s.add(SettingChange(at=now, user_id=user_id, user_name=user, scope=scope,
                                    setting=setting, old=old, new=new))

    def setting_changes(self, limit: int = 200, offset: int = 0) -> list[SettingChangeRecord]:
        with self._tx() as s:
            return [SettingChangeRecord(r.id, r.at, r.user_name, r.scope, r.setting, r.old,
                                        r.new)
                    for r in s.scalars(select(SettingChange)
                                       .order_by(SettingChange.id.desc())
                                       .limit(limit).offset(offset))]


_settings = cast(Table, AppSetting.__table__)
_consents = cast(Table, Consent.__table__)
_mailboxes = cast(Table, Mailbox.__table__)
_dnt = cast(Table, DoNotTrackEntry.__table__)
_VERSION = select(_settings.c.value).where(_settings.c.key == PRIVACY_VERSION)
_GLOBAL_POLICY = select(_settings.c.value).where(_settings.c.key == POLICY_SETTING)
_POLICIES = select(_mailboxes.c.id, _mailboxes.c.tracking_policy)
_RULES = select(_dnt.c.kind, _dnt.c.key, _dnt.c.text)
_STATES = (select(_consents.c.address_key, _consents.c.state)
           .where(_consents.c.address_key.in_(bindparam("keys", expanding=True))))
_GATE_CACHE_SIZE = 100_000


def policy_of(global_policy: str | None, mailbox_policy: str) -> TrackingPolicy:
    """The policy in force for a mailbox: its own, or the global one (see
    core.consent.effective_policy, which also says why)."""
    if mailbox_policy in POLICIES:
        return cast(TrackingPolicy, mailbox_policy)
    if global_policy in POLICIES:
        return cast(TrackingPolicy, global_policy)
    return "everyone"


class PrivacyGate:
    """What the pixel writer asks of a copy already sent: may its recipient still be
    followed, under the policy, consents and do-not-track list in force now?

    Answers are cached per (mailbox, recipient) and thrown away as soon as
    ``privacy_version`` moves, which :meth:`refresh` reads once a batch: a refusal takes
    effect from the next batch on. Used by one thread (the pixel writer's)."""

    def __init__(self) -> None:
        self.version = -1
        self._policies: dict[int, TrackingPolicy] = {}
        self._global: TrackingPolicy = "everyone"
        self._rules = DoNotTrack()
        self._pixel: dict[tuple[int, str], PixelKind] = {}

    def refresh(self, conn: Connection) -> None:
        value = conn.execute(_VERSION).scalar()
        version = int(value) if value is not None else 0
        if version == self.version:
            return
        global_value = conn.execute(_GLOBAL_POLICY).scalar()
        self._global = policy_of(global_value, "global")
        self._policies = {mid: policy_of(global_value, p) for mid, p in conn.execute(_POLICIES)}
        self._rules = DoNotTrack(Rule(kind, key, text)
                                 for kind, key, text in conn.execute(_RULES))
        self._pixel.clear()
        self.version = version

    def knows(self, wanted: set[tuple[int, str]]) -> bool:
        """Whether every pair is decided already (no query needed)."""
        return wanted.issubset(self._pixel)

    def load(self, conn: Connection, wanted: set[tuple[int, str]]) -> None:
        """Decide for the (mailbox, recipient key) pairs not decided yet: one query for
        their consents."""
        missing = wanted.difference(self._pixel)
        if not missing:
            return
        if len(self._pixel) + len(missing) > _GATE_CACHE_SIZE:
            self._pixel.clear()
        keys = sorted({key for _, key in missing})
        states: dict[str, ConsentState] = {
            key: state for key, state in conn.execute(_STATES, {"keys": keys})}
        for box, key in missing:
            policy = self._policies.get(box, self._global)
            self._pixel[box, key] = decide_recipient(
                policy, key, states.get(key, "unknown"), self._rules).pixel

    def pixel(self, mailbox_id: int, key: str) -> PixelKind:
        """What the recipient's copy may carry now (after :meth:`load`)."""
        return self._pixel.get((mailbox_id, key), "personal")
