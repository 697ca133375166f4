#!/usr/bin/env python3
"""Benchmark delivery: N queued messages into a local SMTP sink; messages per second, none
lost, none sent twice.

One run, on a throwaway instance (a SQLite file in a temporary folder, or a fresh PostgreSQL
database created and dropped again):

1. A mailbox whose transport is an SMTP relay: an aiosmtpd sink in this process (its own
   thread and event loop, port 0) that records the Message-ID, a digest and the arrival time
   of every message it accepts (tests/smtp_server.py's server with its own handler).
   `--relay plain` (no TLS, no AUTH) or `--relay starttls` (STARTTLS required, then AUTH; a
   throwaway CA from trustme).
2. Queue N messages through the real sending path (`Sender.submit`, as the API and the
   `tag` filter do): multipart/alternative, about 4 KB of text and HTML, tracking enabled on
   the mailbox, so each one is stored with its pixel. Timed: queued messages per second.
3. Deliver with the real `DeliveryWorker` until the queue is empty: `--workers K` workers as
   tasks on one event loop in this process (the default), or with `--processes` as K
   `mailseen worker` processes (the process the README documents for several workers on
   PostgreSQL). Timed from the start to the database saying nothing is queued or in hand;
   the rate is also given from the first arrival, which leaves out process startup.
   CPU per message is given too (this process, and the worker processes; not PostgreSQL's):
   it moves far less than the rates when neighbours share the machine.
4. Check: every queued message arrived at the sink exactly once (by Message-ID: missing,
   duplicated and unexpected ones are counted), byte for byte as stored, with its pixel;
   every message is marked sent in the database.

`--kill` runs the workers as processes, SIGKILLs them all once half the messages have arrived,
expires the leases of the messages they held (what five minutes of waiting would do), and
starts them again. Then a message may arrive twice, but only one that was in hand at the kill,
at most once more, and byte for byte the same (same Message-ID): recipients' software can tell.

Run from the repo: `bench/delivery.py` (re-executes itself in .venv; the sink is the tests'
SMTP server, tests/smtp_server.py, so it needs `.[test]` installed). PostgreSQL reachable at
--pg-url with a role that may create databases.

Usage: bench/delivery.py [--backend sqlite|postgresql] [--messages 10000] [--workers 1]
                         [--processes] [--kill] [--relay plain|starttls]
Exit status: 0 when every check holds, 1 when one fails, 2 on a setup failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchlib import (
    MAILSEEN,
    REPO,
    create_pg_database,
    drop_pg_database,
    use_repo_venv,
)

use_repo_venv(__file__)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime  # noqa: E402
from email.message import EmailMessage  # noqa: E402
from email.policy import SMTP as SMTP_POLICY  # noqa: E402
from email.utils import formatdate  # noqa: E402
from typing import Any  # noqa: E402

from aiosmtpd.smtp import Envelope, Session  # noqa: E402
from sqlalchemy import text  # noqa: E402

from mailseen.config import load_settings  # noqa: E402
from mailseen.records import MailboxIn  # noqa: E402
from mailseen.services.instance import Instance  # noqa: E402

sys.path.insert(0, str(REPO))  # the tests' SMTP server is the sink
try:
    from tests.smtp_server import RecordingHandler, SmtpServer
except ImportError as exc:  # trustme, from the test extras
    sys.exit(f"bench/delivery.py needs the test extras: .venv/bin/pip install -e '.[test]' ({exc})")

SECRET = "bench-delivery-secret-0123456789abcdef"
ADDRESS = "sales@example.com"
RELAY_USER, RELAY_PASSWORD = "relay-user", "bench relay pass"
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.I | re.M)

logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's per-session chatter


class SetupError(Exception):
    pass


# -- the sink ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Copy:
    message_id: str
    digest: str
    at: float
    tracked: bool
    user: str | None


@dataclass
class SinkHandler(RecordingHandler):
    copies: list[Copy] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        data = envelope.content
        assert isinstance(data, bytes)
        head = data.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(head)
        self.copies.append(Copy(
            found.group(1).decode("ascii", "replace") if found else "",
            hashlib.sha256(data).hexdigest(), time.monotonic(), b"/t/" in data,
            session.auth_data if session.authenticated else None))
        return "250 OK queued"


class Sink(SmtpServer):
    """The tests' real aiosmtpd server (127.0.0.1, port 0, its own event loop in a thread),
    keeping what the checks need of each copy rather than whole messages."""

    def __init__(self, relay: str, tmp: Path) -> None:
        starttls = relay == "starttls"  # STARTTLS required, then AUTH; else neither
        super().__init__("starttls" if starttls else "none",
                         users={RELAY_USER: RELAY_PASSWORD} if starttls else None)
        self.handler: SinkHandler = SinkHandler()
        self.start(tmp)

    @property
    def copies(self) -> list[Copy]:
        return self.handler.copies


# -- the instance -----------------------------------------------------------------------------

@dataclass
class Target:
    data_dir: Path
    database_url: str  # "" for SQLite in the data folder
    pg_name: str | None
    ca_file: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "MAILSEEN_DATA_DIR": str(self.data_dir),
                "MAILSEEN_DATABASE_URL": self.database_url, "MAILSEEN_SECRET_KEY": SECRET,
                "MAILSEEN_CA_FILE": self.ca_file, "MAILSEEN_LOG_LEVEL": "warning",
                "MAILSEEN_IMAP_POLL": "false"}

    def open(self) -> Instance:
        settings = load_settings({"data_dir": self.data_dir, "database_url": self.database_url,
                                  "secret_key": SECRET, "ca_file": self.ca_file,
                                  "smtp_timeout": 30.0}, environ={})
        return Instance.open(settings)


def make_target(backend: str, tmp: Path, pg_url: str, ca_file: str) -> Target:
    if backend == "sqlite":
        return Target(tmp / "data", "", None, ca_file)
    url, name = create_pg_database(pg_url, "mailseen_bench_delivery", SetupError)
    return Target(tmp / "data", url, name, ca_file)


def drop_target(target: Target, pg_url: str) -> None:
    if target.pg_name is not None:
        drop_pg_database(pg_url, target.pg_name)


# -- queueing ---------------------------------------------------------------------------------

PARAGRAPH = ("Thank you for your order. Your parcel left our warehouse this morning and should "
             "reach you within two working days; the tracking number is below. If anything "
             "is missing or damaged, reply to this message and we will sort it out. ")


def message(n: int) -> bytes:
    """A customer-service reply of about 4 KB: text and HTML, a table, a signature."""
    msg = EmailMessage()
    msg["From"] = f"Sales <{ADDRESS}>"
    msg["To"] = f"Customer {n} <customer{n}@example.org>"
    msg["Subject"] = f"Your order {100000 + n} has shipped"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<bench-{n}-{uuid.uuid4().hex[:12]}@example.com>"
    lines = [f"Dear customer {n},", "", PARAGRAPH * 3, "",
             *(f"  item {i}: widget model {n % 97}-{i}, 1 x 19.90 EUR" for i in range(8)),
             "", "Kind regards,", "The sales team"]
    msg.set_content("\n".join(lines))
    rows = "".join(f"<tr><td>widget model {n % 97}-{i}</td><td>1</td><td>19.90 EUR</td></tr>"
                   for i in range(8))
    msg.add_alternative(
        f"<html><body style=\"font-family: sans-serif\"><p>Dear customer {n},</p>"
        f"<p>{PARAGRAPH * 3}</p><table border=\"1\" cellpadding=\"4\"><tr><th>item</th>"
        f"<th>qty</th><th>price</th></tr>{rows}</table><p>Kind regards,<br>"
        "<b>The sales team</b></p></body></html>", subtype="html")
    return msg.as_bytes(policy=SMTP_POLICY)  # CRLF, as it goes on the wire


def queue(inst: Instance, sink: Sink, relay: str, count: int) -> tuple[dict[str, int], float]:
    """Queue ``count`` messages; returns Message-ID → database id, and the seconds taken."""
    secured = relay == "starttls"
    box = inst.store.add_mailbox(MailboxIn(
        ADDRESS, "Sales", transport="smtp", smtp_host="127.0.0.1", smtp_port=sink.port,
        smtp_tls="starttls" if secured else "none",
        smtp_username=RELAY_USER if secured else None,
        smtp_password=RELAY_PASSWORD if secured else None, tracking="enabled"))
    raws = [message(n) for n in range(count)]  # built beforehand: not what is timed
    print(f"queueing {count} messages of {sum(map(len, raws)) // count} bytes on average",
          flush=True)
    queued: dict[str, int] = {}
    started = time.monotonic()
    for raw in raws:
        record = inst.sender.submit(box, raw, source="api")
        queued[record.message_id] = record.id
    return queued, time.monotonic() - started


# -- delivering -------------------------------------------------------------------------------

def pending(inst: Instance) -> int:
    counts = inst.store.queue_counts()
    return counts.get("queued", 0) + counts.get("sending", 0)


async def deliver_in_process(inst: Instance, workers: int, timeout: float) -> float:
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [asyncio.create_task(inst.worker().run(stop)) for _ in range(workers)]
    try:
        while await asyncio.to_thread(pending, inst):
            if time.monotonic() - started > timeout:
                break
            await asyncio.sleep(0.2)
        return time.monotonic() - started
    finally:
        stop.set()
        await asyncio.gather(*tasks)


class Workers:
    """K `mailseen worker` processes, their output in files."""

    def __init__(self, target: Target, count: int, tmp: Path, label: str) -> None:
        self.logs = [tmp / f"worker-{label}-{i}.log" for i in range(count)]
        self.procs = []
        for log in self.logs:
            with log.open("wb") as out:
                self.procs.append(subprocess.Popen([str(MAILSEEN), "worker"], env=target.env(),
                                                   stdout=out, stderr=subprocess.STDOUT))

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                raise SetupError(f"mailseen worker exited with {proc.returncode}:\n"
                                 + log.read_text(errors="replace")[-2000:])

    def kill(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(20)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_until(condition: Any, workers: Workers, deadline: float) -> bool:
    while not condition():
        workers.check_alive()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def deliver_processes(inst: Instance, target: Target, workers: int, timeout: float,
                      tmp: Path) -> float:
    started = time.monotonic()
    procs = Workers(target, workers, tmp, "run")
    try:
        wait_until(lambda: not pending(inst), procs, started + timeout)
        return time.monotonic() - started
    finally:
        procs.stop()


def deliver_with_kill(inst: Instance, target: Target, sink: Sink, count: int, workers: int,
                      timeout: float, tmp: Path) -> tuple[float, int, int]:
    """Returns the seconds taken, the arrivals before the kill and the messages in hand."""
    started = time.monotonic()
    first = Workers(target, workers, tmp, "killed")
    try:
        if not wait_until(lambda: len(sink.copies) >= count // 2, first, started + timeout):
            raise SetupError("the workers did not reach half the queue before --timeout")
        first.kill()
    finally:
        first.stop()
    before = len(sink.copies)
    # The killed workers' claims run out after their five-minute lease; do not wait for it.
    with inst.db.engine.begin() as conn:
        in_hand = conn.execute(text(
            "UPDATE messages SET lease_until = :past WHERE status = 'sending'"),
            {"past": datetime(2000, 1, 1)}).rowcount
    print(f"killed {workers} worker(s) with SIGKILL after {before} arrivals; "
          f"{in_hand} message(s) were in hand; restarting", flush=True)
    second = Workers(target, workers, tmp, "restarted")
    try:
        wait_until(lambda: not pending(inst), second, started + timeout)
    finally:
        second.stop()
    return time.monotonic() - started, before, in_hand


# -- checks -----------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def checks(inst: Instance, sink: Sink, queued: dict[str, int], allowed_doubles: int,
           relay: str) -> list[Check]:
    received = Counter(c.message_id for c in sink.copies)
    missing = [m for m in queued if m not in received]
    unexpected = [m for m in received if m not in queued]
    doubles = {m: n for m, n in received.items() if n > 1}
    extra = sum(n - 1 for n in doubles.values())
    digests: dict[str, set[str]] = {}
    for c in sink.copies:
        digests.setdefault(c.message_id, set()).add(c.digest)
    with inst.db.engine.connect() as conn:
        stored = {row[0]: hashlib.sha256(row[1]).hexdigest() for row in conn.execute(
            text("SELECT message_id, raw FROM message_data"))}
        attempts = Counter(n for (n,) in conn.execute(
            text("SELECT attempts FROM messages WHERE direction = 'out'")))
    altered = [m for m, ds in digests.items() if m in queued and ds != {stored[queued[m]]}]
    counts = inst.store.queue_counts()
    untracked = sum(not c.tracked for c in sink.copies)
    out = [
        Check("every queued message arrived", not missing,
              f"{len(queued) - len(missing)} of {len(queued)} arrived, {len(missing)} missing"
              + (f", {len(unexpected)} unexpected" if unexpected else "")),
        Check("none arrived twice" if not allowed_doubles else
              f"duplicates only of messages in hand at the kill (<= {allowed_doubles}), "
              "at most once more", extra <= allowed_doubles and all(
                  n <= 2 for n in doubles.values()),
              f"{extra} duplicate(s) of {len(doubles)} message(s)"),
        Check("every copy is the stored message byte for byte", not altered,
              f"{len(altered)} differ" + (" (a duplicate's copies are identical)"
                                          if doubles and not altered else "")),
        Check("every copy carries its pixel", not untracked, f"{untracked} without"),
        Check("every message is marked sent", counts == {"sent": len(queued)},
              f"statuses {dict(counts)}; attempts {dict(sorted(attempts.items()))}"),
    ]
    if relay == "starttls":
        anonymous = sum(c.user != RELAY_USER for c in sink.copies)
        out.append(Check("every copy came over STARTTLS + AUTH", not anonymous,
                         f"{anonymous} without AUTH"))
    return out


# -- main -------------------------------------------------------------------------------------

def run(args: argparse.Namespace, tmp: Path) -> bool:
    sink = Sink(args.relay, tmp)
    target = make_target(args.backend, tmp, args.pg_url, sink.ca_file)
    inst: Instance | None = None
    try:
        inst = target.open()
        cpu = cpu_seconds()
        queued, queue_s = queue(inst, sink, args.relay, args.messages)
        n = len(queued)
        queue_cpu = cpu_seconds()
        print(f"queued {n} in {queue_s:.1f} s: {n / queue_s:.0f} messages/s; CPU "
              f"{(queue_cpu[0] - cpu[0]) / n * 1000:.1f} ms/message", flush=True)
        mode = ("processes, SIGKILLed at half way" if args.kill else
                "processes" if args.processes else "tasks in this process")
        print(f"delivering with {args.workers} worker(s) ({mode}), relay {args.relay}; "
              f"load average {load_average()}", flush=True)
        in_hand = 0
        if args.kill:
            deliver_s, _, in_hand = deliver_with_kill(inst, target, sink, n, args.workers,
                                                      args.timeout, tmp)
        elif args.processes:
            deliver_s = deliver_processes(inst, target, args.workers, args.timeout, tmp)
        else:
            deliver_s = asyncio.run(deliver_in_process(inst, args.workers, args.timeout))
        times = sorted(c.at for c in sink.copies)
        if times:
            span = times[-1] - times[0]
            print(f"delivered {len(times)} in {deliver_s:.1f} s: {n / deliver_s:.0f} "
                  f"messages/s; first to last arrival {span:.1f} s: "
                  f"{(len(times) - 1) / span if span else 0:.0f} messages/s", flush=True)
        done_cpu = cpu_seconds()
        print(f"delivery CPU: {(done_cpu[0] - queue_cpu[0]) / n * 1000:.1f} ms/message in "
              f"this process (sink{'' if args.processes or args.kill else ', workers'}), "
              f"{(done_cpu[1] - queue_cpu[1]) / n * 1000:.1f} ms/message in worker processes")
        print(f"total {queue_s + deliver_s:.1f} s; load average {load_average()}")
        results = checks(inst, sink, queued, in_hand, args.relay)
        for c in results:
            print(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        return all(c.ok for c in results)
    finally:
        if inst is not None:
            inst.close()
        sink.stop()
        drop_target(target, args.pg_url)


def cpu_seconds() -> tuple[float, float]:
    """User + system CPU of this process, and of its ended children (the worker processes;
    PostgreSQL's own CPU is not counted)."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--processes", action="store_true",
                        help="run the workers as `mailseen worker` processes")
    parser.add_argument("--kill", action="store_true",
                        help="workers as processes, SIGKILLed half way and restarted")
    parser.add_argument("--relay", choices=("plain", "starttls"), default="plain")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="a database on the server to connect to for CREATE DATABASE")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds the delivery may take before it counts as failed")
    args = parser.parse_args()
    if args.messages < 2 or args.workers < 1:
        parser.error("--messages must be at least 2 and --workers at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="mailseen-delivery-"))
    print(f"backend {args.backend}; {os.cpu_count()} CPUs; load average {load_average()}",
          flush=True)
    try:
        return 0 if run(args, tmp) else 1
    except SetupError as exc:
        print(f"bench/delivery.py: {exc}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
