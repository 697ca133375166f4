"""The accounts service against the real database: sign-in throttling per account and per
real address, and, on the clock, the throttle's window and a session's life (the pages' side
is in test_web_auth.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from mailseen.clock import ManualClock
from mailseen.core.clientip import client_key
from mailseen.services.accounts import LOCK, SESSION_DAYS, WINDOW, SignInRefused
from mailseen.services.instance import Instance

from .conftest import make_settings
from .web_client import PASSWORD

EMAIL = "m@example.com"
WRONG = "wrong password!"


def _refused(instance: Instance, client: str, password: str) -> SignInRefused:
    with pytest.raises(SignInRefused) as caught:
        instance.accounts.sign_in("m@example.com", password, client)
    return caught.value


def test_a_locked_account_still_lets_its_password_in_from_an_address_that_has_not_failed(
        instance: Instance) -> None:
    instance.accounts.create_user("m@example.com", PASSWORD)
    for n in range(LOCK):  # guesses spread over many addresses, one each
        assert _refused(instance, f"203.0.113.{n + 1}", WRONG).retry_after is None
    user, _ = instance.accounts.sign_in("m@example.com", PASSWORD, "198.51.100.7")
    assert user.email == "m@example.com"
    # An address that has failed for the account now meets the account's lock-out, even
    # with the right password: spreading guesses over addresses buys one guess each.
    locked = _refused(instance, "203.0.113.3", PASSWORD)
    assert locked.locked and locked.retry_after
    assert _refused(instance, "198.51.100.9", WRONG).retry_after is None
    assert _refused(instance, "198.51.100.9", PASSWORD).locked


def test_one_address_guessing_many_accounts_is_throttled(instance: Instance) -> None:
    for n in range(40):
        try:
            instance.accounts.sign_in(f"u{n}@example.com", WRONG, "203.0.113.5")
        except SignInRefused as exc:
            last = exc
    assert last.locked
    instance.accounts.create_user("m@example.com", PASSWORD)
    assert _refused(instance, "203.0.113.5", PASSWORD).locked
    instance.accounts.sign_in("m@example.com", PASSWORD, "203.0.113.6")


def test_an_ipv6_host_is_counted_by_its_64() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("testclient") == "testclient"


def test_an_overlong_email_or_client_is_counted_without_a_storage_error(
        instance: Instance) -> None:
    for _ in range(2):
        with pytest.raises(SignInRefused) as caught:
            instance.accounts.sign_in("x" * 1000 + "@example.com", WRONG, "peer-" * 40)
        assert caught.value.retry_after is None



@pytest.fixture
def inst(tmp_path: Path, database_url: str, clock: ManualClock) -> Iterator[Instance]:
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    inst.accounts.create_user(EMAIL, PASSWORD)
    yield inst
    inst.close()


def _fail_until_locked(inst: Instance, clock: ManualClock) -> int:
    """Wrong passwords, each after the wait the throttle asks for, until it locks; the
    lock's retry_after."""
    for _ in range(LOCK + 1):
        try:
            inst.accounts.sign_in(EMAIL, "wrong password!", "192.0.2.1")
        except SignInRefused as exc:
            if exc.retry_after is not None and "later" in str(exc):
                return exc.retry_after
            clock.advance(exc.retry_after or 0)
    raise AssertionError("never locked")


def test_a_locked_sign_in_opens_again_when_the_window_has_passed(
        inst: Instance, clock: ManualClock) -> None:
    retry_after = _fail_until_locked(inst, clock)
    assert 0 < retry_after <= WINDOW.total_seconds() + 1
    with pytest.raises(SignInRefused, match="try again later"):  # the right password too
        inst.accounts.sign_in(EMAIL, PASSWORD, "192.0.2.1")
    clock.advance(retry_after)
    user, _ = inst.accounts.sign_in(EMAIL, PASSWORD, "192.0.2.1")
    assert user.email == EMAIL


def test_a_session_ends_after_its_days(inst: Instance, clock: ManualClock) -> None:
    user, session = inst.accounts.sign_in(EMAIL, PASSWORD, "192.0.2.1")
    assert session.expires_at == clock.now() + timedelta(days=SESSION_DAYS)
    clock.advance(timedelta(days=SESSION_DAYS).total_seconds() - 1)
    found = inst.accounts.session(session.cookie_value)
    assert found is not None and found.user.id == user.id
    clock.advance(2)
    assert inst.accounts.session(session.cookie_value) is None
