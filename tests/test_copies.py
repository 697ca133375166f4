"""One copy per recipient: each with a pixel of its own, views and replies attributed to the
recipient whose copy it was, and every delivery state shown for what it is."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import httpx
import pytest

from mailseen.clock import ManualClock
from mailseen.core.compose import Draft
from mailseen.core.inject import tag_message
from mailseen.core.pixel import pixel_tag, pixel_url
from mailseen.core.splice import splice_of, spliced
from mailseen.core.tokens import TokenRef
from mailseen.errors import InvalidInput
from mailseen.records import CopyRecord, MailboxIn, MailboxRecord, MessageRecord
from mailseen.services import sending
from mailseen.services.inbound import Ingestor
from mailseen.services.instance import Instance
from mailseen.services.live import LiveScope

from .cli_runner import Cli
from .conftest import API_TOKEN, LiveServer, backdate_sent, eventually, make_settings
from .smtp_server import SmtpServer
from .test_inject import WORDS, _combos, html_leaf, message, multipart, page, text_leaf
from .web_client import PASSWORD, WebClient

OUTLOOK = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 Microsoft Outlook 16.0.17231")
TOKEN = re.compile(rb"/t/([A-Za-z0-9_-]{31})\.gif")


def _box(instance: Instance, **kw: object) -> MailboxRecord:
    options: dict[str, object] = {"tracking": "enabled", **kw}
    return instance.store.add_mailbox(MailboxIn("sales@example.com", "Acme Sales",
                                                **options))  # type: ignore[arg-type]


def _quote(instance: Instance, box: MailboxRecord) -> MessageRecord:
    draft = Draft(from_addr=box.address, to=["erin@example.org"], cc=["frank@example.org"],
                  bcc=["gina@example.net"], subject="Quote for two", text="Our quote",
                  html="<p>Our quote</p>")
    return instance.sender.send_draft(box, draft)


def _outbox_tokens(instance: Instance) -> dict[str, str]:
    """Each delivered copy's pixel token, by its recipient (an outbox file is named after
    the message and the copy's position)."""
    whose = {}
    for m in instance.store.list_messages():
        for c in instance.store.copies_of([m.id])[m.id]:
            whose[f"-{m.id}-{c.position}.eml"] = c.recipient
    found = {}
    for eml in instance.settings.outbox_dir.glob("*.eml"):
        match = TOKEN.search(eml.read_bytes())
        assert match is not None
        recipient = next(r for end, r in whose.items() if eml.name.endswith(end))
        found[str(recipient)] = match.group(1).decode()
    return found


def test_each_recipient_gets_a_copy_of_their_own_in_the_outbox(instance: Instance) -> None:
    box = _box(instance)
    msg = _quote(instance, box)
    assert msg.copies == 3 and msg.tracked
    assert asyncio.run(instance.worker().drain()) == 3
    tokens = _outbox_tokens(instance)
    assert sorted(tokens) == ["erin@example.org", "frank@example.org", "gina@example.net"]
    assert len(set(tokens.values())) == 3
    copies = instance.messages.copies(None, instance.messages.get(None, msg.id))
    assert [(c.position, c.recipient, c.status) for c in copies] == [
        (1, "erin@example.org", "sent"), (2, "frank@example.org", "sent"),
        (3, "gina@example.net", "sent")]
    assert instance.store.get_message(msg.id).status == "sent"


def test_an_untracked_message_leaves_once_for_everyone(instance: Instance) -> None:
    box = _box(instance, tracking="disabled")
    msg = _quote(instance, box)
    assert msg.copies == 0 and not msg.tracked
    assert asyncio.run(instance.worker().drain()) == 1
    [copy] = instance.messages.copies(None, msg)
    assert copy.recipient is None and copy.token_key is None and copy.status == "sent"


def test_views_replies_and_the_eye_name_the_recipient_whose_copy_it_was(
        live_server: LiveServer, instance: Instance) -> None:
    box = _box(instance)
    msg = _quote(instance, box)
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    tokens = _outbox_tokens(instance)
    # frank opens his copy; his client shows it twice a few minutes apart
    resp = httpx.get(f"{live_server.url}/t/{tokens['frank@example.org']}.gif",
                     headers={"User-Agent": OUTLOOK})
    assert resp.status_code == 200
    copies = {c.recipient: c for c in instance.messages.copies(None, msg)}
    assert copies["frank@example.org"].view_count == 1
    assert copies["erin@example.org"].view_count == 0
    after = instance.store.get_message(msg.id)
    assert (after.view_count, after.viewed_copies, after.copies) == (1, 1, 3)
    [view] = instance.store.list_views(msg.id)
    assert view.copy_id == copies["frank@example.org"].id and view.recipient == 2
    # gina (Bcc) replies without images: her copy was seen, by her
    reply = (b"From: Gina <GINA@example.net>\r\nTo: sales@example.com\r\n"
             b"Subject: Re: Quote for two\r\nMessage-ID: <g1@example.net>\r\n"
             b"In-Reply-To: " + msg.message_id.encode() + b"\r\n\r\nThanks\r\n")
    Ingestor(instance.store, instance.sender).ingest(box, reply, "smtp")
    copies = {c.recipient: c for c in instance.messages.copies(None, msg)}
    assert copies["gina@example.net"].replied_at is not None
    assert copies["frank@example.org"].replied_at is None
    assert instance.store.get_message(msg.id).viewed_copies == 2
    # the pages say whose views they were
    instance.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    with WebClient(instance) as web:
        web.sign_in("admin@example.com")
        listing = web.get("/conversations")
        assert "Viewed by 2 of 3 recipients" in listing.text(".status")
        page = web.get(f"/conversations/{msg.conversation_id}")
        rows = {r.select_one("th").get_text(strip=True): r for r in page.all("tr.recipient")}
        assert sorted(rows) == ["erin@example.org", "frank@example.org", "gina@example.net"]
        assert rows["frank@example.org"].select("td.count")[0].get_text(strip=True) == "1"
        assert "replied" in rows["gina@example.net"].get_text()
        assert "Outlook" in rows["frank@example.org"].get_text()
        assert page.text(".timeline .who") == "frank@example.org"
    # and so does the API
    api = httpx.get(f"{live_server.url}/api/v1/messages/{msg.id}",
                    headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
    by_address = {r["recipient"]: r for r in api["recipients"]}
    assert by_address["frank@example.org"]["view_count"] == 1
    assert api["views"][0]["recipient_address"] == "frank@example.org"
    assert api["viewed_copies"] == 2 and api["copies"] == 3


def test_live_views_name_the_recipient_only_when_the_copy_proves_it(
        instance: Instance) -> None:
    box = _box(instance)
    msg = _quote(instance, box)
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    tokens = _outbox_tokens(instance)
    shared = instance.sender.submit(box, b"From: sales@example.com\r\nTo: a@example.org, "
                                    b"b@example.org\r\nSubject: Shared\r\nContent-Type: "
                                    b"text/html\r\n\r\n<p>Hi</p>\r\n", source="tag",
                                    queue=False)
    _, tagged = instance.sender.tag(box, instance.store.get_raw(shared.id))
    backdate_sent(instance, shared.id)
    shared_token = TOKEN.search(tagged).group(1).decode()  # type: ignore[union-attr]
    everything = LiveScope("all")
    cursor = instance.messages.live_cursor(None, everything)

    def fresh() -> list[tuple[int, str, str | None]]:
        return [(v.message_id, v.verdict, v.recipient) for v in
                instance.messages.live_changes(None, everything, cursor).views]

    with WebClient(instance) as web:
        for token in (tokens["erin@example.org"], shared_token):
            assert web.client.get(f"/t/{token}.gif",
                                  headers={"User-Agent": OUTLOOK}).status_code == 200
        asyncio.run(eventually(lambda: len(fresh()) >= 2))
    assert fresh() == [(msg.id, "human", "erin@example.org"), (shared.id, "human", None)]


def test_the_tag_filter_shares_one_pixel_or_writes_one_recipients_copy(cli: Cli) -> None:
    assert cli("mailbox", "add", "sales@example.com", "--tracking", "enabled").exit_code == 0
    message = (b"From: sales@example.com\r\nTo: a@example.org, b@example.org\r\n"
               b"Subject: Offer\r\nMessage-ID: <offer-7@example.com>\r\n"
               b"Content-Type: text/html\r\n\r\n<p>Offer</p>\r\n")
    shared = cli("tag", "--mailbox", "sales@example.com", input=message)
    assert shared.stderr == "trackable=true recipients=shared\n"
    for_a = cli("tag", "--mailbox", "sales@example.com", "--recipient", "a@example.org",
                input=message)
    assert for_a.stderr == "trackable=true recipient=a@example.org\n"
    again = cli("tag", "--mailbox", "sales@example.com", "--recipient", "a@example.org",
                input=message)
    tokens = [TOKEN.search(r.stdout_bytes).group(1)  # type: ignore[union-attr]
              for r in (shared, for_a, again)]
    assert tokens[0] != tokens[1] == tokens[2]  # a's own copy, the same each time
    # one message, however often it was tagged
    listed = [line for line in cli("message", "list").stdout.splitlines() if line]
    assert len(listed) == 1
    shown = json.loads(cli("message", "show", listed[0].split("\t")[0]).stdout)
    assert [(r["recipient"], r["tracked"]) for r in shown["recipients"]] == [
        (None, True), ("a@example.org", True)]
    bad = cli("tag", "--mailbox", "sales@example.com", "--recipient", "not an address",
              input=message)
    assert bad.exit_code != 0 and bad.stdout_bytes == b""
    assert bad.stderr.startswith("mailseen: error: recipient") or "recipient" in bad.stderr


# -- delivery states ----------------------------------------------------------------------

@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer("none", {}).start(tmp_path)
    yield server
    server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _relay_box(inst: Instance, port: int) -> MailboxRecord:
    return inst.store.add_mailbox(MailboxIn(
        "sales@example.com", "Sales", transport="smtp", smtp_host="127.0.0.1", smtp_port=port,
        smtp_tls="none", tracking="enabled"))


def _pages(inst: Instance, msg: MessageRecord) -> tuple[str, str, list[str]]:
    """The listing eye's kind and label, and the conversation's delivery cells."""
    if not inst.accounts.list_users(None):
        inst.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    with WebClient(inst) as web:
        web.sign_in("admin@example.com")
        listing = web.get("/conversations")
        status = listing.all(".status")[0]
        page = web.get(f"/conversations/{msg.conversation_id}")
        cells = [td.get_text(" ", strip=True) for td in page.all("td.delivery")]
    text = status.select_one(".status-text").get_text(" ", strip=True)
    return str(status["data-kind"]), text, cells


async def test_a_relay_that_refuses_the_connection_shows_not_delivered_yet(
        tmp_path: Path, database_url: str, clock: ManualClock) -> None:
    port = _free_port()
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    box = _relay_box(inst, port)
    msg = inst.sender.send_draft(box, Draft(from_addr=box.address, to=["erin@example.org"],
                                            subject="Quote", html="<p>Quote</p>"))
    assert await inst.worker().drain() == 1
    kind, label, cells = await asyncio.to_thread(_pages, inst, msg)
    assert kind == "pending" and label.startswith("Not delivered yet: retrying")
    assert f"the relay at 127.0.0.1:{port} refused the connection" in label
    assert "Sent" not in label
    [cell] = cells
    assert cell.startswith("Not delivered yet: attempt 1 failed (the relay at 127.0.0.1:")
    assert "trying again in" in cell
    assert "Errno" not in cell and "SMTPConnectError" not in cell
    inst.close()


@pytest.mark.parametrize(("reply", "kind", "start"), [
    ("451 4.3.0 mailbox busy, try later", "pending", "Not delivered yet: attempt 1 failed (451"),
    ("550 5.1.1 no such user", "failed", "Failed: 550 5.1.1 no such user"),
])
async def test_temporary_and_permanent_refusals_show_per_copy(
        tmp_path: Path, database_url: str, smtp: SmtpServer, reply: str, kind: str,
        start: str) -> None:
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False)
    box = _relay_box(inst, smtp.port)
    msg = inst.sender.send_draft(box, Draft(from_addr=box.address,
                                            to=["erin@example.org", "frank@example.org"],
                                            subject="Quote", html="<p>Quote</p>"))
    smtp.handler.reply = reply
    assert await inst.worker().drain() == 2
    got_kind, label, cells = await asyncio.to_thread(_pages, inst, msg)
    assert got_kind == kind, label
    assert len(cells) == 2 and all(c.startswith(start) for c in cells), cells
    inst.close()


async def test_one_failed_copy_of_several_is_visible_on_the_listing(
        tmp_path: Path, database_url: str, smtp: SmtpServer) -> None:
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False)
    box = _relay_box(inst, smtp.port)
    msg = inst.sender.send_draft(box, Draft(from_addr=box.address,
                                            to=["erin@example.org", "frank@example.org"],
                                            subject="Quote", html="<p>Quote</p>"))
    smtp.handler.reply_for = {"frank@example.org": "550 5.1.1 no such user"}
    assert await inst.worker().drain() == 2
    after = inst.store.get_message(msg.id)
    assert after.status == "sent" and after.failed_copies == 1
    kind, label, cells = await asyncio.to_thread(_pages, inst, msg)
    assert kind == "failed" and label == "Sent · 1 of 2 not delivered"
    assert sorted(c.split(" ")[0] for c in cells) == ["Failed:", "Sent"]
    inst.close()


async def test_admins_retry_or_cancel_copies_that_wait_or_failed(
        tmp_path: Path, database_url: str, smtp: SmtpServer, clock: ManualClock) -> None:
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    box = _relay_box(inst, smtp.port)
    first = inst.sender.send_draft(box, Draft(from_addr=box.address, to=["erin@example.org"],
                                              subject="One", html="<p>1</p>"))
    second = inst.sender.send_draft(box, Draft(from_addr=box.address, to=["erin@example.org"],
                                               subject="Two", html="<p>2</p>"))
    smtp.handler.reply = "451 4.3.0 busy"
    worker = inst.worker()
    assert await worker.drain() == 2
    assert await worker.drain() == 0  # waiting for the backoff
    smtp.handler.reply = None
    member = inst.accounts.create_user("ann@example.com", PASSWORD)
    inst.store.set_memberships(member.id, [box.id])
    admin = inst.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    from mailseen.services.mailboxes import Forbidden

    with pytest.raises(Forbidden):
        inst.messages.retry(member, first.id)
    # the web app's button, for the first; the CLI's cancel for the second
    with WebClient(inst) as web:
        web.sign_in("admin@example.com")
        page = web.get(f"/conversations/{first.conversation_id}")
        web.submit(page, f"/messages/{first.id}/retry")
    assert await worker.drain() == 1  # due now, not after the backoff
    assert inst.store.get_message(first.id).status == "sent"
    assert inst.messages.cancel(admin, second.id) == 1
    assert inst.store.get_message(second.id).status == "cancelled"
    clock.advance(7200)
    assert await worker.drain() == 0  # a cancelled copy is never sent
    assert inst.messages.retry(admin, first.id) == 0  # nothing sent is sent again
    assert len(smtp.messages) == 1
    inst.close()


def test_retry_and_cancel_from_the_cli_and_the_api(cli: Cli, live_server: LiveServer,
                                                   instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn(
        "sales@example.com", transport="smtp", smtp_host="127.0.0.1", smtp_port=_free_port(),
        smtp_tls="none"))
    msg = instance.sender.send_draft(box, Draft(from_addr=box.address, to=["e@example.org"],
                                                subject="Q", text="q"))
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    done = httpx.post(f"{live_server.url}/api/v1/messages/{msg.id}/retry", headers=auth)
    assert done.status_code == 200 and done.json() == {"changed": 1}
    assert cli("message", "cancel", str(msg.id)).stdout == "cancelled 1 copy\n"
    assert httpx.post(f"{live_server.url}/api/v1/messages/{msg.id}/cancel",
                      headers=auth).json() == {"changed": 0}
    missing = httpx.post(f"{live_server.url}/api/v1/messages/999/retry", headers=auth)
    assert missing.status_code == 404 and "999" in missing.json()["error"]
    assert cli("message", "retry", "999").exit_code != 0


def test_search_finds_a_conversation_by_any_recipient(instance: Instance) -> None:
    box = _box(instance)
    quote = _quote(instance, box)
    other = instance.sender.send_draft(box, Draft(from_addr=box.address,
                                                  to=["someone@example.com"], subject="Hello",
                                                  text="hi"))
    for who in ("FRANK@example", "gina@example.net", "erin"):
        found = instance.messages.listing(None, box.id, search=who)
        assert [c.id for c, _ in found] == [quote.conversation_id], who
    assert [c.id for c, _ in instance.messages.listing(None, box.id, search="someone@")] == [
        other.conversation_id]
    # and by the words of any message's body, sent or received
    assert [c.id for c, _ in instance.messages.listing(None, box.id, search="OUR QUOTE")] == [
        quote.conversation_id]
    reply = (b"From: erin@example.org\r\nTo: sales@example.com\r\nSubject: Re: Hello\r\n"
             b"Message-ID: <r9@example.org>\r\nIn-Reply-To: " + other.message_id.encode()
             + b"\r\nContent-Type: text/html\r\n\r\n<p>The <b>invoice</b> &amp; "
             b"the crate arrived</p>\r\n")
    Ingestor(instance.store, instance.sender).ingest(box, reply, "imap")
    for words in ("invoice & the crate", "crate arrived"):
        assert [c.id for c, _ in instance.messages.listing(None, box.id, search=words)] == [
            other.conversation_id], words
    instance.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    with WebClient(instance) as web:
        web.sign_in("admin@example.com")
        page = web.get("/conversations?q=frank%40example.org")
        assert [a["data-conversation-id"] for a in page.all("[data-conversation-id]")] == [
            str(quote.conversation_id)]


def test_one_copy_fetched_by_many_clients_is_not_counted_as_many_views(
        live_server: LiveServer, instance: Instance) -> None:
    """A token holder replaying one recipient's pixel with twenty user agents: a person
    opens their copy on a few devices, not twenty in ten minutes."""
    box = _box(instance)
    msg = _quote(instance, box)
    asyncio.run(instance.worker().drain())
    backdate_sent(instance, msg.id)
    token = _outbox_tokens(instance)["erin@example.org"]
    for n in range(20):
        httpx.get(f"{live_server.url}/t/{token}.gif",
                  headers={"User-Agent": f"{OUTLOOK}.{n}"})
    views = instance.store.list_views(msg.id)
    human = [v for v in views if v.verdict == "human"]
    assert len(views) == 20 and len(human) == 4
    assert all("more than 4 different clients within 10 minutes" in v.reason
               for v in views if v.verdict == "machine")
    assert instance.store.get_message(msg.id).view_count == 4


# -- who sent it, reply all, a message not tracked ------------------------------------------

def test_each_message_says_who_sent_it(live_server: LiveServer, instance: Instance,
                                       cli: Cli) -> None:
    box = _box(instance)
    ada = instance.accounts.create_user("ada@example.com", PASSWORD, name="Ada", role="admin")
    with WebClient(instance) as web:
        web.sign_in("ada@example.com")
        page = web.get(f"/compose?mailbox={box.id}")
        web.submit(page, "/compose", to="erin@example.org", subject="From Ada",
                   html="<p>Hi</p>", do="send")
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        by_api = httpx.post(f"{live_server.url}/api/v1/messages", headers=auth, json={
            "mailbox": box.address, "to": ["erin@example.org"], "subject": "By API",
            "text": "hi"}).json()
        assert by_api["sent_by"] == "API token" and by_api["sent_by_user_id"] is None
        assert cli("send", "--mailbox", box.address, "--to", "e@example.org", "--subject",
                   "By CLI", "--text", "x").exit_code == 0
        sent = {m.subject: m for m in instance.store.list_messages()}
        assert (sent["From Ada"].sent_by, sent["From Ada"].sent_by_user_id) == ("Ada", ada.id)
        assert sent["By CLI"].sent_by == "command line"
        page = web.get(f"/conversations/{sent['From Ada'].conversation_id}")
        head = page.text("article.msg-out .msg-who")
        assert "Sent by Ada for Acme Sales <sales@example.com>" in " ".join(head.split())
        listing = web.get("/conversations")
        assert "last sent by Ada" in listing.text(
            f'[data-conversation-id="{sent["From Ada"].conversation_id}"] .party')


def test_reply_all_addresses_everyone_but_the_mailbox(instance: Instance) -> None:
    box = _box(instance)
    raw = (b"From: Erin <erin@example.org>\r\nTo: sales@example.com, frank@example.org\r\n"
           b"Cc: gina@example.net, SALES@example.com\r\nSubject: Question\r\n"
           b"Message-ID: <q1@example.org>\r\n\r\nHello\r\n")
    got = Ingestor(instance.store, instance.sender).ingest(box, raw, "smtp").message
    instance.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    with WebClient(instance) as web:
        web.sign_in("admin@example.com")
        conv = f"/conversations/{got.conversation_id}"
        assert "Reply all" in web.get(conv).text(".bar")
        one = web.get(f"{conv}/reply").form(f"{conv}/reply")
        assert (one["to"], one["cc"]) == ("erin@example.org", "")
        every = web.get(f"{conv}/reply?all=1").form(f"{conv}/reply")
        assert every["to"] == "erin@example.org"
        assert every["cc"] == "frank@example.org, gina@example.net"


def test_one_message_can_go_untracked_but_never_tracked_against_the_setting(
        instance: Instance, cli: Cli, live_server: LiveServer) -> None:
    box = _box(instance)
    draft = Draft(from_addr=box.address, to=["erin@example.org"], subject="Quiet",
                  html="<p>Quiet</p>")
    quiet = instance.sender.send_draft(box, draft, track=False)
    assert not quiet.tracked and quiet.tracking_reason == "turned off for this message"
    [copy] = instance.messages.copies(None, quiet)
    assert copy.token_key is None
    off = instance.store.add_mailbox(MailboxIn("off@example.com", tracking="disabled"))
    still_off = instance.sender.send_draft(off, Draft(
        from_addr=off.address, to=["erin@example.org"], subject="Off", html="<p>x</p>"),
        track=True)
    assert not still_off.tracked and still_off.tracking_reason == "disabled by mailbox setting"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    by_api = httpx.post(f"{live_server.url}/api/v1/messages", headers=auth, json={
        "mailbox": box.address, "to": ["e@example.org"], "html": "<p>x</p>",
        "track": False}).json()
    assert by_api["tracking"] == {"tracked": False, "reason": "turned off for this message"}
    out = cli("send", "--mailbox", box.address, "--to", "e@example.org", "--html",
              "/dev/stdin", "--no-track", input="<p>x</p>")
    assert "tracking: turned off for this message" in out.stdout
    instance.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    with WebClient(instance) as web:
        web.sign_in("admin@example.com")
        page = web.get(f"/compose?mailbox={box.id}")
        shown = web.submit(page, "/compose", to="e@example.org", html="<p>x</p>",
                           no_track="1", do="preview")
        assert shown.text("#tracking-preview") == "Tracking off (this message)"
        web.submit(page, "/compose", to="e@example.org", subject="No pixel",
                   html="<p>x</p>", no_track="1", do="send")
    [sent] = [m for m in instance.store.list_messages() if m.subject == "No pixel"]
    assert not sent.tracked and sent.tracking_reason == "turned off for this message"


def _bounce(returned_id: str, recipient: str) -> bytes:
    """A delivery status notification as Postfix writes one (RFC 3464, RFC 6522)."""
    return (f"From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
            f"To: sales@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            f"Message-ID: <bounce-{recipient}@mx.example.org>\r\nAuto-Submitted: auto-replied\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            f"report-type=delivery-status; boundary=\"B\"\r\n\r\n"
            f"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your "
            f"message could not be delivered.\r\n"
            f"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; mx.example.org\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: User unknown\r\n\r\n"
            f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: sales@example.com\r\nSubject: Quote for two\r\n"
            f"Message-ID: {returned_id}\r\n\r\n--B--\r\n").encode()


def test_a_bounce_marks_that_recipients_copy_and_shows_on_the_listing(
        instance: Instance) -> None:
    box = _box(instance)
    msg = _quote(instance, box)
    asyncio.run(instance.worker().drain())
    ingestor = Ingestor(instance.store, instance.sender)
    got = ingestor.ingest(box, _bounce(msg.message_id, "frank@example.org"), "imap").message
    assert got.automatic and got.conversation_id == msg.conversation_id
    copies = {c.recipient: c for c in instance.messages.copies(None, msg)}
    frank = copies["frank@example.org"]
    assert frank.status == "bounced"
    assert frank.last_error == ("550 5.1.1 <frank@example.org>: User unknown "
                                "(reported by dns; mx.example.org)")
    assert copies["erin@example.org"].status == "sent"
    after = instance.store.get_message(msg.id)
    assert after.status == "sent" and after.failed_copies == 1
    kind, label, cells = _pages(instance, after)
    assert kind == "failed" and label == "Sent · 1 of 3 not delivered"
    assert any(c.startswith("Bounced: 550 5.1.1 <frank@example.org>: User unknown")
               for c in cells)
    # a report for someone it never went to, or for a message not ours, changes nothing
    ingestor.ingest(box, _bounce(msg.message_id, "nobody@example.org"), "imap")
    ingestor.ingest(box, _bounce("<not-ours@example.org>", "erin@example.org"), "imap")
    assert {c.recipient: c.status for c in instance.messages.copies(None, msg)} == {
        "erin@example.org": "sent", "frank@example.org": "bounced",
        "gina@example.net": "sent"}


async def test_a_mailbox_whose_relay_keeps_failing_is_flagged_until_it_works_again(
        tmp_path: Path, database_url: str, smtp: SmtpServer, clock: ManualClock) -> None:
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    box = _relay_box(inst, smtp.port)
    quiet = inst.store.add_mailbox(MailboxIn("quiet@example.com"))
    inst.accounts.create_user("admin@example.com", PASSWORD, role="admin")
    inst.sender.send_draft(box, Draft(from_addr=box.address, to=["e@example.org"],
                                      subject="Q", text="q"))
    smtp.handler.reply = "451 4.3.0 try later"
    worker = inst.worker()
    assert await worker.drain() == 1

    def flags() -> tuple[list[str], str]:
        with WebClient(inst) as web:
            web.sign_in("admin@example.com")
            listed = [li.get_text(" ", strip=True) for li in
                      web.get("/settings/mailboxes").all("ul.rows li")]
            sending = web.get(f"/settings/mailboxes/{box.id}?tab=sending")
            return listed, " ".join(t.get_text(" ", strip=True)
                                    for t in sending.all(".delivery-trouble"))

    listed, page = await asyncio.to_thread(flags)
    [flagged] = [t for t in listed if "sales@example.com" in t]
    assert "(failing: 451 4.3.0 try later)" in flagged
    assert all("failing" not in t for t in listed if quiet.address in t)
    assert page.startswith("Sending is failing: 451 4.3.0 try later (last tried")
    smtp.handler.reply = None
    clock.advance(worker.backoff(1))
    assert await worker.drain() == 1
    listed, page = await asyncio.to_thread(flags)
    assert all("failing" not in t for t in listed) and page == ""
    inst.close()


def test_reports_say_who_sent_what(instance: Instance) -> None:
    box = _box(instance)
    ada = instance.accounts.create_user("ada@example.com", PASSWORD, name="Ada", role="admin")
    for n in range(3):
        instance.sender.send_draft(box, Draft(from_addr=box.address, to=["e@example.org"],
                                              subject=f"A{n}", html="<p>x</p>"), actor=ada)
    instance.sender.send_draft(box, Draft(from_addr=box.address, to=["e@example.org"],
                                          subject="B", text="x"))
    asyncio.run(instance.worker().drain())
    report = instance.messages.report(ada, [box.id], instance.clock.now().replace(
        hour=0, minute=0, second=0, microsecond=0), 1)
    assert [(x.sent_by, x.sent, x.tracked) for x in report.by_sender] == [
        ("Ada", 3, 3), ("API token", 1, 0)]
    with WebClient(instance) as web:
        web.sign_in("ada@example.com")
        rows = [" ".join(r.get_text(" ", strip=True).split())
                for r in web.get("/reports?days=7").all("table.senders tbody tr")]
    assert rows == ["Ada 3 0 of 3 tracked (0%)", "API token 1 not tracked"]


async def test_a_stored_server_name_that_cannot_be_resolved_fails_in_words(
        tmp_path: Path, database_url: str) -> None:
    """Stored before names were checked: the copy fails for good, the worker goes on."""
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False)
    box = inst.store.add_mailbox(MailboxIn("sales@example.com", transport="smtp",
                                           smtp_host="\x83bad", smtp_tls="none"))
    msg = inst.sender.send_draft(box, Draft(from_addr=box.address, to=["e@example.org"],
                                            subject="Q", text="q"))
    assert await inst.worker().drain() == 1
    failed = inst.store.get_message(msg.id)
    assert failed.status == "failed"
    assert failed.last_error == "the relay's name '\\x83bad' is not a valid server name"
    with pytest.raises(InvalidInput, match=r"smtp_host: .* is not a valid server name"):
        await inst.mailboxes.test_smtp(None, box)  # refused by name (the API: a 422)
    inst.close()


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize(("charset", "cte"), list(_combos()))
def test_each_copy_is_the_message_tagged_with_its_own_pixel(
        instance: Instance, charset: str, cte: str, crlf: bool) -> None:
    """Copies come from one tagging of the message with a stand-in token (no parsing per
    copy), yet each is byte for byte the message tagged with that copy's pixel: long
    quoted-printable lines break in the same places, a base64 body is tagged copy by copy."""
    html = page(f"<p>{WORDS[charset]}</p>\n<p>{'a long line of words ' * 12}</p>")
    raw = message(multipart("alternative", [text_leaf(), html_leaf(html, charset, cte),
                                            html_leaf(page("<p>again</p>"), charset, cte)]),
                  crlf)
    for key in (1, 2**63 - 1, 0x2D2D2D2D5F5F5F5F):  # tokens with "-" and "_" in them
        pixel = pixel_tag(pixel_url(instance.sender.base_url,
                                    instance.signer.make(TokenRef(copy_key=key))))
        expected = tag_message(raw, pixel, lambda url: False)
        assert expected.trackable
        copy = cast(CopyRecord, SimpleNamespace(token_key=key))
        assert instance.sender.copy_bytes(raw, copy) == expected.data


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize(("charset", "cte"), list(_combos()))
def test_copies_made_from_what_queueing_kept_are_each_tagged_with_its_pixel(
        instance: Instance, charset: str, cte: str, crlf: bool) -> None:
    """What tagging changed is kept when a message is queued, and the worker makes every
    copy of it by splicing (no parsing at all): each is byte for byte the stored message
    tagged with that copy's own pixel (and refusal line), the line the mailbox shows when
    the copy leaves, not when it was queued."""
    html = page(f"<p>{WORDS[charset]}</p>\n<p>{'a long line of words ' * 12}</p>")
    raw = message(multipart("alternative", [text_leaf(), html_leaf(html, charset, cte),
                                            html_leaf(page("<p>again</p>"), charset, cte)]),
                  crlf)
    box = instance.store.add_mailbox(MailboxIn("sales@example.com", tracking="enabled",
                                               refusal_line=True, language="de"))
    instance.sender.submit(box, raw, envelope_to=["erin@example.org", "frank@example.org"])
    claims = instance.store.reserve(10, timedelta(minutes=5))
    assert len(claims) == 2
    stored = claims[0].raw
    for line_on in (True, False):  # as queued; then the line turned off meanwhile
        box = instance.mailboxes.update(None, box.id, {"refusal_line": line_on})
        for claim in claims:
            if cte == "base64":  # the stand-in cannot be found as written: tagged per copy
                assert claim.splice is None
            else:
                assert claim.splice is not None
            token = instance.signer.make(TokenRef(copy_key=cast(int, claim.copy.token_key)))
            expected = tag_message(stored, instance.sender._tag(
                token, ("de", "") if line_on else None), lambda url: False)
            assert expected.trackable
            if claim.splice is not None and line_on:  # as queued: made without tagging
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(sending, "tag_message", _no_tagging)
                    made = instance.sender.copy_bytes(claim.raw, claim.copy, box, False,
                                                      claim.splice)
            else:
                made = instance.sender.copy_bytes(claim.raw, claim.copy, box, False,
                                                  claim.splice)
            assert made == expected.data
            unfolded = made.replace(b"=\r\n", b"").replace(b"=\n", b"")  # QP soft breaks
            assert (b"/r/" in unfolded) is line_on or cte == "base64"


def _no_tagging(*args: object, **kwargs: object) -> None:
    raise AssertionError("the copy was tagged, not spliced")


def test_a_splice_of_a_message_is_where_it_and_its_tagging_differ() -> None:
    """The kept change is the one run of bytes between what both share at the start and
    at the end, never overlapping; none when nothing changed or the run is too long."""
    assert splice_of(b"abc", b"abc", "k") is None
    for raw, tagged in [(b"<p>x</p>", b"<p>x<img></p>"), (b"aaaa", b"aaaaaa"),
                        (b"aaaaaa", b"aaaa"), (b"", b"new"), (b"ab" * 5000, b"ab" * 4000),
                        (b"x" * 9000 + b"y", b"x" * 9000 + b"z" + b"x" * 3)]:
        splice = splice_of(raw, tagged, "k")
        assert splice is not None and spliced(raw, splice) == tagged
        assert 0 <= splice.start <= splice.end <= len(raw)
    assert splice_of(b"a" * 10, b"b" * 100, "k", limit=50) is None
