"""Faults: the server and the worker killed with SIGKILL mid-work, the database gone or locked,
SMTP relays that are slow, refuse, drop the connection or answer garbage. Real processes,
real sockets, real databases."""

from __future__ import annotations

import asyncio
import contextlib
import email
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from mailseen.clock import SYSTEM, Clock, ManualClock
from mailseen.core.compose import Draft
from mailseen.core.pixel import GIF
from mailseen.core.tokens import TokenRef
from mailseen.records import Judged, MailboxIn, ViewIn
from mailseen.services.instance import Instance
from mailseen.storage.models import Base

from .conftest import (
    API_TOKEN,
    BACKEND,
    SECRET,
    LiveServer,
    backdate_sent,
    eventually,
    make_settings,
)
from .smtp_server import RecordingHandler, SmtpServer

BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 Microsoft Outlook 16.0.17231")


# -- real processes ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """`python -m mailseen ...` against the test database, its output in a file."""

    def __init__(self, tmp_path: Path, database_url: str, *args: str, **env: str) -> None:
        self.log = tmp_path / f"{args[0]}-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "MAILSEEN_DATA_DIR": str(tmp_path / "data"),
                    "MAILSEEN_DATABASE_URL": database_url, "MAILSEEN_SECRET_KEY": SECRET,
                    "MAILSEEN_IMAP_POLL": "false", **env}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "mailseen", *args],
                                         env=full_env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def _serve(tmp_path: Path, database_url: str, port: int) -> Process:
    server = Process(tmp_path, database_url, "serve", "--port", str(port), "--no-worker")
    deadline = time.monotonic() + 60  # a busy two-core machine starts Python slowly
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.output()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                return server
        time.sleep(0.05)
    server.stop()
    raise AssertionError("mailseen serve did not come up:\n" + server.output())


# -- 1. the server killed while it takes pixel hits ---------------------------------------------

async def _hammer(port: int, paths: list[str], connections: int,
                  answered: Counter[str]) -> None:
    """Keep-alive connections fetching ``paths`` in turn as fast as answers come, until the
    server goes away; ``answered`` counts the complete 200 answers per path."""

    async def one(n: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        agent = f"{BROWSER} #{n}".encode()
        try:
            for i in range(100_000):
                path = paths[(n + i) % len(paths)]
                writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n"
                             b"User-Agent: " + agent + b"\r\nAccept: image/*\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200 ") and body == GIF:
                    answered[path] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the server was killed
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(connections))), 60)


def _tracked_messages(instance: Instance, count: int) -> list[int]:
    box = instance.store.add_mailbox(MailboxIn("support@example.com", tracking="enabled"))
    ids = []
    for n in range(count):
        raw = (f"From: support@example.com\r\nTo: r{n}@example.org\r\nSubject: n{n}\r\n"
               "Content-Type: text/html\r\n\r\n<p>Hi</p>\r\n").encode()
        ids.append(instance.sender.submit(box, raw).id)
        backdate_sent(instance, ids[-1])
    return ids


def _check_consistent(instance: Instance) -> None:
    """The summaries on messages are exactly what their events say; SQLite is intact."""
    with instance.db.engine.connect() as conn:
        if BACKEND == "sqlite":
            assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
            assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        counts = {row[0]: (row[1], row[2]) for row in conn.execute(text(
            "SELECT message_id, sum(CASE WHEN verdict = 'human' THEN 1 ELSE 0 END), "
            "sum(CASE WHEN verdict = 'machine' THEN 1 ELSE 0 END) "
            "FROM view_events GROUP BY message_id"))}
    for msg in instance.store.list_messages(limit=500):
        assert (msg.view_count, msg.machine_count) == counts.get(msg.id, (0, 0)), msg.id
        views = instance.store.list_views(msg.id, limit=1_000_000)
        for verdict, first, last in (("human", msg.first_viewed_at, msg.last_viewed_at),
                                     ("machine", msg.first_machine_at, msg.last_machine_at)):
            times = [v.at for v in views if v.verdict == verdict]
            assert (first, last) == ((min(times), max(times)) if times else (None, None))


def test_summary_times_are_stored_like_event_times_whatever_the_server_time_zone(
        instance: Instance) -> None:
    if BACKEND == "postgresql":
        def new_york(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.execute("SET TIME ZONE 'America/New_York'")
            dbapi_conn.commit()

        instance.db.dispose()
        event.listen(instance.db.engine, "connect", new_york)
    [mid] = _tracked_messages(instance, 1)
    hit = datetime.now(UTC).replace(microsecond=0)
    instance.store.record_views([ViewIn(mid, 0, hit, "GET", "192.0.2.1", "UA", {})])
    instance.store.record_views([ViewIn(mid, 0, hit, "HEAD", "192.0.2.1", "UA", {})],
                                [Judged("machine", "HEAD", "")])
    msg = instance.store.get_message(mid)
    assert msg.first_viewed_at == msg.last_viewed_at == hit
    assert msg.first_machine_at == msg.last_machine_at == hit
    with instance.db.engine.connect() as conn:
        stored = conn.execute(text(
            "SELECT first_viewed_at, last_viewed_at, first_machine_at, last_machine_at "
            "FROM messages WHERE id = :id"), {"id": mid}).one()
        at = conn.execute(text("SELECT min(at) FROM view_events")).scalar_one()
    assert set(stored) == {at}


def test_server_killed_under_pixel_load_keeps_every_answered_hit(
        tmp_path: Path, database_url: str, instance: Instance) -> None:
    ids = _tracked_messages(instance, 5)
    tokens = {f"/t/{instance.signer.make(TokenRef(mid))}.gif": mid for mid in ids}
    forged = "/t/" + "A" * (len(next(iter(tokens))) - 7) + ".gif"
    instance.db.dispose()  # nothing of this process holds the database open any more
    port = _free_port()
    server = _serve(tmp_path, database_url, port)
    answered: Counter[str] = Counter()

    def kill_under_load() -> None:
        deadline = time.monotonic() + 60  # a busy two-core machine starts Python slowly
        while sum(answered.values()) < 500 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()

    killer = threading.Thread(target=kill_under_load)
    killer.start()
    try:
        asyncio.run(_hammer(port, [*tokens, forged], 24, answered))
    finally:
        killer.join()
        server.stop()
    assert sum(answered[p] for p in tokens) > 50, "the load never got going"
    assert answered[forged] > 0

    # Restart on the same database (in-process, to spare a second interpreter start): on
    # SQLite it is the first to open the file since the kill, so it runs WAL recovery.
    restarted = LiveServer(tmp_path, database_url).start()
    try:
        first = next(iter(tokens))
        assert httpx.get(restarted.url + first,
                         headers={"User-Agent": "after restart"}).content == GIF
    finally:
        restarted.stop()
    assert "Traceback" not in server.output(), server.output()
    for path, mid in tokens.items():
        views = instance.store.list_views(mid, limit=1_000_000)
        after = 1 if path == first else 0
        assert len(views) >= answered[path] + after, (path, len(views), answered[path])
    _check_consistent(instance)


# -- 2. the worker killed while it delivers a queue ---------------------------------------------

class SlowHandler(RecordingHandler):
    """A relay that takes a moment over each message, as real ones do."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer("none")
    server.handler = SlowHandler()
    server.start(tmp_path)
    yield server
    server.stop()


def _relay_box(instance: Instance, port: int, address: str = "sales@example.com") -> int:
    return instance.store.add_mailbox(MailboxIn(
        address, transport="smtp", smtp_host="127.0.0.1", smtp_port=port,
        smtp_tls="none")).id


def _draft(n: int) -> Draft:
    return Draft(from_addr="", to=[f"customer{n}@example.org"], subject=f"Offer {n}",
                 text=f"Dear customer {n}")


def test_worker_killed_mid_queue_delivers_everything_at_most_once_more(
        tmp_path: Path, database_url: str, instance: Instance, relay: SmtpServer) -> None:
    box = instance.store.get_mailbox(_relay_box(instance, relay.port))
    queued = {instance.sender.send_draft(box, _draft(n)).message_id for n in range(200)}
    worker = Process(tmp_path, database_url, "worker")
    try:
        deadline = time.monotonic() + 60
        while len(relay.messages) < 40:
            assert worker.proc.poll() is None and time.monotonic() < deadline, worker.output()
            time.sleep(0.005)
        worker.kill()
    finally:
        worker.stop()
    delivered_before = len(relay.messages)
    assert delivered_before < 200, "the worker finished before it could be killed"
    # At most the message in hand was being sent; the rest of its batch was only reserved
    # (still queued). Both leases would run out in five minutes, which this test does not
    # wait for.
    with instance.db.engine.begin() as conn:
        in_hand = conn.execute(text(
            "SELECT count(*) FROM copies WHERE status = 'sending'")).scalar_one()
        reserved = conn.execute(text(
            "UPDATE copies SET lease_until = :past WHERE lease_until IS NOT NULL"),
            {"past": datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)}).rowcount
    assert in_hand <= 1 and reserved > in_hand  # killed during a batch
    waiting = instance.store.queue_counts().get("queued", 0)

    assert asyncio.run(instance.worker().drain()) == waiting + in_hand  # the restart
    assert instance.store.queue_counts() == {"sent": 200}
    with instance.db.engine.connect() as conn:
        attempts = Counter(n for (n,) in conn.execute(text("SELECT attempts FROM copies")))
    # Only the copy in hand was tried twice: the rest of its batch had cost no attempt.
    assert attempts == Counter({1: 200 - in_hand, 2: in_hand}) - Counter()
    received = Counter(email.message_from_bytes(m.data)["Message-ID"] for m in relay.messages)
    assert set(received) == queued  # every message arrived …
    assert sum(received.values()) - 200 <= 1  # … at most one of them twice
    doubles = [mid for mid, n in received.items() if n > 1]
    for mid in doubles:  # and a second copy is the same message, recognisable by its ID
        copies = [m.data for m in relay.messages
                  if email.message_from_bytes(m.data)["Message-ID"] == mid]
        assert copies[0] == copies[1]


# -- 3. the database gone or locked -------------------------------------------------------------

class DatabaseProxy:
    """A TCP proxy in front of PostgreSQL that can make the database vanish: while cut, every
    connection is closed at once and new ones are hung up on."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.cut = False
        self._pipes: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> DatabaseProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._pipes.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._pipes.difference_update((writer, up_writer))

    def set_cut(self, cut: bool) -> None:
        async def apply() -> None:
            self.cut = cut
            if cut:
                for w in list(self._pipes):
                    w.transport.abort()

        asyncio.run_coroutine_threadsafe(apply(), self.loop).result(10)

    def stop(self) -> None:
        self.set_cut(True)
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


Switch = Any  # switch(False) brings the database back


@contextlib.contextmanager
def _database_gone(database_url: str) -> Iterator[tuple[str, Switch]]:
    """(the URL a server should use, the switch). SQLite: the file moved away (a folder in
    its place, so nothing creates an empty database there). PostgreSQL: the server
    unreachable, every connection cut."""
    if BACKEND == "sqlite":
        path = Path(database_url.removeprefix("sqlite:///"))
        away = path.with_name("moved-away.db")
        path.rename(away)
        path.mkdir()

        def back(down: bool) -> None:
            if not down and path.is_dir():
                path.rmdir()
                away.rename(path)

        try:
            yield database_url, back
        finally:
            back(False)
        return
    url = make_url(database_url)
    proxy = DatabaseProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    proxy.set_cut(True)
    try:
        yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False), proxy.set_cut
    finally:
        proxy.stop()


@contextlib.contextmanager
def _database_locked(database_url: str) -> Iterator[Switch]:
    """Another connection holds locks that make every write (and, on PostgreSQL, every read
    of the locked tables) wait: SQLite's BEGIN EXCLUSIVE, PostgreSQL's LOCK TABLE."""
    if BACKEND == "sqlite":
        import sqlite3

        locker = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        release = lambda down: locker.in_transaction and not down and locker.execute(  # noqa: E731
            "ROLLBACK")
        try:
            yield release
        finally:
            release(False)
            locker.close()
        return
    engine = create_engine(database_url)
    conn = engine.connect()
    conn.execute(text("LOCK TABLE messages, view_events, api_tokens, login_failures, "
                      "web_sessions IN ACCESS EXCLUSIVE MODE"))

    def release_pg(down: bool) -> None:
        if not down and conn.in_transaction():
            conn.rollback()

    try:
        yield release_pg
    finally:
        release_pg(False)
        conn.close()
        engine.dispose()


def _wait_briefly_for_locks(server: LiveServer) -> None:
    """A locked database is waited for (10 s on SQLite) before a request gives up; the test
    lowers that to 1 s on the server's connections so the same path runs quicker."""

    def lower(dbapi_conn: Any, _: Any) -> None:
        if BACKEND == "sqlite":
            dbapi_conn.execute("PRAGMA busy_timeout=1000")
        else:
            dbapi_conn.execute("SET lock_timeout = '1s'")
            dbapi_conn.commit()

    event.listen(server.instance.db.engine, "connect", lower)


OUTAGE = {"error": "the database is unavailable; try again shortly", "field": None}


def _outage_world(instance: Instance) -> tuple[int, str, int]:
    """(a sent message, its pixel token, a message queued for delivery)."""
    [seen] = _tracked_messages(instance, 1)
    waiting = instance.sender.send_draft(
        instance.store.find_mailbox("support@example.com"),
        Draft(from_addr="", to=["x@example.org"], subject="queued before", text="hi"))
    instance.accounts.create_user("ann@example.com", "correct horse battery")
    instance.db.dispose()
    return seen, instance.signer.make(TokenRef(seen)), waiting.id


def _sign_in(client: httpx.Client) -> httpx.Response:
    login = client.get("/login")
    if login.status_code != 200:
        return login
    csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return client.post("/login", data={"email": "ann@example.com", "csrf": csrf,
                                       "password": "correct horse battery"})


def _through_the_outage(server: LiveServer, instance: Instance, token: str, waiting: int,
                        switch: Switch, *, reads_work: bool = False) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        # Answered without waiting on the database: a request that did would time out.
        pixel = client.get(f"/t/{token}.gif", headers={"User-Agent": BROWSER}, timeout=5)
        assert pixel.status_code == 200 and pixel.content == GIF
        api = client.get("/api/v1/mailboxes", headers=auth)
        if reads_work:  # the API token's "last used" is noted only when it can be
            assert api.status_code == 200 and len(api.json()) == 1
        else:
            assert (api.status_code, api.json()) == (503, OUTAGE)
        page = _sign_in(client)
        assert page.status_code == 503 and "Try again shortly" in page.text, page.text
        switch(False)  # the database is back
        deadline = time.monotonic() + 30
        while instance.store.get_message(waiting).status != "sent":
            assert time.monotonic() < deadline, "the worker did not resume"
            time.sleep(0.05)
        api = client.get("/api/v1/mailboxes", headers=auth)
        assert api.status_code == 200 and api.json()[0]["address"] == "support@example.com"
        signed_in = _sign_in(client)
        assert signed_in.status_code == 303 and "mailseen_session" in signed_in.cookies
        client.get(f"/t/{token}.gif", headers={"User-Agent": BROWSER + " later"})


def test_database_gone_pixel_answers_api_503_worker_waits_and_resumes(
        tmp_path: Path, database_url: str, instance: Instance,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mailseen")
    seen, token, waiting = _outage_world(instance)
    with _database_gone(database_url) as (url, switch):
        server = LiveServer(tmp_path, url).start()
        try:
            assert httpx.get(server.url + "/api/v1/health").json() == OUTAGE
            _through_the_outage(server, instance, token, waiting, switch)
        finally:
            server.stop()
    assert "delivery paused: database unavailable" in caplog.text
    assert [v.user_agent for v in instance.store.list_views(seen)] == [BROWSER + " later"]


def test_database_locked_pixel_answers_api_503_worker_waits_and_resumes(
        tmp_path: Path, database_url: str, instance: Instance,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mailseen")
    seen, token, waiting = _outage_world(instance)
    with _database_locked(database_url) as switch:
        server = LiveServer(tmp_path, database_url)
        _wait_briefly_for_locks(server)
        server.start()
        try:
            # SQLite in WAL mode lets readers on while a writer holds the lock.
            _through_the_outage(server, instance, token, waiting, switch,
                                reads_work=BACKEND == "sqlite")
        finally:
            server.stop()
    assert "delivery paused: database unavailable" in caplog.text
    assert [v.user_agent for v in instance.store.list_views(seen)] == [BROWSER + " later"]


def test_a_locked_database_is_waited_for_a_bounded_time(instance: Instance) -> None:
    with instance.db.engine.connect() as conn:
        if BACKEND == "sqlite":
            assert 0 < conn.execute(text("PRAGMA busy_timeout")).scalar_one() <= 30_000
        else:
            assert conn.execute(text("SHOW lock_timeout")).scalar_one() != "0"


def test_a_signed_in_page_while_the_database_is_gone_is_the_friendly_503(
        tmp_path: Path, database_url: str, instance: Instance) -> None:
    member = instance.accounts.create_user("ann@example.com", "correct horse battery")
    cookie = instance.accounts.start_session(member).cookie_value
    instance.db.dispose()
    with _database_gone(database_url) as (url, _):
        server = LiveServer(tmp_path, url).start()
        try:
            page = httpx.get(server.url + "/conversations",
                             headers={"Cookie": f"mailseen_session={cookie}"})
        finally:
            server.stop()
    assert page.status_code == 503 and "Try again shortly" in page.text, page.text


@contextlib.contextmanager
def _database_full(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Switch]]:
    """(the URL a server should use, the switch): every write fails for want of disk space,
    reads still work. SQLite: the database moved onto a small tmpfs that a filler file then
    fills to the last byte, so the next write-ahead-log frame gets ENOSPC (SQLITE_FULL).
    PostgreSQL: one server cannot lose its disk for one test's tables alone, so a trigger on
    each table raises the error a full disk gives (SQLSTATE 53100, disk_full) through the
    real driver."""
    if BACKEND == "sqlite":
        mount = tmp_path / "small-disk"
        mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                              capture_output=True)
        if done.returncode:
            pytest.skip("mounting a small tmpfs needs root: " + done.stderr.decode().strip())
        try:
            here = Path(database_url.removeprefix("sqlite:///"))
            there = mount / here.name
            shutil.copyfile(here, there)  # no connection is open: the WAL was checkpointed
            filler = mount / "filler"

            def switch(down: bool) -> None:
                if not down:
                    filler.unlink(missing_ok=True)
                    return
                # Until ENOSPC: the disk is full. The suppress goes outside the file, so
                # that closing it (which flushes what the last write left) may fail too.
                with contextlib.suppress(OSError), filler.open("wb") as out:
                    while True:
                        out.write(b"\0" * 65536)
                        out.flush()

            yield f"sqlite:///{there}", switch
            shutil.copyfile(there, here)  # the final state, for the test's own instance
            for suffix in ("-wal", "-shm"):
                Path(str(here) + suffix).unlink(missing_ok=True)
                if Path(str(there) + suffix).exists():
                    shutil.copyfile(str(there) + suffix, str(here) + suffix)
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        return
    engine = create_engine(database_url)
    tables = [t.name for t in Base.metadata.sorted_tables]

    def switch_pg(down: bool) -> None:
        with engine.begin() as conn:
            for table in tables:
                conn.execute(text(f'DROP TRIGGER IF EXISTS disk_full ON "{table}"'))
            if down:
                conn.execute(text(
                    "CREATE OR REPLACE FUNCTION mailseen_test_disk_full() RETURNS trigger "
                    "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'could not extend file: "
                    "No space left on device' USING ERRCODE = 'disk_full'; END $$"))
                for table in tables:
                    conn.execute(text(
                        f'CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE OR DELETE ON '
                        f'"{table}" FOR EACH STATEMENT EXECUTE FUNCTION '
                        f'mailseen_test_disk_full()'))

    try:
        yield database_url, switch_pg
    finally:
        switch_pg(False)
        engine.dispose()


FULL = {"error": "the database is full: nothing was changed; try again once disk space is "
                 "freed", "field": None}


def test_database_full_pixel_answers_writes_503_reads_work_worker_resumes(
        tmp_path: Path, database_url: str, instance: Instance,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mailseen")
    seen, token, waiting = _outage_world(instance)
    clock = ManualClock()  # from now: the message queued just before is due
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    draft = {"mailbox": "support@example.com", "to": ["y@example.org"], "subject": "during",
             "text": "hello"}
    with _database_full(database_url, tmp_path) as (url, switch):
        server = LiveServer(tmp_path, url, clock=clock, worker=False).start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                # The server has been running when the disk fills up.
                assert client.get("/api/v1/mailboxes", headers=auth).status_code == 200
                switch(True)
                pixel = client.get(f"/t/{token}.gif", headers={"User-Agent": BROWSER})
                assert pixel.status_code == 200 and pixel.content == GIF
                sent = client.post("/api/v1/messages", json=draft, headers=auth)
                assert (sent.status_code, sent.json()) == (503, FULL)
                listed = client.get("/api/v1/mailboxes", headers=auth)  # reads still work
                assert listed.status_code == 200 and len(listed.json()) == 1
                page = _sign_in(client)
                assert page.status_code == 503 and "database is full" in page.text, page.text
                worker = server.instance.worker()
                stop = asyncio.Event()

                async def deliver_when_freed() -> None:
                    task = asyncio.create_task(worker.run(stop))
                    await eventually(lambda: "delivery paused: database full" in caplog.text)
                    await clock.until_sleeping()  # to try again after its idle poll
                    switch(False)
                    clock.advance(worker.idle_poll)
                    await eventually(lambda: server.instance.store.get_message(
                        waiting).status == "sent", 30)
                    stop.set()
                    await task

                asyncio.run(deliver_when_freed())
                assert client.post("/api/v1/messages", json=draft,
                                   headers=auth).status_code == 202
                assert _sign_in(client).status_code == 303
                client.get(f"/t/{token}.gif", headers={"User-Agent": BROWSER + " later"})
        finally:
            server.stop()
    assert "delivery paused: database full" in caplog.text
    assert "database full" in caplog.text
    instance.db.dispose()
    assert [v.user_agent for v in instance.store.list_views(seen)] == [BROWSER + " later"]
    assert sorted(m.subject for m in instance.store.list_messages()) == [
        "during", "n0", "queued before"]


# -- 4. SMTP relays that misbehave ---------------------------------------------------------------

GARBAGE = b"\x00\xff\xfe HELLO?? this is not SMTP \x1b[31m\x1b]0;pwned\x07" + b"x" * 3000 + b"\r\n"


class FakeRelay:
    """A raw TCP server that plays a broken SMTP relay; it notes when each attempt came, by
    ``clock``."""

    def __init__(self, behaviour: str, clock: Clock = SYSTEM) -> None:
        self.behaviour = behaviour
        self.clock = clock
        self.attempts: list[float] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> FakeRelay:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(self.clock.monotonic())
        try:
            if self.behaviour == "silent":  # accepts, then never says a word
                await asyncio.sleep(30)
            elif self.behaviour == "hang-up":  # accepts and closes at once
                pass
            elif self.behaviour == "garbage":
                writer.write(GARBAGE)
                await writer.drain()
                await reader.read(1024)
            elif self.behaviour == "slow-reply":  # takes the message, then dawdles
                await self._smtp_until_data(reader, writer)
                await reader.readuntil(b"\r\n.\r\n")
                await asyncio.sleep(30)
            else:  # a relay that drops the connection half-way through the message
                await self._smtp_until_data(reader, writer)
                await reader.read(100)  # the first bytes of the message …
                writer.transport.abort()  # … and gone
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _smtp_until_data(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-relay.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 OK\r\n")
            await writer.drain()

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _closed_port() -> int:
    with socket.socket() as s:  # nobody listens here once it is closed
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _deliver_until_settled(inst: Instance, clock: ManualClock, message_id: int) -> str:
    """Deliver (three attempts) until the message is sent or failed, moving the clock on
    by each backoff."""
    worker = inst.worker()
    while True:
        assert await worker.drain() == 1
        msg = await asyncio.to_thread(inst.store.get_message, message_id)
        if msg.status != "queued":
            return msg.status
        clock.advance(worker.backoff(msg.attempts))


@pytest.mark.parametrize(("behaviour", "words"), [
    ("silent", "did not answer within 0.5 seconds"),
    ("slow-reply", "did not answer within 0.5 seconds"),
    ("refusing", "refused the connection"),
    ("hang-up", "Unexpected EOF"),
    ("drop-in-data", "closed the connection"),
    ("garbage", "Malformed SMTP response"),
])
async def test_a_misbehaving_relay_is_retried_with_backoff_then_the_message_fails_clearly(
        tmp_path: Path, database_url: str, behaviour: str, words: str,
        clock: ManualClock) -> None:
    relay = None if behaviour == "refusing" else FakeRelay(behaviour, clock).start()
    # The relay timeout is real: it bounds a wait on the network, not a schedule.
    inst = Instance.open(make_settings(tmp_path, database_url, smtp_timeout=0.5),
                         migrate=False, clock=clock)
    try:
        box = inst.store.get_mailbox(
            _relay_box(inst, relay.port if relay else _closed_port()))
        msg = inst.sender.send_draft(box, _draft(1))
        assert await _deliver_until_settled(inst, clock, msg.id) == "failed"
        failed = inst.store.get_message(msg.id)
    finally:
        inst.close()
        if relay is not None:
            relay.stop()
    assert failed.attempts == 3
    error = failed.last_error or ""
    assert error.startswith("gave up after 3 attempts: ") and words in error, error
    if relay is not None:  # one attempt at each backoff's end, the backoff doubling
        assert relay.attempts == [0, 30, 30 + 60]


async def test_a_relay_answering_garbage_leaves_a_short_readable_one_line_error(
        tmp_path: Path, database_url: str, clock: ManualClock) -> None:
    relay = FakeRelay("garbage").start()
    inst = Instance.open(make_settings(tmp_path, database_url), migrate=False, clock=clock)
    try:
        msg = inst.sender.send_draft(inst.store.get_mailbox(_relay_box(inst, relay.port)),
                                     _draft(1))
        await _deliver_until_settled(inst, clock, msg.id)
        error = inst.store.get_message(msg.id).last_error or ""
    finally:
        inst.close()
        relay.stop()
    assert "HELLO?? this is not SMTP" in error
    assert error.isprintable() and len(error) <= 1100, repr(error)
