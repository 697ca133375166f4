"""Whom a pixel may follow: the tracking policy (the mailbox's winning over the global one),
each recipient's consent and the do-not-track list, decided per recipient with the reason
the user reads. Pure: no store, no clock."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailseen.core.consent import (
    AGGREGATE_REASON,
    POLICIES,
    DoNotTrack,
    address_key,
    decide_recipient,
    decide_recipients,
    effective_policy,
    parse_rule,
)
from mailseen.core.urls import ascii_domain
from mailseen.records import ConsentState, MailboxPolicy, TrackingPolicy

STATES: tuple[ConsentState, ...] = get_args(ConsentState)
MAILBOX_POLICIES: tuple[MailboxPolicy, ...] = get_args(MailboxPolicy)
ERIN = "erin@example.org"
FULL_WIDTH = "\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25"  # "EXAMPLE" in full-width letters

policies = st.sampled_from(POLICIES)
states = st.sampled_from(STATES)
addresses = st.from_regex(r"[a-zA-Z][a-zA-Z0-9.+]{0,10}@([a-zA-Z0-9]{1,8}\.){1,3}[a-zA-Z]{2,6}",
                          fullmatch=True)
# Entries of every kind, some of which may cover the address under test.
entries = st.lists(st.one_of(
    addresses,
    addresses.map(lambda a: a.rpartition("@")[2]),
    addresses.map(lambda a: "*." + a.rpartition(".")[2]),
), max_size=4)


def test_the_policy_vocabulary_is_the_records_one() -> None:
    assert get_args(TrackingPolicy) == POLICIES
    assert set(MAILBOX_POLICIES) == {"global", *POLICIES}


# -- the policy in force ----------------------------------------------------------------------

@pytest.mark.parametrize("mailbox", POLICIES)
@pytest.mark.parametrize("global_policy", POLICIES)
def test_the_mailbox_policy_wins_both_ways(global_policy: TrackingPolicy,
                                           mailbox: TrackingPolicy) -> None:
    choice = effective_policy(global_policy, mailbox)
    assert choice.policy == mailbox
    assert choice.reason == f"tracking policy {mailbox}, set for this mailbox"


@pytest.mark.parametrize("global_policy", POLICIES)
def test_a_mailbox_on_global_follows_the_global_policy(global_policy: TrackingPolicy) -> None:
    choice = effective_policy(global_policy, "global")
    assert choice.policy == global_policy
    assert choice.reason == f"tracking policy {global_policy}, set globally"


@given(st.sampled_from(POLICIES), st.sampled_from(MAILBOX_POLICIES), addresses, states,
       entries)
def test_the_decision_under_a_mailbox_policy_ignores_the_global_one(
        global_policy: TrackingPolicy, mailbox: MailboxPolicy, address: str,
        consent: ConsentState, dnt: list[str]) -> None:
    rules = DoNotTrack.parse(dnt)
    chosen = effective_policy(global_policy, mailbox).policy
    expected = decide_recipient(chosen, address, consent, rules)
    if mailbox != "global":
        for other in POLICIES:
            assert decide_recipient(effective_policy(other, mailbox).policy, address, consent,
                                    rules) == expected


# -- one recipient ----------------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "consent", "pixel", "reason"), [
    ("everyone", "unknown", "personal", "tracked: every recipient is tracked"),
    ("everyone", "granted", "personal", "tracked: every recipient is tracked"),
    ("everyone", "refused", "none", f"not tracked: {ERIN} refused tracking"),
    ("unless-refused", "unknown", "personal", f"tracked: {ERIN} has not refused tracking"),
    ("unless-refused", "granted", "personal", f"tracked: {ERIN} has not refused tracking"),
    ("unless-refused", "refused", "none", f"not tracked: {ERIN} refused tracking"),
    ("with-consent", "unknown", "none", f"not tracked: no consent recorded for {ERIN}"),
    ("with-consent", "granted", "personal", f"tracked: {ERIN} consented to tracking"),
    ("with-consent", "refused", "none", f"not tracked: {ERIN} refused tracking"),
    ("aggregate", "unknown", "aggregate", "aggregate: counts only, no personal tracking"),
    ("aggregate", "granted", "aggregate", "aggregate: counts only, no personal tracking"),
    ("aggregate", "refused", "none", f"not tracked: {ERIN} refused tracking"),
])
def test_each_policy_and_consent_state(policy: TrackingPolicy, consent: ConsentState,
                                       pixel: str, reason: str) -> None:
    decision = decide_recipient(policy, ERIN, consent)
    assert (decision.address, decision.pixel, decision.reason) == (ERIN, pixel, reason)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("consent", STATES)
@pytest.mark.parametrize(("entry", "named"), [
    ("erin@example.org", "erin@example.org"),
    ("example.org", "example.org"),
    ("*.org", "*.org"),
    ("EXAMPLE.ORG", "example.org"),
])
def test_the_do_not_track_list_stops_every_pixel(policy: TrackingPolicy, consent: ConsentState,
                                                 entry: str, named: str) -> None:
    decision = decide_recipient(policy, ERIN, consent, DoNotTrack.parse([entry]))
    assert decision.pixel == "none"
    if consent == "refused":  # the recipient's own word is the better reason
        assert decision.reason == f"not tracked: {ERIN} refused tracking"
    else:
        assert decision.reason == f"not tracked: {named} is on the do-not-track list"


def test_the_reason_names_the_address_as_written() -> None:
    decision = decide_recipient("with-consent", "  Erin@Example.ORG ", "unknown")
    assert decision.reason == "not tracked: no consent recorded for Erin@Example.ORG"
    assert decision.address == "  Erin@Example.ORG "


def test_the_nearest_entry_is_named() -> None:
    rules = DoNotTrack.parse(["*.fr", "*.example.fr", "mail.example.fr", "erin@mail.example.fr"])
    assert decide_recipient("everyone", "erin@mail.example.fr", "unknown", rules).reason == (
        "not tracked: erin@mail.example.fr is on the do-not-track list")
    assert decide_recipient("everyone", "ada@mail.example.fr", "unknown", rules).reason == (
        "not tracked: mail.example.fr is on the do-not-track list")
    assert decide_recipient("everyone", "ada@shop.example.fr", "unknown", rules).reason == (
        "not tracked: *.example.fr is on the do-not-track list")
    assert decide_recipient("everyone", "ada@other.fr", "unknown", rules).reason == (
        "not tracked: *.fr is on the do-not-track list")


# -- properties over every policy -------------------------------------------------------------

@given(policies, addresses, entries)
def test_a_refused_recipient_never_gets_a_pixel(policy: TrackingPolicy, address: str,
                                                dnt: list[str]) -> None:
    decision = decide_recipient(policy, address, "refused", DoNotTrack.parse(dnt))
    assert decision.pixel == "none"
    assert decision.reason == f"not tracked: {address} refused tracking"


@given(policies, addresses, states, entries)
def test_a_listed_recipient_never_gets_a_pixel(policy: TrackingPolicy, address: str,
                                               consent: ConsentState, dnt: list[str]) -> None:
    rules = DoNotTrack.parse([*dnt, address.rpartition("@")[2].upper()])
    assert decide_recipient(policy, address, consent, rules).pixel == "none"


@given(addresses, states, entries)
def test_aggregate_never_gives_a_personal_pixel(address: str, consent: ConsentState,
                                                dnt: list[str]) -> None:
    decision = decide_recipient("aggregate", address, consent, DoNotTrack.parse(dnt))
    assert decision.pixel in ("aggregate", "none")


@given(addresses, states, entries)
def test_with_consent_tracks_only_recorded_consent(address: str, consent: ConsentState,
                                                   dnt: list[str]) -> None:
    rules = DoNotTrack.parse(dnt)
    decision = decide_recipient("with-consent", address, consent, rules)
    assert (decision.pixel == "personal") == (consent == "granted" and
                                               rules.match(address) is None)


@given(policies, addresses, states, entries)
def test_the_reason_says_what_was_decided(policy: TrackingPolicy, address: str,
                                          consent: ConsentState, dnt: list[str]) -> None:
    decision = decide_recipient(policy, address, consent, DoNotTrack.parse(dnt))
    prefix = {"personal": "tracked: ", "none": "not tracked: ", "aggregate": "aggregate: "}
    assert decision.reason.startswith(prefix[decision.pixel])
    assert decision.pixel != "aggregate" or decision.reason == AGGREGATE_REASON


@given(policies, addresses, states, entries)
def test_the_decision_ignores_the_case_of_the_address(policy: TrackingPolicy, address: str,
                                                      consent: ConsentState,
                                                      dnt: list[str]) -> None:
    rules = DoNotTrack.parse(dnt)
    one = decide_recipient(policy, address, consent, rules)
    other = decide_recipient(policy, address.swapcase(), consent, rules)
    assert one.pixel == other.pixel


# -- many recipients --------------------------------------------------------------------------

def test_each_recipient_is_decided_in_order_by_their_own_consent() -> None:
    consents: dict[str, ConsentState] = {"erin@example.org": "granted",
                                         "bob@example.org": "refused"}
    decided = decide_recipients("with-consent",
                                ["Erin@EXAMPLE.org", "bob@example.org", "cat@example.org"],
                                consents)
    assert [(d.address, d.pixel) for d in decided] == [
        ("Erin@EXAMPLE.org", "personal"), ("bob@example.org", "none"),
        ("cat@example.org", "none")]
    assert decided[2].reason == "not tracked: no consent recorded for cat@example.org"


def test_consent_is_found_across_the_spellings_of_an_idn_domain() -> None:
    consents: dict[str, ConsentState] = {address_key("erin@Bücher.example"): "granted"}
    decided = decide_recipients("with-consent", ["ERIN@xn--bcher-kva.EXAMPLE"], consents)
    assert decided[0].pixel == "personal"


# -- the do-not-track list --------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "kind", "key"), [
    ("erin@example.org", "address", "erin@example.org"),
    ("  Erin@Example.ORG ", "address", "erin@example.org"),
    ("example.fr", "domain", "example.fr"),
    ("Example.FR.", "domain", "example.fr"),
    ("*.fr", "suffix", "fr"),
    ("*.Example.fr", "suffix", "example.fr"),
    ("Bücher.fr", "domain", "xn--bcher-kva.fr"),
    ("xn--bcher-kva.fr", "domain", "xn--bcher-kva.fr"),
    ("*.рф", "suffix", "xn--p1ai"),
    (FULL_WIDTH + "\uff0e\uff46\uff52", "domain", "example.fr"),
    ("ÉRIN@école.fr", "address", "érin@xn--cole-9oa.fr"),
])
def test_entries_of_each_kind(entry: str, kind: str, key: str) -> None:
    rule = parse_rule(entry)
    assert (rule.kind, rule.key) == (kind, key)
    assert rule.text == entry.strip().lower()


@pytest.mark.parametrize(("entry", "message"), [
    ("", "cannot be empty"),
    ("   ", "cannot be empty"),
    ("example .fr", "has a space in it"),
    ("*", "a wildcard only goes first"),
    ("*fr", "a wildcard only goes first"),
    ("ex*ample.fr", "a wildcard only goes first"),
    ("*.*.fr", "is not a valid domain name"),
    ("*.", "is not a valid domain name"),
    ("@example.fr", "is not an e-mail address"),
    ("a@b@example.fr", "is not an e-mail address"),
    ("*@example.fr", "is not an e-mail address"),
    ("erin@", "is not a valid domain name"),
    ("a..b", "is not a valid domain name"),
    ("-bad.fr", "is not a valid domain name"),
    ("bad-.fr", "is not a valid domain name"),
    ("under_score.fr", "is not a valid domain name"),
    ("x" * 64 + ".fr", "is not a valid domain name"),
    (".".join(["abcdefghi"] * 26), "is not a valid domain name"),
    ("a\u200db.fr", "is not a valid domain name"),
    ("\ud800.fr", "is not a valid domain name"),
])
def test_entries_that_are_none_of_the_three_forms(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_rule(entry)
    if entry.strip():
        assert repr(entry.strip()) in str(raised.value)


@pytest.mark.parametrize(("entry", "matched", "unmatched"), [
    ("erin@example.fr", ["erin@example.fr", "ERIN@EXAMPLE.FR", "<erin@example.fr>",
                         "erin@example.fr."], ["erin2@example.fr", "erin@mail.example.fr"]),
    ("example.fr", ["erin@example.fr", "bob@EXAMPLE.fr"],
     ["erin@mail.example.fr", "erin@example.fr.com", "erin@anexample.fr"]),
    ("*.example.fr", ["erin@example.fr", "erin@mail.example.fr", "erin@a.b.example.fr"],
     ["erin@anexample.fr", "erin@example.fra"]),
    ("*.fr", ["erin@example.fr", "erin@a.b.fr", "erin@xn--bcher-kva.fr"],
     ["erin@example.fra", "erin@fr.example.com", "erin@example.frx"]),
    ("Bücher.fr", ["erin@xn--bcher-kva.fr", "erin@BÜCHER.fr", "erin@bücher.fr."],
     ["erin@bucher.fr"]),
    ("xn--bcher-kva.fr", ["erin@Bücher.FR"], ["erin@bucher.fr"]),
])
def test_what_an_entry_covers(entry: str, matched: list[str], unmatched: list[str]) -> None:
    rules = DoNotTrack.parse([entry])
    for address in matched:
        assert rules.match(address) == parse_rule(entry), address
    for address in unmatched:
        assert rules.match(address) is None, address


def test_text_that_is_no_address_matches_nothing() -> None:
    rules = DoNotTrack.parse(["*.fr", "example.fr"])
    for text in ("", "example.fr", "erin@", "@"):
        assert rules.match(text) is None


def test_a_domain_no_mapping_accepts_still_falls_under_its_listed_tld() -> None:
    """Kept as written, it can equal no valid entry, but excluding it by its last labels
    errs on the side of not tracking."""
    rules = DoNotTrack.parse(["*.fr"])
    assert rules.match("erin@\ud800.fr") == parse_rule("*.fr")
    assert rules.match("erin@a\u200db.com") is None


def test_an_empty_list_is_false_and_the_first_of_two_equal_entries_is_kept() -> None:
    assert not DoNotTrack()
    rules = DoNotTrack.parse(["Example.fr", "example.FR."])
    assert rules
    match = rules.match("erin@example.fr")
    assert match is not None
    assert match.text == "example.fr"


@given(entries)
def test_an_entry_read_back_from_its_text_is_the_same_entry(dnt: list[str]) -> None:
    for entry in dnt:
        rule = parse_rule(entry)
        assert parse_rule(rule.text) == rule


# -- keys -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "key"), [
    ("erin@example.org", "erin@example.org"),
    (" <Erin@Example.ORG> ", "erin@example.org"),
    ("erin@example.org.", "erin@example.org"),
    ("erin@Bücher.example", "erin@xn--bcher-kva.example"),
    ('"odd@local"@example.org', '"odd@local"@example.org'),
    ("no-at-sign", "no-at-sign"),
])
def test_address_keys(address: str, key: str) -> None:
    assert address_key(address) == key


@pytest.mark.parametrize(("name", "ascii_name"), [
    ("example.org", "example.org"),
    ("EXAMPLE.org.", "example.org."),
    ("Bücher.FR", "xn--bcher-kva.fr"),
    ("straße.de", "xn--strae-oqa.de"),
    (FULL_WIDTH + ".\uff46\uff52", "example.fr"),
    ("a\u200db.com", None),
    ("\ud800.com", None),
])
def test_ascii_domain_maps_as_a_browser_does(name: str, ascii_name: str | None) -> None:
    assert ascii_domain(name) == ascii_name
