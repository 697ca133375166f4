"""Webhooks in the Settings pages, the API and the CLI: registering an endpoint, its delivery
log with "send again", a disabled endpoint told to the admins, members kept out."""

from __future__ import annotations

import asyncio
import json

import pytest

from mailseen.core.compose import Draft
from mailseen.records import MailboxIn, UserRecord, WebhookIn
from mailseen.services.instance import Instance

from .cli_runner import Cli, error, ok
from .conftest import API_TOKEN
from .web_client import PASSWORD, WebClient
from .webhook_receiver import Receiver, receiver

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def admin(web: WebClient, instance: Instance) -> UserRecord:
    user = instance.accounts.create_user("ada@example.com", PASSWORD, name="Ada", role="admin")
    web.sign_in("ada@example.com")
    return user


def _deliver_one(instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn("sales@example.com", tracking="enabled"))
    instance.sender.send_draft(box, Draft(from_addr=box.address, to=["erin@example.org"],
                                          subject="Hello", text="Hi", html="<p>Hi</p>"))
    asyncio.run(instance.worker().drain())


def test_an_admin_adds_a_webhook_and_sends_an_event_again(web: WebClient, admin: UserRecord,
                                                          instance: Instance) -> None:
    with receiver() as hooks:
        page = web.get("/settings/webhooks")
        assert page.status == 200 and "No webhooks yet" in page.text("main")
        bad = web.submit(page, "/settings/webhooks", url="mailto:x@example.com")
        assert bad.status == 422
        problems = [li.get_text(" ").strip() for li in bad.all(".error-summary li")]
        assert any("Events" in p for p in problems) and any("http" in p for p in problems)
        data = {**page.form("/settings/webhooks"), "url": hooks.url,
                "events": ["message.delivered", "message.viewed"], "format": "slack",
                "description": "Sales channel"}
        made = web.client.post("/settings/webhooks", data=data)
        assert made.status_code == 200 and "/settings/webhooks/" in str(made.url)
        [hook] = instance.webhooks.all(None)
        assert hook.events == ("message.delivered", "message.viewed")
        assert hook.format == "slack" and hook.description == "Sales channel"
        detail = web.get(f"/settings/webhooks/{hook.id}")
        assert detail.text("#secret") == hook.secret
        _deliver_one(instance)
        assert asyncio.run(instance.webhook_worker().drain()) == 1
        detail = web.get(f"/settings/webhooks/{hook.id}")
        [row] = detail.all("#log tbody tr")
        assert "delivered" in row.get_text() and "200" in row.get_text()
        action = row.find("form")["action"]
        again = web.submit(detail, action)
        assert again.status == 200 and "Queued to be sent again" in again.text(".notice")
        assert asyncio.run(instance.webhook_worker().drain()) == 1
        assert len(hooks.received) == 2
        assert hooks.received[0].body == hooks.received[1].body
        assert hooks.received[0].headers["webhook-id"] == hooks.received[1].headers["webhook-id"]


def test_a_disabled_endpoint_is_shown_to_the_admins(web: WebClient, admin: UserRecord,
                                                    instance: Instance) -> None:
    hook = instance.webhooks.register(None, WebhookIn("https://hooks.example.com/x",
                                                      ("message.viewed",)))
    instance.store.set_webhook_enabled(hook.id, False, "every attempt failed for a day "
                                                       "(last: HTTP 500)")
    page = web.get("/settings/webhooks")
    assert "every attempt failed for a day" in page.text(f"#disabled-{hook.id}")
    banner = web.get("/conversations").text("#webhooks-disabled")  # on every admin page
    assert banner.startswith("A webhook was disabled.")
    assert "https://hooks.example.com/x : every attempt failed for a day" in banner
    detail = web.get(f"/settings/webhooks/{hook.id}")
    assert "Disabled" in detail.text("#disabled")
    back = web.submit(detail, f"/settings/webhooks/{hook.id}/enable")
    assert "Enabled" in back.text(".notice") and instance.webhooks.get(None, hook.id).enabled
    assert back.all("#webhooks-disabled") == []


def test_members_cannot_see_webhooks(web: WebClient, instance: Instance) -> None:
    instance.accounts.create_user("max@example.com", PASSWORD, name="Max")
    web.sign_in("max@example.com")
    off = instance.webhooks.register(None, WebhookIn("https://hooks.example.com/x",
                                                     ("message.viewed",)))
    instance.webhooks.set_enabled(None, off.id, False)
    assert web.get("/conversations").all("#webhooks-disabled") == []  # admins only
    assert web.get("/settings/webhooks").status == 403
    assert web.get("/settings/webhooks/1").status == 403
    assert web.get("/settings/webhooks/nope").status == 403


def test_webhooks_through_the_api(web: WebClient, instance: Instance) -> None:
    api = web.client
    made = api.post("/api/v1/webhooks", headers=AUTH, json={
        "url": "https://hooks.example.com/in", "events": ["message.replied"],
        "every_view": False})
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["secret"].startswith("whsec_") and hook["enabled"] is True
    bad = api.post("/api/v1/webhooks", headers=AUTH, json={"url": "https://x.example",
                                                          "events": ["message.opened"]})
    assert bad.status_code == 422 and bad.json()["field"].startswith("events")
    bad = api.post("/api/v1/webhooks", headers=AUTH, json={"url": "ftp://x.example",
                                                          "events": ["message.viewed"]})
    assert bad.status_code == 422 and bad.json()["field"] == "url"
    assert api.get("/api/v1/webhooks/999", headers=AUTH).status_code == 404
    rotated = api.post(f"/api/v1/webhooks/{hook['id']}/secret", headers=AUTH).json()
    assert rotated["secret"] != hook["secret"]
    off = api.post(f"/api/v1/webhooks/{hook['id']}/disable", headers=AUTH).json()
    assert off["enabled"] is False and off["disabled_reason"] == "disabled by the installation"
    assert api.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=AUTH).json() == []
    assert api.post(f"/api/v1/webhooks/{hook['id']}/deliveries/5/resend",
                    headers=AUTH).status_code == 404
    assert api.delete(f"/api/v1/webhooks/{hook['id']}", headers=AUTH).status_code == 204
    assert api.get("/api/v1/webhooks", headers=AUTH).json() == []


def test_webhooks_from_the_command_line(cli: Cli, instance: Instance) -> None:
    ok(cli("mailbox", "add", "sales@example.com", "--tracking", "enabled"))
    with receiver() as hooks:
        out = json.loads(ok(cli("webhook", "add", hooks.url, "--event", "message.delivered",
                                "--mailbox", "sales@example.com")))
        assert out["secret"].startswith("whsec_") and out["mailbox_id"] is not None
        assert "--mailbox: no mailbox nobody@example.com" in error(cli(
            "webhook", "add", hooks.url, "--mailbox", "nobody@example.com", "--event",
            "message.viewed"), 2)
        ok(cli("send", "--mailbox", "sales@example.com", "--to", "erin@example.org",
               "--subject", "Hi", "--html", "-", input="<p>Hello</p>"))
        worker = ok(cli("worker", "--once"))
        assert "sent 1 webhook event(s)" in worker
        _check_received(hooks)
        log = ok(cli("webhook", "log", str(out["id"])))
        assert "message.delivered\tdelivered\tattempts=1\tanswer=200" in log
        assert f"{out['id']}\t{hooks.url}" in ok(cli("webhook", "list"))
        ok(cli("webhook", "disable", str(out["id"])))
        assert "DISABLED: disabled by the installation" in ok(cli("webhook", "list"))
        assert "no webhook 99" in error(cli("webhook", "remove", "99"))


def _check_received(hooks: Receiver) -> None:
    [event] = hooks.events()
    assert event.json["type"] == "message.delivered"
    assert event.json["data"]["recipient"] == "erin@example.org"
