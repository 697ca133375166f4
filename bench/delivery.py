#!/usr/bin/env python3
"""Benchmark delivery: N queued messages into local SMTP sinks, beside the SMTP library alone
sending the same bytes to the same sinks; messages per second, CPU, none lost, none sent twice.

One run, on a throwaway instance (a SQLite file in a temporary folder, or a fresh PostgreSQL
database created and dropped again):

1. `--sinks K` aiosmtpd sinks, each in a process of its own (so a sink does not take the
   workers' CPU or GIL), recording the Message-ID, a digest and the arrival time of every
   message (tests/smtp_server.py's server with its own handler) and counting connections.
   `--relay plain` (no TLS, no AUTH) or `--relay starttls` (STARTTLS required, then AUTH; a
   throwaway CA from trustme). `--relay-delay MS` makes each sink take that long over each
   message, as real relays do: the workers are then bound by the relay's latency, not CPU.
   One mailbox per sink, each relaying to its sink; messages are queued to them in turn.
2. For each `--workers` count in turn (default `1 4`):
   a. The raw loop: aiosmtplib alone, in this process, one kept connection per sink
      (STARTTLS + AUTH once per connection when the relay asks for it), `sendmail` of N
      messages of the same size and shape as mailseen's copies (the pixel in), to the same
      sinks, just before and again just after the workers (c); the mean of the two rates
      is the yardstick.
   b. Queue N messages through the real sending path (`Sender.submit`, as the API does):
      multipart/alternative, about 3 KB of text and HTML, tracked, one recipient each.
   c. Deliver with K `mailseen worker` processes until the database says nothing is queued
      or in hand. The rate is given from the first to the last arrival (process startup
      left out), over the whole time, and "steady", from the 10th to the 90th percentile
      arrival (workers starting one after the other and uneven last batches left out); CPU
      per message of the workers (their processes, not PostgreSQL's, less what a worker
      takes to start and stop with nothing to do) and of the sinks; SMTP connections the
      sinks saw.
   d. The raw loop again (see a).
   e. Check: every queued message arrived exactly once (by Message-ID: missing, duplicated
      and unexpected ones are counted), byte for byte the copy mailseen makes of it (its
      pixel in), and is marked sent in the database.
   The raw loop runs beside each configuration, so busy neighbours slow both alike: only the
   ratios within one run mean something on a shared machine.

`--kill` runs the first `--workers` count once more, SIGKILLs the workers once half the
messages have arrived, expires the leases of what they held (what five minutes of waiting
would do), and starts them again. Then a message may arrive twice, but only one that was in
hand at the kill, at most once more, and byte for byte the same.

`--profile FILE` records the first worker process with py-spy (`pip install py-spy`) as
collapsed stacks (which speedscope and flamegraph.pl read), sampling only while it holds the
GIL: where its CPU goes.

Run from the repo: `bench/delivery.py` (re-executes itself in .venv when there is one; the
sinks are the tests' SMTP server, tests/smtp_server.py, so it needs `.[test]` installed).
PostgreSQL reachable at --pg-url with a role that may create databases.

Usage: bench/delivery.py [--backend sqlite|postgresql] [--messages 2000] [--workers 1 4]
                         [--sinks 1] [--relay plain|starttls] [--relay-delay 0] [--kill]
Exit status: 0 when every check holds, 1 when one fails, 2 on a setup failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchlib import (
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
import multiprocessing  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import ssl  # noqa: E402
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
from multiprocessing.connection import Connection  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any, cast  # noqa: E402

import aiosmtplib  # noqa: E402
from aiosmtpd.smtp import Envelope, Session  # noqa: E402
from sqlalchemy import text  # noqa: E402

from mailseen.config import load_settings  # noqa: E402
from mailseen.core.inject import tag_message  # noqa: E402
from mailseen.core.pixel import pixel_tag, pixel_url  # noqa: E402
from mailseen.records import CopyRecord, MailboxIn, MailboxRecord  # noqa: E402
from mailseen.services.instance import Instance  # noqa: E402

sys.path.insert(0, str(REPO))  # the tests' SMTP server is the sink
try:
    from tests.smtp_server import RecordingHandler, SmtpServer
except ImportError as exc:  # trustme, from the test extras
    sys.exit(f"bench/delivery.py needs the test extras: .venv/bin/pip install -e '.[test]' ({exc})")

SECRET = "bench-delivery-secret-0123456789abcdef"
BASE_URL = "http://127.0.0.1:8000"
RAW_SENDER = "raw-loop@example.com"
RELAY_USER, RELAY_PASSWORD = "relay-user", "bench relay pass"
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.I | re.M)

logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's per-session chatter


class SetupError(Exception):
    pass


# -- the sinks: aiosmtpd, each in a process of its own ----------------------------------------

@dataclass(frozen=True)
class Arrival:
    message_id: str
    digest: str
    at: float  # time.monotonic(): one clock for every process on Linux
    tracked: bool
    user: str | None
    raw_loop: bool


@dataclass
class SinkHandler(RecordingHandler):
    copies: list[Arrival] = field(default_factory=list)
    delay: float = 0.0
    counter: Any = None  # a multiprocessing.Value: arrivals, for the parent to watch

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        data = envelope.content
        assert isinstance(data, bytes)
        head = data.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(head)
        self.copies.append(Arrival(
            found.group(1).decode("ascii", "replace") if found else "",
            hashlib.sha256(data).hexdigest(), time.monotonic(), b"/t/" in data,
            session.auth_data if session.authenticated else None,
            envelope.mail_from == RAW_SENDER))
        if self.counter is not None:
            with self.counter.get_lock():
                self.counter.value += 1
        return "250 OK queued"


class CountingServer(SmtpServer):
    """The tests' server (127.0.0.1, port 0, its own event loop in a thread), counting the
    connections it accepts."""

    def __init__(self, relay: str, handler: SinkHandler) -> None:
        starttls = relay == "starttls"  # STARTTLS required, then AUTH; else neither
        super().__init__("starttls" if starttls else "none",
                         users={RELAY_USER: RELAY_PASSWORD} if starttls else None)
        self.handler = handler


def _sink_main(conn: Connection, relay: str, tmp: Path, delay: float, counter: Any) -> None:
    handler = SinkHandler(delay=delay, counter=counter)
    sink = CountingServer(relay, handler)
    sink.start(tmp)
    conn.send((sink.port, sink.ca_file))
    while True:
        try:
            command = conn.recv()
        except EOFError:  # the benchmark is gone
            command = "stop"
        if command == "take":  # what arrived since the last take, connections, CPU
            taken, handler.copies = handler.copies, []
            t = os.times()
            conn.send((taken, sink.connections, t.user + t.system))
        else:
            sink.stop()
            with contextlib.suppress(OSError):
                conn.send(None)
            return


class Sink:
    """A sink process, driven through a pipe."""

    def __init__(self, relay: str, tmp: Path, delay: float, counter: Any) -> None:
        ctx = multiprocessing.get_context("fork")  # before this process starts threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_sink_main, args=(child, relay, tmp, delay, counter),
                                daemon=True)
        self.proc.start()
        if not self.conn.poll(30):
            raise SetupError("a sink did not start")
        self.port, self.ca_file = self.conn.recv()

    def take(self) -> tuple[list[Arrival], int, float]:
        self.conn.send("take")
        return cast(tuple[list[Arrival], int, float], self.conn.recv())

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.conn.send("stop")
            self.conn.recv()
        self.proc.join(10)


class Sinks:
    def __init__(self, count: int, relay: str, tmp: Path, delay: float) -> None:
        self.counter = multiprocessing.get_context("fork").Value("q", 0)
        self.all = []
        for i in range(count):
            (tmp / f"sink-{i}").mkdir()
            self.all.append(Sink(relay, tmp / f"sink-{i}", delay, self.counter))
        self.ca_file = str(tmp / "sinks-ca.pem")  # every sink's CA, for STARTTLS
        with open(self.ca_file, "w") as out:
            for sink in self.all:
                out.write(Path(sink.ca_file).read_text())
        self._connections = [0] * count
        self._cpu = [0.0] * count

    @property
    def arrived(self) -> int:
        return int(self.counter.value)

    def take(self) -> tuple[list[Arrival], int, float]:
        """What arrived since the last take, and the connections and CPU seconds since."""
        arrivals: list[Arrival] = []
        connections, cpu = 0, 0.0
        for i, sink in enumerate(self.all):
            got, conns, seconds = sink.take()
            arrivals.extend(got)
            connections += conns - self._connections[i]
            cpu += seconds - self._cpu[i]
            self._connections[i], self._cpu[i] = conns, seconds
        return arrivals, connections, cpu

    def stop(self) -> None:
        for sink in self.all:
            sink.stop()


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
                "MAILSEEN_IMAP_POLL": "false", "MAILSEEN_PUBLIC_URL": BASE_URL,
                "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                               os.environ.get("PYTHONPATH", "")])}

    def open(self) -> Instance:
        settings = load_settings({"data_dir": self.data_dir, "database_url": self.database_url,
                                  "secret_key": SECRET, "ca_file": self.ca_file,
                                  "public_url": BASE_URL, "smtp_timeout": 30.0}, environ={})
        return Instance.open(settings)


def make_target(backend: str, tmp: Path, pg_url: str, ca_file: str) -> Target:
    if backend == "sqlite":
        return Target(tmp / "data", "", None, ca_file)
    url, name = create_pg_database(pg_url, "mailseen_bench_delivery", SetupError)
    return Target(tmp / "data", url, name, ca_file)


def drop_target(target: Target, pg_url: str) -> None:
    if target.pg_name is not None:
        drop_pg_database(pg_url, target.pg_name)


# -- messages ---------------------------------------------------------------------------------

PARAGRAPH = ("Thank you for your order. Your parcel left our warehouse this morning and should "
             "reach you within two working days; the tracking number is below. If anything "
             "is missing or damaged, reply to this message and we will sort it out. ")


def message(n: int, sender: str) -> bytes:
    """A customer-service reply of about 3 KB: text and HTML, a table, a signature."""
    msg = EmailMessage()
    msg["From"] = f"Sales <{sender}>"
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


def mailboxes(inst: Instance, sinks: Sinks, relay: str) -> list[MailboxRecord]:
    secured = relay == "starttls"
    return [inst.store.add_mailbox(MailboxIn(
        f"sales{i}@example.com", "Sales", transport="smtp", smtp_host="127.0.0.1",
        smtp_port=sink.port, smtp_tls="starttls" if secured else "none",
        smtp_username=RELAY_USER if secured else None,
        smtp_password=RELAY_PASSWORD if secured else None, tracking="enabled"))
        for i, sink in enumerate(sinks.all)]


def queue(inst: Instance, boxes: list[MailboxRecord], count: int
          ) -> tuple[dict[str, int], float, float]:
    """Queue ``count`` messages, to the mailboxes in turn; returns Message-ID → database
    id, the seconds and the CPU seconds taken."""
    raws = [message(n, boxes[n % len(boxes)].address) for n in range(count)]  # not timed
    queued: dict[str, int] = {}
    cpu, started = cpu_seconds()[0], time.monotonic()
    for n, raw in enumerate(raws):
        record = inst.sender.submit(boxes[n % len(boxes)], raw, source="api")
        queued[record.message_id] = record.id
    return queued, time.monotonic() - started, cpu_seconds()[0] - cpu


# -- the raw loop -----------------------------------------------------------------------------

async def raw_loop(sinks: Sinks, relay: str, count: int) -> tuple[float, float]:
    """aiosmtplib alone: one kept connection per sink, ``count`` messages shaped as
    mailseen's copies (pixel in) shared among them. Returns the seconds and CPU seconds."""
    tag = pixel_tag(pixel_url(BASE_URL, "R" * 31))
    raws = [tag_message(message(n, RAW_SENDER), tag, lambda url: False).data
            for n in range(count)]
    ctx = ssl.create_default_context(cafile=sinks.ca_file)

    async def one(port: int, chunk: list[bytes]) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30,
                                 start_tls=relay == "starttls",
                                 tls_context=ctx if relay == "starttls" else None)
        async with client:
            if relay == "starttls":
                await client.login(RELAY_USER, RELAY_PASSWORD)
            for n, raw in enumerate(chunk):
                await client.sendmail(RAW_SENDER, [f"customer{n}@example.org"], raw)

    width = len(sinks.all)
    cpu, started = cpu_seconds()[0], time.monotonic()
    await asyncio.gather(*(one(sink.port, raws[i::width]) for i, sink in enumerate(sinks.all)))
    return time.monotonic() - started, cpu_seconds()[0] - cpu


# -- delivering -------------------------------------------------------------------------------

def pending(inst: Instance) -> int:
    counts = inst.store.queue_counts()
    return counts.get("queued", 0) + counts.get("sending", 0)


class Workers:
    """K `mailseen worker` processes, their output in files."""

    def __init__(self, target: Target, count: int, tmp: Path, label: str,
                 profile: str | None = None) -> None:
        self.logs = [tmp / f"worker-{label}-{i}.log" for i in range(count)]
        self.procs = []
        for log in self.logs:
            with log.open("wb") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "mailseen", "worker"], env=target.env(),
                    stdout=out, stderr=subprocess.STDOUT))
        self.spy = None
        if profile:
            self.spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                 "--gil", "-o", profile, "--rate", "250", "--pid",
                 str(self.procs[0].pid)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

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
        if self.spy is not None:
            self.spy.wait(30)


def wait_until(condition: Any, workers: Workers, deadline: float) -> bool:
    while not condition():
        workers.check_alive()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def startup_cpu(target: Target) -> float:
    """CPU seconds a `mailseen worker` process takes to start and stop with nothing to do:
    left out of the CPU per message."""
    before = cpu_seconds()[1]
    subprocess.run([sys.executable, "-m", "mailseen", "worker", "--once"], env=target.env(),
                   check=True, stdout=subprocess.DEVNULL)
    return cpu_seconds()[1] - before


def deliver(inst: Instance, target: Target, workers: int, timeout: float, tmp: Path,
            profile: str | None) -> float:
    started = time.monotonic()
    procs = Workers(target, workers, tmp, f"run-{workers}", profile)
    try:
        if not wait_until(lambda: not pending(inst), procs, started + timeout):
            raise SetupError("the workers did not empty the queue before --timeout")
        return time.monotonic() - started
    finally:
        procs.stop()


def deliver_with_kill(inst: Instance, target: Target, sinks: Sinks, count: int, workers: int,
                      timeout: float, tmp: Path) -> tuple[float, int]:
    """Returns the seconds taken and the messages in hand at the kill."""
    started = time.monotonic()
    base = sinks.arrived
    first = Workers(target, workers, tmp, "killed")
    try:
        if not wait_until(lambda: sinks.arrived - base >= count // 2, first,
                          started + timeout):
            raise SetupError("the workers did not reach half the queue before --timeout")
        first.kill()
    finally:
        first.stop()
    before = sinks.arrived - base
    # The killed workers' claims (the copies in hand, being sent, and the rest of their
    # batches, reserved) run out after their five-minute lease; do not wait for it.
    with inst.db.engine.begin() as conn:
        in_hand = conn.execute(text(
            "SELECT count(*) FROM copies WHERE status = 'sending'")).scalar_one()
        reserved = conn.execute(text(
            "UPDATE copies SET lease_until = :past WHERE lease_until IS NOT NULL"),
            {"past": datetime(2000, 1, 1)}).rowcount
    print(f"  killed {workers} worker(s) with SIGKILL after {before} arrivals; {in_hand} "
          f"message(s) were in hand, {reserved - in_hand} more reserved; restarting",
          flush=True)
    second = Workers(target, workers, tmp, "restarted")
    try:
        wait_until(lambda: not pending(inst), second, started + timeout)
    finally:
        second.stop()
    return time.monotonic() - started, int(in_hand)


# -- checks -----------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def expected_digests(inst: Instance, ids: set[int]) -> dict[int, str]:
    """What each message's copy must be, byte for byte: the stored message with the
    copy's pixel, as the sending path makes it (one copy each here)."""
    with inst.db.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT d.message_id, d.raw, c.token_key FROM message_data d "
            "JOIN copies c ON c.message_id = d.message_id")).all()
    return {mid: hashlib.sha256(inst.sender.copy_bytes(
        raw, cast(CopyRecord, SimpleNamespace(token_key=key)))).hexdigest()
        for mid, raw, key in rows if mid in ids}


def checks(inst: Instance, arrivals: list[Arrival], queued: dict[str, int],
           allowed_doubles: int, relay: str) -> list[Check]:
    copies = [a for a in arrivals if not a.raw_loop]
    received = Counter(c.message_id for c in copies)
    missing = [m for m in queued if m not in received]
    unexpected = [m for m in received if m not in queued]
    doubles = {m: n for m, n in received.items() if n > 1}
    extra = sum(n - 1 for n in doubles.values())
    digests: dict[str, set[str]] = {}
    for c in copies:
        digests.setdefault(c.message_id, set()).add(c.digest)
    expected = expected_digests(inst, set(queued.values()))
    altered = [m for m, ds in digests.items() if m in queued and ds != {expected[queued[m]]}]
    with inst.db.engine.connect() as conn:
        statuses = Counter(status for (status, mid) in conn.execute(
            text("SELECT status, id FROM messages WHERE direction = 'out'"))
            if mid in set(queued.values()))
        attempts = Counter(n for (n, mid) in conn.execute(
            text("SELECT attempts, id FROM messages WHERE direction = 'out'"))
            if mid in set(queued.values()))
    untracked = sum(not c.tracked for c in copies)
    out = [
        Check("every queued message arrived", not missing,
              f"{len(queued) - len(missing)} of {len(queued)} arrived, {len(missing)} missing"
              + (f", {len(unexpected)} unexpected" if unexpected else "")),
        Check("none arrived twice" if not allowed_doubles else
              f"duplicates only of messages in hand at the kill (<= {allowed_doubles}), "
              "at most once more", extra <= allowed_doubles and all(
                  n <= 2 for n in doubles.values()),
              f"{extra} duplicate(s) of {len(doubles)} message(s)"),
        Check("every copy is mailseen's copy of it byte for byte", not altered,
              f"{len(altered)} differ" + (" (a duplicate's copies are identical)"
                                          if doubles and not altered else "")),
        Check("every copy carries its pixel", not untracked, f"{untracked} without"),
        Check("every message is marked sent", dict(statuses) == {"sent": len(queued)},
              f"statuses {dict(statuses)}; attempts {dict(sorted(attempts.items()))}"),
    ]
    if relay == "starttls":
        anonymous = sum(c.user != RELAY_USER for c in copies)
        out.append(Check("every copy came over STARTTLS + AUTH", not anonymous,
                         f"{anonymous} without AUTH"))
    return out


# -- main -------------------------------------------------------------------------------------

@dataclass
class Figures:
    label: str
    rate: float  # messages/s, first to last arrival
    overall: float  # messages/s, from start to the queue empty
    steady: float  # messages/s, from the 10th to the 90th percentile arrival
    cpu_ms: float  # worker CPU per message
    sink_cpu_ms: float
    connections: int


def one_round(args: argparse.Namespace, inst: Instance, target: Target, sinks: Sinks,
              boxes: list[MailboxRecord], workers: int, tmp: Path, kill: bool,
              profile: str | None) -> tuple[Figures, Figures, bool]:
    n = args.messages
    startup = startup_cpu(target)
    sinks.take()
    raw_s, raw_cpu = asyncio.run(raw_loop(sinks, args.relay, n))
    _, raw_conns, raw_sink_cpu = sinks.take()
    queued, queue_s, queue_cpu = queue(inst, boxes, n)
    print(f"  queued {n} in {queue_s:.1f} s: {n / queue_s:.0f} messages/s; CPU "
          f"{queue_cpu / n * 1000:.1f} ms/message", flush=True)
    children = cpu_seconds()[1]
    in_hand = 0
    if kill:
        deliver_s, in_hand = deliver_with_kill(inst, target, sinks, n, workers, args.timeout,
                                               tmp)
    else:
        deliver_s = deliver(inst, target, workers, args.timeout, tmp, profile)
    # Each process's start and stop left out (twice as many processes with a kill).
    worker_cpu = cpu_seconds()[1] - children - startup * workers * (2 if kill else 1)
    arrivals, conns, sink_cpu = sinks.take()
    # The raw loop once more, right after: neighbours' load moves during a round, and the
    # yardstick is the mean of the two.
    after_s, after_cpu = asyncio.run(raw_loop(sinks, args.relay, n))
    sinks.take()
    mean = 2 * n / (raw_s + after_s)
    raw = Figures("raw aiosmtplib loop", mean, n / raw_s, mean,
                  (raw_cpu + after_cpu) / 2 / n * 1000, raw_sink_cpu / n * 1000, raw_conns)
    times = sorted(a.at for a in arrivals)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    label = f"mailseen, {workers} worker process{'es' if workers > 1 else ''}" + (
        ", SIGKILLed half way" if kill else "")
    ours = Figures(label, (len(times) - 1) / span if span else 0.0, n / deliver_s,
                   steady_rate(times), worker_cpu / n * 1000, sink_cpu / n * 1000, conns)
    results = checks(inst, arrivals, queued, in_hand, args.relay)
    print(f"  {raw.label}: {raw.rate:.0f} messages/s (before {n / raw_s:.0f}, after "
          f"{n / after_s:.0f}); CPU {raw.cpu_ms:.2f} ms/message (sinks {raw.sink_cpu_ms:.2f}); "
          f"{raw.connections} SMTP connection(s)", flush=True)
    print(f"  {ours.label}: {ours.rate:.0f} messages/s (overall {ours.overall:.0f}, steady "
          f"{ours.steady:.0f}); "
          f"CPU {ours.cpu_ms:.2f} ms/message (sinks {ours.sink_cpu_ms:.2f}); "
          f"{ours.connections} SMTP connection(s)", flush=True)
    print(f"  ratio mailseen / raw loop: {ours.rate / raw.rate:.2f} (messages/s), "
          f"{ours.cpu_ms / raw.cpu_ms:.1f}x the CPU per message; load average "
          f"{load_average()}", flush=True)
    for c in results:
        print(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
    return raw, ours, all(c.ok for c in results)


def run(args: argparse.Namespace, tmp: Path) -> bool:
    sinks = Sinks(args.sinks, args.relay, tmp, args.relay_delay / 1000)
    target = make_target(args.backend, tmp, args.pg_url, sinks.ca_file)
    inst: Instance | None = None
    ok = True
    try:
        inst = target.open()
        boxes = mailboxes(inst, sinks, args.relay)
        rounds = [(w, False) for w in args.workers] + (
            [(args.workers[0], True)] if args.kill else [])
        mine: dict[int, Figures] = {}
        for workers, kill in rounds:
            print(f"{args.messages} messages, {workers} worker(s){', kill -9' if kill else ''}"
                  f", {args.sinks} sink(s), relay {args.relay}"
                  + (f" taking {args.relay_delay:g} ms a message" if args.relay_delay else "")
                  + f"; load average {load_average()}", flush=True)
            _, ours, good = one_round(args, inst, target, sinks, boxes, workers, tmp, kill,
                                      args.profile if not mine else None)
            ok = ok and good
            if not kill:
                mine[workers] = ours
        if 1 in mine and len(mine) > 1:
            for workers, figures in mine.items():
                if workers != 1:
                    print(f"{workers} workers / 1 worker: {figures.rate / mine[1].rate:.2f} "
                          f"(steady: {figures.steady / mine[1].steady:.2f})")
        return ok
    finally:
        if inst is not None:
            inst.close()
        sinks.stop()
        drop_target(target, args.pg_url)


def steady_rate(times: list[float]) -> float:
    """Messages/s between the 10th and the 90th percentile arrival: leaves out workers
    starting one after the other and the last batches finishing unevenly."""
    lo, hi = len(times) // 10, len(times) * 9 // 10
    return (hi - lo) / (times[hi] - times[lo]) if hi > lo and times[hi] > times[lo] else 0.0


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
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--sinks", type=int, default=1)
    parser.add_argument("--kill", action="store_true",
                        help="once more: workers SIGKILLed half way and restarted")
    parser.add_argument("--relay", choices=("plain", "starttls"), default="plain")
    parser.add_argument("--relay-delay", type=float, default=0.0,
                        help="milliseconds each sink takes over each message")
    parser.add_argument("--profile", help="py-spy collapsed stacks of the first worker")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="a database on the server to connect to for CREATE DATABASE")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds the delivery may take before it counts as failed")
    args = parser.parse_args()
    if args.messages < 2 or min(args.workers) < 1 or args.sinks < 1:
        parser.error("--messages must be at least 2, --workers and --sinks at least 1")
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
