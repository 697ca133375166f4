"""Follow-up reminders and notices: a deadline passing without a person's view or reply
e-mails the sender through the mailbox's relay (a real aiosmtpd) and puts the conversation
under "Follow up"; a view or reply by then cancels it, a machine fetch or an auto-reply does
not. Users told of first views at once or in a daily digest. Time moves on a ManualClock."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from mailseen.clock import ManualClock
from mailseen.core.compose import Draft
from mailseen.errors import InvalidInput
from mailseen.records import Judged, MailboxIn, MailboxRecord, MessageRecord, UserRecord, ViewIn
from mailseen.services.classification import record_views
from mailseen.services.instance import Instance
from mailseen.services.reminders import RemindChoice, parse_deadline

from .cli_runner import Cli, error, ok
from .conftest import make_settings
from .smtp_server import SmtpServer
from .web_client import PASSWORD
from .webhook_receiver import Receiver, receiver

DAY = 86400.0
HUMAN = Judged("human", "no machine signal", "Outlook on Windows")
MACHINE = Judged("machine", "Apple Mail Privacy Protection proxy", "Apple Mail proxy")


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer("starttls", {"relay-user": "pw"}).start(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def inst(tmp_path: Path, database_url: str, clock: ManualClock, smtp: SmtpServer
         ) -> Iterator[Instance]:
    instance = Instance.open(make_settings(tmp_path, database_url, ca_file=smtp.ca_file),
                             migrate=False, clock=clock)
    yield instance
    instance.close()


@pytest.fixture
def box(inst: Instance, smtp: SmtpServer) -> MailboxRecord:
    return inst.store.add_mailbox(MailboxIn(
        "sales@example.com", "Sales", transport="smtp", smtp_host="127.0.0.1",
        smtp_port=smtp.port, smtp_tls="starttls", smtp_username="relay-user",
        smtp_password="pw", tracking="enabled"))


@pytest.fixture
def ada(inst: Instance) -> UserRecord:
    return inst.accounts.create_user("ada@example.com", PASSWORD, name="Ada", role="admin")


def _send(inst: Instance, box: MailboxRecord, user: UserRecord | None,
          remind: RemindChoice | None = None, subject: str = "Quote") -> MessageRecord:
    msg = inst.sender.send_draft(box, Draft(from_addr=box.address, to=["erin@example.org"],
                                            subject=subject, text="Our quote",
                                            html="<p>Our quote</p>"),
                                 actor=user, remind=remind)
    asyncio.run(inst.worker().drain())
    return msg


def _view(inst: Instance, msg: MessageRecord, judged: Judged = HUMAN) -> None:
    [copy] = inst.store.copies_of([msg.id])[msg.id]
    assert copy.token_key is not None
    record_views(inst.store, [ViewIn(0, 0, inst.clock.now(), "GET", "198.51.100.7", "UA",
                                     copy_key=copy.token_key)], lambda v, sent: judged)


def _reply(inst: Instance, box: MailboxRecord, msg: MessageRecord, auto: bool = False,
           n: int = 1) -> None:
    extra = "Auto-Submitted: auto-replied\r\n" if auto else ""
    raw = (f"From: erin@example.org\r\nTo: {box.address}\r\nSubject: Re: Quote\r\n"
           f"Message-ID: <r{n}@example.org>\r\nIn-Reply-To: {msg.message_id}\r\n{extra}\r\n"
           "Thanks\r\n").encode()
    inst.ingestor.ingest(box, raw, "imap")


def _check(inst: Instance) -> dict[str, int]:
    return asyncio.run(inst.reminder_job().run_once())


def _notices(smtp: SmtpServer, to: str = "ada@example.com") -> list[email.message.EmailMessage]:
    found = []
    for m in smtp.messages:
        if m.rcpt_tos == [to]:
            parsed = email.message_from_bytes(m.data, policy=email.policy.default)
            assert isinstance(parsed, email.message.EmailMessage)
            found.append(parsed)
    return found


def _follow_up(inst: Instance) -> list[int]:
    return [c.id for c, _ in inst.messages.listing(None, status="follow-up")]


def test_a_message_not_viewed_in_time_reminds_its_sender(inst: Instance, box: MailboxRecord,
                                                         ada: UserRecord, smtp: SmtpServer,
                                                         clock: ManualClock) -> None:
    msg = _send(inst, box, ada, RemindChoice(not_viewed=3))
    _view(inst, msg, MACHINE)  # a machine fetch is no view
    clock.advance(2 * DAY)
    assert _check(inst)["fired"] == 0 and _notices(smtp) == []
    clock.advance(DAY + 1)
    assert _check(inst) == {"fired": 1, "cancelled": 0, "reminded": 1, "notices": 0,
                            "digests": 0}
    [notice] = _notices(smtp)
    assert notice["Subject"] == "Follow up: not viewed yet: Quote"
    assert notice["From"].addresses[0].addr_spec == "sales@example.com"
    assert "“Quote” to erin@example.org" in notice.get_content()
    assert smtp.messages[-1].authenticated_as == "relay-user"
    [conversation] = _follow_up(inst)
    assert conversation == inst.store.get_message(msg.id).conversation_id
    assert _check(inst)["reminded"] == 0  # told once
    _view(inst, msg)  # seen at last: no longer to follow up
    assert _follow_up(inst) == []


def test_a_view_or_reply_in_time_cancels_and_an_auto_reply_does_not(
        inst: Instance, box: MailboxRecord, ada: UserRecord, smtp: SmtpServer,
        clock: ManualClock) -> None:
    viewed = _send(inst, box, ada, RemindChoice(not_viewed=1), "Viewed")
    replied = _send(inst, box, ada, RemindChoice(not_replied=2), "Replied")
    auto = _send(inst, box, ada, RemindChoice(not_replied=2), "Auto")
    _view(inst, viewed)
    _reply(inst, box, replied, n=1)
    _reply(inst, box, auto, auto=True, n=2)
    clock.advance(3 * DAY)
    done = _check(inst)
    assert (done["fired"], done["cancelled"], done["reminded"]) == (1, 2, 1)
    [notice] = _notices(smtp)
    assert notice["Subject"] == "Follow up: not replied to yet: Auto"


def test_the_mailbox_default_applies_unless_the_sender_says_otherwise(
        inst: Instance, box: MailboxRecord, ada: UserRecord, clock: ManualClock) -> None:
    box = inst.mailboxes.update(None, box.id, {"remind_not_viewed_days": 2})
    default = _send(inst, box, ada)
    none = _send(inst, box, ada, RemindChoice(not_viewed=0))
    dated = _send(inst, box, ada, RemindChoice(not_viewed=date.today() + timedelta(days=5)))
    found = inst.reminders.of([default.id, none.id, dated.id])
    assert [r.kind for r in found[default.id]] == ["not_viewed"]
    assert found[default.id][0].due_at - clock.now() == timedelta(days=2)
    assert found[none.id] == []
    assert found[dated.id][0].due_at.hour == 0
    with pytest.raises(InvalidInput) as err:
        _send(inst, box, ada, RemindChoice(not_replied=date.today() - timedelta(days=1)))
    assert err.value.field == "remind_not_replied"
    with pytest.raises(InvalidInput):
        inst.mailboxes.update(None, box.id, {"remind_not_viewed_days": 0})


def test_deadlines_as_typed() -> None:
    assert parse_deadline("", "f") is None
    assert parse_deadline("never", "f") == 0
    assert parse_deadline(" 3 ", "f") == 3
    assert parse_deadline("2030-01-02", "f") == date(2030, 1, 2)
    with pytest.raises(InvalidInput):
        parse_deadline("soon", "f")


def test_a_fired_reminder_is_a_webhook_event(inst: Instance, box: MailboxRecord,
                                             ada: UserRecord, clock: ManualClock) -> None:
    from mailseen.records import WebhookIn

    with receiver() as hooks:
        inst.webhooks.register(None, WebhookIn(hooks.url, ("message.not_viewed",)))
        _send(inst, box, ada, RemindChoice(not_viewed=1))
        clock.advance(DAY + 1)
        _check(inst)
        asyncio.run(inst.webhook_worker().drain())
        _assert_not_viewed(hooks)


def _assert_not_viewed(hooks: Receiver) -> None:
    [event] = hooks.events()
    assert event.json["type"] == "message.not_viewed"
    assert event.json["data"]["message"]["subject"] == "Quote"
    assert event.json["data"]["note"].startswith("no view by ")


def test_first_views_told_at_once_or_in_a_daily_digest(inst: Instance, box: MailboxRecord,
                                                       ada: UserRecord, smtp: SmtpServer,
                                                       clock: ManualClock) -> None:
    max_ = inst.accounts.create_user("max@example.com", PASSWORD, name="Max")
    inst.store.set_memberships(max_.id, [box.id])
    inst.reminders.set_notify(ada, "immediately")
    inst.reminders.set_notify(max_, "daily")
    mine = _send(inst, box, ada, subject="Ada's quote")
    his = _send(inst, box, max_, subject="Max's quote")
    replied = _send(inst, box, max_, subject="Max's offer")
    waiting = _send(inst, box, max_, RemindChoice(not_viewed=1), subject="Max's reminder")
    clock.advance(60)
    _view(inst, mine)
    _view(inst, his)
    _reply(inst, box, replied)
    assert _check(inst)["notices"] == 1
    [told] = _notices(smtp)
    assert told["Subject"] == "Viewed: Ada's quote"
    assert _check(inst)["notices"] == 0  # nothing new
    assert _notices(smtp, "max@example.com") == []
    clock.advance(DAY)
    assert _check(inst)["digests"] == 1
    [digest] = [n for n in _notices(smtp, "max@example.com")
                if n["Subject"].startswith("mailseen: your messages")]
    text = digest.get_content().replace("\r\n", "\n")
    assert "Viewed for the first time:\n- “Max's quote”" in text
    assert "Replied:\n- “Max's offer”" in text
    assert "Waiting: a reminder passed without a view or reply:\n- “Max's reminder”" in text
    assert "Ada's quote" not in text
    assert waiting.id != his.id
    assert _check(inst)["digests"] == 0  # one a day
    with pytest.raises(InvalidInput):
        inst.reminders.set_notify(ada, "hourly")


# -- the edges: compose, settings, the listing, the API, the CLI ---------------------------------

def test_compose_asks_for_a_reminder_and_the_listing_shows_follow_up(
        inst: Instance, box: MailboxRecord, ada: UserRecord, smtp: SmtpServer,
        clock: ManualClock) -> None:
    from .web_client import WebClient

    with WebClient(inst) as web:
        web.sign_in("ada@example.com")
        page = web.get("/compose")
        bad = web.submit(page, "/compose", to="erin@example.org", subject="Offer",
                         html="<p>Offer</p>", remind_not_viewed="soon", do="send")
        assert bad.status == 422
        assert bad.text("#form-error").startswith("Remind me if not viewed in: a number")
        assert bad.form("/compose")["remind_not_viewed"] == "soon"
        sent = web.submit(bad, "/compose", remind_not_viewed="2", do="send")
        assert sent.status == 200
        asyncio.run(inst.worker().drain())
        [message] = inst.store.list_messages()
        [reminder] = inst.reminders.of([message.id])[message.id]
        assert reminder.kind == "not_viewed" and reminder.user_id == ada.id
        listing = web.get("/conversations?status=follow-up")
        assert listing.all("li.conversation") == []
        clock.advance(2 * DAY + 1)
        _check(inst)
        listing = web.get("/conversations?status=follow-up")
        assert [li.select_one(".subject").get_text() for li in listing.all("li.conversation")
                ] == ["Offer"]
        assert listing.soup.select_one('#status option[value="follow-up"]').get_text() == \
            "Follow up"
        page = web.get(f"/conversations/{message.conversation_id}")
        assert "follow up (the sender was reminded)" in page.text(".reminder-fired")
        account = web.get("/account/notices")
        saved = web.submit(account, "/account/notices", notify="daily")
        assert saved.text(".notice") == "Saved."
        assert inst.accounts.find_user(None, "ada@example.com").notify == "daily"
        settings = web.get(f"/settings/mailboxes/{box.id}?tab=misc")
        wrong = web.submit(settings, f"/settings/mailboxes/{box.id}?tab=misc",
                           remind_not_viewed_days="400")
        assert wrong.status == 422
        web.submit(settings, f"/settings/mailboxes/{box.id}?tab=misc",
                   remind_not_viewed_days="4", remind_not_replied_days="")
        assert inst.store.get_mailbox(box.id).remind_not_viewed_days == 4


def test_reminders_through_the_api(inst: Instance, box: MailboxRecord, ada: UserRecord
                                   ) -> None:
    from mailseen.services.accounts import hash_token

    from .web_client import WebClient

    inst.store.add_token("ada", hash_token("ms_ada_token"), user_id=ada.id)
    auth = {"Authorization": "Bearer ms_ada_token"}
    with WebClient(inst) as web:
        api = web.client
        sent = api.post("/api/v1/messages", headers=auth, json={
            "mailbox": box.address, "to": ["erin@example.org"], "subject": "Hi",
            "html": "<p>Hi</p>", "remind_not_viewed": 3, "remind_not_replied": "2030-01-31"})
        assert sent.status_code == 202, sent.text
        detail = api.get(f"/api/v1/messages/{sent.json()['id']}", headers=auth).json()
        assert [(r["kind"], r["state"]) for r in detail["reminders"]] == [
            ("not_viewed", "waiting"), ("not_replied", "waiting")]
        assert detail["reminders"][1]["due_at"].startswith("2030-02-01T00:00:00")
        bad = api.post("/api/v1/messages", headers=auth, json={
            "mailbox": box.address, "to": ["erin@example.org"], "html": "<p>x</p>",
            "remind_not_viewed": 400})
        assert bad.status_code == 422 and bad.json()["field"] == "remind_not_viewed"
        raw = (b"From: sales@example.com\r\nTo: erin@example.org\r\nSubject: Raw\r\n"
               b"Content-Type: text/html\r\n\r\n<p>Raw</p>\r\n")
        queued = api.post("/api/v1/messages/raw?mailbox=sales@example.com"
                          "&remind_not_replied=5", headers=auth, content=raw)
        assert queued.status_code == 202, queued.text
        assert [r.kind for r in inst.reminders.of([queued.json()["id"]])[
            queued.json()["id"]]] == ["not_replied"]
        wrong = api.post("/api/v1/messages/raw?mailbox=sales@example.com"
                         "&remind_not_replied=later", headers=auth, content=raw)
        assert wrong.status_code == 422 and wrong.json()["field"] == "remind_not_replied"
        told = api.put("/api/v1/notifications", headers=auth, json={"notify": "immediately"})
        assert told.json() == {"notify": "immediately"}
        assert api.put("/api/v1/notifications", headers=auth,
                       json={"notify": "hourly"}).status_code == 422
        box_out = api.patch(f"/api/v1/mailboxes/{box.id}", headers=auth,
                            json={"remind_not_replied_days": 7}).json()
        assert box_out["remind_not_replied_days"] == 7


def test_reminders_from_the_command_line(cli: Cli) -> None:
    ok(cli("mailbox", "add", "sales@example.com", "--remind-not-viewed-days", "3"))
    shown = json.loads(ok(cli("mailbox", "show", "sales@example.com")))
    assert shown["remind_not_viewed_days"] == 3
    ok(cli("mailbox", "set", "sales@example.com", "--remind-not-viewed-days", "0"))
    assert json.loads(ok(cli("mailbox", "show", "sales@example.com")))[
        "remind_not_viewed_days"] is None
    assert "queued message" in ok(cli("send", "--mailbox", "sales@example.com", "--to",
                                      "a@example.org", "--text", "x",
                                      "--remind-not-replied", "4"))
    assert "--remind-not-viewed" in error(cli("send", "--mailbox", "sales@example.com",
                                              "--to", "a@example.org", "--text", "x",
                                              "--remind-not-viewed", "someday"), 2)
    ok(cli("user", "add", "ada@example.com", "--admin", "--password-stdin",
           input="correct horse battery\n"))
    assert json.loads(ok(cli("user", "set", "ada@example.com", "--notify", "daily")))[
        "notify"] == "daily"


def test_notices_through_the_installation_relay(tmp_path: Path, database_url: str,
                                                clock: ManualClock, smtp: SmtpServer) -> None:
    """With notify_relay set, reminders leave through it (from notify_from), whatever the
    sending mailbox's own transport: here the outbox folder."""
    inst = Instance.open(make_settings(
        tmp_path, database_url, ca_file=smtp.ca_file,
        notify_relay=f"smtp://relay-user:pw@127.0.0.1:{smtp.port}",
        notify_from="mailseen@example.com"), migrate=False, clock=clock)
    try:
        box = inst.store.add_mailbox(MailboxIn("sales@example.com", tracking="enabled"))
        ada = inst.accounts.create_user("ada@example.com", PASSWORD, role="admin")
        _send(inst, box, ada, RemindChoice(not_replied=1))
        clock.advance(DAY + 1)
        assert _check(inst)["reminded"] == 1
        [notice] = _notices(smtp)
        assert notice["From"].addresses[0].addr_spec == "mailseen@example.com"
        assert smtp.messages[-1].mail_from == "mailseen@example.com"
        assert smtp.messages[-1].authenticated_as == "relay-user"
    finally:
        inst.close()
    bad = Instance.open(make_settings(tmp_path, database_url, notify_relay="http://x"),
                        migrate=False)
    try:
        with pytest.raises(InvalidInput) as err:
            bad.reminder_job()
        assert err.value.field == "notify_relay"
    finally:
        bad.close()
