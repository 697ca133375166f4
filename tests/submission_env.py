"""A running SMTP submission set-up for tests: mailseen's submission servers (STARTTLS and
implicit TLS, on free ports, in a thread of their own) in front of a real aiosmtpd relay,
with a user, their mailbox and an app password; and the mail clients that talk to it:
Python's smtplib, swaks and msmtp."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import ssl
import subprocess
import threading
from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path

import pytest
import trustme

from mailseen.clock import ManualClock
from mailseen.receivers.submission import SubmissionServer
from mailseen.records import MailboxIn, MailboxRecord, UserRecord
from mailseen.services.instance import Instance
from mailseen.services.submission import Submissions

from .smtp_server import SmtpServer
from .web_client import PASSWORD

SALES = "sales@example.com"
OTHER = "support@example.com"  # a mailbox the user does not work in
USER = "alice@example.com"
MAX_SIZE = 20_000
MAX_RECIPIENTS = 5
PER_MINUTE = 4


def tls_files(folder: Path) -> tuple[str, str, str]:
    """(certificate, key, CA) for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = [str(folder / n) for n in ("cert.pem", "key.pem", "ca.pem")]
    cert.cert_chain_pems[0].write_to_path(paths[0])
    cert.private_key_pem.write_to_path(paths[1])
    ca.cert_pem.write_to_path(paths[2])
    return paths[0], paths[1], paths[2]


def message(subject: str = "Quote", *, sender: str = SALES, to: str = "bob@example.org",
            cc: str | None = None, extra: str = "", html: bool = True) -> bytes:
    body = ("Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello Bob</p>"
            "</body></html>\r\n" if html else "Content-Type: text/plain\r\n\r\nHello\r\n")
    return (f"From: Sales <{sender}>\r\nTo: {to}\r\n" + (f"Cc: {cc}\r\n" if cc else "")
            + f"Subject: {subject}\r\nMessage-ID: {make_msgid(domain='example.com')}\r\n"
            f"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{extra}"
            + body).encode()


class Running:
    """Servers on an event loop in a thread, as `mailseen submission` runs them, so that
    blocking clients (smtplib, swaks, msmtp) can talk to them from the test."""

    def __init__(self, servers: list[SubmissionServer]) -> None:
        self.servers = servers
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ports = [asyncio.run_coroutine_threadsafe(s.start(), self.loop).result(10)
                      for s in servers]

    def stop(self) -> None:
        for s in self.servers:
            asyncio.run_coroutine_threadsafe(s.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Env:
    inst: Instance
    relay: SmtpServer
    sales: MailboxRecord
    other: MailboxRecord
    user: UserRecord
    password: str
    cert: str
    key: str
    ca: str
    starttls_port: int
    implicit_port: int
    clock: ManualClock
    folder: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def smtplib(self, implicit: bool = False) -> smtplib.SMTP:
        """A client logged in over STARTTLS (or implicit TLS)."""
        if implicit:
            client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", self.implicit_port,
                                                   context=self.context(), timeout=10)
        else:
            client = smtplib.SMTP("127.0.0.1", self.starttls_port, timeout=10)
            client.starttls(context=self.context())
        client.login(USER, self.password)
        return client

    def outbound(self) -> list[int]:
        return [m.id for m in self.inst.store.list_messages(mailbox_id=self.sales.id)
                if m.direction == "out"] + [
                m.id for m in self.inst.store.list_messages(mailbox_id=self.other.id)
                if m.direction == "out"]

    def swaks(self, *args: str, implicit: bool = False, password: str | None = None,
              raw: bytes | None = None, tls: bool = True) -> subprocess.CompletedProcess[str]:
        tool = shutil.which("swaks")
        if tool is None:
            pytest.skip("swaks is not installed (scripts/system-deps)")
        data = self.folder / "swaks.eml"
        data.write_bytes(raw or message("By swaks"))
        port = self.implicit_port if implicit else self.starttls_port
        mode = (["--tls-on-connect"] if implicit else ["--tls"]) if tls else []
        return subprocess.run(
            [tool, "--server", "127.0.0.1", "--port", str(port), *mode, "--tls-verify",
             "--tls-ca-path", self.ca, "--auth", "PLAIN", "--auth-user", USER,
             "--auth-password", password or self.password, "--from", SALES,
             "--data", f"@{data}", *args],
            capture_output=True, text=True, timeout=30, check=False)

    def msmtp(self, recipients: list[str], raw: bytes, *, implicit: bool = False
              ) -> subprocess.CompletedProcess[str]:
        tool = shutil.which("msmtp")
        if tool is None:
            pytest.skip("msmtp is not installed (scripts/system-deps)")
        config = self.folder / "msmtprc"
        port = self.implicit_port if implicit else self.starttls_port
        config.write_text(
            f"account default\nhost 127.0.0.1\nport {port}\ntls on\n"
            f"tls_starttls {'off' if implicit else 'on'}\ntls_trust_file {self.ca}\n"
            f"auth plain\nuser {USER}\npassword {self.password}\nfrom {SALES}\n"
            "syslog off\n")
        config.chmod(0o600)
        return subprocess.run([tool, "-C", str(config), *recipients], input=raw.decode(),
                              capture_output=True, text=True, timeout=30, check=False)


def make_env(inst: Instance, folder: Path, relay: SmtpServer) -> tuple[Env, Running]:
    sales = inst.store.add_mailbox(MailboxIn(
        SALES, "Sales", transport="smtp", smtp_host="127.0.0.1", smtp_port=relay.port,
        smtp_tls="none", tracking="enabled"))
    other = inst.store.add_mailbox(MailboxIn(OTHER, "Support", tracking="enabled"))
    user = inst.accounts.create_user(USER, PASSWORD, name="Alice")
    inst.store.set_memberships(user.id, [sales.id])
    user = inst.store.get_user(user.id)
    _, password = inst.accounts.create_app_password(None, user.id, "laptop")
    cert, key, ca = tls_files(folder)
    clock = ManualClock()
    rules = Submissions(inst.accounts, inst.mailboxes, inst.sender, clock,
                        max_recipients=MAX_RECIPIENTS, per_minute=PER_MINUTE)
    running = Running([
        SubmissionServer(rules, port=0, tls_cert=cert, tls_key=key, max_size=MAX_SIZE,
                         hostname="mail.example.com"),
        SubmissionServer(rules, port=0, implicit=True, tls_cert=cert, tls_key=key,
                         max_size=MAX_SIZE, hostname="mail.example.com")])
    env = Env(inst, relay, sales, other, user, password, cert, key, ca, running.ports[0],
              running.ports[1], clock, folder)
    return env, running
