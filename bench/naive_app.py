"""The naive baseline for ``bench/pixel``: a Flask pixel that commits each view on its own.

Run under gunicorn with one sync worker (``gunicorn -w 1 -k sync naive_app:app``). Every
``GET /t/<token>.gif`` INSERTs one row and COMMITs it before answering, with the same durability
as mailseen's SQLite default (WAL, ``synchronous=FULL``), so each hit pays its own fsync. The
database is ``$NAIVE_DB`` (default ``naive.db`` in the working directory). The connection is
opened once per worker and reused, which is the most charitable reading of "naive".
"""

from __future__ import annotations

import os
import sqlite3
import time

from flask import Flask, Response, request

from mailseen.core.pixel import GIF

app = Flask(__name__)

_HEADERS = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
    "X-Content-Type-Options": "nosniff",
}
_db: sqlite3.Connection | None = None


def _connection() -> sqlite3.Connection:
    global _db
    if _db is None:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per view.
        db = sqlite3.connect(os.environ.get("NAIVE_DB", "naive.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("CREATE TABLE IF NOT EXISTS views (id INTEGER PRIMARY KEY, token TEXT NOT NULL,"
                   " at REAL NOT NULL, ip TEXT, user_agent TEXT)")
        _db = db
    return _db


@app.get("/t/<token>.gif")
def pixel(token: str) -> Response:
    db = _connection()
    db.execute("BEGIN")
    db.execute("INSERT INTO views (token, at, ip, user_agent) VALUES (?, ?, ?, ?)",
               (token, time.time(), request.remote_addr, request.headers.get("User-Agent")))
    db.execute("COMMIT")
    return Response(GIF, mimetype="image/gif", headers=_HEADERS)
