"""Bad input and attacks: the API fuzzed from its own OpenAPI document, every API route and page
tried by a member of another mailbox, CSRF on every form, secrets kept out of output and logs
and stored encrypted, the pixel under hostile requests, oversized requests refused.

docs/security.md lists each threat with the test here (or elsewhere) that covers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sqlalchemy import text
from starlette.routing import Route

from mailseen.core.compose import Draft
from mailseen.core.pixel import GIF
from mailseen.core.tokens import TokenRef
from mailseen.receivers import ImapPoller
from mailseen.records import MailboxIn, MailboxRecord, MessageRecord, UserRecord, ViewIn
from mailseen.services.accounts import hash_token
from mailseen.services.classification import REPEAT_REASON
from mailseen.services.instance import Instance
from mailseen.web.app import MailseenApp

from .cli_runner import Cli, ok
from .conftest import API_TOKEN, LiveServer, backdate_sent
from .smtp_server import SmtpServer
from .web_client import PASSWORD, WebClient

# The raw-message endpoint takes message/rfc822: fuzz it with arbitrary bytes.
schemathesis.serializer.alias("message/rfc822", "application/octet-stream")

SMTP_PASSWORD = "smtp-Pa55word-9f1c"
IMAP_PASSWORD = "imap-Pa55word-77e2"
MEMBER_TOKEN = "ms_member_token_3c5d"
BRAVO_SUBJECT = "Bravo secret subject 7731"
BRAVO_MARKERS = (BRAVO_SUBJECT, "bravo-customer@example.org", "smtp.bravo-secret.example",
                 "Bravo Team")
BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 Microsoft Outlook 16.0.17231")


# -- two teams ---------------------------------------------------------------------------------

@dataclass
class Teams:
    """Mailbox Alpha, whose member Ann is, and mailbox Bravo, which Ann must never reach."""

    alpha: MailboxRecord
    bravo: MailboxRecord
    alpha_msg: MessageRecord
    bravo_msg: MessageRecord
    ann: UserRecord
    bob: UserRecord  # a member of Bravo
    admin: UserRecord
    bob_app_password: int = 0  # the id of Bob's app password for his mail client

    def snapshot(self, instance: Instance) -> tuple[Any, ...]:
        """Everything of Bravo's that a forged request could change."""
        s = instance.store
        return (s.get_mailbox(self.bravo.id), s.list_messages(mailbox_id=self.bravo.id),
                s.list_views(self.bravo_msg.id), s.get_user(self.bob.id),
                s.get_setting("tracking_enabled", "false"), s.list_app_passwords(self.bob.id))


def _send(instance: Instance, box: MailboxRecord, to: str, subject: str) -> MessageRecord:
    msg = instance.sender.send_draft(box, Draft(from_addr="", to=[to], subject=subject,
                                                html=f"<p>{subject}</p>"))
    backdate_sent(instance, msg.id)
    return instance.store.get_message(msg.id)


@pytest.fixture
def teams(instance: Instance) -> Teams:
    s = instance.store
    alpha = s.add_mailbox(MailboxIn("alpha@example.com", "Alpha Team", tracking="enabled"))
    bravo = s.add_mailbox(MailboxIn(
        "bravo@example.com", "Bravo Team", transport="smtp", tracking="enabled",
        smtp_host="smtp.bravo-secret.example", smtp_username="bravo-user",
        smtp_password=SMTP_PASSWORD, imap_host="imap.bravo-secret.example",
        imap_username="bravo", imap_password=IMAP_PASSWORD))
    alpha_msg = _send(instance, alpha, "alpha-customer@example.org", "Alpha hello")
    bravo_msg = _send(instance, bravo, "bravo-customer@example.org", BRAVO_SUBJECT)
    for msg in (alpha_msg, bravo_msg):
        s.record_views([ViewIn(msg.id, 0, msg.created_at, "GET", "192.0.2.7", BROWSER, {})])
    ann = instance.accounts.create_user("ann@example.com", PASSWORD, name="Ann")
    s.set_memberships(ann.id, [alpha.id])
    bob = instance.accounts.create_user("bob@example.com", PASSWORD, name="Bob")
    s.set_memberships(bob.id, [bravo.id])
    admin = instance.accounts.create_user("root@example.com", PASSWORD, role="admin")
    s.add_token("ann's token", hash_token(MEMBER_TOKEN), user_id=ann.id)
    bobs, _ = instance.accounts.create_app_password(None, bob.id, "Thunderbird")
    return Teams(alpha, bravo, s.get_message(alpha_msg.id), s.get_message(bravo_msg.id),
                 s.get_user(ann.id), s.get_user(bob.id), admin, bobs.id)




def _assert_nothing_of_bravo(body: str, where: str) -> None:
    for marker in BRAVO_MARKERS:
        assert marker not in body, f"{where} shows {marker!r}"


# -- (a) the API fuzzed from its OpenAPI document ------------------------------------------------

def _assert_clear_refusal(resp: requests.Response | httpx.Response, what: str) -> None:
    assert resp.status_code < 500, f"{what}: {resp.status_code} {resp.text[:500]}"
    if resp.status_code < 400:
        return
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), (what, body)
    assert body["error"] and "\n" not in body["error"], (what, body)


def test_fuzzed_api_requests_get_answers_never_server_errors(live_server: LiveServer,
                                                             teams: Teams) -> None:
    doc = httpx.get(live_server.url + "/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    known = {"mailbox_id": teams.alpha.id, "message_id": teams.alpha_msg.id}
    session = requests.Session()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    statuses: list[int] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        fixed = {k: v for k, v in known.items() if f"{{{k}}}" in operation.path}
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
            # Ids that exist, so that the code behind the lookups runs too.
            *([operation.as_strategy(path_parameters=fixed)] if fixed else []))

        @settings(max_examples=10, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(cases)
        def call(case: Any) -> None:
            resp = case.call(base_url=live_server.url, session=session, headers=auth,
                             timeout=30)
            statuses.append(resp.status_code)
            _assert_clear_refusal(resp, case.as_curl_command(headers=auth))

        call()
    session.close()
    assert len(operations) >= 11
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)


def test_every_api_refusal_has_the_api_error_shape(live_server: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=live_server.url + "/api/v1", headers=auth) as api:
        for resp in (api.get("/no-such-route"), api.delete("/mailboxes"),
                     api.post("/mailboxes", content=b"[" * 50_000 + b"]" * 50_000,
                              headers={"Content-Type": "application/json"})):
            assert set(resp.json()) == {"error", "field"}, resp.text
            assert resp.json()["error"]


def test_an_unknown_mailbox_is_named_on_one_line(live_server: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    resp = httpx.post(f"{live_server.url}/api/v1/messages", headers=auth,
                      json={"mailbox": "x\r\nInjected: yes", "to": ["a@example.org"]})
    assert resp.status_code == 422
    assert resp.json()["error"].isprintable(), resp.json()


# -- (b) no IDOR: every API route and page, as a member of another mailbox -------------------

def _api_body(method: str, path: str, teams: Teams) -> dict[str, Any]:
    """A request each route would accept from someone allowed: only the rights can refuse."""
    if path == "/api/v1/messages/raw":
        raw = (b"From: bravo@example.com\r\nTo: x@example.org\r\nSubject: forged\r\n\r\nhi\r\n")
        return {"params": {"mailbox": teams.bravo.address}, "content": raw,
                "headers": {"Content-Type": "message/rfc822"}}
    bodies: dict[tuple[str, str], Any] = {
        ("post", "/api/v1/messages"): {"mailbox": teams.bravo.address, "to": ["x@example.org"],
                                       "subject": "forged", "text": "hi"},
        ("post", "/api/v1/mailboxes"): {"address": "new@example.com"},
        ("patch", "/api/v1/mailboxes/{mailbox_id}"): {"display_name": "pwned"},
        ("put", "/api/v1/settings"): {"tracking_enabled": True},
    }
    body = bodies.get((method, path))
    return {} if body is None else {"json": body}


def test_a_member_reaches_nothing_of_another_mailbox_through_any_api_route(
        live_server: LiveServer, teams: Teams, instance: Instance) -> None:
    doc = httpx.get(live_server.url + "/api/v1/openapi.json").json()
    before = teams.snapshot(instance)
    ids = {"mailbox_id": teams.bravo.id, "message_id": teams.bravo_msg.id,
           "webhook_id": 1, "delivery_id": 1}
    auth = {"Authorization": f"Bearer {MEMBER_TOKEN}"}
    tried = 0
    with httpx.Client(base_url=live_server.url) as client:
        for path, operations in doc["paths"].items():
            for method in operations:
                url = path.format(**ids)  # a new kind of id: add it to ``ids``
                kwargs = _api_body(method, path, teams)
                kwargs["headers"] = {**auth, **kwargs.get("headers", {})}
                resp = client.request(method.upper(), url, **kwargs)
                what = f"{method.upper()} {url}"
                _assert_nothing_of_bravo(resp.text, what)
                if "{" in path or method != "get":
                    assert resp.status_code in (403, 404, 422), (what, resp.text)
                tried += 1
        # Ids in the query string, and lists, are filtered the same way.
        resp = client.get("/api/v1/messages", params={"mailbox_id": teams.bravo.id},
                          headers=auth)
        assert resp.status_code == 404
        listed = client.get("/api/v1/messages", params={"limit": 500}, headers=auth).json()
        assert [m["id"] for m in listed] == [teams.alpha_msg.id]
        boxes = client.get("/api/v1/mailboxes", headers=auth).json()
        assert [b["id"] for b in boxes] == [teams.alpha.id]
    assert tried >= 10
    assert teams.snapshot(instance) == before


def _page_ids(teams: Teams) -> dict[str, int]:
    return {"conversation_id": teams.bravo_msg.conversation_id or 0,
            "message_id": teams.bravo_msg.id, "mailbox_id": teams.bravo.id,
            "user_id": teams.bob.id, "index": 0, "password_id": teams.bob_app_password,
            "token": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # a refusal link: not a genuine one
            "webhook_id": 1, "delivery_id": 1, "action": "enable"}


def _site_routes(instance: Instance) -> list[Route]:
    site = MailseenApp(instance, run_worker=False).site
    return [r for r in site.routes if isinstance(r, Route)]


def _fill(route: Route, ids: dict[str, int]) -> str:
    return route.path_format.format(**{name: ids[name] for name in route.param_convertors})


def test_a_member_reaches_nothing_of_another_mailbox_through_any_page(
        web: WebClient, teams: Teams, instance: Instance) -> None:
    web.sign_in("ann@example.com")
    csrf = web.get("/conversations").form("/logout")["csrf"]
    before = teams.snapshot(instance)
    ids = _page_ids(teams)
    tried = 0
    for route in _site_routes(instance):
        if route.path == "/logout":
            continue
        url = _fill(route, ids)
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            if method == "GET":
                resp = web.client.get(url, follow_redirects=False)
            else:
                resp = web.client.post(url, data={"csrf": csrf, "mailbox": str(teams.bravo.id),
                                                  "to": "x@example.org", "text": "forged",
                                                  "reply_to": str(teams.bravo_msg.id)},
                                       follow_redirects=False)
            what = f"{method} {url}"
            _assert_nothing_of_bravo(resp.text, what)
            if route.param_convertors and route.path not in ("/setup", "/login"):
                assert resp.status_code in (403, 404), (what, resp.status_code)
            tried += 1
    # Ids in query strings and form fields.
    for url in (f"/compose?mailbox={teams.bravo.id}", f"/reports?mailbox={teams.bravo.id}",
                f"/conversations/{teams.alpha_msg.conversation_id}/reply"
                f"?message={teams.bravo_msg.id}", "/conversations?q=Bravo", "/reports"):
        resp = web.client.get(url)
        _assert_nothing_of_bravo(resp.text, url)
        assert "bravo@example.com" not in resp.text, url
    resp = web.client.post("/compose", data={"csrf": csrf, "mailbox": str(teams.bravo.id),
                                             "to": "x@example.org", "text": "forged"})
    assert resp.status_code == 404
    assert tried >= 15
    assert teams.snapshot(instance) == before


def test_live_updates_carry_only_the_members_mailboxes(
        live_server: LiveServer, teams: Teams, instance: Instance) -> None:
    session = instance.accounts.start_session(teams.ann).cookie_value
    with httpx.Client(base_url=live_server.url, timeout=10,
                      headers={"Cookie": f"mailseen_session={session}"}) as client:
        cursor = client.get("/live", params={"scope": "all"}).json()["cursor"]
        for msg in (teams.bravo_msg, teams.alpha_msg):  # a fresh view in each mailbox
            instance.store.record_views([ViewIn(msg.id, 0, msg.created_at, "GET",
                                                "192.0.2.8", BROWSER + " again", {})])
        answer = client.get("/live", params={"scope": "all", "cursor": cursor})
        assert answer.status_code == 200
        [note] = answer.json()["notes"]
        assert note["url"] == f"/conversations/{teams.alpha_msg.conversation_id}"
        _assert_nothing_of_bravo(answer.text, "/live")
        for scope in (f"mailbox:{teams.bravo.id}",
                      f"conversation:{teams.bravo_msg.conversation_id}"):
            resp = client.get("/live", params={"scope": scope, "cursor": cursor})
            assert resp.status_code == 404
            _assert_nothing_of_bravo(resp.text, f"/live?scope={scope}")


# -- (c) CSRF on every form ---------------------------------------------------------------------

def test_every_form_refuses_a_post_without_its_csrf_token(web: WebClient, teams: Teams,
                                                          instance: Instance) -> None:
    web.sign_in("root@example.com")  # an admin: every form is open to them
    ids = {**_page_ids(teams), "user_id": teams.ann.id, "mailbox_id": teams.alpha.id,
           "conversation_id": teams.alpha_msg.conversation_id or 0,
           "message_id": teams.alpha_msg.id}
    before = (teams.snapshot(instance), instance.store.get_user(teams.ann.id),
              instance.store.list_mailboxes(), len(instance.store.list_messages(limit=500)))
    posted = []
    for route in _site_routes(instance):
        if "POST" not in (route.methods or ()):
            continue
        url = _fill(route, ids)
        for token in (None, "forged-token", ""):
            data = {"tracking": "on", "address": "csrf@example.com", "name": "Mallory",
                    "role": "admin", "password": "x" * 12, "password2": "x" * 12,
                    "confirm": "1", "mailbox": str(teams.alpha.id), "to": "x@example.org",
                    "text": "forged", "email": "ann@example.com"}
            if token is not None:
                data["csrf"] = token
            resp = web.client.post(url, data=data, follow_redirects=False)
            if route.path == "/setup":  # closed once a user exists: nothing to forge
                assert resp.status_code == 303 and resp.headers["location"] == "/login"
                continue
            assert resp.status_code == 403 and "Form expired" in resp.text, (url, token)
        posted.append(route.path)
    assert {"/login", "/logout", "/compose", "/settings", "/settings/users/new"} <= set(posted)
    after = (teams.snapshot(instance), instance.store.get_user(teams.ann.id),
             instance.store.list_mailboxes(), len(instance.store.list_messages(limit=500)))
    assert after == before
    assert web.get("/conversations").response.url.path == "/conversations"  # still signed in


def test_the_api_ignores_session_cookies(live_server: LiveServer, teams: Teams,
                                         instance: Instance) -> None:
    """Only a Bearer token authenticates the API, so a cross-site form or script riding on a
    signed-in browser's cookies gets nothing."""
    cookie = instance.accounts.start_session(teams.admin).cookie_value
    resp = httpx.put(f"{live_server.url}/api/v1/settings", json={"tracking_enabled": True},
                     headers={"Cookie": f"mailseen_session={cookie}"})
    assert resp.status_code == 401
    assert instance.mailboxes.global_tracking() is False


# -- (d) secrets --------------------------------------------------------------------------------

def test_secrets_never_appear_in_api_output_pages_or_cli(
        live_server: LiveServer, web: WebClient, teams: Teams, cli: Cli) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    outputs = [httpx.get(f"{live_server.url}/api/v1/mailboxes", headers=auth).text,
               httpx.get(f"{live_server.url}/api/v1/mailboxes/{teams.bravo.id}",
                         headers=auth).text,
               httpx.patch(f"{live_server.url}/api/v1/mailboxes/{teams.bravo.id}",
                           json={"smtp_password": SMTP_PASSWORD + "2"}, headers=auth).text]
    web.sign_in("root@example.com")
    for tab in ("general", "sending", "receiving", "tracking"):
        outputs.append(web.client.get(f"/settings/mailboxes/{teams.bravo.id}?tab={tab}").text)
    outputs.append(ok(cli("mailbox", "show", "bravo@example.com")))
    outputs.append(ok(cli("token", "list")))
    for out in outputs:
        for secret in (SMTP_PASSWORD, IMAP_PASSWORD, API_TOKEN, MEMBER_TOKEN):
            assert secret not in out
    assert json.loads(outputs[1])["has_smtp_password"] is True


def test_secrets_are_stored_encrypted_or_hashed(teams: Teams, instance: Instance) -> None:
    with instance.db.engine.connect() as conn:
        smtp, imap = conn.execute(text(
            "SELECT smtp_password_enc, imap_password_enc FROM mailboxes WHERE id = :id"),
            {"id": teams.bravo.id}).one()
        tokens = [r[0] for r in conn.execute(text("SELECT token_hash FROM api_tokens"))]
        hashes = [r[0] for r in conn.execute(text("SELECT password_hash FROM users"))]
        everything = " ".join(str(v) for table in ("mailboxes", "api_tokens", "users")
                              for row in conn.execute(text(f"SELECT * FROM {table}"))
                              for v in row)
    assert instance.store.cipher.decrypt(smtp) == SMTP_PASSWORD
    assert instance.store.cipher.decrypt(imap) == IMAP_PASSWORD
    assert hash_token(MEMBER_TOKEN) in tokens
    assert all(h.startswith("$argon2id$") for h in hashes)
    for secret in (SMTP_PASSWORD, IMAP_PASSWORD, API_TOKEN, MEMBER_TOKEN, PASSWORD):
        assert secret not in everything


class RefusingImap:
    """An IMAP server that greets, then refuses every LOGIN."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RefusingImap:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
        while line := await reader.readline():
            tag, _, command = line.decode(errors="replace").partition(" ")
            if command.upper().startswith("CAPABILITY"):
                writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
                writer.write(f"{tag} OK done\r\n".encode())
            elif command.upper().startswith("LOGOUT"):
                writer.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                break
            else:
                writer.write(f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials\r\n".encode())
            await writer.drain()
        writer.close()

    def __exit__(self, *exc: object) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def test_secrets_never_reach_the_logs_or_stored_errors(
        tmp_path: Path, live_server: LiveServer, teams: Teams, instance: Instance,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    users = {"relay-user": "the-right-relay-password"}
    relay = SmtpServer("none", users).start(tmp_path)
    try:
        with RefusingImap() as imap:
            async with httpx.AsyncClient(base_url=live_server.url + "/api/v1") as api:
                auth = {"Authorization": f"Bearer {API_TOKEN}"}
                made = await api.post("/mailboxes", headers=auth, json={
                    "address": "relay@example.com", "transport": "smtp",
                    "smtp_host": "127.0.0.1", "smtp_port": relay.port, "smtp_tls": "none",
                    "smtp_username": "relay-user", "smtp_password": SMTP_PASSWORD,
                    "imap_host": "127.0.0.1", "imap_port": imap.port, "imap_tls": "none",
                    "imap_username": "relay-user", "imap_password": IMAP_PASSWORD})
                assert made.status_code == 201, made.text
                await api.get("/mailboxes", headers={"Authorization": f"Bearer {MEMBER_TOKEN}"})
                await api.get("/mailboxes", headers={"Authorization": "Bearer ms_wrong_token"})
                sent = await api.post("/messages", headers=auth, json={
                    "mailbox": "relay@example.com", "to": ["x@example.org"], "text": "hi"})
            box_id = made.json()["id"]
            deadline = time.monotonic() + 20  # the server's worker tries the relay: 535
            while instance.store.get_message(sent.json()["id"]).status != "failed":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            [account] = [a for a in instance.store.imap_accounts() if a.mailbox_id == box_id]
            with pytest.raises(Exception, match=r"(?i)auth|credential|login"):
                poller = ImapPoller(instance.mailboxes, instance.ingestor, timeout=5)
                await poller.poll_once(account)
    finally:
        relay.stop()
    failed = instance.store.get_message(sent.json()["id"])
    box = instance.store.get_mailbox(box_id)
    assert "refused the user name or password (535" in (failed.last_error or "")
    assert box.imap_status == "error" and box.imap_error
    for where in (caplog.text, failed.last_error or "", box.imap_error or ""):
        for secret in (SMTP_PASSWORD, IMAP_PASSWORD, API_TOKEN, MEMBER_TOKEN):
            assert secret not in where


# -- (e) the pixel under hostile requests ------------------------------------------------------

def _raw_http(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` as is; the whole answer (the server closes: Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # refused part-way: read what the server said
            sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def tracked(instance: Instance) -> tuple[int, str]:
    box = instance.store.add_mailbox(MailboxIn("support@example.com", tracking="enabled"))
    msg = _send(instance, box, "reader@example.org", "Hello")
    return msg.id, instance.signer.make(TokenRef(msg.id))


HOSTILE = [  # (what, request line, extra headers); {token} is the genuine token
    ("a 64 KB User-Agent", b"GET /t/{token}.gif", b"User-Agent: " + b"U" * 65536 + b"\r\n"),
    ("a thousand headers", b"GET /t/{token}.gif",
     b"".join(b"X-H%d: v\r\n" % i for i in range(1000))),
    ("a 60 KB path", b"GET /t/" + b"A" * 60_000 + b".gif", b""),
    ("dot segments", b"GET /t/../api/v1/settings", b""),
    ("encoded dot segments", b"GET /t/%2e%2e/%2e%2e/api/v1/mailboxes", b""),
    ("a traversal-shaped token", b"GET /t/..%2f..%2f..%2fetc%2fpasswd.gif", b""),
    ("an absolute URI", b"GET http://evil.example/t/{token}.gif", b""),
    ("a query string", b"GET /t/{token}.gif?x=../../api", b""),
    ("HTTP/1.0", b"GET /t/{token}.gif", b""),
    ("HEAD", b"HEAD /t/{token}.gif", b""),
]


def test_the_pixel_answers_hostile_requests_with_the_image(
        live_server: LiveServer, instance: Instance, tracked: tuple[int, str]) -> None:
    mid, token = tracked
    for name, request_line, headers in HOSTILE:
        version = b" HTTP/1.0\r\n" if name == "HTTP/1.0" else b" HTTP/1.1\r\nHost: t\r\n"
        before = len(instance.store.list_views(mid))
        answer = _raw_http(live_server.port, request_line.replace(b"{token}", token.encode())
                           + version + headers + b"Connection: close\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert _status(answer) == 200 and b"content-type: image/gif" in head.lower(), name
        assert body == (b"" if name == "HEAD" else GIF), name
        views = instance.store.list_views(mid)
        # The genuine token is recorded once, with bounded headers; nothing else is.
        assert len(views) == before + (b"{token}" in request_line), name
        assert all(len(v.user_agent or "") <= 1024 for v in views), name


def test_other_methods_on_the_pixel_are_405_and_record_nothing(
        live_server: LiveServer, instance: Instance, tracked: tuple[int, str]) -> None:
    mid, token = tracked
    for method in (b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE", b"PROPFIND"):
        answer = _raw_http(live_server.port, method + b" /t/" + token.encode() + b".gif "
                           b"HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                           b"Connection: close\r\n\r\nhello")
        assert _status(answer) == 405 and b"allow: get, head" in answer.lower(), method
    assert instance.store.list_views(mid) == []


def test_unparsable_requests_are_refused_by_the_http_layer_and_the_server_carries_on(
        live_server: LiveServer, tracked: tuple[int, str]) -> None:
    close = b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    for request in (b"GET /t/" + b"A" * 70_000 + b".gif" + close, b"GET /t/\x00.gif" + close,
                    b"BREW /t/x.gif" + close,
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64):
        answer = _raw_http(live_server.port, request)
        # Refused by the HTTP parser, or (a parser that takes it) the pixel's own answer.
        assert (answer == b"" or 400 <= _status(answer) < 500
                or (_status(answer) == 200 and answer.endswith(GIF))), answer[:200]
    assert httpx.get(f"{live_server.url}/t/{tracked[1]}.gif").content == GIF


def test_megabytes_of_headers_are_refused(live_server: LiveServer) -> None:
    answer = _raw_http(live_server.port, b"GET /t/x.gif HTTP/1.1\r\nHost: t\r\nX-Big: "
                       + b"B" * (4 << 20) + b"\r\nConnection: close\r\n\r\n")
    assert answer == b"" or 400 <= _status(answer) < 500


def test_one_client_replaying_a_token_counts_once(live_server: LiveServer,
                                                  instance: Instance,
                                                  tracked: tuple[int, str]) -> None:
    mid, token = tracked
    with httpx.Client() as client:
        for _ in range(20):
            client.get(f"{live_server.url}/t/{token}.gif", headers={"User-Agent": BROWSER})
        client.get(f"{live_server.url}/t/{token}.gif", headers={"User-Agent": BROWSER + " 2"})
    msg = instance.store.get_message(mid)
    assert (msg.view_count, msg.machine_count) == (2, 19)
    repeats = [v for v in instance.store.list_views(mid) if v.reason == REPEAT_REASON]
    assert len(repeats) == 19


def test_random_paths_under_the_pixel_always_get_the_image(instance: Instance,
                                                           tracked: tuple[int, str]) -> None:
    """Straight into the ASGI app, so that no client tidies the paths up first."""
    mid, token = tracked
    app = MailseenApp(instance, run_worker=False)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(app.recorder.start())
    genuine = 0

    async def get(method: str, path: str, header: bytes) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "method": method, "path": path,
                   "raw_path": quote(path, safe="/%").encode(), "query_string": b"",
                   "headers": [(b"user-agent", header), (b"x-forwarded-for", header)],
                   "client": ("198.51.100.4", 4242), "server": ("t", 80), "scheme": "http",
                   "http_version": "1.1", "root_path": "", "asgi": {"version": "3.0"}},
                  receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    token_chars = st.sampled_from(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    near_tokens = st.builds(lambda cut, extra: token[:cut] + extra,
                            st.integers(0, len(token)), st.text(token_chars, max_size=3))
    paths = st.one_of(st.text(max_size=300), near_tokens.map(lambda t: t + ".gif"))

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(paths, st.sampled_from(["GET", "HEAD"]), st.binary(max_size=2000))
    def fetch(tail: str, method: str, header: bytes) -> None:
        nonlocal genuine
        status, body = loop.run_until_complete(get(method, "/t/" + tail, header))
        assert status == 200 and body == (GIF if method == "GET" else b"")
        if tail == f"{token}.gif":
            genuine += 1

    try:
        fetch()
    finally:
        loop.run_until_complete(app.recorder.stop())
        loop.close()
    # Nothing but the genuine token was ever recorded.
    assert len(instance.store.list_views(mid)) == genuine


# -- (f) oversized requests ---------------------------------------------------------------------

def _post_in_chunks(port: int, head: bytes, total: int, chunk: int = 1 << 20) -> bytes:
    """POST ``total`` bytes with chunked transfer encoding, stopping when the server stops
    reading; then its answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        piece = b"%x\r\n" % chunk + b"x" * chunk + b"\r\n"
        try:
            for _ in range(total // chunk):
                sock.sendall(piece)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # refused part-way: read the answer
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
        return answer
    finally:
        sock.close()


def _declared_only(port: int, head: bytes, size: int, wait: float = 1.5) -> bytes:
    """Send only the headers of a ``size``-byte request: a server that checks sizes first
    answers at once, one that reads the body first waits."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""


def _raw_head(teams: Teams) -> bytes:
    return (b"POST /api/v1/messages/raw?mailbox=" + teams.alpha.address.encode()
            + b" HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + API_TOKEN.encode()
            + b"\r\nContent-Type: message/rfc822\r\n")


def test_a_raw_message_over_50_mb_is_refused_with_413(live_server: LiveServer,
                                                      teams: Teams,
                                                      instance: Instance) -> None:
    answer = _post_in_chunks(live_server.port, _raw_head(teams), 51 << 20)
    assert _status(answer) == 413, answer[:300]
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body == {"error": "request body larger than 50 MB", "field": "body"}
    assert len(instance.store.list_messages(mailbox_id=teams.alpha.id)) == 1  # nothing added
    assert httpx.get(f"{live_server.url}/api/v1/health").status_code == 200


def test_a_raw_message_declared_over_50_mb_is_refused_before_it_is_read(
        live_server: LiveServer, teams: Teams) -> None:
    answer = _declared_only(live_server.port, _raw_head(teams), 60 << 20)
    assert answer and _status(answer) == 413


def test_a_json_body_declared_at_200_mb_is_refused_before_it_is_read(
        live_server: LiveServer) -> None:
    head = (b"POST /api/v1/messages HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
            + API_TOKEN.encode() + b"\r\nContent-Type: application/json\r\n")
    answer = _declared_only(live_server.port, head, 200 << 20)
    assert answer and _status(answer) == 413


def test_ten_megabytes_of_nested_json_is_a_4xx(live_server: LiveServer) -> None:
    depth = 5 << 20
    resp = httpx.post(f"{live_server.url}/api/v1/messages", content=b"[" * depth + b"]" * depth,
                      headers={"Authorization": f"Bearer {API_TOKEN}",
                               "Content-Type": "application/json"}, timeout=60)
    assert 400 <= resp.status_code < 500
    assert httpx.get(f"{live_server.url}/api/v1/health").status_code == 200


def test_a_form_declared_over_30_mb_is_refused_at_once(live_server: LiveServer,
                                                       teams: Teams,
                                                       instance: Instance) -> None:
    cookie = instance.accounts.start_session(teams.ann).cookie_value
    head = (b"POST /compose HTTP/1.1\r\nHost: t\r\nCookie: mailseen_session=" + cookie.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=xyz\r\n")
    answer = _declared_only(live_server.port, head, 31 << 20)
    assert answer and _status(answer) == 413 and b"larger than 30 MB" in answer


def test_a_form_with_too_many_fields_is_refused(web: WebClient, teams: Teams) -> None:
    web.sign_in("ann@example.com")
    csrf = web.get("/compose").form("/compose")["csrf"]
    resp = web.client.post("/compose", data={"csrf": csrf, **{f"f{i}": "x" for i in range(500)}},
                           files={"attachments": ("a.txt", b"x", "text/plain")})
    assert resp.status_code == 400


def test_a_chunked_upload_over_30_mb_is_refused(live_server: LiveServer, teams: Teams,
                                                instance: Instance) -> None:
    cookie = instance.accounts.start_session(teams.ann).cookie_value
    head = (b"POST /compose HTTP/1.1\r\nHost: t\r\nCookie: mailseen_session=" + cookie.encode()
            + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n")
    answer = _post_in_chunks(live_server.port, head, 31 << 20)
    assert _status(answer) == 413, answer[:200]
