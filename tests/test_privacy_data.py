"""Data minimisation: what is stored of a view (checked in the view_events rows), the
retention purge of old views' details (counts stay), and data-subject export and erasure."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mailseen.clock import ManualClock
from mailseen.core.compose import Draft
from mailseen.core.privacy import DETAILS_HEADER, client_family, minimise, truncate_ip
from mailseen.errors import InvalidInput
from mailseen.records import MailboxIn, MailboxRecord, MessageRecord, ViewDetails, ViewIn
from mailseen.services.classification import Judge, reclassify, record_views
from mailseen.services.instance import Instance
from mailseen.services.mailboxes import Forbidden
from mailseen.services.privacy import ERASED
from mailseen.storage.models import Copy, Message, ViewEvent

from .cli_runner import Cli, error, ok
from .conftest import API_TOKEN, LiveServer, make_settings
from .web_client import PASSWORD, WebClient

OUTLOOK = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 Microsoft Outlook 16.0.17231")
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
HEADERS = {"accept": "image/*", "accept-language": "fr-FR", "via": "1.1 proxy.corp.example",
           "from": "erin@example.org", "referer": "https://webmail.example.org/?_uid=42&_mbox=INBOX"}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "privacy.md"


# -- the pure part ---------------------------------------------------------------------------

def test_an_address_is_truncated_to_its_network() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:1:2::5") == "2001:db8:1::"
    assert truncate_ip("::ffff:198.51.100.9") == "198.51.100.0"  # IPv4 written as IPv6
    assert truncate_ip("not an address") is None
    assert truncate_ip("1.2.3.256") is None and truncate_ip("010.1.2.3") is None
    assert truncate_ip(None) is None


def test_the_client_family_is_the_judged_client_without_versions() -> None:
    assert client_family("Outlook 16 on Windows") == "Outlook on Windows"
    assert client_family("Chrome 120 on Windows 8.1") == "Chrome on Windows"
    assert client_family("Outlook for iOS") == "Outlook for iOS"
    assert client_family("crawler (Chrome-Lighthouse)") == "crawler (Chrome-Lighthouse)"
    assert client_family("Internet Explorer 11") == "Internet Explorer"
    assert client_family("") == "unknown"


def test_minimised_headers_lose_what_names_the_client() -> None:
    ip, ua, headers = minimise("203.0.113.77", OUTLOOK, dict(HEADERS), "Outlook 16 on Windows",
                               ViewDetails("truncated", "full"))
    assert (ip, ua) == ("203.0.113.0", OUTLOOK)
    assert headers == {"accept": "image/*", "accept-language": "fr-FR",
                       "referer": "https://webmail.example.org",
                       DETAILS_HEADER: "ip=truncated; user-agent=full"}
    assert minimise("203.0.113.77", OUTLOOK, HEADERS, "x", ViewDetails()) == (
        "203.0.113.77", OUTLOOK, HEADERS)


# -- helpers ---------------------------------------------------------------------------------

def _box(instance: Instance) -> MailboxRecord:
    return instance.store.add_mailbox(MailboxIn("sales@example.com", "Sales",
                                                tracking="enabled"))


def _quote(instance: Instance, box: MailboxRecord, sent: datetime | None = None,
           to: tuple[str, ...] = ("Erin <Erin@Example.ORG>", "frank@example.org")
           ) -> MessageRecord:
    draft = Draft(from_addr=box.address, to=list(to), subject="Quote", text="Our quote",
                  html="<p>Our quote</p>")
    msg = instance.sender.send_draft(box, draft)
    at = sent or datetime.now(UTC) - timedelta(days=60)
    with instance.db.engine.begin() as conn:
        conn.execute(Copy.__table__.update().where(Copy.message_id == msg.id)
                     .values(status="sent", sent_at=at))
        conn.execute(Message.__table__.update().where(Message.id == msg.id)
                     .values(status="sent", sent_at=at))
    return msg


def _keys(instance: Instance, msg: MessageRecord) -> dict[str, int]:
    return {str(c.recipient).lower(): int(c.token_key or 0)
            for c in instance.store.copies_of([msg.id])[msg.id]}


def _hit(key: int, at: datetime, ip: str = "198.51.100.7", ua: str = OUTLOOK,
         headers: dict[str, str] | None = None) -> ViewIn:
    return ViewIn(0, 0, at, "GET", ip, ua, dict(headers or HEADERS), copy_key=key)


def _rows(instance: Instance) -> list[dict[str, Any]]:
    with instance.db.engine.connect() as conn:
        rows = conn.execute(select(ViewEvent).order_by(ViewEvent.id)).mappings().all()
    return [dict(r) for r in rows]


def _counts(instance: Instance, msg: MessageRecord) -> tuple[Any, ...]:
    m = instance.store.get_message(msg.id)
    copies = instance.store.copies_of([msg.id])[msg.id]
    return (m.view_count, m.machine_count, m.viewed_copies, m.first_viewed_at,
            m.last_viewed_at, [(c.view_count, c.machine_count, c.first_viewed_at,
                                c.last_viewed_at) for c in copies])


# -- what is stored of a view ----------------------------------------------------------------

@pytest.mark.parametrize(("ip", "agent", "stored_ip", "stored_ua"), [
    ("full", "full", "198.51.100.7", OUTLOOK),
    ("truncated", "full", "198.51.100.0", OUTLOOK),
    ("none", "full", None, OUTLOOK),
    ("full", "family", "198.51.100.7", "Outlook on Windows"),
    ("truncated", "family", "198.51.100.0", "Outlook on Windows"),
    ("none", "family", None, "Outlook on Windows"),
])
async def test_the_pixel_stores_each_view_at_the_level_set(
        instance: Instance, ip: str, agent: str, stored_ip: str | None,
        stored_ua: str) -> None:
    msg = _quote(instance, _box(instance))
    instance.privacy.set_view_details(None, ip=ip, user_agent=agent)
    recorder = instance.view_recorder()  # the pixel's own recorder and its cached setting
    await recorder.start()
    await recorder.record(_hit(_keys(instance, msg)["erin@example.org"], datetime.now(UTC)))
    await recorder.stop()
    [row] = _rows(instance)
    assert (row["ip"], row["user_agent"]) == (stored_ip, stored_ua)
    headers = json.loads(row["headers_json"])
    if ip == agent == "full":
        assert headers == HEADERS
    else:
        assert headers == {"accept": "image/*", "accept-language": "fr-FR",
                           "referer": "https://webmail.example.org",
                           DETAILS_HEADER: f"ip={ip}; user-agent={agent}"}
        assert "198.51.100.7" not in row["headers_json"] and "_uid" not in row["headers_json"]
    assert row["verdict"] == "human" and row["client"] == "Outlook 16 on Windows"


def test_hits_are_judged_on_the_full_address_and_agent_before_truncation(
        instance: Instance) -> None:
    msg = _quote(instance, _box(instance))
    keys = _keys(instance, msg)
    instance.privacy.set_view_details(None, ip="truncated", user_agent="family")
    now = datetime.now(UTC)
    hits = [
        # A browser from a cloud address (AWS 3.4.12.4/31): a program rendering the mail.
        # Its /24 (3.4.12.0) is not listed: judged on that, it would pass for a person.
        _hit(keys["erin@example.org"], now, ip="3.4.12.4", ua=CHROME),
        # Apple Mail Privacy Protection's prefetch, from Apple's network.
        _hit(keys["frank@example.org"], now + timedelta(minutes=5), ip="17.58.1.2",
             ua="Mozilla/5.0"),
    ]
    assert record_views(instance.store, hits, Judge(), instance.privacy.details) == 2
    cloud, mpp = _rows(instance)
    assert cloud["verdict"] == "machine" and "cloud network" in cloud["reason"]
    assert (cloud["ip"], cloud["user_agent"]) == ("3.4.12.0", "Chrome on Windows")
    assert mpp["verdict"] == "machine" and mpp["reason"] == (
        "Apple Mail Privacy Protection prefetch")
    assert (mpp["ip"], mpp["user_agent"]) == ("17.58.1.0", "Apple Mail Privacy Protection")
    # Stored without their full details, they keep their verdicts when judged again.
    assert reclassify(instance.store, Judge()) == (2, 0)
    assert [r["verdict"] for r in _rows(instance)] == ["machine", "machine"]


def test_a_changed_setting_reaches_the_next_batch_without_a_query_per_hit(
        instance: Instance) -> None:
    msg = _quote(instance, _box(instance))
    key = _keys(instance, msg)["erin@example.org"]
    reads = []
    real = instance.store.get_setting

    def counting(name: str, default: str) -> str:
        reads.append(name)
        return real(name, default)

    instance.store.get_setting = counting  # type: ignore[method-assign]
    now = datetime.now(UTC)
    details = instance.privacy.details
    record_views(instance.store, [_hit(key, now + timedelta(minutes=n)) for n in range(50)],
                 Judge(), details)
    record_views(instance.store, [_hit(key, now + timedelta(hours=1))], Judge(), details)
    assert len(reads) == 2  # the two settings, read once for both batches
    instance.privacy.set_view_details(None, ip="none")
    record_views(instance.store, [_hit(key, now + timedelta(hours=2))], Judge(), details)
    rows = _rows(instance)
    assert rows[-2]["ip"] == "198.51.100.7" and rows[-1]["ip"] is None


def test_view_details_are_changed_by_admins_only_and_checked(instance: Instance) -> None:
    member = instance.accounts.create_user("mo@example.com", PASSWORD, role="member")
    with pytest.raises(Forbidden):
        instance.privacy.set_view_details(member, ip="none")
    with pytest.raises(InvalidInput, match=r"^ip: full, truncated or none$"):
        instance.privacy.set_view_details(None, ip="half")
    with pytest.raises(InvalidInput) as caught:
        instance.privacy.set_view_details(None, user_agent="brand")
    assert caught.value.field == "user_agent"
    assert instance.privacy.view_details() == ViewDetails()


# -- retention ---------------------------------------------------------------------------------

@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def timed(tmp_path: Path, database_url: str, clock: ManualClock) -> Iterator[Instance]:
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    yield inst
    inst.close()


def _old_and_new_views(inst: Instance, clock: ManualClock) -> MessageRecord:
    msg = _quote(inst, _box(inst), sent=clock.now() - timedelta(days=90))
    keys = _keys(inst, msg)
    now = clock.now()
    hits = [_hit(keys["erin@example.org"], now - timedelta(days=40)),
            _hit(keys["frank@example.org"], now - timedelta(days=35), ip="203.0.113.9"),
            _hit(keys["frank@example.org"], now - timedelta(days=35, minutes=-5),
                 ip="17.58.1.2", ua="Mozilla/5.0"),
            _hit(keys["erin@example.org"], now - timedelta(days=5))]
    assert record_views(inst.store, hits, Judge()) == 4
    return msg


def test_the_purge_clears_old_views_details_and_keeps_every_count(
        timed: Instance, clock: ManualClock) -> None:
    msg = _old_and_new_views(timed, clock)
    before = _counts(timed, msg)
    assert timed.privacy.purge(None) is None  # kept for ever: nothing to do
    timed.privacy.set_retention(None, 30)
    run = timed.privacy.purge(None)
    assert run is not None and run.views == 3
    assert run.before == clock.now() - timedelta(days=30)
    rows = _rows(timed)
    for row in rows[:3]:
        assert (row["ip"], row["user_agent"], row["copy_id"], row["recipient"]) == (
            None, None, None, 0)
        assert json.loads(row["headers_json"]) == {DETAILS_HEADER: "purged"}
    assert [r["verdict"] for r in rows] == ["human", "human", "machine", "human"]
    newest = rows[3]
    assert newest["ip"] == "198.51.100.7" and newest["copy_id"] is not None
    assert json.loads(newest["headers_json"]) == HEADERS
    assert _counts(timed, msg) == before
    assert timed.privacy.retention().last_run == run
    again = timed.privacy.purge(None)
    assert again is not None and again.views == 0
    # Judging again leaves the purged views' verdicts, and the counts, as they were.
    assert reclassify(timed.store, Judge())[1] == 0
    assert _counts(timed, msg) == before


async def test_the_daily_job_purges_once_a_day_on_the_clock(
        timed: Instance, clock: ManualClock) -> None:
    msg = _old_and_new_views(timed, clock)
    timed.privacy.set_retention(None, 30)
    stop = asyncio.Event()
    job = asyncio.create_task(timed.retention_job().run(stop))
    await clock.until_sleeping()
    first = timed.privacy.retention().last_run
    assert first is not None and (first.at, first.views) == (clock.now(), 3)
    # The view of five days ago is 31 days old a day and more later.
    clock.advance(3600)
    await clock.until_sleeping()
    assert timed.privacy.retention().last_run == first  # not a day yet
    clock.advance(26 * 86400)
    await clock.until_sleeping()
    second = timed.privacy.retention().last_run
    assert second is not None and second.at == clock.now() and second.views == 1
    assert all(r["ip"] is None for r in _rows(timed))
    stop.set()
    await job
    assert _counts(timed, msg)[0] == 3


def test_retention_is_checked_and_for_admins(instance: Instance) -> None:
    member = instance.accounts.create_user("mo@example.com", PASSWORD, role="member")
    with pytest.raises(Forbidden):
        instance.privacy.set_retention(member, 30)
    with pytest.raises(Forbidden):
        instance.privacy.purge(member)
    for bad in (0, -1, 40000):
        with pytest.raises(InvalidInput) as caught:
            instance.privacy.set_retention(None, bad)
        assert caught.value.field == "retention_days"
    assert instance.privacy.set_retention(None, 90).days == 90
    assert instance.privacy.set_retention(None, None).days is None


# -- data-subject requests -------------------------------------------------------------------

def _erin_everywhere(instance: Instance) -> tuple[MessageRecord, MessageRecord]:
    box = _box(instance)
    msg = _quote(instance, box)
    keys = _keys(instance, msg)
    now = datetime.now(UTC)
    record_views(instance.store, [_hit(keys["erin@example.org"], now),
                                  _hit(keys["frank@example.org"], now, ip="203.0.113.9")],
                 Judge())
    other = _quote(instance, box, to=("frank@example.org",))
    received = instance.ingestor.ingest(box, (
        b"From: Erin <erin@EXAMPLE.org>\r\nTo: sales@example.com\r\nSubject: Re: Quote\r\n"
        b"Message-ID: <r1@example.org>\r\n\r\nThanks\r\n"), "smtp").message
    assert other.id != msg.id
    return msg, received


def test_export_gives_everything_stored_about_one_address(instance: Instance) -> None:
    msg, received = _erin_everywhere(instance)
    data = instance.privacy.export(None, "ERIN@example.org")
    assert data["address"] == "erin@example.org"
    [sent] = data["messages_sent_to_them"]
    assert sent["id"] == msg.id and sent["named_as"] == ["to", "envelope"]
    [copy] = data["copies"]
    assert copy["message_id"] == msg.id and copy["recipient"] == "Erin@Example.ORG"
    [view] = data["views"]
    assert view["ip"] == "198.51.100.7" and view["user_agent"] == OUTLOOK
    assert view["headers"] == HEADERS
    assert [m["id"] for m in data["messages_received_from_them"]] == [received.id]
    assert data["messages_received_naming_them"] == []
    json.dumps(data, default=str)  # JSON as it is
    nobody = instance.privacy.export(None, "nobody@example.org")
    assert nobody["views"] == [] and nobody["copies"] == []


def test_erase_removes_their_views_and_address_and_says_what_it_did(
        instance: Instance) -> None:
    msg, _ = _erin_everywhere(instance)
    before = _counts(instance, msg)
    result = instance.privacy.erase(None, "erin@example.org")
    assert result.removed == {"views": 1, "copy_recipients": 1, "consent_events": 0}
    assert result.kept == {"messages_sent_to_them": 1, "messages_received": 1}
    rows = _rows(instance)
    assert [r["ip"] for r in rows] == ["203.0.113.9"]  # Frank's view stays
    copies = instance.store.copies_of([msg.id])[msg.id]
    assert [c.recipient for c in copies] == [ERASED, "frank@example.org"]
    assert copies[0].token_key is None  # later fetches of the pixel are not recorded
    assert _counts(instance, msg) == before  # counts stay
    reclassify(instance.store, Judge())  # also once the views are judged again
    assert _counts(instance, msg) == before
    again = instance.privacy.erase(None, "erin@example.org")
    assert again.removed == {"views": 0, "copy_recipients": 0, "consent_events": 0}
    assert instance.privacy.export(None, "erin@example.org")["copies"] == []


def test_a_person_is_found_whatever_the_case_and_form_of_their_domain(
        instance: Instance) -> None:
    msg = _quote(instance, _box(instance), to=("Jo@BÜCHER.fr", "jo@example.fr"))
    record_views(instance.store, [_hit(_keys(instance, msg)["jo@bücher.fr"],
                                       datetime.now(UTC))], Judge())
    data = instance.privacy.export(None, "jo@xn--bcher-kva.fr")
    assert data["address"] == "jo@xn--bcher-kva.fr"
    assert [c["recipient"] for c in data["copies"]] == ["Jo@BÜCHER.fr"]
    assert len(data["views"]) == 1
    assert instance.privacy.erase(None, "JO@bücher.FR").removed == {
        "views": 1, "copy_recipients": 1, "consent_events": 0}


def test_requests_need_an_address_and_an_admin(instance: Instance) -> None:
    member = instance.accounts.create_user("mo@example.com", PASSWORD, role="member")
    for call in (instance.privacy.export, instance.privacy.erase):
        with pytest.raises(Forbidden):
            call(member, "erin@example.org")
        with pytest.raises(InvalidInput) as caught:
            call(None, "not an address")
        assert caught.value.field == "address"


# -- the edges -------------------------------------------------------------------------------

def test_the_cli_exports_erases_purges_and_shows_the_settings(
        cli: Cli, instance: Instance) -> None:
    _erin_everywhere(instance)
    data = json.loads(ok(cli("privacy", "export", "erin@example.org")))
    assert len(data["views"]) == 1 and data["address"] == "erin@example.org"
    out = ok(cli("privacy", "erase", "erin@example.org"))
    assert "removed 1 view(s)" in out and "1 copy recipient(s)" in out
    assert "kept 2 message(s)" in out
    assert "--address" not in error(cli("privacy", "export", "nope"), 2)
    assert error(cli("privacy", "erase", "nope"), 2) == (
        "mailseen: error: address: 'nope' is not an email address")
    assert "purge: off" in ok(cli("privacy", "purge"))
    ok(cli("settings", "privacy", "--ip", "truncated", "--user-agent", "family",
           "--retention-days", "30"))
    shown = ok(cli("settings", "show"))
    assert "view IP address: truncated" in shown
    assert "view user agent: family" in shown
    assert "view details kept: 30 days (last purge: never)" in shown
    assert re.search(r"purged the details of 0 view\(s\) older than \d{4}-",
                     ok(cli("privacy", "purge")))
    assert "last purge: 20" in ok(cli("settings", "show"))
    error(cli("settings", "privacy", "--retention-days", "0"), 2)
    ok(cli("settings", "privacy", "--retention-days", "forever"))
    assert "view details kept: for ever" in ok(cli("settings", "show"))


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url + "/api/v1",
                      headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        yield client


def test_the_api_exports_erases_and_sets_privacy(api: httpx.Client, instance: Instance) -> None:
    _erin_everywhere(instance)
    resp = api.get("/privacy/export", params={"address": "Erin@example.org"})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["views"]) == 1
    bad = api.get("/privacy/export", params={"address": "nope"})
    assert bad.status_code == 422 and bad.json()["field"] == "address"
    resp = api.post("/privacy/erase", json={"address": "erin@example.org"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"address": "erin@example.org",
                           "removed": {"views": 1, "copy_recipients": 1, "consent_events": 0},
                           "kept": {"messages_sent_to_them": 1, "messages_received": 1}}
    bad = api.post("/privacy/erase", json={"address": 5})
    assert bad.status_code == 422 and bad.json()["field"] == "address"
    resp = api.get("/settings/privacy")
    assert resp.json() == {"ip": "full", "user_agent": "full", "retention_days": None,
                           "last_purge": None}
    resp = api.put("/settings/privacy", json={"ip": "none", "retention_days": 10})
    assert resp.status_code == 200, resp.text
    assert resp.json()["ip"] == "none" and resp.json()["user_agent"] == "full"
    assert instance.privacy.view_details() == ViewDetails("none", "full")
    bad = api.put("/settings/privacy", json={"ip": "half"})
    assert bad.status_code == 422 and bad.json()["field"] == "ip"
    bad = api.put("/settings/privacy", json={"retention_days": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "retention_days"
    resp = api.put("/settings/privacy", json={"retention_days": None})
    assert resp.json()["retention_days"] is None


def test_members_cannot_use_the_privacy_api(live_server: LiveServer, instance: Instance
                                            ) -> None:
    member = instance.accounts.create_user("mo@example.com", PASSWORD, role="member")
    token = instance.accounts.create_token(None, "mo", member.id)
    headers = {"Authorization": f"Bearer {token}"}
    base = live_server.url + "/api/v1"
    for resp in (httpx.get(f"{base}/privacy/export", params={"address": "a@example.org"},
                           headers=headers),
                 httpx.post(f"{base}/privacy/erase", json={"address": "a@example.org"},
                            headers=headers),
                 httpx.put(f"{base}/settings/privacy", json={"ip": "none"}, headers=headers)):
        assert resp.status_code == 403
    assert httpx.get(f"{base}/settings/privacy", headers=headers).status_code == 200


def test_the_settings_page_has_a_privacy_section(web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("ada@example.com", PASSWORD, name="Ada", role="admin")
    web.sign_in("ada@example.com")
    page = web.get("/settings/data")
    assert page.status == 200
    assert "reclassify" in page.text("#hint-ip")  # what truncation costs
    assert page.text("#last-purge") == "The purge has not run yet."
    form = page.form("/settings/data")
    assert (form["ip"], form["user_agent"], form["retention_days"]) == ("full", "full", "")
    page = web.submit(page, "/settings/data", ip="truncated", user_agent="family",
                      retention_days="30")
    assert page.text(".notice") == "Saved."
    assert instance.privacy.view_details() == ViewDetails("truncated", "family")
    assert instance.privacy.retention().days == 30
    page = web.submit(page, "/settings/data", ip="truncated", user_agent="family",
                      retention_days="thirty")
    assert page.status == 422
    assert "Keep view details" in page.text("#err-retention_days")
    assert instance.privacy.retention().days == 30
    page = web.submit(web.get("/settings/data"), "/settings/data", ip="full",
                      user_agent="full", retention_days="")
    assert instance.privacy.retention().days is None


def test_members_are_kept_out_of_the_privacy_page(web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("mo@example.com", PASSWORD, role="member")
    web.sign_in("mo@example.com")
    assert web.get("/settings/data").status == 403


def test_every_privacy_setting_and_value_is_documented() -> None:
    docs = DOCS.read_text()
    for name in ("mailseen settings privacy", "--ip", "--user-agent", "--retention-days",
                 "/api/v1/settings/privacy", "/api/v1/privacy/export",
                 "/api/v1/privacy/erase", "mailseen privacy purge", "mailseen privacy export",
                 "mailseen privacy erase"):
        assert name in docs, name
    for value in ("`full`", "`truncated`", "`none`", "`family`"):
        assert value in docs, value
