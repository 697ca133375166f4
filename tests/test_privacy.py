"""Privacy and consent (docs/privacy.md): the tracking policy decides each copy at sending,
consents and the do-not-track list reach mail already sent at the pixel, consent records
form a chain that shows tampering, and every change to a tracking or privacy setting is in
the audit log. Every edge: the services, the web app, the API and the CLI."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text, update

from mailseen.core.compose import Draft
from mailseen.core.inject import tag_message
from mailseen.core.tokens import TokenRef
from mailseen.errors import InvalidInput, NotFound
from mailseen.records import MailboxIn, MailboxRecord, MessageRecord
from mailseen.services.instance import Instance
from mailseen.services.mailboxes import Forbidden
from mailseen.storage.models import ConsentEvent, ViewEvent

from .cli_runner import Cli, error, ok
from .conftest import API_TOKEN, LiveServer, backdate_sent, html_of
from .smtp_server import SmtpServer
from .web_client import PASSWORD, Page, WebClient

OUTLOOK = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 Microsoft Outlook 16.0.17231")
TOKEN = re.compile(rb"/t/([A-Za-z0-9_-]{31})\.gif")
LINK = re.compile(rb"/r/([A-Za-z0-9_-]{31})\"")
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def _box(instance: Instance, **kw: object) -> MailboxRecord:
    options: dict[str, object] = {"tracking": "enabled", **kw}
    return instance.store.add_mailbox(MailboxIn("sales@example.com", "Acme Sales",
                                                **options))  # type: ignore[arg-type]


def _send(instance: Instance, box: MailboxRecord, to: list[str],
          bcc: list[str] | None = None) -> MessageRecord:
    draft = Draft(from_addr=box.address, to=to, bcc=bcc or [], subject="Offer",
                  text="Our offer", html="<p>Our offer</p>")
    return instance.sender.send_draft(box, draft)


def _copies(instance: Instance, msg: MessageRecord) -> dict[str | None, object]:
    return {c.recipient: c for c in instance.store.copies_of([msg.id])[msg.id]}


def _token(instance: Instance, key: int | None) -> str:
    assert key is not None
    return instance.signer.make(TokenRef(copy_key=key))


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer("none").start(tmp_path)
    yield server
    server.stop()


# -- deciding at sending ------------------------------------------------------------------

def test_everyone_tracks_every_recipient_with_the_reason_as_before(instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org", "frank@example.org"])
    assert msg.tracked and msg.copies == 2
    assert msg.tracking_reason.startswith("enabled by mailbox setting")
    assert "policy" not in msg.tracking_reason
    copies = _copies(instance, msg)
    assert {r: (c.pixel, c.reason) for r, c in copies.items()} == {  # type: ignore[attr-defined]
        "erin@example.org": ("personal", "tracked: every recipient is tracked"),
        "frank@example.org": ("personal", "tracked: every recipient is tracked")}


def test_a_refused_recipient_gets_mail_without_a_pixel_under_every_policy(
        instance: Instance) -> None:
    instance.consents.set_consent(None, "Erin@Example.org", "refused", "cli")
    for policy in ("everyone", "unless-refused", "with-consent", "aggregate"):
        instance.consents.set_global_policy(None, policy)
        box = _box(instance) if policy == "everyone" else instance.store.find_mailbox(
            "sales@example.com")
        msg = _send(instance, box, ["erin@example.org"])
        assert not msg.tracked, policy
        assert msg.tracking_reason == "not tracked: erin@example.org refused tracking"
        [copy] = instance.store.copies_of([msg.id])[msg.id]
        assert copy.token_key is None and copy.recipient is None


def test_with_consent_follows_only_recipients_who_consented(
        instance: Instance, tmp_path: Path) -> None:
    box = _box(instance, tracking_policy="with-consent")
    instance.consents.set_consent(None, "frank@example.org", "granted", "api", "signed form")
    msg = _send(instance, box, ["erin@example.org", "frank@example.org"])
    assert msg.tracked and msg.copies == 1
    assert msg.tracking_reason.startswith(
        "enabled by mailbox setting; tracking policy with-consent, set for this mailbox; "
        "not tracked: no consent recorded for erin@example.org")
    copies = _copies(instance, msg)
    erin, frank = copies["erin@example.org"], copies["frank@example.org"]
    assert (erin.pixel, erin.token_key, erin.reason) == (  # type: ignore[attr-defined]
        "none", None, "not tracked: no consent recorded for erin@example.org")
    assert frank.pixel == "personal" and frank.token_key  # type: ignore[attr-defined]
    assert asyncio.run(instance.worker().drain()) == 2
    files = {p.name: p.read_bytes() for p in instance.settings.outbox_dir.glob("*.eml")}
    with_pixel = [n for n, data in files.items() if TOKEN.search(data)]
    assert len(files) == 2 and len(with_pixel) == 1
    assert with_pixel[0].endswith(f"-{frank.position}.eml")  # type: ignore[attr-defined]


def test_nobody_with_consent_means_one_untracked_copy(instance: Instance) -> None:
    box = _box(instance, tracking_policy="with-consent")
    msg = _send(instance, box, ["erin@example.org", "frank@example.org"])
    assert not msg.tracked and msg.copies == 0
    assert msg.tracking_reason == ("not tracked: no consent recorded for erin@example.org; "
                                   "not tracked: no consent recorded for frank@example.org")


def test_the_mailbox_policy_wins_over_the_global_one(instance: Instance) -> None:
    instance.consents.set_global_policy(None, "with-consent")
    box = _box(instance, tracking_policy="everyone")
    msg = _send(instance, box, ["erin@example.org"])
    assert msg.tracked and msg.copies == 1
    other = instance.store.add_mailbox(MailboxIn("help@example.com", tracking="enabled"))
    msg = _send(instance, other, ["erin@example.org"])
    assert not msg.tracked
    assert instance.consents.policy_for(other).reason == (
        "tracking policy with-consent, set globally")


def test_do_not_track_entries_match_address_domain_and_tld(instance: Instance) -> None:
    box = _box(instance)
    instance.consents.add_do_not_track(None, "*.FR")
    instance.consents.add_do_not_track(None, "vip@example.com")
    msg = _send(instance, box, ["anne@paris.fr", "VIP@example.com", "bob@example.org"])
    copies = _copies(instance, msg)
    assert copies["anne@paris.fr"].reason == (  # type: ignore[attr-defined]
        "not tracked: *.fr is on the do-not-track list")
    assert copies["VIP@example.com"].reason == (  # type: ignore[attr-defined]
        "not tracked: vip@example.com is on the do-not-track list")
    assert copies["bob@example.org"].pixel == "personal"  # type: ignore[attr-defined]
    assert msg.copies == 1
    with pytest.raises(InvalidInput, match="a wildcard only goes first"):
        instance.consents.add_do_not_track(None, "ex*ample.fr")
    with pytest.raises(NotFound):
        instance.consents.remove_do_not_track(None, "example.fr")


async def test_aggregate_sends_one_pixel_for_all_and_keeps_refusals_apart(
        instance: Instance, relay: SmtpServer) -> None:
    box = _box(instance, tracking_policy="aggregate", transport="smtp", smtp_host="127.0.0.1",
               smtp_port=relay.port, smtp_tls="none")
    instance.consents.set_consent(None, "gina@example.net", "refused", "web")
    msg = _send(instance, box, ["erin@example.org", "frank@example.org"],
                bcc=["gina@example.net"])
    assert msg.tracked and msg.copies == 0  # no personal copy: nobody to name
    copies = _copies(instance, msg)
    shared = copies[None]
    assert shared.pixel == "aggregate" and shared.token_key  # type: ignore[attr-defined]
    assert shared.envelope == ("erin@example.org", "frank@example.org")  # type: ignore[attr-defined]
    assert copies["gina@example.net"].token_key is None  # type: ignore[attr-defined]
    assert await instance.worker().drain() == 2
    by_rcpt = {tuple(m.rcpt_tos): m.data for m in relay.messages}
    assert sorted(by_rcpt) == [("erin@example.org", "frank@example.org"),
                               ("gina@example.net",)]
    assert TOKEN.search(by_rcpt["erin@example.org", "frank@example.org"])
    assert not TOKEN.search(by_rcpt["gina@example.net",])
    assert b"Bcc" not in by_rcpt["gina@example.net",].split(b"\r\n\r\n")[0]


# -- at the pixel: withdrawal reaches mail already sent ------------------------------------

def _hit(server: LiveServer, token: str, ip: str = "198.51.100.7") -> httpx.Response:
    resp = httpx.get(f"{server.url}/t/{token}.gif",
                     headers={"User-Agent": OUTLOOK, "X-Forwarded-For": ip})
    assert resp.status_code == 200 and resp.content.startswith(b"GIF89a")
    return resp


def _views(instance: Instance, message_id: int) -> list[tuple[object, ...]]:
    with instance.db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(ViewEvent.copy_id, ViewEvent.ip, ViewEvent.user_agent,
                   ViewEvent.headers_json).where(ViewEvent.message_id == message_id)
            .order_by(ViewEvent.id))]


def test_a_refusal_stops_recording_views_of_mail_already_sent(
        live_server: LiveServer, instance: Instance) -> None:
    box = _box(instance)
    msg = _send(instance, box, ["erin@example.org", "frank@example.org"])
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    copies = _copies(instance, msg)
    erin = _token(instance, copies["erin@example.org"].token_key)  # type: ignore[attr-defined]
    frank = _token(instance, copies["frank@example.org"].token_key)  # type: ignore[attr-defined]
    _hit(live_server, erin)
    assert len(_views(instance, msg.id)) == 1
    instance.consents.set_consent(None, "erin@example.org", "refused", "api")
    _hit(live_server, erin)  # answered, not recorded
    _hit(live_server, frank)  # frank did not refuse
    views = _views(instance, msg.id)
    assert [v[0] for v in views] == [copies["erin@example.org"].id,  # type: ignore[attr-defined]
                                     copies["frank@example.org"].id]  # type: ignore[attr-defined]
    # the do-not-track list reaches old mail too, and so does a stricter policy
    instance.consents.add_do_not_track(None, "example.org")
    _hit(live_server, frank)
    assert len(_views(instance, msg.id)) == 2
    instance.consents.remove_do_not_track(None, "example.org")
    _hit(live_server, frank)
    assert len(_views(instance, msg.id)) == 3
    instance.mailboxes.update(None, box.id, {"tracking_policy": "with-consent"})
    _hit(live_server, frank)
    assert len(_views(instance, msg.id)) == 3
    instance.consents.set_consent(None, "frank@example.org", "granted", "api")
    _hit(live_server, frank)
    assert len(_views(instance, msg.id)) == 4
    after = instance.store.get_message(msg.id)
    assert after.viewed_copies == 2


def test_aggregate_hits_are_counted_with_nothing_that_points_to_a_person(
        live_server: LiveServer, instance: Instance) -> None:
    box = _box(instance, tracking_policy="aggregate")
    msg = _send(instance, box, ["erin@example.org", "frank@example.org"])
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    shared = _copies(instance, msg)[None]
    _hit(live_server, _token(instance, shared.token_key))  # type: ignore[attr-defined]
    [(copy_id, ip, agent, headers)] = _views(instance, msg.id)
    assert (copy_id, ip, agent, headers) == (shared.id, None, None, "{}")  # type: ignore[attr-defined]
    assert instance.store.get_message(msg.id).view_count == 1
    # a personal copy sent before the mailbox went aggregate: counted for the message only
    instance.mailboxes.update(None, box.id, {"tracking_policy": "everyone"})
    msg2 = _send(instance, instance.store.get_mailbox(box.id), ["erin@example.org"])
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg2.id)
    personal = _copies(instance, msg2)["erin@example.org"]
    instance.mailboxes.update(None, box.id, {"tracking_policy": "aggregate"})
    _hit(live_server, _token(instance, personal.token_key))  # type: ignore[attr-defined]
    assert _views(instance, msg2.id) == [(None, None, None, "{}")]
    assert instance.store.get_message(msg2.id).viewed_copies == 0


# -- the refusal link ------------------------------------------------------------------------

def test_the_refusal_line_is_in_tracked_mail_in_the_mailbox_language(
        instance: Instance) -> None:
    box = _box(instance, refusal_line=True, language="fr",
               privacy_url="https://example.com/privacy")
    msg = _send(instance, box, ["erin@example.org", "frank@example.org"])
    asyncio.run(instance.worker().drain())
    tokens = set()
    for eml in instance.settings.outbox_dir.glob("*.eml"):
        data = eml.read_bytes()
        link = LINK.search(data)
        pixel = TOKEN.search(data)
        # each copy's line carries that copy's own token, the one its pixel has
        assert link and pixel and link.group(1) == pixel.group(1)
        tokens.add(link.group(1))
        # the same bytes as tagging this copy on its own
        alone = tag_message(instance.store.get_raw(msg.id), instance.sender._tag(
            link.group(1).decode(), ("fr", "")), lambda url: False)
        assert alone.data == data
    assert len(tokens) == 2
    assert b"Ne pas me suivre" in data
    assert b"l&#x27;exp&#233;diteur" in data or b"exp&#233;diteur" in data
    # no line when the mailbox shows none, nor on a copy without a pixel of its own
    instance.mailboxes.update(None, box.id, {"refusal_line": False})
    copy = _copies(instance, msg)["erin@example.org"]
    raw = instance.store.get_raw(msg.id)
    assert b"/r/" not in instance.sender.copy_bytes(
        raw, copy, instance.store.get_mailbox(box.id))  # type: ignore[arg-type]


def test_the_refusal_page_changes_nothing_until_its_form_is_sent(
        web: WebClient, instance: Instance) -> None:
    box = _box(instance, refusal_line=True, privacy_url="https://example.com/privacy")
    msg = _send(instance, box, ["erin@example.org"])
    token = _token(instance, _copies(instance, msg)["erin@example.org"].token_key)  # type: ignore[attr-defined]
    page = web.get(f"/r/{token}")
    assert page.status == 200
    assert page.text("#state") == "You have not said whether you agree to it."
    assert page.text(".who") == "erin@example.org"
    assert page.soup.select_one('a[href="https://example.com/privacy"]') is not None
    assert instance.consents.consent_of("erin@example.org")[0] == "unknown"  # GET: nothing
    # a form posted from another site is refused, and so is one without the form's token
    csrf = page.form(f"/r/{token}")["csrf"]
    other = web.client.post(f"/r/{token}", data={"state": "refused", "csrf": csrf},
                            headers={"Origin": "https://evil.example"})
    assert other.status_code == 403
    assert web.client.post(f"/r/{token}", data={"state": "refused"}).status_code == 403
    assert instance.consents.consent_of("erin@example.org")[0] == "unknown"
    done = web.client.post(f"/r/{token}", data={"state": "refused", "csrf": csrf},
                           headers={"Origin": "http://testserver"})
    assert done.status_code == 200
    assert "will no longer record" in done.text
    state, history = instance.consents.consent_of("erin@example.org")
    assert state == "refused"
    assert (history[-1].how, history[-1].by) == ("link", "the recipient")
    # nonsense is a page saying so, never an error
    assert web.get("/r/not-a-token").status == 404
    assert web.client.post(f"/r/{token}", data={"state": "maybe", "csrf": csrf}
                           ).status_code == 400
    assert "not valid" in web.get("/r/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").text("[role=alert]")


async def test_a_recipient_refuses_in_chromium_and_later_opens_record_nothing(
        tmp_path: Path, database_url: str, browser: object) -> None:
    # No worker in the server: the test delivers the message itself, once.
    server = LiveServer(tmp_path, database_url, worker=False).start()
    try:
        inst = server.instance
        box = _box(inst, refusal_line=True)
        msg = _send(inst, box, ["erin@example.org"])
        await inst.worker().drain()
        backdate_sent(inst, msg.id)
        [eml] = inst.settings.outbox_dir.glob("*.eml")
        html = html_of(eml.read_bytes())
        context = await browser.new_context(user_agent=OUTLOOK)  # type: ignore[attr-defined]
        page = await context.new_page()
        # the recipient's mail client shows the message: one view
        async with page.expect_response(lambda r: "/t/" in r.url):
            await page.set_content(html)
        assert inst.store.get_message(msg.id).view_count == 1
        # they follow the line's link and refuse
        await page.click("a[href*='/r/']")
        await page.wait_for_selector("button[value=refused]")
        await page.click("button[value=refused]")
        await page.wait_for_selector("#done")
        assert "no longer record" in (await page.text_content("#done") or "")
        # opening the old message again records nothing, though the image still loads
        async with page.expect_response(lambda r: "/t/" in r.url) as pixel:
            await page.set_content(html)
        assert (await pixel.value).status == 200
        assert inst.store.get_message(msg.id).view_count == 1
        await context.close()
        # the team sees why
        inst.accounts.create_user("ada@example.com", PASSWORD, role="admin")
        team = await browser.new_context()  # type: ignore[attr-defined]
        tab = await team.new_page()
        from .browser import sign_in
        await sign_in(tab, server.url, "ada@example.com", PASSWORD)
        await tab.goto(f"{server.url}/conversations/{msg.conversation_id}")
        note = await tab.text_content("tr.recipient .tracking-note")
        assert note == "tracking refused by recipient"
        await team.close()
    finally:
        server.stop()


# -- consent records: proof, import, erasure ----------------------------------------------

def test_consent_records_are_a_chain_that_shows_tampering(instance: Instance,
                                                          cli: Cli) -> None:
    for state in ("granted", "refused", "granted"):
        instance.consents.set_consent(None, "erin@example.org", state, "api")
    instance.consents.set_consent(None, "frank@example.org", "refused", "web")
    assert instance.consents.verify(None) == (4, None)
    assert ok(cli("consent", "verify")).strip() == "4 consent records checked: none changed"
    with instance.db.engine.begin() as conn:
        first = conn.execute(select(ConsentEvent.id).order_by(ConsentEvent.id)).scalars().all()
        conn.execute(update(ConsentEvent).where(ConsentEvent.id == first[1])
                     .values(state="granted"))
    assert instance.consents.verify(None) == (2, first[1])
    assert error(cli("consent", "verify")).endswith(
        f"changed outside mailseen at event {first[1]} (2 checked)")


def test_erasure_keeps_a_refusal_and_the_chain(instance: Instance) -> None:
    instance.consents.set_consent(None, "erin@example.org", "granted", "api", "by phone")
    instance.consents.set_consent(None, "erin@example.org", "refused", "link")
    instance.consents.set_consent(None, "frank@example.org", "granted", "api")
    erased, kept = instance.store.erase_consents("erin@example.org")
    assert (erased, kept) == (1, True)
    assert instance.consents.verify(None) == (3, None)
    state, history = instance.consents.consent_of("erin@example.org")
    assert state == "refused" and [e.state for e in history] == ["refused"]
    with instance.db.engine.connect() as conn:
        notes = conn.execute(text("SELECT address_key, note FROM consent_events")).all()
    assert all("by phone" not in n for _, n in notes)
    assert sum(1 for a, _ in notes if a.startswith("erased:")) == 1


def test_a_csv_import_records_all_lines_or_none(instance: Instance, cli: Cli,
                                                tmp_path: Path) -> None:
    good = "address,state,note\nerin@example.org,granted,form 12\nFRANK@example.org,refused\n"
    assert instance.consents.import_csv(None, good) == 2
    assert instance.consents.consent_of("frank@example.org")[0] == "refused"
    bad = "gina@example.net,granted\nnot-an-address,refused\nhal@example.net,maybe\n"
    with pytest.raises(InvalidInput) as caught:
        instance.consents.import_csv(None, bad)
    assert caught.value.field == "file"
    assert "line 2" in str(caught.value) and "line 3" in str(caught.value)
    assert instance.consents.consent_of("gina@example.net")[0] == "unknown"
    for garbage in ("erin@example.org,\x00granted\n", '"erin@example.org,granted'):
        with pytest.raises(InvalidInput):
            instance.consents.import_csv(None, garbage)
    path = tmp_path / "bad.csv"
    path.write_text(bad)
    assert "nothing imported" in error(cli("consent", "import", str(path)), 2)
    path.write_text("gina@example.net,granted\n")
    assert "imported 1" in ok(cli("consent", "import", str(path)))


# -- the settings audit log ----------------------------------------------------------------

def test_every_tracking_and_privacy_change_is_in_the_audit_log(
        instance: Instance, cli: Cli) -> None:
    admin = instance.accounts.create_user("ada@example.com", PASSWORD, name="Ada",
                                          role="admin")
    member = instance.accounts.create_user("bo@example.com", PASSWORD, role="member")
    box = _box(instance)
    instance.mailboxes.set_global_tracking(admin, True)
    instance.consents.set_global_policy(admin, "unless-refused")
    instance.mailboxes.update(admin, box.id, {"tracking_policy": "with-consent",
                                              "refusal_line": True, "display_name": "x"})
    instance.consents.add_do_not_track(None, "*.fr")
    log = instance.consents.audit_log(admin)
    assert [(e.user, e.scope, e.setting, e.old, e.new) for e in reversed(log)] == [
        ("Ada <ada@example.com>", "global", "tracking", "off", "on"),
        ("Ada <ada@example.com>", "global", "tracking_policy", "everyone", "unless-refused"),
        ("Ada <ada@example.com>", "sales@example.com", "tracking_policy", "global",
         "with-consent"),
        ("Ada <ada@example.com>", "sales@example.com", "refusal_line", "off", "on"),
        ("installation (command line or admin API token)", "global", "do-not-track", "",
         "+ *.fr")]
    with pytest.raises(Forbidden):
        instance.consents.audit_log(member)
    with pytest.raises(Forbidden):
        instance.consents.set_global_policy(member, "everyone")
    lines = ok(cli("settings", "audit")).strip().splitlines()
    assert len(lines) == 5 and lines[0].endswith("do-not-track\t- -> + *.fr")


# -- the API and the web app -----------------------------------------------------------------

def test_the_api_records_consents_and_keeps_the_list(live_server: LiveServer,
                                                     instance: Instance) -> None:
    with httpx.Client(base_url=live_server.url + "/api/v1", headers=AUTH) as api:
        _api_privacy(api)


def _api_privacy(api: httpx.Client) -> None:
    made = api.post("/consents", json={"address": "erin@example.org", "state": "granted",
                                       "note": "webinar form"})
    assert made.status_code == 201
    assert made.json()["state"] == "granted"
    assert made.json()["history"][0]["how"] == "api"
    bad = api.post("/consents", json={"address": "nobody", "state": "granted"})
    assert bad.status_code == 422 and bad.json()["field"] == "address"
    bad = api.post("/consents", json={"address": "erin@example.org", "state": "maybe"})
    assert bad.status_code == 422 and bad.json()["field"] == "state"
    imported = api.post("/consents/import", content=b"frank@example.org,refused\n",
                        headers={"Content-Type": "text/csv"})
    assert imported.json() == {"imported": 1}
    bad = api.post("/consents/import", content=b"frank@example.org\n",
                   headers={"Content-Type": "text/csv"})
    assert bad.status_code == 422 and bad.json()["field"] == "file"
    assert api.post("/do-not-track", json={"entry": "*.it"}).status_code == 201
    assert api.post("/do-not-track", json={"entry": "*.it"}).status_code == 409
    bad = api.post("/do-not-track", json={"entry": "a b"})
    assert bad.status_code == 422 and bad.json()["field"] == "entry"
    assert [r["text"] for r in api.get("/do-not-track").json()] == ["*.it"]
    assert api.delete("/do-not-track", params={"entry": "*.it"}).status_code == 200
    assert api.delete("/do-not-track", params={"entry": "*.it"}).status_code == 404
    settings = api.put("/settings", json={"tracking_enabled": True,
                                          "tracking_policy": "with-consent"}).json()
    assert settings["tracking_policy"] == "with-consent"
    bad = api.put("/settings", json={"tracking_enabled": True, "tracking_policy": "all"})
    assert bad.status_code == 422 and bad.json()["field"] == "tracking_policy"
    box = api.post("/mailboxes", json={"address": "sales@example.com",
                                       "tracking_policy": "aggregate", "language": "it",
                                       "refusal_line": True}).json()
    assert (box["tracking_policy"], box["effective_policy"]) == ("aggregate", "aggregate")
    bad = api.patch(f"/mailboxes/{box['id']}", json={"privacy_url": "javascript:x"})
    assert bad.status_code == 422 and bad.json()["field"] == "privacy_url"
    audit = api.get("/audit").json()
    assert {e["setting"] for e in audit} >= {"tracking", "tracking_policy", "do-not-track"}


def test_the_privacy_page_sets_the_policy_list_and_consents(
        web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    web.sign_in("ada@example.com")
    page = web.get("/settings/privacy")
    page = web.submit(page, "/settings/privacy", do="policy",
                      tracking_policy="with-consent")
    assert page.text(".notice") == "Saved."
    assert instance.consents.global_policy() == "with-consent"
    # a bad entry is a friendly message under its field, nothing added
    form = {**page.form("/settings/privacy"), "do": "add", "entry": "ex*ample.fr"}
    bad = web.client.post("/settings/privacy", data=form)
    assert bad.status_code == 422
    assert "a wildcard only goes first" in bad.text
    assert instance.consents.do_not_track() == []
    form["entry"] = "*.fr"
    assert "Added" in web.client.post("/settings/privacy", data=form).text
    page = web.get("/settings/privacy?address=erin@example.org")
    assert [b.get_text() for b in page.all("#consent-state strong")] == [
        "erin@example.org", "unknown"]
    csrf = page.form("/settings/privacy")["csrf"]
    page = Page(web.client.post("/settings/privacy", data={
        "csrf": csrf, "do": "consent", "address": "erin@example.org", "state": "granted",
        "note": "asked in person"}))
    assert [b.get_text() for b in page.all("#consent-state strong")] == [
        "erin@example.org", "granted"]
    assert "asked in person" in page.text("#consent-history")
    audit = web.get("/settings/audit")
    assert [td.get_text() for td in audit.all("#audit tbody tr td:nth-of-type(4)")] == [
        "do-not-track", "tracking_policy"]


def test_the_compose_preview_names_who_will_not_be_followed(
        web: WebClient, instance: Instance) -> None:
    box = _box(instance, tracking_policy="with-consent")
    instance.consents.set_consent(None, "frank@example.org", "granted", "api")
    instance.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    web.sign_in("ada@example.com")
    page = web.get(f"/compose?mailbox={box.id}")
    form = {**page.form("/compose"), "mailbox": str(box.id),
            "to": "erin@example.org, frank@example.org", "html": "<p>Hi</p>", "do": "preview"}
    page_text = web.client.post("/compose", data=form).text
    assert "Not tracked: no consent recorded for erin@example.org" in page_text
    assert "Tracking policy with-consent, set for this mailbox" in page_text


def test_privacy_commands_answer_bad_input_in_one_line(cli: Cli, instance: Instance) -> None:
    assert ok(cli("consent", "set", "erin@example.org", "refused")).strip() == (
        "erin@example.org: refused")
    assert '"state": "refused"' in ok(cli("consent", "show", "ERIN@example.org"))
    error(cli("consent", "set", "nobody", "refused"), 2)
    assert "added *.fr" in ok(cli("do-not-track", "add", "*.FR"))
    assert "already" in error(cli("do-not-track", "add", "*.fr"))
    assert ok(cli("do-not-track", "list")).startswith("*.fr\tsuffix")
    assert "tracking policy: aggregate" in ok(cli("settings", "policy", "aggregate"))
    assert "tracking policy: aggregate" in ok(cli("settings", "show"))
    box = ok(cli("mailbox", "add", "sales@example.com", "--policy", "with-consent",
                 "--refusal-line", "--language", "de"))
    assert '"effective_policy": "with-consent"' in box and '"language": "de"' in box
    assert "--privacy-url" in error(cli("mailbox", "set", "sales@example.com",
                                        "--privacy-url", "ftp://x"), 2)


def test_export_and_erasure_cover_consent_and_the_list(instance: Instance) -> None:
    admin = instance.accounts.create_user("ada@example.com", PASSWORD, role="admin")
    instance.consents.set_consent(admin, "erin@example.org", "granted", "web", "signed up")
    instance.consents.set_consent(None, "erin@example.org", "refused", "link")
    instance.consents.add_do_not_track(admin, "example.org")
    instance.consents.set_consent(None, "frank@example.org", "granted", "api", "call notes")
    exported = instance.privacy.export(admin, "ERIN@example.org")
    assert [(e["state"], e["how"], e["note"]) for e in exported["consent"]] == [
        ("granted", "web", "signed up"), ("refused", "link", "")]
    assert exported["do_not_track"] == {"entry": "example.org", "kind": "domain"}
    erased = instance.privacy.erase(admin, "erin@example.org")
    assert erased.removed["consent_events"] == 1 and erased.kept["consent_refusal"] == 1
    assert instance.consents.consent_of("erin@example.org")[0] == "refused"  # still honoured
    assert instance.consents.verify(admin) == (3, None)
    erased = instance.privacy.erase(admin, "frank@example.org")
    assert erased.removed["consent_events"] == 1 and "consent_refusal" not in erased.kept
    assert instance.consents.consent_of("frank@example.org") == ("unknown", [])
    assert instance.consents.verify(admin) == (3, None)


def test_view_detail_and_retention_changes_are_in_the_audit_log(instance: Instance) -> None:
    admin = instance.accounts.create_user("ada@example.com", PASSWORD, name="Ada",
                                          role="admin")
    instance.privacy.set_view_details(admin, ip="truncated")
    instance.privacy.set_retention(admin, 30)
    instance.privacy.set_retention(admin, 30)  # no change: no entry
    log = [(e.setting, e.old, e.new) for e in reversed(instance.consents.audit_log(admin))]
    assert log == [("view_ip", "full", "truncated"), ("retention_days", "forever", "30")]


def test_the_tag_filter_leaves_a_refused_recipients_copy_without_a_pixel(
        instance: Instance) -> None:
    box = _box(instance)
    instance.consents.set_consent(None, "erin@example.org", "refused", "api")
    raw = (b"From: sales@example.com\r\nTo: erin@example.org, frank@example.org\r\n"
           b"Subject: Offer\r\nMessage-ID: <offer-9@example.com>\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Our offer</p>\r\n")
    msg, erin = instance.sender.tag(box, raw, "erin@example.org")
    _, frank = instance.sender.tag(box, raw, "frank@example.org")
    assert not TOKEN.search(erin) and TOKEN.search(frank)
    copies = _copies(instance, instance.store.get_message(msg.id))
    assert copies["erin@example.org"].reason == (  # type: ignore[attr-defined]
        "not tracked: erin@example.org refused tracking")
    assert instance.store.get_message(msg.id).copies == 1
