"""The settings pages through the real app: global tracking, mailboxes tab by tab, users with
roles, mailboxes and passwords; bad input re-shows the form, and members are kept out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailseen.records import MailboxIn, MailboxRecord, UserRecord
from mailseen.services.instance import Instance

from .web_client import PASSWORD, Page, WebClient


@pytest.fixture
def web(instance: Instance) -> Iterator[WebClient]:
    # Still argon2id, at a cost that keeps these many sign-ins quick.
    with WebClient(instance) as client:
        yield client


@pytest.fixture
def admin(web: WebClient, instance: Instance) -> UserRecord:
    user = instance.accounts.create_user("ada@example.com", PASSWORD, name="Ada", role="admin")
    web.sign_in("ada@example.com")
    return user


@pytest.fixture
def box(instance: Instance) -> MailboxRecord:
    return instance.store.add_mailbox(MailboxIn(address="support@example.com",
                                                display_name="Support"))


def _problems(page: Page) -> list[str]:
    return [" ".join(li.get_text(" ").split()) for li in page.all(".error-summary li")]


# -- global mail settings ---------------------------------------------------------------

def test_admin_turns_global_tracking_on_and_off(web: WebClient, instance: Instance,
                                                admin: UserRecord) -> None:
    page = web.get("/settings")
    assert page.status == 200
    hint = page.text("#hint-tracking")
    assert "HTML" in hint and "images" in hint  # what it does, and its limits
    assert page.form("/settings")["tracking"] == "off"
    page = web.submit(page, "/settings", tracking="on")
    assert page.response.url.path == "/settings"
    assert page.text(".notice") == "Saved."
    assert instance.mailboxes.global_tracking() is True
    assert page.form("/settings")["tracking"] == "on"
    web.submit(page, "/settings", tracking="off")
    assert instance.mailboxes.global_tracking() is False


def test_global_page_lists_mailboxes_that_override_it(web: WebClient, instance: Instance,
                                                      admin: UserRecord) -> None:
    instance.store.add_mailbox(MailboxIn(address="sales@example.com", tracking="enabled"))
    instance.store.add_mailbox(MailboxIn(address="plain@example.com"))
    items = [li.get_text(" ") for li in web.get("/settings").all("ul.plain li")]
    assert len(items) == 1 and "sales@example.com" in items[0] and "enabled" in items[0]


def test_an_unknown_choice_is_refused_with_a_message(web: WebClient, instance: Instance,
                                                     admin: UserRecord) -> None:
    page = web.submit(web.get("/settings"), "/settings", tracking="maybe")
    assert page.status == 422
    assert _problems(page) == ["Open tracking: choose one of the options."]
    assert instance.mailboxes.global_tracking() is False


# -- mailboxes --------------------------------------------------------------------------

def test_after_setup_the_admin_is_sent_to_add_a_mailbox(web: WebClient) -> None:
    page = web.get("/setup")
    page = web.submit(page, "/setup", email="ada@example.com", password=PASSWORD,
                      password2=PASSWORD)
    assert page.response.url.path == "/settings/mailboxes"
    assert "No mailboxes yet" in page.text(".empty")
    assert page.soup.find("a", href="/settings/mailboxes/new") is not None


def test_adding_a_mailbox_with_a_bad_address_keeps_what_was_typed(
        web: WebClient, instance: Instance, admin: UserRecord) -> None:
    page = web.get("/settings/mailboxes/new")
    page = web.submit(page, "/settings/mailboxes/new", address="support at example",
                      display_name="Support team")
    assert page.status == 422
    assert _problems(page) == ["Address: enter one email address, like team@example.com."]
    form = page.form("/settings/mailboxes/new")
    assert form["address"] == "support at example" and form["display_name"] == "Support team"
    field = page.soup.find("input", id="address")
    assert field["aria-invalid"] == "true" and "err-address" in field["aria-describedby"]
    page = web.submit(page, "/settings/mailboxes/new", address="support@example.com")
    [created] = instance.store.list_mailboxes()
    assert (created.address, created.display_name) == ("support@example.com", "Support team")
    assert page.response.url.path == f"/settings/mailboxes/{created.id}"
    assert page.response.url.query == b"tab=sending&done=created"


def test_a_second_mailbox_with_the_same_address_is_refused(
        web: WebClient, instance: Instance, admin: UserRecord, box: MailboxRecord) -> None:
    page = web.submit(web.get("/settings/mailboxes/new"), "/settings/mailboxes/new",
                      address="support@example.com")
    assert page.status == 422
    assert _problems(page) == ["Address: there is a mailbox with this address already."]


def test_mailbox_settings_have_a_tab_and_a_form_each(
        web: WebClient, admin: UserRecord, box: MailboxRecord) -> None:
    for tab, label in [("general", "General"), ("sending", "Sending"),
                       ("receiving", "Receiving"), ("misc", "Miscellaneous"),
                       ("privacy", "Privacy")]:
        page = web.get(f"/settings/mailboxes/{box.id}?tab={tab}")
        links = page.all("nav.tabs a")
        assert [a.get_text() for a in links] == ["General", "Sending", "Receiving",
                                                 "Miscellaneous", "Privacy"]
        [current] = [a for a in links if a.get("aria-current") == "page"]
        assert current.get_text() == label
        assert len(page.all("form.tab-panel")) == 1
        page.form(f"/settings/mailboxes/{box.id}?tab={tab}")
    # An unknown tab shows the first one.
    page = web.get(f"/settings/mailboxes/{box.id}?tab=nope")
    page.form(f"/settings/mailboxes/{box.id}?tab=general")


def test_general_tab_renames_the_mailbox(web: WebClient, instance: Instance,
                                         admin: UserRecord, box: MailboxRecord) -> None:
    action = f"/settings/mailboxes/{box.id}?tab=general"
    page = web.submit(web.get(action), action, address="help@example.com",
                      display_name="Help desk")
    assert page.text(".notice") == "Saved."
    saved = instance.store.get_mailbox(box.id)
    assert (saved.address, saved.display_name) == ("help@example.com", "Help desk")


def test_sending_tab_checks_each_field_and_keeps_what_was_typed(
        web: WebClient, instance: Instance, admin: UserRecord, box: MailboxRecord) -> None:
    action = f"/settings/mailboxes/{box.id}?tab=sending"
    page = web.submit(web.get(action), action, transport="smtp", smtp_host="",
                      smtp_port="abc", smtp_username="relay", smtp_password="s3cret")
    assert page.status == 422
    assert _problems(page) == [
        "SMTP server: needed to send through an SMTP server.",
        "SMTP port: a number from 1 to 65535, or empty for the usual one."]
    form = page.form(action)
    assert (form["transport"], form["smtp_port"], form["smtp_username"]) == (
        "smtp", "abc", "relay")
    assert form["smtp_password"] == ""  # never echoed back
    assert "s3cret" not in page.response.text
    assert instance.store.get_mailbox(box.id).transport == "outbox"  # nothing saved

    page = web.submit(page, action, smtp_host="smtp.example.com", smtp_port="587",
                      smtp_password="s3cret")
    saved = instance.store.get_mailbox(box.id)
    assert (saved.transport, saved.smtp_host, saved.smtp_port, saved.smtp_username) == (
        "smtp", "smtp.example.com", 587, "relay")
    assert saved.has_smtp_password
    assert "s3cret" not in page.response.text
    assert page.form(action)["smtp_password"] == ""
    assert "Leave empty to keep it" in page.text("#hint-smtp_password")


def test_an_empty_password_field_keeps_the_saved_one_and_the_box_removes_it(
        web: WebClient, instance: Instance, admin: UserRecord) -> None:
    box = instance.store.add_mailbox(MailboxIn(
        address="relay@example.com", transport="smtp", smtp_host="smtp.example.com",
        smtp_username="relay", smtp_password="old-secret", imap_host="imap.example.com",
        imap_password="imap-secret"))
    action = f"/settings/mailboxes/{box.id}?tab=sending"
    page = web.get(action)
    assert "old-secret" not in page.response.text
    page = web.submit(page, action, smtp_port="2525")
    assert instance.store.get_mailbox(box.id).smtp_port == 2525
    assert instance.store.get_mailbox(box.id).has_smtp_password
    page = web.submit(page, action, smtp_password_remove="1")
    assert not instance.store.get_mailbox(box.id).has_smtp_password

    action = f"/settings/mailboxes/{box.id}?tab=receiving"
    page = web.get(action)
    assert "imap-secret" not in page.response.text
    web.submit(page, action, imap_folder="Support")
    accounts = {a.mailbox_id: a for a in instance.store.imap_accounts()}
    assert accounts[box.id].password == "imap-secret"
    assert accounts[box.id].folder == "Support"


def test_receiving_tab_sets_up_and_turns_off_imap(web: WebClient, instance: Instance,
                                                  admin: UserRecord, box: MailboxRecord) -> None:
    action = f"/settings/mailboxes/{box.id}?tab=receiving"
    page = web.submit(web.get(action), action, imap_host="imap example com", imap_port="0",
                      imap_folder="")
    assert page.status == 422
    assert [p.split(":")[0] for p in _problems(page)] == ["IMAP server", "IMAP port", "Folder"]
    page = web.submit(page, action, imap_host="imap.example.com", imap_port="993",
                      imap_folder="INBOX", imap_password="pw-imap")
    [account] = instance.store.imap_accounts()
    assert (account.host, account.port, account.password) == ("imap.example.com", 993,
                                                               "pw-imap")
    web.submit(page, action, imap_host="")
    assert instance.store.imap_accounts() == []


def test_misc_tab_shows_the_global_setting_and_saves_the_override(
        web: WebClient, instance: Instance, admin: UserRecord, box: MailboxRecord) -> None:
    action = f"/settings/mailboxes/{box.id}?tab=misc"
    page = web.get(action)
    labels = [" ".join(lbl.get_text(" ").split()) for lbl in page.all("#tracking label")]
    assert labels == ["Use global setting (currently off)", "Enabled", "Disabled"]
    assert "overrides the global one" in page.text("#hint-tracking")
    assert "not tracked" in page.text(".status-line")
    page = web.submit(page, action, tracking="enabled")
    assert instance.store.get_mailbox(box.id).tracking == "enabled"
    assert "enabled by mailbox setting" in page.text(".status-line")
    instance.mailboxes.set_global_tracking(None, True)
    page = web.get(action)
    assert "Use global setting (currently on)" in page.text("#tracking")


def test_the_mailbox_list_shows_how_each_mailbox_sends_and_tracks(
        web: WebClient, instance: Instance, admin: UserRecord, box: MailboxRecord) -> None:
    instance.store.add_mailbox(MailboxIn(address="sales@example.com", tracking="enabled",
                                         transport="smtp", smtp_host="smtp.example.com"))
    rows = [" ".join(li.get_text(" ").split())
            for li in web.get("/settings/mailboxes").all("ul.rows li")]
    assert "smtp.example.com" in rows[0] and "Tracking on (enabled by mailbox setting)" in rows[0]
    assert "outbox" in rows[1] and "Tracking off (disabled globally)" in rows[1]


# -- users ------------------------------------------------------------------------------

def test_admin_adds_a_member_with_mailboxes(web: WebClient, instance: Instance,
                                            admin: UserRecord, box: MailboxRecord) -> None:
    other = instance.store.add_mailbox(MailboxIn(address="sales@example.com"))
    page = web.get("/settings/users/new")
    boxes = [i["value"] for i in page.all("input[name=mailboxes]")]
    assert boxes == [str(other.id), str(box.id)]  # by address
    page = web.submit(page, "/settings/users/new", email="max@example.com", name="Max",
                      role="member", password=PASSWORD, mailboxes=str(box.id))
    found = instance.store.find_user("max@example.com")
    assert found is not None
    user = found[0]
    assert (user.name, user.role, user.mailbox_ids) == ("Max", "member", (box.id,))
    assert page.response.url.path == f"/settings/users/{user.id}"
    assert page.text(".notice") == "Created."
    rows = [" ".join(li.get_text(" ").split())
            for li in web.get("/settings/users").all("ul.rows li")]
    assert any("max@example.com" in r and "Member" in r and "Support" in r for r in rows)


def test_adding_a_user_with_bad_input_shows_every_problem_and_no_password(
        web: WebClient, instance: Instance, admin: UserRecord, box: MailboxRecord) -> None:
    page = web.get("/settings/users/new")
    data = {**page.form("/settings/users/new"), "email": "max", "name": "Max",
            "password": "short", "role": "root", "mailboxes": [str(box.id), "999", "x"]}
    page = Page(web.client.post("/settings/users/new", data=data))
    assert page.status == 422
    assert [p.split(":")[0] for p in _problems(page)] == ["Email", "Role", "Password"]
    form = page.form("/settings/users/new")
    assert (form["email"], form["name"], form["mailboxes"]) == ("max", "Max", str(box.id))
    assert form["password"] == "" and "short" not in page.response.text
    page = web.submit(page, "/settings/users/new", email="ada@example.com",
                      password=PASSWORD, role="member")
    assert _problems(page) == ["Email: there is a user with this address already."]
    assert len(instance.store.list_users()) == 1


def test_admin_changes_role_and_mailboxes(web: WebClient, instance: Instance,
                                          admin: UserRecord, box: MailboxRecord) -> None:
    user = instance.accounts.create_user("max@example.com", PASSWORD, name="Max")
    action = f"/settings/users/{user.id}"
    page = web.get(action)
    assert page.form(action).get("mailboxes") is None
    page = web.submit(page, action, role="admin", mailboxes=str(box.id), name="Max M.")
    saved = instance.store.get_user(user.id)
    assert (saved.name, saved.role, saved.mailbox_ids) == ("Max M.", "admin", (box.id,))
    data = {k: v for k, v in page.form(action).items() if k != "mailboxes"}
    web.client.post(action, data={**data, "role": "member"})
    saved = instance.store.get_user(user.id)
    assert (saved.role, saved.mailbox_ids) == ("member", ())


def test_an_admin_cannot_demote_or_delete_themselves(web: WebClient, instance: Instance,
                                                     admin: UserRecord) -> None:
    action = f"/settings/users/{admin.id}"
    page = web.submit(web.get(action), action, role="member")
    assert page.status == 422
    assert _problems(page)[0].startswith("Role: you cannot take away your own admin role")
    page = web.submit(page, f"{action}/delete", confirm="1")
    assert page.status == 422
    assert instance.store.get_user(admin.id).is_admin


def test_admin_resets_a_password_and_deletes_a_user(web: WebClient, instance: Instance,
                                                    admin: UserRecord) -> None:
    user = instance.accounts.create_user("max@example.com", PASSWORD)
    action = f"/settings/users/{user.id}"
    page = web.submit(web.get(action), f"{action}/password", password="short")
    assert page.status == 422
    assert _problems(page) == ["New password: at least 10 characters."]
    page = web.submit(page, f"{action}/password", password="a new password 2")
    assert page.text(".notice").startswith("Password changed")
    assert "a new password 2" not in page.response.text
    found = instance.store.find_user("max@example.com")
    assert found is not None
    assert instance.accounts.hasher.verify(found[1], "a new password 2")

    page = web.submit(page, f"{action}/delete")  # the box not ticked
    assert _problems(page) == ["Delete: tick the box to confirm."]
    page = web.submit(page, f"{action}/delete", confirm="1")
    assert page.response.url.path == "/settings/users"
    assert instance.store.find_user("max@example.com") is None
    assert web.get(action).status == 404


def test_settings_forms_need_the_csrf_token(web: WebClient, instance: Instance,
                                            admin: UserRecord) -> None:
    resp = web.client.post("/settings", data={"tracking": "on"})
    assert resp.status_code == 403
    assert instance.mailboxes.global_tracking() is False


# -- who may see what -------------------------------------------------------------------

def test_members_are_told_settings_are_for_admins(web: WebClient, instance: Instance,
                                                  box: MailboxRecord) -> None:
    member = instance.accounts.create_user("max@example.com", PASSWORD)
    instance.store.set_memberships(member.id, [box.id])
    web.sign_in("max@example.com")
    for url in ["/settings", "/settings/mailboxes", "/settings/mailboxes/new",
                f"/settings/mailboxes/{box.id}", "/settings/users", "/settings/users/new",
                f"/settings/users/{member.id}"]:
        page = web.get(url)
        assert page.status == 403, url
        assert page.text("h1") == "Not allowed"
    assert web.get("/conversations").soup.find("a", href="/settings") is None


def test_a_member_cannot_tell_another_mailbox_exists(web: WebClient, instance: Instance,
                                                     box: MailboxRecord) -> None:
    other = instance.store.add_mailbox(MailboxIn(address="secret@example.com"))
    member = instance.accounts.create_user("max@example.com", PASSWORD)
    instance.store.set_memberships(member.id, [box.id])
    web.sign_in("max@example.com")
    known, unknown = web.get(f"/settings/mailboxes/{other.id}"), web.get("/settings/mailboxes/999")
    assert known.status == unknown.status == 404
    assert known.text("main") == unknown.text("main")
    assert "secret@example.com" not in known.response.text


def test_huge_ids_are_not_found_rather_than_errors(web: WebClient, admin: UserRecord) -> None:
    assert web.get(f"/settings/mailboxes/{10**30}").status == 404
    assert web.get(f"/settings/users/{10**30}").status == 404


def test_aliases_are_set_on_the_sending_tab_and_each_is_checked(
        web: WebClient, instance: Instance, admin: UserRecord, box: MailboxRecord) -> None:
    action = f"/settings/mailboxes/{box.id}?tab=sending"
    page = web.submit(web.get(action), action, aliases="help@example.com, not an address")
    assert page.status == 422 and _problems(page)[0].startswith("Aliases: ")
    assert page.form(action)["aliases"] == "help@example.com, not an address"
    page = web.submit(page, action, aliases="Help@Example.com; support@example.com")
    assert instance.store.get_mailbox(box.id).aliases == "help@example.com"
    assert page.form(action)["aliases"] == "help@example.com"


def test_the_receiving_tab_sets_the_sent_folder_and_filing_copies_there(
        web: WebClient, instance: Instance, admin: UserRecord, box: MailboxRecord) -> None:
    action = f"/settings/mailboxes/{box.id}?tab=receiving"
    page = web.submit(web.get(action), action, imap_sent_append="1")
    assert page.status == 422
    assert _problems(page) == ["File a copy: needs an IMAP server and a Sent folder."]
    page = web.submit(web.get(action), action, imap_host="imap.example.com",
                      imap_sent_folder="Sent Items", imap_sent_append="1")
    saved = instance.store.get_mailbox(box.id)
    assert (saved.imap_sent_folder, saved.imap_sent_append) == ("Sent Items", True)
    assert page.form(action)["imap_sent_append"] == "1"
    form = page.form(action)
    form.pop("imap_sent_append")  # unticked
    web.client.post(action, data=form)
    assert not instance.store.get_mailbox(box.id).imap_sent_append
