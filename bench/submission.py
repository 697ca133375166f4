#!/usr/bin/env python3
"""Benchmark SMTP submission: messages per second a mail client gets 250 for from `mailseen
submission`, against the same client sending to a bare aiosmtpd sink; the ratio.

One run, on a throwaway instance (a SQLite file in a temporary folder, or a fresh PostgreSQL
database created and dropped again):

1. The sink: aiosmtpd in a process of its own, with the same TLS (STARTTLS, a throwaway CA
   from trustme) and AUTH PLAIN (any password), whose handler accepts and counts. It is the
   ceiling: SMTP, TLS and aiosmtpd with nothing behind them.
2. mailseen: `mailseen submission` in a process of its own on the same certificate, a
   mailbox with tracking on, a user of it and an app password. Each 250 means the message
   was checked (sender, From, line endings, limits), tracked per recipient and committed to
   the queue (no worker runs: delivery is bench/delivery.py's).
3. The client: `--clients C` concurrent aiosmtplib sessions in this process, each logging in
   once and sending its share of `--messages N` (about 4 KB of HTML, `--recipients R` each),
   or with `--reconnect` a new connection, STARTTLS and AUTH for every message, as a mail
   client sending one message does. The same client, messages and concurrency against each
   server, the sink first; each timed from the first connection to the last 250.
4. Check: every message mailseen answered 250 for is in its database, queued, with one
   tracked copy per recipient.

Usage: bench/submission.py [--backend sqlite|postgresql] [--messages 2000] [--clients 4]
                           [--recipients 1] [--reconnect]
Exit status: 0 when every check holds, 1 when one fails, 2 on a setup failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchlib import REPO, create_pg_database, drop_pg_database, use_repo_venv

use_repo_venv(__file__)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from email.utils import make_msgid  # noqa: E402

import aiosmtplib  # noqa: E402
import trustme  # noqa: E402

from mailseen.config import load_settings  # noqa: E402
from mailseen.records import MailboxIn  # noqa: E402
from mailseen.services.instance import Instance  # noqa: E402

SALES = "sales@example.com"
USER = "alice@example.com"
SECRET = "bench-secret-key-0123456789abcdef"


class SetupFailed(Exception):
    pass


SINK = '''
import asyncio, logging, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult
logging.getLogger("mail.log").setLevel(logging.ERROR)
class Sink:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        Sink.count += 1
        return "250 2.0.0 OK"
def accept(server, session, envelope, mechanism, data):
    return AuthResult(success=True, auth_data=data.login)
async def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    handler = Sink()
    await loop.create_server(lambda: SMTP(handler, hostname="sink", tls_context=ctx,
        require_starttls=True, authenticator=accept, data_size_limit=26214400,
        enable_SMTPUTF8=True), "127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body(n: int, recipients: list[str]) -> bytes:
    para = "<p>" + "Thank you for your order; here is the quote we discussed. " * 8 + "</p>\r\n"
    return (f"From: Sales <{SALES}>\r\nTo: {', '.join(recipients)}\r\nSubject: Quote {n}\r\n"
            f"Message-ID: {make_msgid(domain='example.com')}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n"
            + para * 8 + "</body></html>\r\n").encode()


@dataclass
class Timing:
    seconds: float
    accepted: int
    refused: int
    cpu: float  # the server process's CPU seconds during the run


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def send_all(port: int, ca: str, password: str, args: argparse.Namespace,
                   pid: int) -> Timing:
    ctx = ssl.create_default_context(cafile=ca)
    recipients = [f"r{i}@example.org" for i in range(args.recipients)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(args.messages):
        queue.put_nowait(n)
    accepted = refused = 0

    def client() -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True,
                               tls_context=ctx, username=USER, password=password, timeout=60)

    async def one_client() -> None:
        nonlocal accepted, refused
        smtp = None if args.reconnect else client()
        if smtp is not None:
            await smtp.connect()
        try:
            while not queue.empty():
                n = queue.get_nowait()
                if args.reconnect:
                    async with client() as each:
                        errors, _ = await each.sendmail(SALES, recipients, body(n, recipients))
                else:
                    assert smtp is not None
                    errors, _ = await smtp.sendmail(SALES, recipients, body(n, recipients))
                accepted += 1
                refused += len(errors)
        finally:
            if smtp is not None:
                await smtp.quit()

    cpu = cpu_of(pid)
    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(args.clients)))
    return Timing(time.perf_counter() - start, accepted, refused, cpu_of(pid) - cpu)


def wait_for(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SetupFailed(f"{what} did not start") from None
            time.sleep(0.05)


def run(args: argparse.Namespace, tmp: Path, database_url: str) -> bool:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = (str(tmp / n) for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    ca.cert_pem.write_to_path(ca_file)
    settings = load_settings({"data_dir": tmp / "data", "database_url": database_url,
                              "secret_key": SECRET, "public_url": "https://t.example.com",
                              "password_memory_kib": 64}, environ={})
    inst = Instance.open(settings)
    box = inst.mailboxes.add(None, MailboxIn(SALES, tracking="enabled"))
    user = inst.accounts.add_user(None, USER, "correct horse battery", mailbox_ids=[box.id])
    _, password = inst.accounts.create_app_password(None, user.id, "bench")

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MAILSEEN_DATA_DIR": str(tmp / "data"),
           "MAILSEEN_DATABASE_URL": database_url, "MAILSEEN_SECRET_KEY": SECRET,
           "MAILSEEN_PUBLIC_URL": "https://t.example.com",
           "MAILSEEN_SUBMISSION_TLS_CERT": cert_file, "MAILSEEN_SUBMISSION_TLS_KEY": key_file,
           "MAILSEEN_SUBMISSION_PER_MINUTE": str(10 * args.messages),
           "MAILSEEN_SUBMISSION_MAX_RECIPIENTS": str(max(100, args.recipients)),
           "MAILSEEN_LOG_LEVEL": "warning"}
    sink_port, ms_port = free_port(), free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(sink_port), cert_file, key_file],
                            stdout=subprocess.DEVNULL)
    server = subprocess.Popen([sys.executable, "-m", "mailseen", "submission", "--listen",
                               f"127.0.0.1:{ms_port}"], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(sink_port, sink, "the aiosmtpd sink")
        wait_for(ms_port, server, "mailseen submission")
        base = asyncio.run(send_all(sink_port, ca_file, "anything", args, sink.pid))
        ours = asyncio.run(send_all(ms_port, ca_file, password, args, server.pid))
    finally:
        for proc in (sink, server):
            proc.terminate()
            proc.wait(20)
    stored = inst.messages.newest(None, limit=args.messages + 1)
    copies = sum(len(c) for c in inst.store.copies_of([m.id for m in stored]).values())
    queued = sum(1 for m in stored if m.status == "queued" and m.tracked)
    inst.close()
    load = os.getloadavg()
    print(f"{args.messages} messages of {len(body(0, ['x@example.org']))} bytes, "
          f"{args.recipients} recipient(s), {args.clients} clients, "
          f"{'a connection per message' if args.reconnect else 'one session per client'}, "
          f"backend {args.backend}")
    for name, t in (("aiosmtpd sink", base), ("mailseen submission", ours)):
        print(f"  {name:20} {t.accepted / t.seconds:8.1f} msg/s  ({t.seconds:.2f} s, "
              f"server CPU {1000 * t.cpu / max(t.accepted, 1):.2f} ms/msg)")
    ratio = ours.accepted / ours.seconds / (base.accepted / base.seconds)
    print(f"  ratio mailseen/sink  {ratio:.2f}   load {load[0]:.1f} {load[1]:.1f}")
    ok = (ours.accepted == args.messages and ours.refused == 0 and queued == args.messages
          and copies == args.messages * args.recipients)
    print(f"  checks: {ours.accepted} answered 250, {queued} queued and tracked, {copies} "
          f"copies (expected {args.messages * args.recipients}): {'ok' if ok else 'FAILED'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--recipients", type=int, default=1)
    parser.add_argument("--reconnect", action="store_true",
                        help="A new connection, STARTTLS and AUTH for every message.")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailseen-bench-") as folder:
        tmp = Path(folder)
        pg_name = None
        try:
            if args.backend == "postgresql":
                url, pg_name = create_pg_database(args.pg_url, "mailseen_bench", SetupFailed)
            else:
                url = f"sqlite:///{tmp / 'mailseen.db'}"
            return 0 if run(args, tmp, url) else 1
        except SetupFailed as exc:
            print(f"setup failed: {exc}", file=sys.stderr)
            return 2
        finally:
            if pg_name is not None:
                drop_pg_database(args.pg_url, pg_name)


if __name__ == "__main__":
    sys.exit(main())
