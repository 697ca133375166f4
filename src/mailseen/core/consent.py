"""Whom a pixel may follow: the tracking policy, each recipient's consent and the
do-not-track list, decided per recipient, with the reason in the words the user sees.

The rules, and the texts they answer (docs/privacy.md maps them):

- A recipient who refused is never followed by a pixel, whatever the policy, until they
  say otherwise: a refusal withdraws consent (GDPR Art. 7(3)), and the ePrivacy Directive
  Art. 5(3) allows no pixel without it. The same holds for an address, domain or
  top-level domain on the team's do-not-track list.
- ``with-consent`` gives a personal pixel only to a recipient whose consent is recorded
  (CNIL deliberation 2026-042, Garante provision 284/2026: prior consent for individual
  open tracking).
- ``aggregate`` gives nobody a personal pixel: one token shared by the send, counts only
  (the exemption both authorities are reported to make for anonymous, aggregate counts).
- ``everyone`` and ``unless-refused`` follow every recipient not excluded above.

The same decision serves the send (which pixel each copy gets) and the pixel endpoint
(whether a fetch of a copy already sent may still be recorded): consent withdrawn after
sending reaches the old copy because the endpoint asks again."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..records import ConsentState, MailboxPolicy, PixelKind, TrackingPolicy
from .urls import ascii_domain

__all__ = ["AGGREGATE_REASON", "POLICIES", "DoNotTrack", "PolicyChoice", "RecipientDecision",
           "Rule", "address_key", "decide_recipient", "decide_recipients", "effective_policy",
           "parse_rule"]

POLICIES: tuple[TrackingPolicy, ...] = ("everyone", "unless-refused", "with-consent",
                                        "aggregate")
AGGREGATE_REASON = "aggregate: counts only, no personal tracking"

# A DNS label once in ASCII (RFC 1035, with digits first allowed by RFC 1123).
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


@dataclass(frozen=True)
class PolicyChoice:
    """The policy in force for a mailbox, and where it was set ("for this mailbox",
    "globally")."""

    policy: TrackingPolicy
    reason: str


def effective_policy(global_policy: TrackingPolicy, mailbox_policy: MailboxPolicy) -> PolicyChoice:
    """The mailbox's own policy wins, stricter or looser; "global" defers to the global
    one (as for the on/off setting in core/tracking.py)."""
    if mailbox_policy == "global":
        return PolicyChoice(global_policy, f"tracking policy {global_policy}, set globally")
    return PolicyChoice(mailbox_policy, f"tracking policy {mailbox_policy}, set for this mailbox")


@dataclass(frozen=True)
class RecipientDecision:
    address: str  # as given
    pixel: PixelKind
    reason: str


def address_key(address: str) -> str:
    """The form consent records and do-not-track rules are keyed by: surrounding space
    and a pair of angle brackets dropped, the local part lowercased (no mail system in use
    tells "Erin" from "erin"), the domain in lowercase ASCII (punycode), no trailing dot.
    Text without an "@" is lowercased whole."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    local, at, domain = text.rpartition("@")
    if not at:
        return text.lower()
    return f"{local.lower()}@{_domain_key(domain)}"


def _domain_key(domain: str) -> str:
    ascii_name = ascii_domain(domain.strip())
    # A name no mapping accepts is kept as written: it equals no valid entry, but still
    # falls under a listed *.suffix it ends with, erring on the side of not tracking.
    if ascii_name is None:
        return domain.strip().lower()
    return ascii_name.removesuffix(".")


RuleKind = Literal["address", "domain", "suffix"]


@dataclass(frozen=True)
class Rule:
    """One do-not-track entry: an address, a domain (that name only), or ``*.suffix``
    (every name under the suffix, and the suffix itself: ``*.fr`` is all of .fr,
    ``*.example.fr`` is example.fr and its subdomains). ``text`` is how the user sees it;
    ``key`` is what is matched."""

    kind: RuleKind
    key: str
    text: str


def parse_rule(text: str) -> Rule:
    """A do-not-track entry as typed; ValueError with a sentence for the user when it is
    none of the three forms."""
    shown = text.strip()
    if not shown:
        raise ValueError("a do-not-track entry cannot be empty")
    if any(c.isspace() for c in shown):
        raise ValueError(f"{shown!r} has a space in it: give one address, domain or *.tld")
    if "@" in shown:
        local, _, domain = shown.rpartition("@")
        if not local or "@" in local or "*" in shown:
            raise ValueError(f"{shown!r} is not an e-mail address")
        return Rule("address", f"{local.lower()}@{_checked_domain(domain, shown)}",
                    shown.lower())
    if shown.startswith("*."):
        return Rule("suffix", _checked_domain(shown[2:], shown), shown.lower())
    if "*" in shown:
        raise ValueError(f"{shown!r}: a wildcard only goes first, as in *.fr or *.example.fr")
    return Rule("domain", _checked_domain(shown, shown), shown.lower())


def _checked_domain(domain: str, shown: str) -> str:
    name = ascii_domain(domain)
    if name is not None:
        name = name.removesuffix(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label)
                                              for label in name.split(".")):
        raise ValueError(f"{shown!r} is not a valid domain name")
    return name


class DoNotTrack:
    """A do-not-track list, ready to be asked about addresses. Matching costs a few set
    look-ups (one per label of the domain), whatever the list's length."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._addresses: dict[str, Rule] = {}
        self._domains: dict[str, Rule] = {}
        self._suffixes: dict[str, Rule] = {}
        by_kind = {"address": self._addresses, "domain": self._domains,
                   "suffix": self._suffixes}
        for rule in rules:
            by_kind[rule.kind].setdefault(rule.key, rule)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> DoNotTrack:
        return cls(parse_rule(e) for e in entries)

    def __bool__(self) -> bool:
        return bool(self._addresses or self._domains or self._suffixes)

    def match(self, address: str) -> Rule | None:
        """The rule that excludes ``address``: its own entry first, then its domain's,
        then the nearest ``*.suffix``."""
        key = address_key(address)
        rule = self._addresses.get(key)
        if rule is not None:
            return rule
        _, at, domain = key.rpartition("@")
        if not at or not domain:
            return None
        rule = self._domains.get(domain)
        if rule is not None:
            return rule
        labels = domain.split(".")
        for i in range(len(labels)):
            rule = self._suffixes.get(".".join(labels[i:]))
            if rule is not None:
                return rule
        return None


def decide_recipient(policy: TrackingPolicy, address: str, consent: ConsentState,
                     do_not_track: DoNotTrack | None = None) -> RecipientDecision:
    """What ``address``'s copy carries under ``policy``, and why. A refusal, then the
    do-not-track list, come before the policy: neither is ever overridden."""
    shown = address.strip()
    if consent == "refused":
        return RecipientDecision(address, "none", f"not tracked: {shown} refused tracking")
    rule = do_not_track.match(address) if do_not_track else None
    if rule is not None:
        return RecipientDecision(address, "none",
                                 f"not tracked: {rule.text} is on the do-not-track list")
    if policy == "aggregate":
        return RecipientDecision(address, "aggregate", AGGREGATE_REASON)
    if policy == "with-consent":
        if consent == "granted":
            return RecipientDecision(address, "personal",
                                     f"tracked: {shown} consented to tracking")
        return RecipientDecision(address, "none",
                                 f"not tracked: no consent recorded for {shown}")
    if policy == "unless-refused":
        return RecipientDecision(address, "personal",
                                 f"tracked: {shown} has not refused tracking")
    return RecipientDecision(address, "personal", "tracked: every recipient is tracked")


def decide_recipients(policy: TrackingPolicy, recipients: Sequence[str],
                      consents: Mapping[str, ConsentState],
                      do_not_track: DoNotTrack | None = None) -> list[RecipientDecision]:
    """``decide_recipient`` for each recipient, in order. ``consents`` is keyed by
    ``address_key``; a recipient missing from it is "unknown"."""
    return [decide_recipient(policy, r, consents.get(address_key(r), "unknown"), do_not_track)
            for r in recipients]
