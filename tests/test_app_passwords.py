"""App passwords: made, listed and revoked by their owner (web page), an admin or the
installation (CLI); stored only as a hash; logging in with one names its user, and only
for that user's email."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailseen.errors import InvalidInput, NotFound
from mailseen.services.accounts import SignInRefused, hash_app_password
from mailseen.services.instance import Instance
from mailseen.services.mailboxes import Forbidden
from mailseen.storage.models import AppPassword

from .cli_runner import Cli, error, ok
from .web_client import PASSWORD, WebClient


def test_an_app_password_logs_its_user_in_and_is_stored_only_hashed(
        instance: Instance) -> None:
    alice = instance.accounts.create_user("alice@example.com", PASSWORD)
    record, value = instance.accounts.create_app_password(None, alice.id, " Thunderbird  ")
    assert record.name == "Thunderbird"
    assert len(value) == 29 and value.count("-") == 5  # six groups of four
    # Typed with spaces for dashes, or in capitals, it is the same password.
    spaced = value.replace("-", " ").upper()
    assert instance.accounts.app_password_login("Alice@Example.com", spaced, "192.0.2.1") == (
        instance.store.get_user(alice.id))
    with instance.db.engine.connect() as conn:
        stored = conn.execute(select(AppPassword.secret_hash)).scalar_one()
    assert stored == hash_app_password(value) and value not in stored
    [listed] = instance.accounts.list_app_passwords(None, alice.id)
    assert listed.last_used_at is not None  # noted on use


def test_a_web_password_or_another_users_app_password_is_no_login(instance: Instance) -> None:
    alice = instance.accounts.create_user("alice@example.com", PASSWORD)
    bob = instance.accounts.create_user("bob@example.com", PASSWORD)
    _, bobs = instance.accounts.create_app_password(None, bob.id, "phone")
    for email, password in (("alice@example.com", PASSWORD),
                            ("alice@example.com", bobs)):
        with pytest.raises(SignInRefused):
            instance.accounts.app_password_login(email, password, "192.0.2.1")
    assert instance.accounts.list_app_passwords(None, alice.id) == []


def test_owners_and_admins_manage_them_members_only_their_own(instance: Instance) -> None:
    admin = instance.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    alice = instance.accounts.create_user("alice@example.com", PASSWORD)
    bob = instance.accounts.create_user("bob@example.com", PASSWORD)
    mine, _ = instance.accounts.create_app_password(alice, alice.id, "laptop")
    with pytest.raises(Forbidden):
        instance.accounts.create_app_password(bob, alice.id, "sneaky")
    with pytest.raises(Forbidden):
        instance.accounts.revoke_app_password(bob, alice.id, mine.id)
    with pytest.raises(NotFound):  # bob's own list has no such password
        instance.accounts.revoke_app_password(bob, bob.id, mine.id)
    with pytest.raises(InvalidInput) as err:
        instance.accounts.create_app_password(alice, alice.id, "   ")
    assert err.value.field == "name"
    assert [p.name for p in instance.accounts.list_app_passwords(admin, alice.id)] == [
        "laptop"]
    instance.accounts.revoke_app_password(admin, alice.id, mine.id)
    assert instance.accounts.list_app_passwords(alice, alice.id) == []


def test_deleting_a_user_deletes_their_app_passwords(instance: Instance) -> None:
    alice = instance.accounts.create_user("alice@example.com", PASSWORD)
    _, value = instance.accounts.create_app_password(None, alice.id, "laptop")
    instance.accounts.delete_user(None, alice.id)
    with pytest.raises(SignInRefused):
        instance.accounts.app_password_login("alice@example.com", value, "192.0.2.1")


def test_the_cli_adds_lists_and_revokes(cli: Cli, instance: Instance) -> None:
    instance.accounts.create_user("alice@example.com", PASSWORD)
    added = cli("user", "app-password", "add", "alice@example.com", "Outlook at work")
    value = ok(added).strip()
    assert len(value) == 29 and "shown only once" not in value
    assert "alice@example.com" in added.stderr
    listed = ok(cli("user", "app-password", "list", "alice@example.com"))
    pid, name, _created, used = listed.strip().split("\t")
    assert name == "Outlook at work" and used == "never used"
    assert ok(cli("user", "app-password", "revoke", "alice@example.com", pid)) == (
        f"app password {pid} revoked\n")
    assert ok(cli("user", "app-password", "list", "alice@example.com")) == ""
    assert "no app password" in error(cli("user", "app-password", "revoke",
                                          "alice@example.com", pid))
    assert error(cli("user", "app-password", "add", "alice@example.com", " "), 2).startswith(
        "mailseen: error: NAME: say which client")
    assert "no user" in error(cli("user", "app-password", "list", "zed@example.com"))


def test_a_member_makes_and_revokes_their_own_on_the_web(instance: Instance) -> None:
    instance.accounts.create_user("alice@example.com", PASSWORD)
    with WebClient(instance) as web:
        web.sign_in("alice@example.com")
        page = web.get("/account/app-passwords")
        assert page.status == 200 and "no app passwords yet" in page.text("main")
        empty = web.submit(page, "/account/app-passwords", name="")
        assert empty.status == 422 and "Name:" in empty.text(".error-summary")
        made = web.submit(page, "/account/app-passwords", name="Apple Mail")
        value = made.text(".app-password")
        assert made.status == 200 and len(value) == 29
        assert "Apple Mail" in made.text("#app-passwords")
        again = web.get("/account/app-passwords")
        assert value not in again.response.text  # shown that once only
        [row] = again.all("#app-passwords form")
        revoked = web.submit(again, row["action"])
        assert "revoked" in revoked.text(".notice")
        assert not revoked.all("#app-passwords")
    with pytest.raises(SignInRefused):
        instance.accounts.app_password_login("alice@example.com", value, "192.0.2.1")
