"""Webhooks: events written beside what they tell of, signed as Standard Webhooks says and
posted to a real HTTP receiver; retried with backoff on a clock the test moves, the endpoint
disabled after a day of failures, nothing lost when the worker is killed, and privacy kept
(no personal event for a recipient who refused, counts only for an aggregate mailbox)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailseen.clock import ManualClock
from mailseen.config import Settings
from mailseen.core.compose import Draft
from mailseen.errors import InvalidInput
from mailseen.records import (
    Judged,
    MailboxIn,
    MailboxRecord,
    MessageRecord,
    ViewIn,
    WebhookEvent,
    WebhookFormat,
    WebhookIn,
    WebhookRecord,
)
from mailseen.services.classification import record_views
from mailseen.services.instance import Instance

from .conftest import SECRET
from .webhook_receiver import Receiver, receiver, verify

HUMAN = Judged("human", "no machine signal", "Outlook on Windows")
MACHINE = Judged("machine", "Apple Mail Privacy Protection proxy", "Apple Mail proxy")
ALL: tuple[WebhookEvent, ...] = ("message.delivered", "message.failed", "message.bounced",
                                 "message.viewed", "message.replied")


@pytest.fixture
def inst(settings: Settings, clock: ManualClock) -> Iterator[Instance]:
    instance = Instance.open(settings, migrate=False, clock=clock)
    yield instance
    instance.close()


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def _box(inst: Instance, address: str = "sales@example.com", **kw: object) -> MailboxRecord:
    return inst.store.add_mailbox(MailboxIn(address, "Sales", tracking="enabled",
                                            **kw))  # type: ignore[arg-type]


def _send(inst: Instance, box: MailboxRecord, to: tuple[str, ...] = ("erin@example.org",
                                                                     "frank@example.org"),
          subject: str = "Quote for two") -> MessageRecord:
    msg = inst.sender.send_draft(box, Draft(from_addr=box.address, to=list(to),
                                            subject=subject, text="Our quote",
                                            html="<p>Our quote</p>"))
    asyncio.run(inst.worker().drain())
    return msg


def _register(inst: Instance, url: str, events: tuple[WebhookEvent, ...] = ALL, *,
              every_view: bool = False, fmt: WebhookFormat = "standard",
              mailbox_id: int | None = None) -> WebhookRecord:
    return inst.webhooks.register(None, WebhookIn(url, events, mailbox_id, fmt, every_view))


def _hit(inst: Instance, msg: MessageRecord, recipient: str, judged: Judged = HUMAN,
         times: int = 1) -> None:
    [copy] = [c for c in inst.store.copies_of([msg.id])[msg.id] if c.recipient == recipient]
    assert copy.token_key is not None
    at = inst.clock.now()
    views = [ViewIn(0, 0, at, "GET", "198.51.100.7", "Mozilla/5.0", copy_key=copy.token_key)
             for _ in range(times)]
    record_views(inst.store, views, lambda v, sent: judged)


def _drain(inst: Instance) -> int:
    return asyncio.run(inst.webhook_worker().drain())


def test_events_are_signed_as_the_standard_says_and_name_each_recipient(
        inst: Instance, hooks: Receiver) -> None:
    hook = _register(inst, hooks.url)
    assert hook.secret.startswith("whsec_")
    box = _box(inst)
    msg = _send(inst, box)
    _hit(inst, msg, "erin@example.org", times=2)
    _hit(inst, msg, "erin@example.org")
    assert _drain(inst) == 3
    got = hooks.events()
    assert sorted((r.json["type"], r.json["data"]["recipient"]) for r in got) == [
        ("message.delivered", "erin@example.org"), ("message.delivered", "frank@example.org"),
        ("message.viewed", "erin@example.org")]  # the first human view only
    for r in got:
        assert verify(hook.secret, r.headers, r.body)
        assert not verify(hook.secret, r.headers, r.body + b" ")
        assert r.id.startswith("msg_")
        assert abs(int(r.headers["webhook-timestamp"]) - inst.clock.now().timestamp()) < 5
    [viewed] = hooks.events("message.viewed")
    data = viewed.json["data"]
    assert data["view"] == {"verdict": "human", "first": True, "reason": "no machine signal",
                            "client": "Outlook on Windows"}
    assert data["message"]["subject"] == "Quote for two"
    assert data["message"]["mailbox"] == "sales@example.com"
    assert data["message"]["message_id"] == msg.message_id
    assert len({r.id for r in got}) == 3


def test_every_view_when_asked_and_never_a_machine_fetch(inst: Instance,
                                                         hooks: Receiver) -> None:
    _register(inst, hooks.url, ("message.viewed",), every_view=True)
    msg = _send(inst, _box(inst))
    _hit(inst, msg, "frank@example.org", MACHINE, times=3)
    _hit(inst, msg, "frank@example.org", times=2)
    _drain(inst)
    views = hooks.events("message.viewed")
    assert sorted(r.json["data"]["view"]["first"] for r in views) == [False, True]
    assert {r.json["data"]["view"]["verdict"] for r in views} == {"human"}


def test_no_personal_event_for_a_recipient_who_refused(inst: Instance, hooks: Receiver) -> None:
    _register(inst, hooks.url)
    inst.consents.set_consent(None, "frank@example.org", "refused")
    msg = _send(inst, _box(inst))
    _hit(inst, msg, "erin@example.org")
    [frank] = [c for c in inst.store.copies_of([msg.id])[msg.id]
               if c.recipient == "frank@example.org"]
    assert frank.pixel == "none"
    inst.consents.set_consent(None, "erin@example.org", "refused")  # after her view
    _drain(inst)
    delivered = hooks.events("message.delivered")
    assert [r.json["data"]["recipient"] for r in delivered] == [None, None]
    assert all("counts" in r.json["data"] for r in delivered)
    [viewed] = hooks.events("message.viewed")  # erin's view, queued before she refused
    assert viewed.json["data"]["recipient"] is None
    assert "reason" not in viewed.json["data"]["view"]
    assert "erin" not in viewed.body.decode() and "frank" not in viewed.body.decode()


def test_an_aggregate_mailbox_gives_counts_only(inst: Instance, hooks: Receiver) -> None:
    _register(inst, hooks.url, every_view=True)
    box = _box(inst, tracking_policy="aggregate")
    msg = _send(inst, box)
    [copy] = inst.store.copies_of([msg.id])[msg.id]
    assert copy.pixel == "aggregate" and copy.token_key is not None
    record_views(inst.store, [ViewIn(0, 0, inst.clock.now(), "GET", "198.51.100.7", "UA",
                                     copy_key=copy.token_key)], lambda v, sent: HUMAN)
    _drain(inst)
    got = hooks.events()
    assert {r.json["type"] for r in got} == {"message.delivered", "message.viewed"}
    for r in got:
        assert r.json["data"]["recipient"] is None and r.json["data"]["copy_id"] is None
        assert "erin" not in r.body.decode()
    [viewed] = hooks.events("message.viewed")
    assert viewed.json["data"]["counts"] == {"human_views": 1, "machine_fetches": 0}


def test_nothing_is_written_when_no_endpoint_takes_the_event(inst: Instance,
                                                             hooks: Receiver) -> None:
    hook = _register(inst, hooks.url, ("message.replied",))
    msg = _send(inst, _box(inst))
    _hit(inst, msg, "erin@example.org")
    assert inst.store.webhook_log(hook.id) == []
    other = _box(inst, "support@example.com")
    _register(inst, hooks.url, ("message.viewed",), mailbox_id=other.id)
    _hit(inst, _send(inst, _box(inst, "info@example.com")), "erin@example.org")
    assert inst.store.webhook_counts() == {}


def test_a_reply_and_a_bounce_are_events_too(inst: Instance, hooks: Receiver) -> None:
    _register(inst, hooks.url)
    box = _box(inst)
    msg = _send(inst, box, subject="Offer")
    reply = (f"From: Erin <erin@example.org>\r\nTo: {box.address}\r\nSubject: Re: Offer\r\n"
             f"Message-ID: <reply-1@example.org>\r\nIn-Reply-To: {msg.message_id}\r\n\r\n"
             "Yes please\r\n").encode()
    inst.ingestor.ingest(box, reply, "imap")
    auto = (f"From: frank@example.org\r\nTo: {box.address}\r\nSubject: Out of office\r\n"
            f"Message-ID: <auto-1@example.org>\r\nIn-Reply-To: {msg.message_id}\r\n"
            "Auto-Submitted: auto-replied\r\n\r\nAway\r\n").encode()
    inst.ingestor.ingest(box, auto, "imap")
    inst.store.mark_bounced(box.id, msg.message_id, [], [("frank@example.org",
                                                           "550 5.1.1 no such user")])
    _drain(inst)
    [replied] = hooks.events("message.replied")
    assert replied.json["data"]["recipient"] == "erin@example.org"
    [bounced] = hooks.events("message.bounced")
    assert bounced.json["data"]["recipient"] == "frank@example.org"
    assert bounced.json["data"]["error"] == "550 5.1.1 no such user"


def test_retries_with_backoff_until_the_receiver_recovers(inst: Instance, hooks: Receiver,
                                                          clock: ManualClock) -> None:
    hook = _register(inst, hooks.url, ("message.delivered",))
    hooks.plan = [500, 503]
    _send(inst, _box(inst), to=("erin@example.org",))
    assert _drain(inst) == 1  # failed: due again in five seconds
    assert _drain(inst) == 0
    clock.advance(5)
    assert _drain(inst) == 1  # failed again: five minutes
    clock.advance(60)
    assert _drain(inst) == 0
    clock.advance(240)
    assert _drain(inst) == 1
    assert len(hooks.received) == 3 and len({r.id for r in hooks.received}) == 1
    assert len({r.body for r in hooks.received}) == 1
    assert all(verify(hook.secret, r.headers, r.body) for r in hooks.received)
    [entry] = inst.webhooks.log(None, hook.id)
    assert (entry.status, entry.attempts, entry.response_status) == ("delivered", 3, 200)
    now = inst.webhooks.get(None, hook.id)
    assert now.enabled and now.failing_since is None and now.last_success_at is not None


def test_an_endpoint_failing_for_a_day_is_disabled_and_can_send_again(
        inst: Instance, hooks: Receiver, clock: ManualClock) -> None:
    hook = _register(inst, hooks.url, ("message.delivered",))
    hooks.plan = [500] * 100
    _send(inst, _box(inst), to=("erin@example.org",))
    attempts = 0
    for _ in range(30):  # hours
        attempts += _drain(inst)
        clock.advance(3600)
    [entry] = inst.webhooks.log(None, hook.id)
    assert entry.status == "failed" and entry.attempts == attempts == 7
    assert entry.response_status == 500
    off = inst.webhooks.get(None, hook.id)
    assert not off.enabled and "every attempt failed for a day" in off.disabled_reason
    assert inst.webhooks.disabled(None) == [off]
    # Disabled: nothing more is written for it.
    _send(inst, _box(inst, "info@example.com"), to=("gina@example.net",))
    assert len(inst.webhooks.log(None, hook.id)) == 1
    # Back on, and "send again" the event that failed.
    hooks.plan = []
    inst.webhooks.set_enabled(None, hook.id, True)
    inst.webhooks.resend(None, hook.id, entry.id)
    assert _drain(inst) == 1
    assert inst.webhooks.log(None, hook.id)[0].status == "delivered"
    assert len({r.id for r in hooks.received}) == 1


def test_a_gone_endpoint_is_disabled_at_once(inst: Instance, hooks: Receiver) -> None:
    hook = _register(inst, hooks.url, ("message.delivered",))
    hooks.plan = [410]
    _send(inst, _box(inst), to=("erin@example.org",))
    _drain(inst)
    assert "410 Gone" in inst.webhooks.get(None, hook.id).disabled_reason


def test_slack_and_teams_get_their_own_formats(inst: Instance, hooks: Receiver) -> None:
    _register(inst, hooks.url + "/slack", ("message.viewed",), fmt="slack")
    _register(inst, hooks.url + "/teams", ("message.viewed",), fmt="teams")
    msg = _send(inst, _box(inst), to=("erin@example.org",))
    _hit(inst, msg, "erin@example.org")
    _drain(inst)
    by_path = {r.path: r.json for r in hooks.received}
    line = ("Viewed: “Quote for two” (sales@example.com) by erin@example.org, "
            "Outlook on Windows")
    assert by_path["/hooks/slack"] == {"text": line}
    assert by_path["/hooks/teams"]["@type"] == "MessageCard"
    assert by_path["/hooks/teams"]["text"] == line


def test_registering_checks_what_it_is_given(inst: Instance) -> None:
    for bad, field in ((WebhookIn("ftp://example.com/x", ("message.viewed",)), "url"),
                       (WebhookIn("https://example.com/x", ()), "events"),
                       (WebhookIn("https://example.com/x", ("message.opened",)),  # type: ignore[arg-type]
                        "events"),
                       (WebhookIn("https://example.com/x", ("message.viewed",), 999), "mailbox_id"),
                       (WebhookIn("https://example.com/x", ("message.viewed",),
                                  format="irc"), "format")):  # type: ignore[arg-type]
        with pytest.raises(InvalidInput) as err:
            inst.webhooks.register(None, bad)
        assert err.value.field == field


def test_a_killed_worker_loses_no_event(inst: Instance, hooks: Receiver, tmp_path: Path,
                                        clock: ManualClock, database_url: str) -> None:
    """kill -9 of `mailseen worker` while it posts: the event it held is sent again by the
    next worker once its lease ran out, and every other event is sent too."""
    _register(inst, hooks.url, ("message.delivered",))
    inst.sender.send_draft(_box(inst), Draft(
        from_addr="sales@example.com", to=[f"r{i}@example.org" for i in range(5)],
        subject="Five", text="x", html="<p>x</p>"))
    asyncio.run(inst.worker().drain())
    ids = {d.event_id for h in inst.webhooks.all(None) for d in inst.webhooks.log(None, h.id)}
    assert len(ids) == 5
    hooks.hold = True
    env = {**os.environ, "MAILSEEN_DATA_DIR": str(tmp_path / "data"),
           "MAILSEEN_DATABASE_URL": database_url, "MAILSEEN_SECRET_KEY": SECRET,
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "mailseen", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hooks.arrived.wait(60), "the worker never posted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    hooks.hold = False
    hooks.release.set()
    # Past the dead worker's lease (taken on the system's time).
    clock.advance((datetime.now(UTC) + timedelta(minutes=3) - clock.now()).total_seconds())
    _drain(inst)
    assert {r.id for r in hooks.events()} == ids
    assert {d.status for h in inst.webhooks.all(None)
            for d in inst.webhooks.log(None, h.id)} == {"delivered"}


DOCS = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"


def _blocks(language: str) -> list[str]:
    text = DOCS.read_text()
    return [b.split("\n", 1)[1] for b in text.split("```")[1::2] if b.startswith(language)]


def test_the_documented_receivers_verify_a_real_event(inst: Instance, hooks: Receiver,
                                                      tmp_path: Path) -> None:
    """docs/integrations.md's Python function and openssl commands, run as written, accept
    what mailseen sends and refuse it changed."""
    hook = _register(inst, hooks.url, ("message.delivered",))
    _send(inst, _box(inst), to=("erin@example.org",))
    _drain(inst)
    [event] = hooks.events()
    [python] = [b for b in _blocks("python") if "def verify" in b]
    space: dict[str, object] = {}
    exec(python, space)  # the documentation's own code
    doc_verify = space["verify"]
    assert callable(doc_verify)
    assert doc_verify(hook.secret, event.headers, event.body)
    assert not doc_verify(hook.secret, event.headers, event.body.replace(b"erin", b"eric"))
    [shell] = [b for b in _blocks("sh") if "openssl dgst" in b]
    example = b'{"type":"message.viewed","timestamp":"2026-12-04T10:15:02.120Z","data":{}}'
    (tmp_path / "body.json").write_bytes(example)

    def run(script: str) -> str:
        return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert run(shell) == "valid"  # the documented example
    lines = shell.splitlines()
    mine = {"SECRET": hook.secret, "ID": event.id, "TS": event.headers["webhook-timestamp"],
            "SIG": event.headers["webhook-signature"]}
    real = "\n".join(f"{line.split('=')[0]}='{mine[line.split('=')[0]]}'"
                     if line.split("=")[0] in mine else line for line in lines)
    (tmp_path / "body.json").write_bytes(event.body)
    assert run(real) == "valid"
    (tmp_path / "body.json").write_bytes(event.body + b"\n")
    assert run(real) == "INVALID"


def test_a_persons_events_are_exported_and_erased_with_their_data(inst: Instance,
                                                                  hooks: Receiver) -> None:
    hook = _register(inst, hooks.url)
    msg = _send(inst, _box(inst))
    _hit(inst, msg, "erin@example.org")
    _drain(inst)
    exported = inst.privacy.export(None, "erin@example.org")["webhook_events"]
    assert sorted(e["event"] for e in exported) == ["message.delivered", "message.viewed"]
    assert all("erin@example.org" in e["body"] for e in exported)
    erased = inst.privacy.erase(None, "erin@example.org")
    assert erased.removed["webhook_events"] == 2
    left = [d.body or "" for d in inst.webhooks.log(None, hook.id)]
    assert len(left) == 1 and "frank@example.org" in left[0]
    assert not any("erin" in body for body in left)


def test_the_log_keeps_what_was_sent_for_a_while(inst: Instance, hooks: Receiver,
                                                 clock: ManualClock) -> None:
    hook = _register(inst, hooks.url, ("message.delivered",))
    _send(inst, _box(inst))
    hooks.plan = [200, 500]  # one delivered, one waiting to be tried again
    _drain(inst)
    worker = inst.webhook_worker()
    assert asyncio.run(worker.prune()) == 0
    clock.advance(31 * 86400)
    assert asyncio.run(worker.prune()) == 1  # the waiting one is left to its retries
    assert [d.status for d in inst.webhooks.log(None, hook.id)] == ["pending"]
    inst.privacy.set_retention(None, 7)
    clock.advance(86400)
    hooks.plan = [500]
    _drain(inst)  # given up on: more than a day since it was queued
    assert [d.status for d in inst.webhooks.log(None, hook.id)] == ["failed"]
    inst.privacy.purge(None)
    assert inst.webhooks.log(None, hook.id) == []


def test_a_persons_click_is_an_event_with_the_link_they_followed(
        inst: Instance, hooks: Receiver) -> None:
    from mailseen.records import ClickIn
    from mailseen.services.clicks import record_clicks

    _register(inst, hooks.url, ("message.clicked",))
    msg = _send(inst, _box(inst))
    [copy] = [c for c in inst.store.copies_of([msg.id])[msg.id]
              if c.recipient == "erin@example.org"]
    assert copy.token_key is not None

    def click(judged: Judged) -> ClickIn:
        return ClickIn(0, 0, inst.clock.now(), "GET", "198.51.100.7", "Mozilla/5.0",
                       copy_key=copy.token_key or 0, link=0, url="https://example.com/offer")

    writer = inst.store.click_writer()
    try:
        record_clicks(writer, [click(MACHINE)], lambda c, sent: (MACHINE, None))
        record_clicks(writer, [click(HUMAN)], lambda c, sent: (HUMAN, None))
    finally:
        writer.close()
    assert _drain(inst) == 1  # the machine's click is no event
    [clicked] = hooks.events("message.clicked")
    data = clicked.json["data"]
    assert (data["recipient"], data["url"]) == ("erin@example.org", "https://example.com/offer")
    assert data["view"]["verdict"] == "human"
