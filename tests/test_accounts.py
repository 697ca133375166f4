"""Accounts on the clock: the sign-in throttle's window and a session's life end when the
clock says so (the pages' side is in test_web_auth.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from mailseen.clock import ManualClock
from mailseen.services.accounts import LOCK, SESSION_DAYS, WINDOW, SignInRefused
from mailseen.services.instance import Instance

from .conftest import make_settings
from .web_client import PASSWORD

EMAIL = "m@example.com"


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
