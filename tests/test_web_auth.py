"""Sign-in, first-run setup, sessions, CSRF and throttling, through the real pages."""

from __future__ import annotations

from mailseen.services.instance import Instance

from .web_client import PASSWORD, WebClient


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
