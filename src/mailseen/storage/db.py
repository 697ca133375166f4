"""Engines, connection setup and migrations."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from ..errors import InvalidInput

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Accept the URL spellings operators use and pick the driver we ship (psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the writer; FULL makes each commit survive power loss too,
    # and group commit keeps its cost to one fsync per batch of views.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Database:
    """One database: its engine, sessions and schema."""

    def __init__(self, url: str) -> None:
        url = normalize_url(url)
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise InvalidInput(f"invalid database URL: {url!r}", field="database_url") from exc
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.folder: Path | None = None  # where a SQLite file lives, to tell a full disk
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                self.folder = Path(parsed.database).parent
                self.folder.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        else:
            # A locked table must not hold requests and the worker forever: give up after 10 s
            # (an OperationalError, shown as "database unavailable"). No statement_timeout:
            # it would cut long migrations.
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20,
                          connect_args={"options": "-c lock_timeout=10000"})
        self.engine: Engine = create_engine(parsed, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessions()

    def alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["engine"] = self.engine
        return cfg

    def upgrade(self) -> None:
        """Bring the schema to the newest migration; safe to run on every start."""
        command.upgrade(self.alembic_config(), "head")

    def out_of_space(self, error: BaseException | None) -> bool:
        """Whether a failed write failed for want of disk space: SQLITE_FULL or PostgreSQL's
        SQLSTATE 53100; and, since SQLite reports a full disk met while growing its WAL index
        or writing a page as an I/O error, any SQLite I/O error while its folder has less
        than 1 MB free."""
        if getattr(error, "sqlstate", None) == "53100":
            return True
        name = str(getattr(error, "sqlite_errorname", ""))
        if name == "SQLITE_FULL":
            return True
        if name.startswith("SQLITE_IOERR") and self.folder is not None:
            try:
                return shutil.disk_usage(self.folder).free < 1 << 20
            except OSError:
                return False
        return False

    def dispose(self) -> None:
        self.engine.dispose()
