"""`mailseen backup` copies a live SQLite database consistently; `mailseen restore` puts a copy
back (checked, atomic, the old file kept as .bak, refused while in use). PostgreSQL gets a
pointer to pg_dump."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailseen.records import MailboxIn, ViewIn
from mailseen.services.instance import Instance

from .cli_runner import Cli, error, ok
from .conftest import SECRET, make_settings

# The newest migration: a backup names the schema it holds.
HEAD = sorted(p.name[:4] for p in (Path(__file__).resolve().parents[1] / "src" / "mailseen" /
              "storage" / "migrations" / "versions").glob("0*.py"))[-1]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """Backups concern SQLite whatever backend the rest of the suite runs on."""
    return f"sqlite:///{tmp_path / 'live' / 'mailseen.db'}"


@pytest.fixture
def live(tmp_path: Path, sqlite_url: str) -> Iterator[Instance]:
    inst = Instance.open(make_settings(tmp_path, sqlite_url))
    yield inst
    inst.close()


def _cli(tmp_path: Path, url: str) -> Cli:
    return Cli({"MAILSEEN_DATA_DIR": str(tmp_path / "data"), "MAILSEEN_DATABASE_URL": url,
                "MAILSEEN_SECRET_KEY": SECRET})


def _message(inst: Instance) -> int:
    box = inst.store.add_mailbox(MailboxIn("support@example.com"))
    raw = b"From: support@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHi\r\n"
    return inst.sender.submit(box, raw).id


def _summary_matches_events(path: Path) -> tuple[int, int]:
    """(events, summed view_count) of the database file at ``path``, after checking it."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        events = db.execute("SELECT count(*) FROM view_events").fetchone()[0]
        counted = db.execute("SELECT sum(view_count) FROM messages").fetchone()[0]
    db.close()
    return events, counted


def test_backup_of_a_database_being_written_is_a_consistent_snapshot(
        tmp_path: Path, sqlite_url: str, live: Instance) -> None:
    mid = _message(live)
    stop = threading.Event()
    batches = 0

    def write() -> None:  # the server recording views, batch after batch
        nonlocal batches
        while not stop.is_set():
            live.store.record_views([ViewIn(mid, 0, datetime.now(UTC), "GET", "192.0.2.1",
                                            "UA", {}) for _ in range(20)])
            batches += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while batches < 5:
            stop.wait(0.01)
        out = ok(_cli(tmp_path, sqlite_url)("backup", str(tmp_path / "copy.db")))
        written_during = batches
    finally:
        stop.set()
        writer.join(10)
    assert out.startswith(f"backed up to {tmp_path / 'copy.db'} (") and f"schema {HEAD}" in out
    events, counted = _summary_matches_events(tmp_path / "copy.db")
    # Every batch in the copy is whole: its events and the summary moved together.
    assert events == counted and events % 20 == 0 and 100 <= events <= 20 * written_during
    # One self-contained file, not a WAL database needing its -wal beside it.
    assert not (tmp_path / "copy.db-wal").exists()
    with sqlite3.connect(tmp_path / "copy.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    db.close()


def test_restore_brings_the_backup_back_and_keeps_the_old_file(
        tmp_path: Path, sqlite_url: str, live: Instance) -> None:
    cli = _cli(tmp_path, sqlite_url)
    _message(live)
    ok(cli("backup", str(tmp_path / "copy.db")))
    live.store.add_mailbox(MailboxIn("after-backup@example.com"))
    # Refused while anything holds the database open (here: this instance's pool).
    assert "in use: stop mailseen" in error(cli("restore", str(tmp_path / "copy.db")))
    live.close()
    out = ok(cli("restore", str(tmp_path / "copy.db")))
    db_file = Path(sqlite_url.removeprefix("sqlite:///"))
    assert out.strip() == (f"restored {tmp_path / 'copy.db'} to {db_file} (schema {HEAD}); "
                           f"the previous database is now {db_file}.bak")
    back = Instance.open(make_settings(tmp_path, sqlite_url))
    try:
        assert [b.address for b in back.store.list_mailboxes()] == ["support@example.com"]
        assert len(back.store.list_messages()) == 1
    finally:
        back.close()
    with sqlite3.connect(f"{db_file}.bak") as old:
        assert ("after-backup@example.com",) in old.execute("SELECT address FROM mailboxes")
    old.close()


def test_a_folder_as_destination_gets_a_dated_file_and_nothing_is_overwritten(
        tmp_path: Path, sqlite_url: str, live: Instance) -> None:
    cli = _cli(tmp_path, sqlite_url)
    (tmp_path / "backups").mkdir()
    out = ok(cli("backup", str(tmp_path / "backups")))
    [made] = (tmp_path / "backups").iterdir()
    assert made.name.startswith("mailseen-") and made.suffix == ".db" and str(made) in out
    assert "already exists" in error(cli("backup", str(made)), code=2)
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [made.name]  # no leftovers


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not an SQLite database"),
    (b"hello, I am not a database at all" * 100, "not an SQLite database"),
    ("plain-sqlite", "not a mailseen database (no "),
    ("future-schema", "schema migration 9999, which this version of mailseen does not know"),
    ("damaged", "damaged"),
])
def test_restore_refuses_what_is_not_an_intact_known_mailseen_database(
        tmp_path: Path, sqlite_url: str, live: Instance, content: bytes | str,
        message: str) -> None:
    cli = _cli(tmp_path, sqlite_url)
    _message(live)
    live.close()
    src = tmp_path / "candidate.db"
    if isinstance(content, bytes):
        src.write_bytes(content)
    elif content == "plain-sqlite":
        with sqlite3.connect(src) as db:
            db.execute("CREATE TABLE notes (x)")
        db.close()
    else:
        ok(cli("backup", str(src)))
        if content == "future-schema":
            with sqlite3.connect(src) as db:
                db.execute("UPDATE alembic_version SET version_num = '9999'")
            db.close()
        else:  # scribble over the messages table's first page
            with sqlite3.connect(src) as db:
                size = db.execute("PRAGMA page_size").fetchone()[0]
                root = db.execute("SELECT rootpage FROM sqlite_master "
                                  "WHERE name = 'messages'").fetchone()[0]
            db.close()
            data = bytearray(src.read_bytes())
            data[(root - 1) * size: root * size] = b"\xa5" * size
            src.write_bytes(bytes(data))
    before = Path(sqlite_url.removeprefix("sqlite:///")).read_bytes()
    assert message in error(cli("restore", str(src)), code=2)
    assert Path(sqlite_url.removeprefix("sqlite:///")).read_bytes() == before
    assert not Path(sqlite_url.removeprefix("sqlite:///") + ".bak").exists()


def test_postgresql_is_pointed_to_pg_dump(tmp_path: Path) -> None:
    cli = _cli(tmp_path, "postgresql://mailseen:hunter2@db.example.com/mailseen")
    for command in (("backup", str(tmp_path / "x.db")), ("restore", str(tmp_path / "x.db"))):
        line = error(cli(*command))
        assert "pg_dump" in line and "docs/operations.md" in line
        assert "hunter2" not in line  # the URL's password is never echoed
