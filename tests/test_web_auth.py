"""Sign-in, first-run setup, sessions, CSRF and throttling, through the real pages."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from mailseen.services.instance import Instance
from mailseen.web.app import MailseenApp

from .conftest import make_settings
from .web_client import PASSWORD, Page, WebClient


def test_first_run_setup_creates_the_admin_and_then_closes(web: WebClient,
                                                          instance: Instance) -> None:
    page = web.get("/")
    assert page.response.url.path == "/setup"
    page = web.submit(page, "/setup", name="Ada", email="ada@example.com",
                      password=PASSWORD, password2=PASSWORD)
    assert page.status == 200
    [(user, _)] = [instance.store.find_user("ada@example.com")]  # type: ignore[misc]
    assert user.is_admin
    # Signed in straight away; and the setup page is gone for good.
    assert web.get("/conversations").response.url.path == "/conversations"
    web.client.cookies.clear()
    assert web.get("/setup").response.url.path == "/login"
    resp = web.client.post("/setup", data={"email": "eve@example.com", "password": "x" * 12,
                                          "password2": "x" * 12, "csrf": "x"})
    assert instance.store.find_user("eve@example.com") is None
    assert resp.url.path == "/login"


def test_setup_refuses_bad_input_with_a_message(web: WebClient) -> None:
    page = web.get("/setup")
    page = web.submit(page, "/setup", email="ada@example.com", password="short",
                      password2="short")
    assert page.status == 422
    assert "at least 10 characters" in page.text(".error")
    page = web.submit(page, "/setup", email="ada@example.com", password=PASSWORD,
                      password2=PASSWORD + "x")
    assert "differ" in page.text(".error")


def test_sign_in_and_out(web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("m@example.com", PASSWORD)
    page = web.get("/conversations")
    assert page.response.url.path == "/login"  # pages need a user
    page = web.sign_in("m@example.com")
    assert page.response.url.path == "/conversations"
    cookie = page.response.history[0].headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    page = web.submit(page, "/logout")
    assert page.response.url.path == "/login"
    assert web.get("/conversations").response.url.path == "/login"


def test_wrong_password_is_refused_then_slowed_then_locked(web: WebClient,
                                                           instance: Instance) -> None:
    instance.accounts.create_user("m@example.com", PASSWORD)
    statuses = [web.sign_in("m@example.com", "wrong password!").status for _ in range(12)]
    assert statuses[0] == 401
    assert 429 in statuses  # slowed down, then refused for a while
    page = web.sign_in("m@example.com")  # even the right password waits now
    assert page.status == 429 and "try again later" in page.text(".error")
    assert "Retry-After" in page.response.headers


def test_forms_without_the_csrf_token_are_refused(web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("m@example.com", PASSWORD)
    resp = web.client.post("/login", data={"email": "m@example.com", "password": PASSWORD})
    assert resp.status_code == 403
    assert "Form expired" in resp.text
    web.sign_in("m@example.com")
    resp = web.client.post("/logout", data={"csrf": "forged"})
    assert resp.status_code == 403


def test_next_parameter_never_leaves_the_site(web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("m@example.com", PASSWORD)
    page = web.get("/login?next=//evil.example/x")
    page = web.submit(page, "/login", email="m@example.com", password=PASSWORD)
    assert page.response.url.host == "testserver"


def test_pages_send_security_headers(web: WebClient) -> None:
    resp = web.get("/login").response
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["x-content-type-options"] == "nosniff"


def _behind_proxy(tmp_path: Path, database_url: str) -> tuple[Instance, TestClient]:
    """The app as the documented reverse proxy (192.0.2.1, trusted) reaches it."""
    inst = Instance.open(make_settings(tmp_path, database_url, trusted_proxies="192.0.2.1"),
                         migrate=False)
    client = TestClient(MailseenApp(inst, run_worker=False), base_url="http://testserver",
                        follow_redirects=True, client=("192.0.2.1", 40000))
    return inst, client


def _sign_in_from(client: TestClient, address: str, email: str, password: str) -> int:
    """Sign in through the form as the client at ``address`` behind the proxy; the status."""
    client.cookies.clear()
    headers = {"X-Forwarded-For": address}
    page = Page(client.get("/login", headers=headers))
    data = {**page.form("/login"), "email": email, "password": password}
    resp = client.post("/login", data=data, headers=headers)
    return 200 if resp.url.path == "/conversations" else resp.status_code


def test_a_guesser_behind_the_proxy_locks_out_only_itself(tmp_path: Path,
                                                          database_url: str) -> None:
    inst, client = _behind_proxy(tmp_path, database_url)
    with client:
        inst.accounts.create_user("m@example.com", PASSWORD)
        inst.accounts.create_user("t@example.com", PASSWORD)
        guesses = [_sign_in_from(client, "203.0.113.66", "m@example.com", "wrong password!")
                   for _ in range(12)]
        assert guesses[-1] == 429
        assert _sign_in_from(client, "203.0.113.66", "m@example.com", PASSWORD) == 429
        # The account's owner and a teammate, each from their own address: let in.
        assert _sign_in_from(client, "198.51.100.7", "m@example.com", PASSWORD) == 200
        assert _sign_in_from(client, "198.51.100.8", "t@example.com", PASSWORD) == 200
    inst.close()


def test_forwarded_for_from_an_untrusted_peer_does_not_escape_the_throttle(
        web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("m@example.com", PASSWORD)
    statuses = []
    for n in range(12):  # a new forged address each time, straight to the app
        web.client.headers["X-Forwarded-For"] = f"198.51.100.{n + 1}"
        statuses.append(web.sign_in("m@example.com", "wrong password!").status)
    assert statuses[-1] == 429


def test_a_form_that_cannot_be_read_is_a_400_page_not_a_crash(web: WebClient,
                                                             instance: Instance) -> None:
    instance.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    web.get("/login")
    bodies = [
        ("multipart/form-data; boundary=x", b"garbage"),  # no boundary where one must be
        ('multipart/form-data; boundary="\xff"', b"--x\r\n"),
    ]
    for content_type, body in bodies:
        resp = web.client.post("/login", content=body,
                               headers={"content-type": content_type.encode("latin-1")})
        assert resp.status_code == 400
        assert "could not be read" in resp.text and "Traceback" not in resp.text
    # A CSRF token with characters compare_digest refuses is just a wrong token.
    for data in ({"csrf": "\u00e9t\u00e9", "email": "ada@example.com"},):
        assert web.client.post("/login", data=data).status_code == 403
