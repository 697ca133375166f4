"""Loading many rows at once, for demo data at benchmark scale: batched inserts on one
connection, committed every so often, instead of a transaction per message.

It appends rows and nothing else; the rows (with their ids) are made by the caller, which
keeps each message's summary consistent with the events it writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection

from .db import Database
from .models import Conversation, Copy, Message, MessageData, ViewEvent

__all__ = ["TABLES", "BulkLoader", "bulk_loader", "last_ids"]

# What can be loaded, parents before children (the order rows are flushed in).
TABLES = {"conversations": Conversation, "messages": Message, "message_data": MessageData,
          "copies": Copy, "view_events": ViewEvent}
_WITH_IDS = ("conversations", "messages", "copies", "view_events")
BATCH = 20_000
COMMIT_EVERY = 200_000


def last_ids(db: Database) -> dict[str, int]:
    """The largest id in use of each table with ids: loaded rows number on from there."""
    with db.engine.connect() as conn:
        return {t: int(conn.exec_driver_sql(f"SELECT max(id) FROM {t}").scalar() or 0)
                for t in _WITH_IDS}


class BulkLoader:
    """Rows by table name, inserted in batches. On SQLite the connection skips fsync and
    gets a large page cache for the load only; ``progress`` hears of every row but the
    message bytes."""

    def __init__(self, conn: Connection, is_sqlite: bool,
                 progress: Callable[[int], None]) -> None:
        self.conn, self.is_sqlite, self.progress = conn, is_sqlite, progress
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.uncommitted = 0
        if is_sqlite:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-524288")  # 512 MiB

    def add(self, table: str, rows: list[dict[str, Any]]) -> None:
        pending = self.rows.setdefault(table, [])
        pending.extend(rows)
        if len(pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        for name, model in TABLES.items():
            rows = self.rows.pop(name, [])
            if not rows:
                continue
            table: Any = model.__table__
            self.conn.execute(table.insert(), rows)
            if name != "message_data":
                self.progress(len(rows))
            self.uncommitted += len(rows)
        if self.uncommitted >= COMMIT_EVERY:
            self.conn.commit()
            self.uncommitted = 0

    def finish(self) -> None:
        """Commit, and gather the planner's statistics: PostgreSQL's autovacuum would soon
        after a bulk load; SQLite only when asked (docs/performance.md, "At scale")."""
        self.flush()
        self.conn.commit()
        if self.is_sqlite:
            self.conn.exec_driver_sql("ANALYZE")
            self.conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            return
        for table in _WITH_IDS:
            self.conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT COALESCE(max(id), 1) FROM {table}))")
        self.conn.commit()
        auto = self.conn.execution_options(isolation_level="AUTOCOMMIT")
        auto.exec_driver_sql("VACUUM ANALYZE")

    def restore(self) -> None:
        if self.is_sqlite:
            self.conn.rollback()
            self.conn.exec_driver_sql("PRAGMA synchronous=FULL")
            self.conn.exec_driver_sql("PRAGMA cache_size=-2000")


@contextmanager
def bulk_loader(db: Database, progress: Callable[[int], None]) -> Iterator[BulkLoader]:
    """A loader on a connection of its own; call ``finish`` to commit what it holds."""
    with db.engine.connect() as conn:
        loader = BulkLoader(conn, db.is_sqlite, progress)
        try:
            yield loader
        finally:
            loader.restore()
