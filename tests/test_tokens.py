"""Pixel tokens: short, URL-safe, signed, and checked without a database."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailseen.core.tokens import COPY_KEY_LIMIT, TOKEN_LENGTH, TokenRef, TokenSigner, new_copy_key

SECRET = b"test-secret-key-0123456789abcdef"
ALPHABET = string.ascii_letters + string.digits + "-_"
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")

ids = st.integers(min_value=1, max_value=2**64 - 1)
recipients = st.integers(min_value=0, max_value=2**16 - 1)


@pytest.fixture(scope="module")
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


@settings(max_examples=300, deadline=None)
@given(message_id=ids, recipient=recipients)
def test_round_trip_for_any_message_and_recipient(message_id: int, recipient: int) -> None:
    signer = TokenSigner(SECRET)
    token = signer.make(TokenRef(message_id, recipient))
    assert len(token) == TOKEN_LENGTH <= 32
    assert TOKEN_RE.fullmatch(token)
    assert signer.check(token) == TokenRef(message_id, recipient)


def test_recipient_index_defaults_to_the_whole_message(signer: TokenSigner) -> None:
    assert signer.check(signer.make(TokenRef(7))) == TokenRef(7, 0)


def test_each_recipient_of_a_message_gets_its_own_token(signer: TokenSigner) -> None:
    tokens = {signer.make(TokenRef(42, r)) for r in range(50)}
    assert len(tokens) == 50
    assert {signer.check(t) for t in tokens} == {TokenRef(42, r) for r in range(50)}


def test_token_from_another_secret_is_rejected(signer: TokenSigner) -> None:
    other = TokenSigner(b"another-secret-key-0123456789abc")
    token = other.make(TokenRef(5))
    assert other.check(token) == TokenRef(5)
    assert signer.check(token) is None
    assert token != signer.make(TokenRef(5))


def test_every_truncation_and_extension_is_rejected(signer: TokenSigner) -> None:
    token = signer.make(TokenRef(123456, 3))
    for n in range(len(token)):
        assert signer.check(token[:n]) is None
        if n:
            assert signer.check(token[n:]) is None
    for extra in ("A", "=", "==", "-", " ", "\n", ".gif"):
        assert signer.check(token + extra) is None
        assert signer.check(extra + token) is None


def test_every_single_character_change_is_rejected(signer: TokenSigner) -> None:
    token = signer.make(TokenRef(99, 1))
    for i, old in enumerate(token):
        for new in ALPHABET + "+/=.~ ":
            if new != old:
                forged = token[:i] + new + token[i + 1 :]
                assert signer.check(forged) is None, forged


def test_only_the_canonical_spelling_is_accepted(signer: TokenSigner) -> None:
    # 23 bytes leave 2 spare bits in the last character; other values decode to the same bytes.
    token = signer.make(TokenRef(1))
    value = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = value.index(token[-1])
    assert last & 3 == 0
    for spare in (1, 2, 3):
        alias = token[:-1] + value[last | spare]
        assert signer.check(alias) is None


def test_standard_base64_spelling_is_not_an_alias(signer: TokenSigner) -> None:
    for mid in range(1, 200):
        token = signer.make(TokenRef(mid))
        if "-" in token or "_" in token:
            alias = token.replace("-", "+").replace("_", "/")
            assert signer.check(alias) is None
            return
    pytest.fail("no token with - or _ found")


def test_sequential_ids_give_unrelated_tokens(signer: TokenSigner) -> None:
    a, b = signer.make(TokenRef(1000)), signer.make(TokenRef(1001))
    # The MAC, the last 16 characters, shares nothing predictable between neighbours.
    assert a[-16:] != b[-16:]
    assert sum(x == y for x, y in zip(a[-16:], b[-16:], strict=True)) < 8


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_any_text_that_is_not_a_token_is_rejected_without_raising(text: str) -> None:
    signer = TokenSigner(SECRET)
    result = signer.check(text)
    if result is not None:  # only possible if hypothesis forged a MAC, which it cannot
        assert signer.make(result) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=TOKEN_LENGTH, max_size=TOKEN_LENGTH))
def test_random_well_formed_strings_are_rejected(text: str) -> None:
    assert TokenSigner(SECRET).check(text) is None


@settings(max_examples=200, deadline=None)
@given(message_id=ids, recipient=recipients, data=st.data())
def test_mutated_genuine_tokens_are_rejected(message_id: int, recipient: int,
                                             data: st.DataObject) -> None:
    signer = TokenSigner(SECRET)
    token = signer.make(TokenRef(message_id, recipient))
    mutated = data.draw(st.text(alphabet=ALPHABET + "+/=", min_size=0, max_size=40))
    if mutated != token:
        assert signer.check(mutated) is None


@pytest.mark.parametrize("ref", [TokenRef(0), TokenRef(-1), TokenRef(2**64),
                                 TokenRef(1, -1), TokenRef(1, 2**16)])
def test_out_of_range_references_cannot_be_made(signer: TokenSigner, ref: TokenRef) -> None:
    with pytest.raises(ValueError):
        signer.make(ref)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenSigner(b"too short")


def test_checking_needs_nothing_but_the_secret() -> None:
    # A pixel node holding only the secret (a fresh signer) accepts tokens made elsewhere.
    token = TokenSigner(SECRET).make(TokenRef(77, 2))
    assert TokenSigner(SECRET).check(token) == TokenRef(77, 2)


def test_the_mac_is_standard_hmac_sha256() -> None:
    """The signer computes HMAC with precomputed pads for speed; it must be plain HMAC."""
    import hashlib
    import hmac

    signer = TokenSigner(b"s" * 32)
    for payload in (b"", b"x" * 11, bytes(range(200))):
        assert signer._mac(payload) == hmac.new(signer._key, payload,
                                                hashlib.sha256).digest()[:12]


@settings(max_examples=200)
@given(st.integers(1, COPY_KEY_LIMIT - 1))
def test_a_copy_token_names_its_random_key_and_nothing_else(key: int) -> None:
    signer = TokenSigner(b"k" * 32)
    token = signer.make(TokenRef(copy_key=key))
    assert len(token) == TOKEN_LENGTH
    assert signer.check(token) == TokenRef(copy_key=key)  # no message id in it


def test_copy_keys_are_random_and_in_range() -> None:
    keys = {new_copy_key() for _ in range(1000)}
    assert len(keys) == 1000 and all(0 < k < COPY_KEY_LIMIT for k in keys)
    signer = TokenSigner(b"k" * 32)
    for bad in (0, COPY_KEY_LIMIT):
        with pytest.raises(ValueError):
            signer.make(TokenRef(copy_key=bad) if bad else TokenRef())
