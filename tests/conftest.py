"""Shared fixtures: a real database (SQLite or PostgreSQL, chosen by MAILSEEN_TEST_DATABASE),
a real HTTP server on a free port, and a real SMTP server with STARTTLS and AUTH.

With MAILSEEN_NO_SKIP set (CI sets it) every skipped test fails instead: a missing service
must not pass silently.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import create_engine, text

from mailseen.clock import SYSTEM, Clock, ManualClock
from mailseen.config import Settings, load_settings
from mailseen.records import MessageRecord
from mailseen.services.accounts import hash_token
from mailseen.services.demo import DemoResult, fill_small
from mailseen.services.instance import Instance
from mailseen.storage import Database
from mailseen.storage.models import Base
from mailseen.web.app import MailseenApp, server_config

from .cli_runner import Cli
from .web_client import WebClient

pytest_plugins = ["tests.browser"]  # the `browser` fixture (real Chromium)

BACKEND = os.environ.get("MAILSEEN_TEST_DATABASE", "sqlite")
PG_ADMIN_URL = os.environ.get("MAILSEEN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = "test-secret-key-0123456789abcdef"
API_TOKEN = "ms_test_token"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    strict = os.environ.get("MAILSEEN_NO_SKIP") or os.environ.get("CI") == "true"
    if report.skipped and strict and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped while MAILSEEN_NO_SKIP is set: {reason}"


def pytest_report_header() -> str:
    return f"mailseen test database: {BACKEND}"


# -- databases ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database made once per session: a SQLite file to copy, or a PostgreSQL
    database whose tables are emptied before each test."""
    if BACKEND == "sqlite":
        path = tmp_path_factory.mktemp("template") / "template.db"
        db = Database(f"sqlite:///{path}")
        db.upgrade()
        db.dispose()
        yield str(path)
        return
    if BACKEND != "postgresql":
        raise pytest.UsageError(f"MAILSEEN_TEST_DATABASE={BACKEND!r}: use sqlite or postgresql")
    name = f"mailseen_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    db = Database(url)
    db.upgrade()
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def database_url(_template: str, tmp_path: Path) -> str:
    if BACKEND == "sqlite":
        path = tmp_path / "mailseen.db"
        shutil.copyfile(_template, path)
        return f"sqlite:///{path}"
    engine = create_engine(_template.replace("postgresql+psycopg", "postgresql+psycopg"))
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return _template


def make_settings(tmp_path: Path, database_url: str, **extra: Any) -> Settings:
    options: dict[str, Any] = {
        "data_dir": tmp_path / "data", "database_url": database_url, "secret_key": SECRET,
        "max_attempts": 3, "smtp_timeout": 5.0, "port": 8000,
        # Hashing at the production cost is what every sign-in in the suite would spend its
        # time on; the hashing itself is the same code (tests/test_config.py checks the
        # setting reaches argon2).
        "password_memory_kib": 64,
    }
    options.update(extra)
    return load_settings(options, environ={})


@pytest.fixture
def clock() -> ManualClock:
    """Time that moves only when the test moves it: no test sleeps past a backoff. Pass it
    to ``Instance.open(..., clock=clock)``."""
    return ManualClock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    """`mailseen` run in-process with the test database and data folder."""
    return Cli({"MAILSEEN_DATA_DIR": str(tmp_path / "data"),
                "MAILSEEN_DATABASE_URL": database_url, "MAILSEEN_SECRET_KEY": SECRET,
                "MAILSEEN_PASSWORD_MEMORY_KIB": "64"})


@pytest.fixture
def instance(settings: Settings) -> Iterator[Instance]:
    inst = Instance.open(settings, migrate=False)
    inst.store.add_token("tests", hash_token(API_TOKEN))
    yield inst
    inst.close()


# -- a real HTTP server ----------------------------------------------------------------------

class LiveServer:
    """mailseen's ASGI app under uvicorn in a thread, on a port chosen by the OS."""

    def __init__(self, tmp_path: Path, database_url: str, *, clock: Clock = SYSTEM,
                 **extra: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        extra.setdefault("public_url", self.url)
        self.settings = make_settings(tmp_path, database_url, port=self.port, **extra)
        self.instance = Instance.open(self.settings, migrate=False, clock=clock)
        self.app = MailseenApp(self.instance, run_worker=self.settings.worker)
        self.server = uvicorn.Server(server_config(self.app, "127.0.0.1", self.port))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.instance.close()
        self.sock.close()


@pytest.fixture
def live_server(tmp_path: Path, database_url: str, instance: Instance) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path, database_url).start()
    yield server
    server.stop()


async def eventually(check: Callable[[], bool], seconds: float = 5) -> None:
    """Wait for something outside the test's control (a server, a thread, another process)
    to happen; ``seconds`` only bounds how long a failing test hangs."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def backdate_sent(instance: Instance, message_id: int, seconds: float = 3600) -> None:
    """Make a message look sent a while ago, as a real open would find it (hits within two
    seconds of sending are judged automatic). A queued message is marked sent so a running
    worker leaves it alone; one being delivered is waited for first."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update

    from mailseen.storage.models import Copy, Message

    at = datetime.now(UTC) - timedelta(seconds=seconds)
    for _ in range(500):
        # Conditional UPDATEs: a worker's claim cannot slip in between a read and a write.
        # Then look again, in a new transaction: a worker that finished a copy meanwhile
        # wrote its own sending time, which the next round moves back too.
        with instance.db.engine.begin() as conn:
            conn.execute(update(Copy).where(Copy.message_id == message_id,
                                            Copy.status != "sending")
                         .values(status="sent", sent_at=at))
        with instance.db.engine.begin() as conn:
            unsettled = conn.execute(select(Copy.id).where(
                Copy.message_id == message_id,
                (Copy.status != "sent") | (Copy.sent_at != at))).first()
            if unsettled is None:
                conn.execute(update(Message).where(Message.id == message_id)
                             .values(status="sent", sent_at=at))
                return
        time.sleep(0.01)
    raise AssertionError(f"message {message_id} stayed in delivery")


def html_of(raw: bytes) -> str:
    """The HTML body of a delivered message, as a mail client would display it."""
    import email
    import email.policy
    from email.message import EmailMessage

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def stored_as_sent_before_copies(instance: Instance, message: MessageRecord) -> None:
    """Store a tracked message with its copy's pixel in, as mail sent before copies were
    kept apart was stored: what is shown and quoted must still leave the pixel out."""
    from sqlalchemy import update

    from mailseen.storage.models import MessageData

    [copy] = instance.store.copies_of([message.id])[message.id]
    tagged = instance.sender.copy_bytes(instance.store.get_raw(message.id), copy)
    assert b"/t/" in tagged
    with instance.db.engine.begin() as conn:
        conn.execute(update(MessageData).where(MessageData.message_id == message.id)
                     .values(raw=tagged))


@pytest.fixture
def web(instance: Instance) -> Iterator[WebClient]:
    """The web app in-process, with a browser-like client (files may override it)."""
    with WebClient(instance) as client:
        yield client


@pytest.fixture
def small(instance: Instance) -> DemoResult:
    """The small demo data set (mailboxes, users, conversations, views)."""
    return fill_small(instance, stream=io.StringIO())
