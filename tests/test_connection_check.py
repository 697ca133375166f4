"""Test connection: a mailbox's SMTP relay (a real aiosmtpd with STARTTLS and AUTH) and IMAP
account (a real Dovecot) are tried the way delivery and polling use them, and the answer says
in words what worked or what failed; through the service, the web app's mailbox settings, the
API and `mailseen mailbox test`."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from mailseen.errors import InvalidInput, MailseenError
from mailseen.receivers.imap import ImapChecker
from mailseen.records import MailboxIn, MailboxRecord, UserRecord
from mailseen.services.instance import Instance
from mailseen.services.mailboxes import Forbidden

from .cli_runner import Cli, error, ok
from .conftest import API_TOKEN, SECRET, make_settings
from .dovecot import Dovecot, ImapUser, free_port
from .smtp_server import SmtpServer
from .web_client import PASSWORD, Page, WebClient

USERS = {"relay-user": "s3cret pass"}
IMAP_PASSWORD = "imap pass 1"


@pytest.fixture
def smtp(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    server = SmtpServer(getattr(request, "param", "starttls"), USERS).start(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot(IMAP_PASSWORD, users=10).start()
    yield server
    server.stop()


@pytest.fixture
def lone_user() -> Iterator[ImapUser]:
    """A user on a server of its own, for failed logins (Dovecot slows the next login from
    the same address after one fails; see tests/dovecot.py)."""
    server = Dovecot(IMAP_PASSWORD, users=1).start()
    yield server.add_user()
    server.stop()


def _instance(tmp_path: Path, database_url: str, ca_file: str | None) -> Instance:
    settings = make_settings(tmp_path, database_url, ca_file=ca_file or "")
    inst = Instance.open(settings, migrate=False, imap_probe=ImapChecker(ca_file))
    inst.mailboxes.test_timeout = 5
    return inst


@pytest.fixture
def inst(tmp_path: Path, database_url: str, smtp: SmtpServer) -> Iterator[Instance]:
    instance = _instance(tmp_path, database_url, smtp.ca_file)
    yield instance
    instance.close()


def _relay_box(inst: Instance, smtp: SmtpServer, **changes: Any) -> MailboxRecord:
    values: dict[str, Any] = {
        "transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
        "smtp_tls": smtp.mode, "smtp_username": "relay-user", "smtp_password": "s3cret pass"}
    return inst.mailboxes.add(None, MailboxIn("support@example.com", **{**values, **changes}))


def _imap_box(inst: Instance, user: ImapUser, *, tls: str = "implicit",
              password: str | None = None, **changes: Any) -> MailboxRecord:
    port = user.server.imaps_port if tls == "implicit" else user.server.imap_port
    return inst.mailboxes.add(None, MailboxIn(
        "sales@example.test", imap_host="127.0.0.1", imap_port=port,
        imap_tls=tls,  # type: ignore[arg-type]
        imap_username=user.name, imap_password=user.password if password is None else password,
        **changes))


def _refused_port() -> int:
    return free_port()  # nothing listens there any more


# -- SMTP --------------------------------------------------------------------------------

@pytest.mark.parametrize(("smtp", "words"), [("starttls", "STARTTLS"),
                                             ("implicit", "TLS from the start"),
                                             ("none", "no encryption")], indirect=["smtp"])
async def test_a_good_relay_says_what_worked_and_sends_nothing(
        inst: Instance, smtp: SmtpServer, words: str) -> None:
    box = _relay_box(inst, smtp)
    check = await inst.mailboxes.test_smtp(None, box)
    assert (check.what, check.ok) == ("smtp", True)
    assert check.message == (f"connected to 127.0.0.1:{smtp.port}, {words}, signed in as "
                             "relay-user")
    assert smtp.messages == []


async def test_a_wrong_password_says_login_failed(inst: Instance, smtp: SmtpServer) -> None:
    box = _relay_box(inst, smtp, smtp_password="nope")
    check = await inst.mailboxes.test_smtp(None, box)
    assert (check.ok, check.message) == (False, "login failed: wrong username or password")


async def test_a_refused_port_says_cannot_connect(inst: Instance, smtp: SmtpServer) -> None:
    port = _refused_port()
    check = await inst.mailboxes.test_smtp(None, _relay_box(inst, smtp, smtp_port=port))
    assert (check.ok, check.message) == (
        False, f"cannot connect to 127.0.0.1:{port}: Connection refused")


async def test_an_untrusted_certificate_is_named(tmp_path: Path, database_url: str,
                                                 smtp: SmtpServer) -> None:
    inst = _instance(tmp_path, database_url, None)
    try:
        check = await inst.mailboxes.test_smtp(None, _relay_box(inst, smtp))
    finally:
        inst.close()
    assert not check.ok
    assert check.message.startswith(
        f"cannot connect to 127.0.0.1:{smtp.port}: TLS certificate not trusted")


@pytest.mark.parametrize("smtp", ["none"], indirect=True)
async def test_starttls_on_a_server_without_it_is_named(inst: Instance,
                                                        smtp: SmtpServer) -> None:
    check = await inst.mailboxes.test_smtp(None, _relay_box(inst, smtp, smtp_tls="starttls"))
    assert (check.ok, check.message) == (
        False, f"cannot connect to 127.0.0.1:{smtp.port}: the server does not offer STARTTLS")


async def test_a_server_that_never_answers_times_out(inst: Instance, smtp: SmtpServer) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        inst.mailboxes.test_timeout = 0.2
        check = await inst.mailboxes.test_smtp(None, _relay_box(inst, smtp, smtp_port=port,
                                                                smtp_tls="none"))
    assert (check.ok, check.message) == (False, f"cannot connect to 127.0.0.1:{port}: "
                                                "timed out")


async def test_unsaved_values_are_tested_with_the_saved_password(inst: Instance,
                                                                 smtp: SmtpServer) -> None:
    box = _relay_box(inst, smtp, smtp_port=_refused_port())
    # The port typed but not saved; the password field left empty: the saved one.
    check = await inst.mailboxes.test_smtp(None, box, {"smtp_port": smtp.port,
                                                       "smtp_password": None})
    assert check.ok, check.message
    check = await inst.mailboxes.test_smtp(None, box, {"smtp_port": smtp.port,
                                                       "smtp_password": "typed wrong"})
    assert check.message == "login failed: wrong username or password"
    assert inst.store.get_mailbox(box.id).smtp_port != smtp.port  # nothing saved


async def test_without_a_server_there_is_nothing_to_test(inst: Instance) -> None:
    box = inst.mailboxes.add(None, MailboxIn("plain@example.com"))
    with pytest.raises(InvalidInput) as err:
        await inst.mailboxes.test_smtp(None, box)
    assert err.value.field == "smtp_host"
    with pytest.raises(InvalidInput) as err:
        await inst.mailboxes.test_imap(None, box)
    assert err.value.field == "imap_host"


async def test_only_admins_may_test(inst: Instance, smtp: SmtpServer) -> None:
    box = _relay_box(inst, smtp)
    member = inst.accounts.create_user("m@example.com", PASSWORD)
    inst.store.set_memberships(member.id, [box.id])
    with pytest.raises(Forbidden):
        await inst.mailboxes.test_smtp(inst.accounts.get_user(None, member.id), box)


# -- IMAP --------------------------------------------------------------------------------

@pytest.fixture
def imap_inst(tmp_path: Path, database_url: str, dovecot: Dovecot) -> Iterator[Instance]:
    instance = _instance(tmp_path, database_url, dovecot.ca_file)
    yield instance
    instance.close()


@pytest.mark.parametrize(("tls", "words"), [("implicit", "TLS from the start"),
                                            ("starttls", "STARTTLS")])
async def test_a_good_imap_account_says_what_worked(imap_inst: Instance, dovecot: Dovecot,
                                                    tls: str, words: str) -> None:
    user = dovecot.add_user()
    box = _imap_box(imap_inst, user, tls=tls)
    check = await imap_inst.mailboxes.test_imap(None, box)
    port = dovecot.imaps_port if tls == "implicit" else dovecot.imap_port
    assert (check.what, check.ok) == ("imap", True)
    assert check.message == (f"connected to 127.0.0.1:{port}, {words}, signed in as "
                             f"{user.name}, folder 'INBOX' found")


async def test_a_wrong_imap_password_says_login_failed(tmp_path: Path, database_url: str,
                                                       lone_user: ImapUser) -> None:
    inst = _instance(tmp_path, database_url, lone_user.server.ca_file)
    try:
        check = await inst.mailboxes.test_imap(None, _imap_box(inst, lone_user,
                                                               password="wrong"))
    finally:
        inst.close()
    assert (check.ok, check.message) == (False, "login failed: wrong username or password")


async def test_a_missing_folder_and_a_refused_port_are_named(imap_inst: Instance,
                                                             dovecot: Dovecot) -> None:
    box = _imap_box(imap_inst, dovecot.add_user(), imap_folder="Nope")
    check = await imap_inst.mailboxes.test_imap(None, box)
    assert (check.ok, check.message) == (False, "folder 'Nope' does not exist")
    port = _refused_port()
    check = await imap_inst.mailboxes.test_imap(None, box, {"imap_port": port,
                                                            "imap_folder": "INBOX"})
    assert (check.ok, check.message) == (
        False, f"cannot connect to 127.0.0.1:{port}: Connection refused")


async def test_without_the_imap_checker_testing_imap_says_so(
        tmp_path: Path, database_url: str, dovecot: Dovecot) -> None:
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False)
    try:
        box = _imap_box(inst, dovecot.add_user())
        with pytest.raises(MailseenError, match="testing IMAP is not available"):
            await inst.mailboxes.test_imap(None, box)
    finally:
        inst.close()


# -- the web app -------------------------------------------------------------------------

def _web(inst: Instance) -> WebClient:
    return WebClient(inst)


def _admin(inst: Instance, web: WebClient) -> UserRecord:
    user = inst.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    web.sign_in("ada@example.com")
    return user


def _test(web: WebClient, box: MailboxRecord, tab: str, **fields: str) -> Page:
    """Press "Test connection" on ``tab`` with ``fields`` typed into its form."""
    page = web.get(f"/settings/mailboxes/{box.id}?tab={tab}")
    form = page.soup.find("form", attrs={"action": f"/settings/mailboxes/{box.id}?tab={tab}"})
    button = form.find("button", attrs={"formaction": True})
    assert button.get_text(strip=True) == "Test connection"
    data = {**page.form(f"/settings/mailboxes/{box.id}?tab={tab}"), **fields}
    return Page(web.client.post(button["formaction"], data=data))


def test_the_sending_tab_tests_the_typed_values_without_saving(inst: Instance,
                                                                smtp: SmtpServer) -> None:
    box = inst.mailboxes.add(None, MailboxIn("support@example.com"))
    with _web(inst) as web:
        _admin(inst, web)
        page = _test(web, box, "sending", transport="smtp", smtp_host="127.0.0.1",
                     smtp_port=str(smtp.port), smtp_tls="starttls",
                     smtp_username="relay-user", smtp_password="s3cret pass")
        assert page.status == 200
        assert page.text("#test-result") == (f"It works: connected to 127.0.0.1:{smtp.port}, "
                                             "STARTTLS, signed in as relay-user.")
        form = page.form(f"/settings/mailboxes/{box.id}?tab=sending")
        assert (form["smtp_host"], form["smtp_port"]) == ("127.0.0.1", str(smtp.port))
        assert form["smtp_password"] == ""  # never put back into the page
        assert inst.store.get_mailbox(box.id).transport == "outbox"  # nothing saved

        page = _test(web, box, "sending", transport="smtp", smtp_host="127.0.0.1",
                     smtp_port=str(smtp.port), smtp_username="relay-user",
                     smtp_password="wrong")
        assert "test-failed" in page.soup.select_one("#test-result")["class"]
        assert page.text("#test-result") == (
            "It did not work: login failed: wrong username or password.")


def test_the_sending_tab_uses_the_saved_password_when_the_field_is_empty(
        inst: Instance, smtp: SmtpServer) -> None:
    box = _relay_box(inst, smtp)
    with _web(inst) as web:
        _admin(inst, web)
        page = _test(web, box, "sending")
        assert page.text("#test-result").startswith("It works: connected to")
        port = _refused_port()
        page = _test(web, box, "sending", smtp_port=str(port))
        assert page.text("#test-result") == (
            f"It did not work: cannot connect to 127.0.0.1:{port}: Connection refused.")


def test_bad_values_are_shown_as_field_problems(inst: Instance, smtp: SmtpServer) -> None:
    box = inst.mailboxes.add(None, MailboxIn("support@example.com"))
    with _web(inst) as web:
        _admin(inst, web)
        page = _test(web, box, "sending", smtp_port="99999")
        assert page.status == 422 and not page.all("#test-result")
        assert "SMTP port" in page.text(".error-summary")
        page = _test(web, box, "sending")  # outbox, no SMTP server: nothing to test
        assert page.status == 422
        assert page.text("#err-smtp_host") == "SMTP server: set an SMTP server to test."
        general = f"/settings/mailboxes/{box.id}?tab=general"
        resp = web.client.post(f"/settings/mailboxes/{box.id}/test?tab=general",
                               data=web.get(general).form(general))
        assert resp.url.path == f"/settings/mailboxes/{box.id}"  # no connection to test there


def test_members_cannot_test(inst: Instance, smtp: SmtpServer) -> None:
    box = _relay_box(inst, smtp)
    member = inst.accounts.create_user("m@example.com", PASSWORD)
    inst.store.set_memberships(member.id, [box.id])
    with _web(inst) as web:
        web.sign_in("m@example.com")
        page = web.get("/conversations")  # any page, for the CSRF token of the session
        resp = web.client.post(f"/settings/mailboxes/{box.id}/test?tab=sending",
                               data={"csrf": page.form("/logout")["csrf"]})
        assert resp.status_code == 403 and smtp.messages == []


def test_the_receiving_tab_tests_the_imap_account(imap_inst: Instance,
                                                  dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    box = _imap_box(imap_inst, user)
    with _web(imap_inst) as web:
        _admin(imap_inst, web)
        page = _test(web, box, "receiving")
        assert page.text("#test-result") == (
            f"It works: connected to 127.0.0.1:{dovecot.imaps_port}, TLS from the start, "
            f"signed in as {user.name}, folder 'INBOX' found.")
        page = _test(web, box, "receiving", imap_folder="Archive")
        assert page.text("#test-result") == ("It did not work: folder 'Archive' does not "
                                             "exist.")
        assert page.form(f"/settings/mailboxes/{box.id}?tab=receiving")["imap_folder"] == (
            "Archive")


def test_the_receiving_tab_says_when_the_imap_login_fails(
        tmp_path: Path, database_url: str, lone_user: ImapUser) -> None:
    inst = _instance(tmp_path, database_url, lone_user.server.ca_file)
    try:
        box = _imap_box(inst, lone_user)
        with _web(inst) as web:
            _admin(inst, web)
            page = _test(web, box, "receiving", imap_password="wrong")
            assert page.text("#test-result") == (
                "It did not work: login failed: wrong username or password.")
    finally:
        inst.close()


# -- the API -----------------------------------------------------------------------------

def test_the_api_tests_saved_settings(inst: Instance, smtp: SmtpServer) -> None:
    from mailseen.services.accounts import hash_token

    inst.store.add_token("tests", hash_token(API_TOKEN))
    good = _relay_box(inst, smtp)
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with WebClient(inst) as web:
        resp = web.client.post(f"/api/v1/mailboxes/{good.id}/test", json={"what": "smtp"},
                               headers=auth)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"what": "smtp", "ok": True, "message": (
            f"connected to 127.0.0.1:{smtp.port}, STARTTLS, signed in as relay-user")}
        inst.mailboxes.update(None, good.id, {"smtp_password": "wrong"})
        resp = web.client.post(f"/api/v1/mailboxes/{good.id}/test", json={"what": "smtp"},
                               headers=auth)
        assert resp.json() == {"what": "smtp", "ok": False,
                               "message": "login failed: wrong username or password"}
        resp = web.client.post(f"/api/v1/mailboxes/{good.id}/test", json={"what": "imap"},
                               headers=auth)
        assert resp.status_code == 422 and resp.json()["field"] == "imap_host"
        resp = web.client.post(f"/api/v1/mailboxes/{good.id}/test", json={"what": "pop3"},
                               headers=auth)
        assert resp.status_code == 422 and resp.json()["field"] == "what"
        resp = web.client.post("/api/v1/mailboxes/999/test", json={"what": "smtp"},
                               headers=auth)
        assert resp.status_code == 404


# -- the command line --------------------------------------------------------------------

class _ThreadCli(Cli):
    """`mailseen` in a thread of its own. `mailbox test` runs asyncio.run, which in the main
    thread would drop the idle event loop pytest-asyncio leaves current after an async test,
    unclosed, for the garbage collector to find during some later test."""

    def __call__(self, *args: str, input: bytes | str | None = None) -> Result:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(super().__call__, *args, input=input).result()


def _cli(tmp_path: Path, database_url: str, ca_file: str) -> Cli:
    return _ThreadCli({"MAILSEEN_DATA_DIR": str(tmp_path / "data"),
                       "MAILSEEN_DATABASE_URL": database_url, "MAILSEEN_SECRET_KEY": SECRET,
                       "MAILSEEN_CA_FILE": ca_file})


def test_mailbox_test_on_the_command_line(tmp_path: Path, database_url: str,
                                          smtp: SmtpServer) -> None:
    cli = _cli(tmp_path, database_url, smtp.ca_file or "")
    ok(cli("mailbox", "add", "support@example.com", "--transport", "smtp",
           "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp.port), "--smtp-username",
           "relay-user", "--smtp-password", "s3cret pass"))
    assert ok(cli("mailbox", "test", "support@example.com")) == (
        f"smtp: connected to 127.0.0.1:{smtp.port}, STARTTLS, signed in as relay-user\n")
    ok(cli("mailbox", "set", "support@example.com", "--smtp-password", "wrong"))
    assert error(cli("mailbox", "test", "support@example.com", "--smtp")) == (
        "mailseen: error: smtp: login failed: wrong username or password")
    assert error(cli("mailbox", "test", "support@example.com", "--imap"), 2) == (
        "mailseen: error: imap_host: set an IMAP server to test")
    ok(cli("mailbox", "add", "plain@example.com"))
    assert error(cli("mailbox", "test", "plain@example.com"), 2) == (
        "mailseen: error: the mailbox has no SMTP server and no IMAP server to test")


def test_mailbox_test_reads_imap_on_the_command_line(tmp_path: Path, database_url: str,
                                                     dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    cli = _cli(tmp_path, database_url, dovecot.ca_file)
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False)
    try:
        _imap_box(inst, user)
    finally:
        inst.close()
    assert ok(cli("mailbox", "test", "sales@example.test", "--imap")) == (
        f"imap: connected to 127.0.0.1:{dovecot.imaps_port}, TLS from the start, signed in "
        f"as {user.name}, folder 'INBOX' found\n")
