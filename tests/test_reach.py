"""Whether recipients can reach the pixel: the public URL judged (loopback, private networks,
local names, plain http), and where an admin is told: every page, compose, `mailseen
settings show`, the API, and the tracking decision of a message sent in vain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseen.core.compose import Draft
from mailseen.core.reach import host_reach, public_url_reach, reach_warning
from mailseen.records import MailboxIn
from mailseen.services.instance import Instance

from .cli_runner import Cli, ok
from .conftest import SECRET, make_settings
from .web_client import PASSWORD, WebClient


@pytest.mark.parametrize(("url", "words"), [
    ("http://127.0.0.1:8000", "loopback"),
    ("http://127.1:8000", "loopback"),  # as a browser reads it
    ("http://[::1]:8000", "loopback"),
    ("https://0x7f.1", "loopback"),
    ("http://localhost:8000", "this machine only"),
    ("https://mailseen.localhost", "this machine only"),
    ("https://0.0.0.0", "unspecified"),
    ("https://10.1.2.3", "private network address (RFC 1918)"),
    ("https://172.20.0.1/mailseen", "private network address (RFC 1918)"),
    ("https://192.168.1.5", "private network address (RFC 1918)"),
    ("https://[::ffff:192.168.1.5]", "private network address (RFC 1918)"),
    ("https://169.254.10.1", "link-local"),
    ("https://[fe80::1]", "link-local"),
    ("https://[fd12:3456::1]", "unique local IPv6"),
    ("https://100.64.0.1", "carrier-grade NAT"),
    ("https://192.0.2.10", "reserved address"),
    ("https://mailseen.local", ".local"),
    ("https://mailseen.home.arpa", ".home.arpa"),
    ("https://mailseen.internal", ".internal"),
    ("https://mailseen", "single-label name"),
    ("https://MAILSEEN.LOCAL.", ".local"),
])
def test_urls_recipients_cannot_reach_say_why(url: str, words: str) -> None:
    reach = public_url_reach(url)
    assert reach.level == "unreachable" and not reach.reachable
    assert reach.problem is not None and words in reach.problem
    assert reach.message is not None
    assert reach.message.startswith(f"The pixel URL {url.rstrip('/')} is not reachable by "
                                    "recipients: its host is ")


def test_plain_http_on_a_public_host_is_a_warning() -> None:
    reach = public_url_reach("http://track.example.com/")
    assert reach.level == "warning" and reach.reachable
    assert reach.url == "http://track.example.com"
    assert reach.message is not None and "plain http" in reach.message
    assert "use https" in reach.message


@pytest.mark.parametrize("url", ["https://track.example.com", "https://8.8.8.8/ms",
                                 "https://[2001:4860:4860::8888]", "https://a.b.example:8443"])
def test_a_public_https_url_is_fine(url: str) -> None:
    reach = public_url_reach(url)
    assert (reach.level, reach.problem, reach.message) == ("ok", None, None)


def test_a_url_that_is_not_http_is_unreachable() -> None:
    assert public_url_reach("ftp://example.com").level == "unreachable"
    assert public_url_reach("not a url").level == "unreachable"


def test_host_names_and_addresses() -> None:
    assert host_reach("example.com") is None
    assert host_reach("[::1]") is not None
    assert host_reach("") == "no host"
    assert host_reach("fe80::1%eth0") is not None  # a zone id


def test_the_warning_depends_on_where_the_recipients_are() -> None:
    loopback = "http://127.0.0.1:8000"
    assert reach_warning(loopback, ["ann@example.com"]) == (
        "the pixel URL http://127.0.0.1:8000 is not reachable by recipients")
    assert reach_warning(loopback, ["ann@localhost", "bob@example.com"]) is not None
    # Recipients on names only the local network knows may well be on this network.
    assert reach_warning(loopback, ["ann@localhost", "bob@intranet"]) is None
    assert reach_warning("https://track.example.com", ["ann@example.com"]) is None
    assert reach_warning("http://track.example.com", ["ann@example.com"]) is None  # reachable


# -- the message's tracking decision ------------------------------------------------------

def _send(instance: Instance, to: str, tracking: str = "enabled", html: str = "<p>Hi</p>"
          ) -> tuple[bool, str]:
    box = instance.store.add_mailbox(MailboxIn(address=f"{tracking}-{to}".replace("@", ".")
                                               + "@example.com", tracking=tracking))  # type: ignore[arg-type]
    sent = instance.sender.send_draft(box, Draft(from_addr="", to=[to], subject="Hi",
                                                 html=html))
    return sent.tracked, sent.tracking_reason


def test_tracked_mail_to_the_outside_carries_the_warning(instance: Instance) -> None:
    assert instance.settings.base_url == "http://127.0.0.1:8000"
    assert _send(instance, "ann@example.org") == (
        True, "enabled by mailbox setting; the pixel URL http://127.0.0.1:8000 is not "
              "reachable by recipients")
    assert _send(instance, "ann@desk.local") == (True, "enabled by mailbox setting")
    # Not tracked: nothing to warn about.
    assert _send(instance, "bob@example.org", "disabled") == (
        False, "disabled by mailbox setting")


def test_a_reachable_public_url_adds_nothing(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, public_url="https://track.example.com")
    inst = Instance.open(settings, migrate=False)
    try:
        assert _send(inst, "ann@example.org") == (True, "enabled by mailbox setting")
    finally:
        inst.close()


# -- where admins are told ---------------------------------------------------------------

@pytest.fixture
def web(instance: Instance) -> Iterator[WebClient]:
    with WebClient(instance) as client:
        yield client


def test_admins_see_the_warning_on_every_page(web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    box = instance.store.add_mailbox(MailboxIn(address="support@example.com"))
    web.sign_in("ada@example.com")
    for url in ["/conversations", "/compose", "/reports", "/settings",
                f"/settings/mailboxes/{box.id}?tab=sending"]:
        page = web.get(url)
        assert page.status == 200, url
        text = page.text("#reach-warning")
        assert "Views cannot be recorded." in text, url
        assert "The pixel URL http://127.0.0.1:8000 is not reachable by recipients" in text
        assert "MAILSEEN_PUBLIC_URL" in text
    assert not web.get("/compose").all("#reach-note")  # the banner says it for admins


def test_members_see_it_only_on_compose(web: WebClient, instance: Instance) -> None:
    user = instance.accounts.create_user("m@example.com", PASSWORD)
    box = instance.store.add_mailbox(MailboxIn(address="support@example.com"))
    instance.store.set_memberships(user.id, [box.id])
    web.sign_in("m@example.com")
    assert not web.get("/conversations").all("#reach-warning")
    page = web.get("/compose")
    assert not page.all("#reach-warning")
    assert "Views of this message cannot be recorded" in page.text("#reach-note")
    assert "http://127.0.0.1:8000" in page.text("#reach-note")


def _admin_instance(tmp_path: Path, database_url: str, public_url: str) -> Instance:
    inst = Instance.open(make_settings(tmp_path, database_url, public_url=public_url),
                         migrate=False)
    inst.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    return inst


def test_no_banner_when_recipients_can_reach_us(tmp_path: Path, database_url: str) -> None:
    inst = _admin_instance(tmp_path, database_url, "https://track.example.com")
    try:
        with WebClient(inst) as web:
            web.sign_in("ada@example.com")
            assert not web.get("/conversations").all("#reach-warning")
            assert not web.get("/compose").all("#reach-note")
    finally:
        inst.close()


def test_plain_http_is_a_milder_banner(tmp_path: Path, database_url: str) -> None:
    inst = _admin_instance(tmp_path, database_url, "http://track.example.com")
    try:
        with WebClient(inst) as web:
            web.sign_in("ada@example.com")
            page = web.get("/conversations")
            assert "banner-warning" in page.soup.select_one("#reach-warning")["class"]
            assert "Check the public URL." in page.text("#reach-warning")
            assert not web.get("/compose").all("#reach-note")  # views still come
    finally:
        inst.close()


def test_settings_show_names_the_public_url_and_its_problem(tmp_path: Path,
                                                            database_url: str) -> None:
    env = {"MAILSEEN_DATA_DIR": str(tmp_path / "data"), "MAILSEEN_DATABASE_URL": database_url,
           "MAILSEEN_SECRET_KEY": SECRET}
    lines = ok(Cli(env)("settings", "show")).splitlines()
    assert lines[0] == "tracking: off"
    # the public URL comes last, with what is wrong with it
    at = lines.index("public URL: http://127.0.0.1:8000")
    assert lines[at + 1].startswith("warning: the pixel URL http://127.0.0.1:8000 is not "
                                    "reachable by recipients: its host is a loopback address")
    assert "MAILSEEN_PUBLIC_URL" in lines[at + 1] and len(lines) == at + 2
    public = Cli({**env, "MAILSEEN_PUBLIC_URL": "https://track.example.com/"})
    shown = ok(public("settings", "show")).splitlines()
    assert shown[-1] == "public URL: https://track.example.com"
    assert not any(line.startswith("warning:") for line in shown)


def test_the_api_reports_it(instance: Instance) -> None:
    from .conftest import API_TOKEN

    with WebClient(instance) as web:
        body = web.client.get("/api/v1/settings",
                              headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
    assert body["public_url"] == "http://127.0.0.1:8000"
    assert body["public_url_reach"] == "unreachable"
    assert body["public_url_problem"].startswith(
        "The pixel URL http://127.0.0.1:8000 is not reachable by recipients")
