#!/usr/bin/env python3
"""Benchmark mailseen at scale: pages, API and pixel with 1,000,000 messages and 3,000,000
views, on SQLite and on PostgreSQL.

For each backend, in one run:

1. Build the data with `mailseen demo --messages N --views M --mailboxes K` (the bulk
   generator; a SQLite file in a temporary folder, or a fresh PostgreSQL database), and a
   nearly empty reference database with the same mailboxes (1,000 messages, 3,000 views).
2. Time requests in-process through the whole ASGI app (Starlette's TestClient), signed in as
   the admin, and the API with an admin token: the conversation listing (first page,
   status=waiting, page 200, a search that matches and one that does not), the conversation
   view of random conversations (and of the most viewed one), /api/v1/messages?limit=50,
   /api/v1/messages/{id} of random messages, /api/v1/mailboxes, /api/v1/health and /reports
   (30 days), and /api/v1/settings as the floor (a token and one setting read). Requests are
   interleaved (each request on the full database, then on the reference one, then the next
   kind) so that a busy neighbour slows them all alike; p50/p95/p99 on the full database are
   reported against the goals (50 ms, reports 500 ms) beside the reference's p95 and the CPU
   time per request.
3. Print the query plans (EXPLAIN QUERY PLAN on SQLite, EXPLAIN ANALYZE on PostgreSQL) of the
   statements those requests ran on the big tables, captured from the engine as sent.
4. SQLite: the first timings go without planner statistics, as in a database the app grew
   itself (nothing runs ANALYZE; the generator does, so they are dropped first); then ANALYZE
   (what `PRAGMA optimize` would do) and the pages are timed again. PostgreSQL's autovacuum
   gathers statistics itself (the generator runs VACUUM ANALYZE, as autovacuum would shortly
   after a bulk load).
5. Pixel throughput: `mailseen serve --no-worker` on the full and on the reference database,
   both pinned to core 0, loaded in turn by wrk pinned to core 1 (keep-alive), interleaved
   rounds; the median of the per-round ratios is reported against the goal (within 10%) for
   hits spread over the 1,000 most recently sent tracked messages (opens come mostly within
   hours of sending), and, as the worst case, over 1,000 from the whole year. Reuses
   bench/pixel's helpers.

Prerequisites as for bench/pixel (wrk, taskset); PostgreSQL reachable at --pg-url with a role
that may create databases. Run from the repo: `bench/scale.py` (re-executes itself in .venv).

Usage: bench/scale.py [--messages 1000000] [--views 3000000] [--mailboxes 200]
                      [--requests 100] [--backends sqlite,postgresql] [--no-pixel] [--no-pages]
                      [--json FILE] [--keep | --reuse DIR | --drop DIR]
Quick run: bench/scale.py --messages 20000 --views 60000 --mailboxes 20 --requests 30
Exit status: 0 when every goal is met, 1 when one is missed, 2 on a setup failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchlib import (
    MAILSEEN,
    create_pg_database,
    drop_pg_database,
    load_pixel_bench,
    use_repo_venv,
)

use_repo_venv(__file__)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import create_engine, event, text  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from mailseen.config import load_settings  # noqa: E402
from mailseen.core.tokens import TokenRef, TokenSigner  # noqa: E402
from mailseen.services.accounts import hash_token  # noqa: E402
from mailseen.services.instance import Instance  # noqa: E402
from mailseen.web.app import MailseenApp  # noqa: E402

GOAL_MS = 50.0
REPORT_GOAL_MS = 500.0
PIXEL_GOAL = 0.9  # full database at least 0.9x the reference one
REFERENCE = (1000, 3000)  # messages and views of the nearly empty reference database
SECRET = "bench-scale-secret-0123456789abcdef"
KEPT = "kept.json"  # what --keep built, for --reuse


pixel_bench = load_pixel_bench()
SetupError = pixel_bench.SetupError


# -- building -------------------------------------------------------------------------------

@dataclass
class Target:
    backend: str
    data_dir: Path
    database_url: str  # "" for SQLite in the data folder
    pg_name: str | None = None
    password: str = ""  # the admin's, as `mailseen demo` printed it

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'mailseen.db'}"

    def cli(self) -> list[str]:
        argv = [str(MAILSEEN), "--data-dir", str(self.data_dir)]
        return [*argv, "--database-url", self.database_url] if self.database_url else argv


def env() -> dict[str, str]:
    return {**os.environ, "MAILSEEN_SECRET_KEY": SECRET, "MAILSEEN_LOG_LEVEL": "warning",
            "MAILSEEN_IMAP_POLL": "false"}


def make_target(backend: str, tmp: Path, name: str, pg_url: str) -> Target:
    data = tmp / f"{backend}-{name}"
    if backend == "sqlite":
        return Target(backend, data, "")
    url, db_name = create_pg_database(pg_url, f"mailseen_bench_{name}", SetupError)
    return Target(backend, data, url, db_name)


def drop_target(target: Target, pg_url: str) -> None:
    if target.pg_name is not None:
        drop_pg_database(pg_url, target.pg_name)


def build(target: Target, messages: int, views: int, mailboxes: int) -> tuple[str, float]:
    """Run `mailseen demo` at scale; returns the admin's password and the seconds taken."""
    argv = [*target.cli(), "demo", "--messages", str(messages), "--views", str(views),
            "--mailboxes", str(mailboxes)]
    print(f"$ {' '.join(argv)}", flush=True)
    started = time.monotonic()
    # The progress bar goes to our stderr; the summary and passwords come back on stdout.
    done = subprocess.run(argv, env=env(), stdout=subprocess.PIPE, text=True, timeout=4 * 3600)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SetupError(f"mailseen demo failed ({done.returncode}):\n{done.stdout}")
    print(done.stdout.strip(), flush=True)
    found = re.search(r"admin\s+admin@example\.com\s+password: (\S+)", done.stdout)
    if found is None:
        raise SetupError("mailseen demo printed no admin password")
    return found.group(1), seconds


def upgrade(target: Target) -> None:
    subprocess.run([*target.cli(), "db", "upgrade"], env=env(), check=True, timeout=3600)


def forget_statistics(target: Target) -> None:
    """`mailseen demo` gathers planner statistics, as a bulk load should; a SQLite database
    the app grew itself has none (nothing runs ANALYZE), so the first timings go without."""
    engine = create_engine(target.url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS sqlite_stat1"))
    engine.dispose()


def drop_kept(folder: Path, pg_url: str) -> int:
    try:
        kept = json.loads((folder / KEPT).read_text())
    except (OSError, ValueError) as exc:
        print(f"bench/scale.py: nothing kept in {folder}: {exc}", file=sys.stderr)
        return 2
    for entry in kept.values():
        drop_target(Target(**{**entry["target"], "data_dir": Path(entry["target"]["data_dir"])}),
                    pg_url)
    shutil.rmtree(folder, ignore_errors=True)
    print(f"removed {folder} and its {len(kept)} databases")
    return 0


def sizes(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        out = {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0)
               for t in ("conversations", "messages", "view_events")}
    engine.dispose()
    return out


# -- requests -------------------------------------------------------------------------------

@dataclass
class Timing:
    name: str
    goal_ms: float | None
    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU ms of this process per request

    def pct(self, p: float, samples: list[float] | None = None) -> float:
        ordered = sorted(self.samples if samples is None else samples)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    @property
    def met(self) -> bool | None:
        return None if self.goal_ms is None else self.pct(95) <= self.goal_ms


class Session:
    """The app in-process, with the statements it sends to the database captured on demand."""

    def __init__(self, target: Target) -> None:
        settings = load_settings({"data_dir": target.data_dir,
                                  "database_url": target.database_url, "secret_key": SECRET,
                                  "worker": False, "imap_poll": False,
                                  "log_level": "warning"}, environ={})
        self.instance = Instance.open(settings, migrate=False)
        self.token = "ms_" + secrets.token_urlsafe(24)
        self.instance.store.add_token("bench/scale", hash_token(self.token))
        self.client = TestClient(MailseenApp(self.instance, run_worker=False),
                                 base_url="http://testserver", follow_redirects=True)
        self.client.__enter__()
        self.captured: list[tuple[str, Any]] | None = None
        event.listen(self.instance.db.engine, "before_cursor_execute", self._capture)
        self._sign_in(target.password)

    def _capture(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                 context: Any, executemany: bool) -> None:
        if self.captured is not None:
            self.captured.append((statement, parameters))

    def _sign_in(self, password: str) -> None:
        page = self.client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        if csrf is None:
            raise SetupError("no CSRF token on the sign-in page")
        done = self.client.post("/login", data={"email": "admin@example.com",
                                                "password": password, "csrf": csrf.group(1)})
        if done.status_code != 200 or "/login" in str(done.url):
            raise SetupError(f"signing in as the admin failed: {done.status_code}")

    def get(self, path: str) -> tuple[float, float]:
        """Wall and CPU milliseconds (this process, every thread) of one request."""
        headers = {"Authorization": f"Bearer {self.token}"} if path.startswith("/api/") else {}
        cpu, started = time.process_time(), time.perf_counter()
        response = self.client.get(path, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        cpu = (time.process_time() - cpu) * 1000
        if response.status_code != 200:
            raise SetupError(f"GET {path} answered {response.status_code}")
        return elapsed, cpu

    def statements(self, path: str) -> list[tuple[str, Any]]:
        self.captured = []
        try:
            self.get(path)
            return self.captured
        finally:
            self.captured = None

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.instance.close()


def sample_ids(session: Session, n: int) -> dict[str, list[int]]:
    rng = random.Random(1)
    with session.instance.db.engine.connect() as conn:
        top_conv = conn.execute(text(
            "SELECT conversation_id FROM messages ORDER BY view_count DESC LIMIT 1")).scalar()
        convs = int(conn.execute(text("SELECT max(id) FROM conversations")).scalar() or 1)
        msgs = int(conn.execute(text("SELECT max(id) FROM messages")).scalar() or 1)
    return {"conversations": [rng.randint(1, convs) for _ in range(n)],
            "messages": [rng.randint(1, msgs) for _ in range(n)],
            "hot": [int(top_conv or 1)]}


Endpoint = tuple[str, float | None, Callable[[int], str]]  # name, goal in ms, i-th path


def endpoints(ids: dict[str, list[int]]) -> list[Endpoint]:
    def nth(key: str) -> Callable[[int], str]:
        pool = ids[key]
        return lambda i: str(pool[i % len(pool)])

    conv, msg = nth("conversations"), nth("messages")
    return [
        # The floor: the token and one setting read (as busy as the machine is).
        ("GET /api/v1/settings (floor)", None, lambda i: "/api/v1/settings"),
        ("GET /api/v1/health", None, lambda i: "/api/v1/health"),
        ("listing, first page", GOAL_MS, lambda i: "/conversations"),
        ("listing, status=waiting", GOAL_MS, lambda i: "/conversations?status=waiting"),
        ("listing, page=200", GOAL_MS, lambda i: "/conversations?page=200"),
        ("listing, search (matches)", None, lambda i: "/conversations?q=northwind"),
        ("listing, search (no match)", None, lambda i: "/conversations?q=zzqx-nobody"),
        ("conversation view", GOAL_MS, lambda i: f"/conversations/{conv(i)}"),
        ("conversation, most viewed", None, lambda i: f"/conversations/{ids['hot'][0]}"),
        ("GET /api/v1/messages?limit=50", GOAL_MS, lambda i: "/api/v1/messages?limit=50"),
        ("GET /api/v1/messages/{id}", GOAL_MS, lambda i: f"/api/v1/messages/{msg(i)}"),
        ("GET /api/v1/mailboxes", GOAL_MS, lambda i: "/api/v1/mailboxes"),
        ("reports, 30 days", REPORT_GOAL_MS, lambda i: "/reports?days=30"),
    ]


def measure(sessions: dict[str, Session], requests: int, label: str, budget: float
            ) -> dict[str, list[Timing]]:
    """Time every endpoint on every database, one request of each per round, so that what
    the neighbours do to the machine falls on all of them alike. A request kind that has
    taken ``budget`` seconds in all (and has at least 10 samples) is not asked again."""
    plan = {name: endpoints(sample_ids(s, requests)) for name, s in sessions.items()}
    timings = {name: [Timing(e[0], e[1]) for e in plan[name]] for name in sessions}
    for name, session in sessions.items():  # warm-up: caches, compiled statements, templates
        for _, _, path in plan[name]:
            for i in range(3):
                session.get(path(i))
    spent = [0.0] * len(plan["full"])
    for i in range(requests):
        for k in range(len(plan["full"])):
            if spent[k] > budget and i >= 10:
                continue
            for name, session in sessions.items():
                wall, cpu = session.get(plan[name][k][2](i))
                timings[name][k].samples.append(wall)
                timings[name][k].cpu.append(cpu)
                spent[k] += wall / 1000
        if (i + 1) % max(1, requests // 5) == 0:
            print(f"  {label}: {i + 1}/{requests} rounds", flush=True)
    return timings


def print_timings(title: str, timings: dict[str, list[Timing]]) -> None:
    print(f"\n{title}")
    print(f"{'request':32}{'n':>5}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'goal':>6}  "
          f"{'result':7}{'CPU p50':>8}{'ref p95':>8}{'ref CPU':>8}")
    for t, ref in zip(timings["full"], timings["reference"], strict=True):
        goal = f"{t.goal_ms:.0f}" if t.goal_ms is not None else "-"
        verdict = {None: "", True: "met", False: "MISSED"}[t.met]
        print(f"{t.name:32}{len(t.samples):>5}{t.pct(50):>8.1f}{t.pct(95):>8.1f}"
              f"{t.pct(99):>8.1f}{goal:>6}  {verdict:7}{t.pct(50, t.cpu):>8.1f}"
              f"{ref.pct(95):>8.1f}{ref.pct(50, ref.cpu):>8.1f}")
    print("(CPU: milliseconds of this process's CPU per request, median; ref: the same "
          "requests on the reference database, timed in the same rounds)")


# -- plans ----------------------------------------------------------------------------------

BIG_TABLES = re.compile(r"\b(FROM|JOIN) (conversations|messages|view_events|message_data)\b")


def plans(session: Session) -> dict[str, list[tuple[str, list[str]]]]:
    """Each page's statements on the big tables, with their plans."""
    db = session.instance.db
    out: dict[str, list[tuple[str, list[str]]]] = {}
    seen: set[str] = set()
    for name, _, path in endpoints(sample_ids(session, 1)):
        found = []
        for statement, params in session.statements(path(0)):
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            key = f"{statement} {params}"  # a deep page is the first page's statement
            if not BIG_TABLES.search(statement) or key in seen:
                continue
            seen.add(key)
            with db.engine.connect() as conn:
                if db.is_sqlite:
                    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
                    plan = [f"{'  ' * _depth(rows, r)}{r[-1]}" for r in rows]
                else:
                    rows = conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, COSTS OFF, BUFFERS OFF) " + statement, params).all()
                    plan = [r[0] for r in rows]
            found.append((_shorten(statement), plan))
        out[name] = found
    return out


def _depth(rows: list[Any], row: Any) -> int:
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent:
        depth, parent = depth + 1, parents.get(parent, 0)
    return depth


def _columns_out(flat: str) -> str:
    """SELECT … FROM: the columns left out, up to the statement's own FROM (not one inside
    parentheses: a subquery's, or extract(epoch FROM …))."""
    if not flat.startswith("SELECT "):
        return flat
    depth = 0
    for i, char in enumerate(flat):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and flat.startswith(" FROM ", i):
            return "SELECT …" + flat[i:]
    return flat


def _shorten(statement: str) -> str:
    flat = " ".join(statement.split())
    flat = _columns_out(flat)
    flat = re.sub(r"IN \((?:[?%][^)]*,\s*){3,}[^)]*\)", "IN (…)", flat)
    return flat if len(flat) <= 300 else flat[:297] + "…"


def print_plans(title: str, found: dict[str, list[tuple[str, list[str]]]]) -> None:
    print(f"\n{title}")
    for name, statements in found.items():
        for statement, plan in statements:
            print(f"-- {name}: {statement}")
            for line in plan:
                print(f"   {line}")


# -- pixel ----------------------------------------------------------------------------------

def tracked_tokens(url: str, limit: int, recent: bool) -> list[str]:
    """Tokens of ``limit`` tracked, delivered messages: the most recently sent (where opens
    happen: most come within hours of sending) or any, across the whole year."""
    order = "m.id DESC" if recent else "random()"
    engine = create_engine(url)
    with engine.connect() as conn:
        keys = [r[0] for r in conn.execute(text(
            "SELECT c.token_key FROM messages m JOIN copies c ON c.message_id = m.id "
            "WHERE m.tracked AND m.status = 'sent' AND c.token_key IS NOT NULL "
            f"ORDER BY {order} LIMIT :n"), {"n": limit})]
    engine.dispose()
    signer = TokenSigner(SECRET.encode())
    return [signer.make(TokenRef(copy_key=k)) for k in keys]


def lua_script(tmp: Path, name: str, tokens: list[str]) -> Path:
    paths = ",\n".join(f'"/t/{t}.gif"' for t in tokens)
    path = tmp / f"{name}.lua"
    path.write_text(f"paths = {{\n{paths}\n}}\nrequest = function()\n"
                    "  return wrk.format(nil, paths[math.random(#paths)])\nend\n")
    return path


def wrk_run(url: str, script: Path, duration: float, connections: int, pgid: int) -> Any:
    argv = ["taskset", "-c", pixel_bench.WRK_CORE, "wrk", "-t1", f"-c{connections}",
            f"-d{max(1, round(duration))}s", "--timeout", "5s", "--latency", "-s", str(script)]
    for name, value in pixel_bench.HIT_HEADERS.items():
        argv += ["-H", f"{name}: {value}"]
    cpu = pixel_bench.group_cpu(pgid)
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=duration + 30)
    cpu = pixel_bench.group_cpu(pgid) - cpu
    if done.returncode != 0:
        raise SetupError(f"wrk failed:\n{done.stdout}{done.stderr}")
    result = pixel_bench.parse_wrk("mailseen", "keep-alive", done.stdout)
    if result.ok_responses <= 0 or result.non_2xx:
        raise SetupError(f"pixel answered {result.non_2xx} non-2xx responses:\n{done.stdout}")
    result.cpu_us = cpu / result.requests * 1e6
    return result


PATTERNS = {"recent": "hits spread over the 1,000 most recently sent tracked messages",
            "spread": "hits spread over 1,000 tracked messages from the whole year"}


def pixel(targets: dict[str, Target], tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Pixel throughput on the full database against the reference one, same layout, for
    each pattern of hits (PATTERNS); the goal is judged on "recent"."""
    procs = pixel_bench.Processes(tmp)
    backend = targets["full"].backend
    runs = [(name, pattern) for pattern in PATTERNS for name in targets]
    try:
        urls: dict[str, str] = {}
        scripts: dict[tuple[str, str], Path] = {}
        for name, target in targets.items():
            for pattern in PATTERNS:
                scripts[name, pattern] = lua_script(tmp, f"{backend}-{name}-{pattern}",
                                                    tracked_tokens(target.url,
                                                                   args.pixel_messages,
                                                                   pattern == "recent"))
            port = pixel_bench.free_port()
            proc = procs.start(f"{backend}-{name}", [
                "taskset", "-c", pixel_bench.SERVER_CORE, *target.cli(), "serve", "--host",
                "127.0.0.1", "--port", str(port), "--no-worker", "--secret-key", SECRET],
                env=env())
            urls[name] = f"http://127.0.0.1:{port}"
            pixel_bench.wait_http(urls[name] + "/", proc)
        pids = {name: procs.procs[f"{backend}-{name}"].pid for name in targets}
        for name, pattern in runs:  # warm-up
            wrk_run(urls[name], scripts[name, pattern], args.pixel_warmup, args.connections,
                    pids[name])
        rounds: dict[tuple[str, str], list[Any]] = {run: [] for run in runs}
        for rnd in range(1, args.pixel_rounds + 1):
            # Alternate which goes first: a neighbour's burst should not favour one side.
            for name, pattern in (runs if rnd % 2 else runs[::-1]):
                res = wrk_run(urls[name], scripts[name, pattern], args.pixel_duration,
                              args.connections, pids[name])
                rounds[name, pattern].append(res)
                print(f"  pixel round {rnd}/{args.pixel_rounds} {name:9} {pattern:6} "
                      f"{res.rps:>8,.0f} hits/s  p50 {res.p50_ms:6.2f} ms  p99 "
                      f"{res.p99_ms:7.2f} ms  CPU {res.cpu_us:5.0f} us/hit", flush=True)
    finally:
        procs.stop_all()
    out: dict[str, Any] = {"rounds": {f"{n}/{p}": [asdict(r) for r in v]
                                      for (n, p), v in rounds.items()}}
    for pattern in PATTERNS:
        pairs = list(zip(rounds["full", pattern], rounds["reference", pattern], strict=True))
        out[pattern] = {
            "ratio": statistics.median(f.rps / r.rps for f, r in pairs),
            "ratio_by_cpu": statistics.median(r.cpu_us / f.cpu_us for f, r in pairs),
            "per_round": [f.rps / r.rps for f, r in pairs],
            "full_rps": statistics.median(f.rps for f, _ in pairs),
            "reference_rps": statistics.median(r.rps for _, r in pairs)}
    out["met"] = out["recent"]["ratio"] >= PIXEL_GOAL
    return out


def pages(targets: dict[str, Target], args: argparse.Namespace, result: dict[str, Any]
          ) -> None:
    """Time the pages and the API on both databases and print their plans (SQLite: before
    and after ANALYZE)."""
    backend = targets["full"].backend
    sessions: dict[str, Session] = {}
    try:
        sessions = {name: Session(t) for name, t in targets.items()}
        timings = measure(sessions, args.requests, backend, args.budget)
        print_timings(f"{backend}: {args.requests} requests each, in-process (load average "
                      f"{pixel_bench.load_average()})", timings)
        found = plans(sessions["full"])
        print_plans(f"{backend}: query plans", found)
        result.update(timings=_dump(timings), plans=found)
        if backend == "sqlite":
            for name, session in sessions.items():
                started = time.monotonic()
                with session.instance.db.engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE")
                print(f"\nANALYZE of the {name} database took "
                      f"{time.monotonic() - started:.0f}s", flush=True)
                session.close()
            sessions = {}
            sessions = {name: Session(t) for name, t in targets.items()}  # read the stats
            again = measure(sessions, args.requests, f"{backend} + ANALYZE", args.budget)
            print_timings(f"{backend} after ANALYZE (load average "
                          f"{pixel_bench.load_average()})", again)
            found = plans(sessions["full"])
            print_plans(f"{backend} after ANALYZE: query plans", found)
            result.update(analyzed=_dump(again), analyzed_plans=found)
    finally:
        for session in sessions.values():
            session.close()


def run_backend(backend: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n=== {backend}: {args.messages:,} messages, {args.views:,} views, "
          f"{args.mailboxes} mailboxes; reference: {REFERENCE[0]:,} messages, "
          f"{REFERENCE[1]:,} views ===", flush=True)
    targets: dict[str, Target] = {}
    result: dict[str, Any] = {"backend": backend}
    try:
        for name, (messages, views) in (("full", (args.messages, args.views)),
                                        ("reference", REFERENCE)):
            kept = args.kept.get(f"{backend}/{name}")
            if kept is not None:  # --reuse: built by an earlier --keep run
                targets[name] = target = Target(**{**kept["target"],
                                                   "data_dir": Path(kept["target"]["data_dir"])})
                seconds = kept["build_seconds"]
                upgrade(target)  # the code timed may have migrations the data has not
            else:
                targets[name] = target = make_target(backend, tmp, name, args.pg_url)
                target.password, seconds = build(target, messages, views, args.mailboxes)
                if args.keep:
                    args.kept[f"{backend}/{name}"] = {
                        "target": {**asdict(target), "data_dir": str(target.data_dir)},
                        "build_seconds": seconds}
                    (tmp / KEPT).write_text(json.dumps(args.kept, indent=2) + "\n")
            result[f"{name}_build_seconds"] = seconds
            result[f"{name}_rows"] = sizes(target.url)
            print(f"{'reused' if kept else 'built'} {name} (built in {seconds:.0f}s): "
                  f"{result[f'{name}_rows']}", flush=True)
            if backend == "sqlite":
                forget_statistics(target)
        if args.pages:
            pages(targets, args, result)
        if args.pixel:
            result["pixel"] = p = pixel(targets, tmp, args)
            for pattern, words in PATTERNS.items():
                q = p[pattern]
                goal = (f" (goal >= {PIXEL_GOAL}x): {'met' if p['met'] else 'MISSED'}"
                        if pattern == "recent" else " (no goal: the worst case)")
                print(f"\n{backend}, {words}: {q['full_rps']:,.0f} against "
                      f"{q['reference_rps']:,.0f} hits/s, full / reference {q['ratio']:.2f}x "
                      f"by hits/s (rounds {', '.join(f'{x:.2f}' for x in q['per_round'])}), "
                      f"{q['ratio_by_cpu']:.2f}x by CPU per hit{goal}", flush=True)
    finally:
        if not args.keep:
            for target in targets.values():
                drop_target(target, args.pg_url)
                shutil.rmtree(target.data_dir, ignore_errors=True)
    return result


def _dump(timings: dict[str, list[Timing]]) -> dict[str, list[dict[str, Any]]]:
    return {name: [asdict(t) for t in ts] for name, ts in timings.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=3_000_000)
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100, help="per request kind (100)")
    parser.add_argument("--budget", type=float, default=90,
                        help="seconds after which a slow request kind stops being sampled "
                             "(once it has 10 samples; 90)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="a database on the server to connect to for CREATE DATABASE")
    parser.add_argument("--no-pixel", dest="pixel", action="store_false")
    parser.add_argument("--no-pages", dest="pages", action="store_false",
                        help="skip the pages and the API (time the pixel only)")
    parser.add_argument("--pixel-duration", type=float, default=5)
    parser.add_argument("--pixel-warmup", type=float, default=2)
    parser.add_argument("--pixel-rounds", type=int, default=5)
    parser.add_argument("--pixel-messages", type=int, default=1000,
                        help="hits spread over this many tracked messages (1000)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the data and databases")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="time the data an earlier --keep run left in DIR instead of "
                             "building it again (implies --keep; the pixel runs of every "
                             "run add their views to it)")
    parser.add_argument("--drop", type=Path, metavar="DIR",
                        help="remove what a --keep run left in DIR (its PostgreSQL "
                             "databases too), then exit")
    args = parser.parse_args()
    if args.drop is not None:
        return drop_kept(args.drop, args.pg_url)
    args.kept = {}
    if args.reuse is not None:
        try:
            args.kept = json.loads((args.reuse / KEPT).read_text())
        except (OSError, ValueError) as exc:
            print(f"bench/scale.py: nothing to reuse in {args.reuse}: {exc}", file=sys.stderr)
            return 2
        args.keep = True
    if args.pixel and (shutil.which("wrk") is None or shutil.which("taskset") is None):
        print("bench/scale.py: wrk and taskset are needed for the pixel part (--no-pixel to "
              "skip it)", file=sys.stderr)
        return 2
    tmp = args.reuse or Path(tempfile.mkdtemp(prefix="mailseen-scale-"))
    print(f"machine: {pixel_bench.machine()}; load average {pixel_bench.load_average()}",
          flush=True)
    results = []
    started = time.monotonic()
    try:
        for backend in args.backends.split(","):
            results.append(run_backend(backend.strip(), tmp, args))
    except SetupError as exc:
        print(f"bench/scale.py: {exc}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(OSError):
            if not args.keep:
                shutil.rmtree(tmp)
    if args.keep:
        print(f"data kept in {tmp}: rerun with --reuse {tmp}; remove with --drop {tmp}")
    print(f"\nwhole run: {(time.monotonic() - started) / 60:.0f} min; load average at the end "
          f"{pixel_bench.load_average()}")
    if args.json:
        args.json.write_text(json.dumps({"machine": pixel_bench.machine(), "args": vars(args),
                                         "results": results}, indent=2, default=str) + "\n")
    met = all(t["goal_ms"] is None or _met(t)
              for r in results for t in r.get("timings", {}).get("full", []))
    met &= all(r.get("pixel", {}).get("met", True) for r in results)
    return 0 if met else 1


def _met(t: dict[str, Any]) -> bool:
    timing = Timing(t["name"], t["goal_ms"], t["samples"], t["cpu"])
    return bool(timing.met)


if __name__ == "__main__":
    sys.exit(main())
