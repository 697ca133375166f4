"""`mailseen backup` and `mailseen restore` for the embedded SQLite database.

A backup is taken with SQLite's online backup API inside one read transaction, so it is a
consistent snapshot even while the server records views and the worker delivers: in WAL mode
readers never block the writer. The copy is checked and made self-contained (no ``-wal``
file) before it takes its final name.

PostgreSQL has its own tools (``pg_dump`` / ``pg_restore``, see docs/operations.md); these
functions say so instead of half-doing it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..config import Settings
from ..errors import InvalidInput, MailseenError
from ..storage.db import MIGRATIONS

__all__ = ["BackupResult", "backup", "known_revisions", "restore", "sqlite_path"]

_HEADER = b"SQLite format 3\x00"
# Tables every mailseen database has had since its first migration.
_TABLES = frozenset({"alembic_version", "mailboxes", "messages", "message_data",
                     "view_events", "api_tokens"})
_PG_HINT = ("mailseen backup and restore handle SQLite; for PostgreSQL use pg_dump -Fc and "
            "pg_restore (see docs/operations.md)")


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    revision: str  # the schema migration the copy is at
    kept: Path | None = None  # restore: where the database it replaced now is


def sqlite_path(settings: Settings) -> Path:
    """The SQLite file the settings point at; a clear error for anything else."""
    url = settings.database
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] != "sqlite":
        raise MailseenError(_PG_HINT if scheme.startswith("postgres") else
                            f"mailseen backup and restore handle SQLite only, not {scheme}")
    path = rest.removeprefix("/").split("?", 1)[0]
    if not path or path == ":memory:":
        raise InvalidInput("an in-memory database cannot be backed up", field="database_url")
    return Path(path)


def known_revisions() -> set[str]:
    """The schema migrations this version of mailseen knows."""
    pattern = re.compile(r"^revision\s*(?::\s*str)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
    found = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        match = pattern.search(path.read_text("utf-8"))
        if match:
            found.add(match.group(1))
    return found


def backup(settings: Settings, dest: Path) -> BackupResult:
    """Copy the live database to ``dest`` (a new file, or a folder to put a dated file in)."""
    source = sqlite_path(settings)
    if not source.is_file():
        raise MailseenError(f"no database at {source}")
    if dest.is_dir():
        dest = dest / f"mailseen-{datetime.now(UTC):%Y%m%d-%H%M%S}.db"
    if dest.exists():
        raise InvalidInput(f"{dest} already exists; give a new file name", field="dest")
    with _temporary_beside(dest) as tmp:
        with _connect(source) as src, _connect(tmp) as out:
            # pages=-1: everything in one step, in one read transaction of the source.
            src.backup(out, pages=-1)
            out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        revision = check_database(tmp)
        _commit(tmp, dest, keep=None)
    return BackupResult(dest, dest.stat().st_size, revision)


def restore(settings: Settings, src: Path) -> BackupResult:
    """Put the backup ``src`` in place of the database, keeping the old one as ``.bak``.

    Refused while anything has the database open (the server, a worker): stop them first.
    """
    target = sqlite_path(settings)
    if not src.is_file():
        raise MailseenError(f"no backup at {src}")
    check_database(src)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_beside(target) as tmp:
        with _connect(src) as source, _connect(tmp) as out:
            source.backup(out, pages=-1)
            out.execute("PRAGMA journal_mode=DELETE")
        revision = check_database(tmp)
        keep = target.with_name(target.name + ".bak") if target.exists() else None
        if keep is not None:
            _quiesce(target)
        _commit(tmp, target, keep=keep)
    return BackupResult(target, target.stat().st_size, revision, keep)


def check_database(path: Path) -> str:
    """Make sure ``path`` is an intact mailseen database at a known migration; return it."""
    with path.open("rb") as fh:
        if fh.read(len(_HEADER)) != _HEADER:
            raise InvalidInput(f"{path} is not an SQLite database", field="src")
    try:
        with _connect(path, read_only=True) as db:
            status = db.execute("PRAGMA integrity_check").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")}
            missing = _TABLES - tables
            rows = ([] if missing else
                    [r[0] for r in db.execute("SELECT version_num FROM alembic_version")])
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{path} is damaged or not a database: {exc}", field="src") from exc
    if status != "ok":
        raise InvalidInput(f"{path} is damaged: {' '.join(str(status).split())}",
                           field="src")
    if missing:
        raise InvalidInput(f"{path} is not a mailseen database (no {', '.join(sorted(missing))}"
                           " table)", field="src")
    if len(rows) != 1 or rows[0] not in known_revisions():
        found = ", ".join(rows) or "none"
        raise InvalidInput(f"{path} is at schema migration {found}, which this version of "
                           "mailseen does not know; restore it with the version that made it",
                           field="src")
    return str(rows[0])


@contextlib.contextmanager
def _connect(path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    uri = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)
    conn = sqlite3.connect(uri, uri=read_only, timeout=10, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _quiesce(target: Path) -> None:
    """Refuse if anything has ``target`` open, and fold its WAL into the file (the ``.bak``
    then holds everything). Leaving WAL mode needs the only connection: a running server or
    worker keeps pooled connections open, so it makes this fail at once."""
    try:
        conn = sqlite3.connect(target, timeout=0, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        mode = str(exc)
    if mode != "delete":
        raise MailseenError(f"{target} is in use: stop mailseen (serve, worker, poll, "
                            "receive) before restoring")


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A fresh file name in ``path``'s folder (the final rename stays on one file system),
    removed again unless it was renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


def _commit(tmp: Path, dest: Path, keep: Path | None) -> None:
    """Rename ``tmp`` to ``dest`` durably; the file at ``dest`` before, if any, becomes
    ``keep``. ``dest`` names a whole database at every moment."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    if keep is not None and dest.exists():
        link = keep.with_name(keep.name + ".tmp")
        link.unlink(missing_ok=True)
        try:
            os.link(dest, link)  # the old file gets its second name first …
        except OSError:  # a file system without hard links
            shutil.copy2(dest, link)
        os.replace(link, keep)
        for stale in (Path(f"{dest}-wal"), Path(f"{dest}-shm")):
            stale.unlink(missing_ok=True)
    os.replace(tmp, dest)  # … then its first name goes to the new one, in one step
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
