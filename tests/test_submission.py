"""SMTP submission with real clients (smtplib, swaks, msmtp) over STARTTLS and implicit
TLS, in front of a real aiosmtpd relay: what is accepted reaches each recipient as their own
tracked copy and shows in the listing; each refusal gets its reply (with an enhanced status
code) and stores nothing; a kill -9 right after 250 loses nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseen.core.submission import line_ending_problem, sender_problem
from mailseen.errors import InvalidInput
from mailseen.receivers.submission import SubmissionServer
from mailseen.services.instance import Instance
from mailseen.services.submission import SOURCE

from .cli_runner import Cli, error, ok
from .conftest import SECRET
from .smtp_server import SmtpServer
from .submission_env import (
    MAX_RECIPIENTS,
    MAX_SIZE,
    OTHER,
    PER_MINUTE,
    SALES,
    USER,
    Env,
    make_env,
    message,
)
from .web_client import PASSWORD, WebClient

logging.getLogger("mail.log").setLevel(logging.ERROR)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer("none", {}).start(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def env(instance: Instance, tmp_path: Path, relay: SmtpServer) -> Iterator[Env]:
    made, running = make_env(instance, tmp_path, relay)
    yield made
    running.stop()


def _login(client: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH PLAIN only: smtplib's login() tries each mechanism offered in turn, and every
    try counts as a failure of its own."""
    client.ehlo()
    client.user, client.password = user, password
    client.auth("PLAIN", client.auth_plain)


def _deliver(env: Env) -> int:
    return asyncio.run(env.inst.worker().drain())


def _pixels(data: bytes) -> list[str]:
    return re.findall(r"/t/([A-Za-z0-9_-]+)\.gif", data.decode("utf-8", "replace"))


# -- the pure rules --------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "found"), [
    (b"Subject: a\r\n\r\nline\r\n", None),
    (b"Subject: a\r\n\r\nline\nnext\r\n", "bare LF"),
    (b"Subject: a\r\n\r\nline\rnext\r\n", "bare CR"),
    (b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<a@b.c>\r\n", "end-of-data"),
    (b"Subject: a\r\n\r\nx\r\n.\nMAIL FROM:<a@b.c>\r\n", "end-of-data"),
    (b"Subject: a\r\n\r\nx\r.\rMAIL FROM:<a@b.c>\r\n", "end-of-data"),
    (b".\nSubject: a\r\n\r\nx\r\n", "end-of-data"),
])
def test_line_endings_other_than_crlf_are_named(data: bytes, found: str | None) -> None:
    problem = line_ending_problem(data)
    assert (problem is None) if found is None else (found in (problem or ""))


def test_every_address_of_the_from_field_must_be_allowed() -> None:
    def check(from_field: str) -> str | None:
        raw = f"From: {from_field}\r\nTo: b@example.org\r\n\r\nHi\r\n".encode()
        return sender_problem(raw, {"sales@example.com"})

    assert check("Sales <Sales@Example.com>") is None
    assert check("support@example.com") == ("From: support@example.com is not a mailbox you "
                                            "may send as")
    # A display name that looks like the allowed address does not make it allowed.
    assert check("sales@example.com <attacker@evil.example>") is not None
    assert check("Sales <sales@example.com>, x@evil.example") is not None
    assert check("undisclosed-recipients:;") == "the From field names no address"
    two = b"From: sales@example.com\r\nFrom: x@evil.example\r\n\r\nHi\r\n"
    assert sender_problem(two, {"sales@example.com"}) == ("the message has more than one "
                                                          "From field")
    assert sender_problem(b"To: b@example.org\r\n\r\nHi\r\n", {"sales@example.com"}) == (
        "the message has no From field")


# -- accepted: the same path as compose ------------------------------------------------------

@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_smtplib_submission_reaches_each_recipient_tracked_and_bcc_unseen(
        env: Env, implicit: bool) -> None:
    with env.smtplib(implicit) as client:
        client.ehlo()
        assert client.has_extn("enhancedstatuscodes") and client.has_extn("8bitmime")
        assert client.has_extn("smtputf8") and client.has_extn("size")
        refused = client.sendmail(SALES, ["bob@example.org", "carol@example.org",
                                          "dave@example.org"],
                                  message(to="Bob <bob@example.org>", cc="carol@example.org"))
    assert refused == {}
    [msg] = env.inst.messages.newest(None, mailbox_id=env.sales.id)
    assert msg.tracked and msg.source == SOURCE and msg.sent_by == "Alice"
    assert msg.bcc == ["dave@example.org"] and msg.status == "queued"
    assert _deliver(env) == 3
    got = {m.rcpt_tos[0]: m for m in env.relay.messages}
    assert sorted(got) == ["bob@example.org", "carol@example.org", "dave@example.org"]
    assert all(len(m.rcpt_tos) == 1 and m.mail_from == SALES for m in got.values())
    pixels = {r: _pixels(m.data) for r, m in got.items()}
    assert all(len(p) == 1 for p in pixels.values())
    assert len({p[0] for p in pixels.values()}) == 3  # a pixel of each recipient's own
    assert all(b"\nBcc:" not in m.data and b"dave" not in m.data.split(b"\r\n\r\n")[0]
               for m in got.values())
    # It appears in the team's listing, as compose's mail does.
    with WebClient(env.inst) as web:
        web.sign_in(USER)
        listing = web.get("/conversations")
        assert "Quote" in listing.text("main")


def test_swaks_and_msmtp_submit_over_starttls_and_implicit_tls(env: Env) -> None:
    for implicit in (False, True):
        done = env.swaks("--to", "bob@example.org", implicit=implicit)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "250 2.0.0 OK queued as" in done.stdout
        raw = message("By msmtp")
        sent = env.msmtp(["bob@example.org"], raw, implicit=implicit)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    subjects = sorted(m.subject for m in env.inst.messages.newest(None))
    assert subjects == ["By msmtp", "By msmtp", "By swaks", "By swaks"]
    assert _deliver(env) == 4 and len(env.relay.messages) == 4


def test_8bit_and_utf8_mail_is_taken_as_it_is(env: Env) -> None:
    raw = ("From: Verkauf <sales@example.com>\r\nTo: jürgen@bücher.example, "
           "bob@example.org\r\nSubject: Grüße aus Köln\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
           "\r\n<p>Schöne Grüße</p>\r\n").encode()
    with env.smtplib() as client:
        client.sendmail(SALES, ["jürgen@bücher.example", "bob@example.org"], raw,
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [msg] = env.inst.messages.newest(None)
    assert msg.subject == "Grüße aus Köln" and "jürgen@bücher.example" in msg.envelope_to
    assert env.inst.store.get_raw(msg.id).endswith("<p>Schöne Grüße</p>\r\n".encode())


# -- refused, with nothing stored ------------------------------------------------------------

def test_a_wrong_or_revoked_app_password_or_the_web_password_is_535(env: Env) -> None:
    for password in ("aaaa-bbbb-cccc-dddd-eeee-ffff", PASSWORD):
        with smtplib.SMTP("127.0.0.1", env.starttls_port, timeout=10) as client:
            client.starttls(context=env.context())
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                _login(client, USER, password)
            assert err.value.smtp_code == 535
            assert err.value.smtp_error.startswith(b"5.7.8 ")
    # Another user's name with this user's password is no login either.
    env.inst.accounts.create_user("bob@example.com", PASSWORD)
    with smtplib.SMTP("127.0.0.1", env.starttls_port, timeout=10) as client:
        client.starttls(context=env.context())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            _login(client, "bob@example.com", env.password)
    [app] = env.inst.accounts.list_app_passwords(None, env.user.id)
    env.inst.accounts.revoke_app_password(None, env.user.id, app.id)
    done = env.swaks("--to", "bob@example.org")
    assert done.returncode != 0 and "535 5.7.8" in done.stdout
    assert env.outbound() == []


def test_without_tls_nobody_logs_in_and_nothing_is_taken(env: Env) -> None:
    with smtplib.SMTP("127.0.0.1", env.starttls_port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")
        code, reply = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHNlY3JldA==")
        assert code == 530 and reply.startswith(b"5.7.0 ")
        code, reply = client.docmd("MAIL", f"FROM:<{SALES}>")
        assert code == 530 and reply.startswith(b"5.7.0 ")
    done = env.swaks("--to", "bob@example.org", tls=False)
    assert done.returncode != 0
    # Logged in over TLS, but a message without logging in is refused too.
    with smtplib.SMTP("127.0.0.1", env.starttls_port, timeout=10) as client:
        client.starttls(context=env.context())
        client.ehlo()
        code, reply = client.docmd("MAIL", f"FROM:<{SALES}>")
        assert code == 530 and reply.startswith(b"5.7.0 Authentication required")
    assert env.outbound() == []


def test_no_certificate_means_loopback_only(env: Env, tmp_path: Path) -> None:
    rules = env.inst.submissions()
    SubmissionServer(rules, host="127.0.0.1", port=0)
    SubmissionServer(rules, host="::1", port=0)
    for host in ("0.0.0.0", "192.0.2.1", "mail.example.com"):
        with pytest.raises(InvalidInput) as err:
            SubmissionServer(rules, host=host, port=0)
        assert err.value.field == "submission_tls_cert"
    with pytest.raises(InvalidInput):
        SubmissionServer(rules, host="127.0.0.1", port=0, implicit=True)


def test_a_foreign_sender_is_refused_before_data_ends(env: Env) -> None:
    with env.smtplib() as client:
        code, reply = client.mail(OTHER)  # a mailbox, but not one of hers
        assert code == 553 and reply.startswith(b"5.7.1 ")
        client.rset()
        code, reply = client.mail("alice@example.com")  # her own address is no mailbox
        assert code == 553 and reply.startswith(b"5.7.1 ")
        client.rset()
        # The envelope is right, the From field is not.
        with pytest.raises(smtplib.SMTPDataError) as err:
            client.sendmail(SALES, ["bob@example.org"], message(sender=OTHER))
        assert err.value.smtp_code == 550 and err.value.smtp_error.startswith(b"5.7.1 From:")
        with pytest.raises(smtplib.SMTPDataError) as err:
            client.sendmail(SALES, ["bob@example.org"],
                            message(extra="").replace(b"From: Sales <sales@example.com>",
                                                      b"From: sales@example.com "
                                                      b"<ceo@example.com>"))
        assert err.value.smtp_code == 550
    assert env.outbound() == []


def test_an_oversize_message_is_refused_by_size_and_after_data(env: Env) -> None:
    big = message(extra="X-Pad: " + "x" * 900 + "\r\n" * 1) + (b"y" * 900 + b"\r\n") * 30
    with env.smtplib() as client:
        client.ehlo()
        assert int(client.esmtp_features["size"]) == MAX_SIZE
        code, reply = client.mail(SALES, [f"SIZE={MAX_SIZE + 1}"])
        assert code == 552 and reply.startswith(b"5.3.4 ")
        client.rset()
        client.mail(SALES)  # a client that does not say, then sends too much
        client.rcpt("bob@example.org")
        code, reply = client.data(big)
        assert code == 552 and reply.startswith(b"5.3.4 ")
    assert env.outbound() == []


def test_too_many_recipients_are_refused_and_nothing_is_sent(env: Env) -> None:
    with env.smtplib() as client:
        client.mail(SALES)
        for n in range(MAX_RECIPIENTS):
            assert client.rcpt(f"r{n}@example.org")[0] == 250
        code, reply = client.rcpt("one-too-many@example.org")
        assert code == 452 and reply.startswith(b"4.5.3 ")
        code, reply = client.data(message())
        assert code == 554 and reply.startswith(b"5.5.3 ")
    assert env.outbound() == []


@pytest.mark.parametrize("body", [
    b"Hello\n.\nMAIL FROM:<ceo@example.com>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nforged\r\n",
    b"Hello\r\n.\nMAIL FROM:<ceo@example.com>\r\n",
    b"Hello\r.\rMAIL FROM:<ceo@example.com>\r\n",
    b"Hello\nworld\r\n",
    b"Hello\rworld\r\n",
], ids=["LF.LF", "CRLF.LF", "CR.CR", "bare LF", "bare CR"])
def test_bare_line_endings_and_smuggling_sequences_are_refused(env: Env, body: bytes) -> None:
    head = message().split(b"\r\n\r\n")[0]
    with env.smtplib() as client:
        client.mail(SALES)
        client.rcpt("bob@example.org")
        assert client.docmd("DATA")[0] == 354
        client.send(head + b"\r\n\r\n" + body + b".\r\n")
        code, reply = client.getreply()
        assert code == 554 and reply.startswith(b"5.6.0 message refused: ")
        assert client.noop()[0] == 250  # still in step: the "forged" lines were data
    assert env.outbound() == []


def test_more_messages_a_minute_than_allowed_wait(env: Env) -> None:
    with env.smtplib() as client:
        for n in range(PER_MINUTE):
            client.sendmail(SALES, ["bob@example.org"], message(f"n{n}"))
        code, reply = client.mail(SALES)
        assert code == 451 and reply.startswith(b"4.7.1 ")
        client.rset()
        env.clock.advance(61)
        client.sendmail(SALES, ["bob@example.org"], message("later"))
    assert len(env.outbound()) == PER_MINUTE + 1


def test_repeated_wrong_passwords_are_slowed_down(env: Env) -> None:
    codes = []
    for _ in range(5):
        with smtplib.SMTP("127.0.0.1", env.starttls_port, timeout=10) as client:
            client.starttls(context=env.context())
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                _login(client, USER, "aaaa-bbbb-cccc-dddd-eeee-ffff")
            codes.append(err.value.smtp_code)
    assert codes[:3] == [535, 535, 535] and 454 in codes[3:]


# -- a crash right after 250 -----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_process(env: Env, database_url: str, port: int, data_dir: Path
                   ) -> subprocess.Popen[bytes]:
    src = Path(__file__).resolve().parents[1] / "src"
    log = data_dir.parent / "submission.log"
    with log.open("ab") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailseen", "submission", "--listen", f"127.0.0.1:{port}"],
            env={**os.environ, "PYTHONPATH": str(src), "MAILSEEN_DATA_DIR": str(data_dir),
                 "MAILSEEN_DATABASE_URL": database_url, "MAILSEEN_SECRET_KEY": SECRET,
                 "MAILSEEN_SUBMISSION_TLS_CERT": env.cert,
                 "MAILSEEN_SUBMISSION_TLS_KEY": env.key, "MAILSEEN_LOG_LEVEL": "warning"},
            stdout=subprocess.DEVNULL, stderr=errors)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                raise AssertionError(f"mailseen submission did not start: "
                                     f"{log.read_text()}") from None
            time.sleep(0.05)


def test_a_kill_9_right_after_250_loses_nothing(env: Env, database_url: str,
                                                tmp_path: Path) -> None:
    port = _free_port()
    proc = _start_process(env, database_url, port, tmp_path / "data")
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.starttls(context=env.context())
    client.login(USER, env.password)
    client.sendmail(SALES, ["bob@example.org", "carol@example.org"], message("Durable"))
    proc.send_signal(signal.SIGKILL)  # right after the 250, before anything else
    proc.wait(10)
    client.close()
    # The message was committed before the 250: after the restart it is delivered, once.
    proc = _start_process(env, database_url, port, tmp_path / "data")
    try:
        assert _deliver(env) == 2 and _deliver(env) == 0
        assert sorted(m.rcpt_tos[0] for m in env.relay.messages) == [
            "bob@example.org", "carol@example.org"]
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as again:
            again.starttls(context=env.context())
            again.login(USER, env.password)
            again.sendmail(SALES, ["bob@example.org"], message("After the restart"))
    finally:
        proc.terminate()
        proc.wait(10)
    assert sorted(m.subject for m in env.inst.messages.newest(None)) == [
        "After the restart", "Durable"]



def test_an_alias_added_to_the_mailbox_may_be_sent_as(env: Env, cli: Cli) -> None:
    with env.smtplib() as client:
        assert client.mail("Sales.Team@example.com")[0] == 553
    out = ok(cli("mailbox", "set", SALES, "--aliases", "Sales.Team@example.com; old@example.net"))
    assert '"aliases": "sales.team@example.com, old@example.net"' in out
    assert "aliases" in error(cli("mailbox", "set", SALES, "--aliases", "not an address"), 2)
    raw = message("From the alias").replace(b"From: Sales <sales@example.com>",
                                            b"From: Sales Team <sales.team@example.com>")
    with env.smtplib() as client:
        assert client.sendmail("SALES.TEAM@example.com", ["bob@example.org"], raw) == {}
        # The mailbox's own address in the envelope, the alias in From: both its own.
        client.sendmail(SALES, ["bob@example.org"], raw)
    assert [m.mailbox_id for m in env.inst.messages.newest(None)] == [env.sales.id] * 2


def test_a_client_asks_for_reminders_in_fields_recipients_never_see(env: Env) -> None:
    asked = message().replace(b"\r\n\r\n", b"\r\nX-Mailseen-Remind-Not-Viewed: 3\r\n"
                              b"X-Mailseen-Remind-Not-Replied: never\r\n\r\n", 1)
    with env.smtplib(False) as client:
        client.sendmail(SALES, ["bob@example.org"], asked)
    [msg] = env.inst.messages.newest(None, mailbox_id=env.sales.id)
    [reminder] = env.inst.reminders.of([msg.id])[msg.id]
    assert reminder.kind == "not_viewed" and reminder.state == "waiting"
    assert b"X-Mailseen" not in env.inst.store.get_raw(msg.id)
    # a value that is no deadline refuses the message, naming the field
    bad = message().replace(b"\r\n\r\n", b"\r\nX-Mailseen-Remind-Not-Viewed: soon\r\n\r\n", 1)
    with env.smtplib(False) as client, pytest.raises(smtplib.SMTPDataError) as caught:
        client.sendmail(SALES, ["bob@example.org"], bad)
    assert caught.value.smtp_code == 554
    assert b"X-Mailseen-Remind-Not-Viewed" in caught.value.smtp_error
    assert len(env.inst.messages.newest(None, mailbox_id=env.sales.id)) == 1
