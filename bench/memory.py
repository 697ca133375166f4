#!/usr/bin/env python3
"""Memory under sustained pixel load: does the server's resident memory stay flat?

For each node (`mailseen serve --no-worker`, then the pixel-only `mailseen pixel`), in one run:

1. A fresh SQLite data folder with a few thousand tracked, sent messages from the bulk demo
   generator (`mailseen demo --messages N --views 0`), and their pixel tokens, signed with the
   same secret key the server is given.
2. The server, pinned to core 0, trusting 127.0.0.1 as a proxy (MAILSEEN_TRUSTED_PROXIES), is
   loaded for --duration seconds by one wrk run pinned to core 1 (keep-alive connections) whose
   Lua script picks, per request, a token (genuine ones spread over every message; forged,
   malformed and signed-for-an-unknown-message ones) and a client out of a pool of
   --clients: an address sent as X-Forwarded-For (public IPv4, IPv6, Apple's and an image
   proxy's networks) with a user agent out of thousands (browsers and mail clients of many
   versions, image proxies, scanners, bots, none). So the classifier's per-client windows
   (BurstWindow, RepeatWindow) and its per-user-agent and per-address caches see far more
   distinct keys than they may keep: where a leak would show.
3. Every --interval seconds: the server's resident memory (VmRSS in /proc/<pid>/status), the
   views recorded so far (max(view_events.id)) and the server's CPU time.

Flat means both, per node:
- growth: RSS at the end is at most max(--max-growth-mb, --max-growth-pct of it) above RSS after
  warm-up (the sample at --warmup-fraction of the run: caches and windows have filled by then);
- slope: the least-squares line of RSS against views recorded, over the second half of the run,
  rises by less than --max-rise-mb across that half (reported as MB per million views too).

Prerequisites as for bench/pixel (wrk, taskset, 2 cores). Run from anywhere: `bench/memory.py`
(re-executes itself in the repo's .venv).

Usage: bench/memory.py [--duration 600] [--nodes serve,pixel] [--interval 5] [--json FILE]
Quick check: bench/memory.py --duration 60 --nodes pixel (the windows fill for about a minute:
runs under five minutes mostly measure that, not a leak)
Exit status: 0 when memory stays flat on every node, 1 when it does not, 2 on a setup failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchlib import MAILSEEN, load_pixel_bench, use_repo_venv

use_repo_venv(__file__)

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import string  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from mailseen.core.tokens import TOKEN_LENGTH, TokenRef, TokenSigner  # noqa: E402

SECRET = "bench-memory-secret-0123456789abcdef"
NODES = ("serve", "pixel")


pixel_bench = load_pixel_bench()
SetupError = pixel_bench.SetupError


# -- data and tokens ------------------------------------------------------------------------

def env() -> dict[str, str]:
    return {**os.environ, "MAILSEEN_SECRET_KEY": SECRET, "MAILSEEN_LOG_LEVEL": "warning",
            "MAILSEEN_IMAP_POLL": "false", "MAILSEEN_TRUSTED_PROXIES": "127.0.0.1"}


def build(data: Path, messages: int) -> tuple[Path, list[int]]:
    """A fresh data folder from the demo generator; returns its database and the ids of its
    tracked, sent messages."""
    pixel_bench.run([str(MAILSEEN), "--data-dir", str(data), "demo", "--messages",
                     str(messages), "--views", "0", "--mailboxes", "10"], env(), timeout=600)
    db = data / "mailseen.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM messages WHERE tracked AND status = 'sent' ORDER BY id")]
    if not ids:
        raise SetupError(f"no tracked, sent message in {db}")
    return db, ids


def paths(ids: list[int], rng: random.Random) -> tuple[list[str], list[str]]:
    """Pixel paths: one genuine token per message, and as many that record nothing (forged
    signatures, wrong lengths, signed for messages that do not exist)."""
    signer = TokenSigner(SECRET.encode())
    genuine = [f"/t/{signer.make(TokenRef(i))}.gif" for i in ids]
    alphabet = string.ascii_letters + string.digits + "-_"
    others: list[str] = []
    for n in range(len(ids)):
        kind = n % 4
        if kind == 0:  # a genuine token for a message id this instance never sent
            others.append(f"/t/{signer.make(TokenRef(10**9 + n))}.gif")
        elif kind == 1:  # a forged signature
            others.append("/t/" + "".join(rng.choices(alphabet, k=TOKEN_LENGTH)) + ".gif")
        elif kind == 2:  # too short or too long
            others.append("/t/" + "".join(rng.choices(alphabet, k=rng.randint(1, 60))) + ".gif")
        else:  # a genuine token with one character changed
            token = list(signer.make(TokenRef(ids[n % len(ids)])))
            token[n % TOKEN_LENGTH] = "A" if token[n % TOKEN_LENGTH] != "A" else "B"
            others.append(f"/t/{''.join(token)}.gif")
    return genuine, others


_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{a}.0.{b}.{c} Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/{a}.{c} Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{a}.0) Gecko/20100101 Firefox/{a}.{c}",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{c} like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E{b}",
    "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; Microsoft Outlook 16.0.{b}; "
    "ms-office; MSOffice 16)",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{a}.0) Gecko/20100101 Thunderbird/{a}.{c}",
)
_MACHINES = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    "Mozilla/5.0",  # Apple Mail Privacy Protection
    "Barracuda Sentinel (EE)/{a}.{b}",
    "Mozilla/5.0 (compatible; Slackbot-LinkExpanding 1.0; +https://api.slack.com/robots)",
    "python-requests/2.{a}.{c}",
    "curl/8.{c}.{b}",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/{a}.0.0.0 Safari/537.36",
    "",  # no user agent at all
)


def user_agents(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct user agents (mostly people's browsers and mail clients), more than
    the classifier's per-user-agent cache keeps."""
    seen: dict[str, None] = {}
    while len(seen) < count:
        template = rng.choice(_BROWSERS) if rng.random() < 0.8 else rng.choice(_MACHINES)
        seen[template.format(a=rng.randint(60, 140), b=rng.randint(1000, 9999),
                             c=rng.randint(0, 99))] = None
    return list(seen)


def client_address(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return f"17.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"  # Apple
    if roll < 0.10:
        return f"66.249.{rng.randint(80, 95)}.{rng.randint(1, 254)}"  # an image proxy's range
    if roll < 0.20:
        return f"2001:db8:{rng.randint(0, 0xffff):x}::{rng.randint(1, 0xffff):x}"
    first = rng.choice([n for n in range(1, 224) if n not in (10, 17, 127)])
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _lua_list(items: list[str]) -> str:
    return "{\n" + ",\n".join(json.dumps(s) for s in items) + "\n}"  # JSON strings are Lua's


def lua_script(path: Path, genuine: list[str], others: list[str], clients: int,
               agents: int, forged_share: float, seed: int) -> Path:
    """wrk's request function: a random path and client per request, keep-alive. GET only:
    wrk's parser would wait for the body of a HEAD's answer and stall the connection."""
    rng = random.Random(seed)
    uas = user_agents(agents, rng)
    pool = [(client_address(rng), rng.randrange(len(uas))) for _ in range(clients)]
    path.write_text(
        f"genuine = {_lua_list(genuine)}\nothers = {_lua_list(others)}\n"
        f"agents = {_lua_list(uas)}\n"
        f"ips = {_lua_list([ip for ip, _ in pool])}\n"
        "agent_of = {" + ",".join(str(ua + 1) for _, ua in pool) + "}\n"
        f"math.randomseed({seed})\n"
        "request = function()\n"
        "  local p\n"
        f"  if math.random() < {forged_share} then p = others[math.random(#others)]\n"
        "  else p = genuine[math.random(#genuine)] end\n"
        "  local c = math.random(#ips)\n"
        "  local h = {['X-Forwarded-For'] = ips[c], ['Accept'] = 'image/avif,image/webp,*/*',\n"
        "             ['Accept-Language'] = 'en-GB,en;q=0.9'}\n"
        "  local ua = agents[agent_of[c]]\n"
        "  if ua ~= '' then h['User-Agent'] = ua end\n"
        "  return wrk.format('GET', p, h)\n"
        "end\n")
    return path


# -- sampling -------------------------------------------------------------------------------

@dataclass
class Sample:
    seconds: float  # since the load started
    rss_mb: float
    views: int  # recorded since the load started
    cpu_s: float  # the server's CPU time since the load started


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SetupError(f"no VmRSS for process {pid}")


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def last_view_id(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM view_events").fetchone()[0])


@dataclass
class NodeResult:
    node: str
    load_before: str
    load_after: str = ""
    idle_mb: float = 0.0  # after start-up, before any load
    peak_mb: float = 0.0  # VmHWM at the end
    samples: list[Sample] = field(default_factory=list)
    requests: int = 0
    rps: float = 0.0
    non_2xx: int = 0
    socket_errors: int = 0
    p99_ms: float = 0.0
    # filled by judge()
    warm_at: float = 0.0
    warm_mb: float = 0.0
    end_mb: float = 0.0
    growth_mb: float = 0.0
    allowed_mb: float = 0.0
    slope_mb_per_million: float = 0.0
    rise_mb: float = 0.0  # of the fitted line across the second half
    views_per_s: float = 0.0
    cpu_us_per_request: float = 0.0
    flat: bool = False


def sustain(procs: Any, node: str, tmp: Path, args: argparse.Namespace) -> NodeResult:
    data = tmp / node
    print(f"[{node}] building {args.messages:,} demo messages in {data} …", flush=True)
    db, ids = build(data, args.messages)
    rng = random.Random(args.seed)
    genuine, others = paths(ids, rng)
    script = lua_script(tmp / f"{node}.lua", genuine, others, args.clients, args.agents,
                        args.forged_share, args.seed)
    port = pixel_bench.free_port()
    extra = ["--no-worker", "--secret-key", SECRET] if node == "serve" else []
    proc = procs.start(node, ["taskset", "-c", pixel_bench.SERVER_CORE, str(MAILSEEN),
                              "--data-dir", str(data), node, "--host", "127.0.0.1",
                              "--port", str(port), *extra], env=env())
    url = f"http://127.0.0.1:{port}"
    pixel_bench.wait_http(f"{url}/t/ready.gif", proc)
    if os.sched_getaffinity(proc.pid) != {int(pixel_bench.SERVER_CORE)}:
        raise SetupError(f"{node} is not pinned to core {pixel_bench.SERVER_CORE}")
    result = NodeResult(node, pixel_bench.load_average())
    time.sleep(1)
    result.idle_mb = rss_mb(proc.pid)
    base_views, base_cpu = last_view_id(db), pixel_bench.group_cpu(proc.pid)
    print(f"[{node}] {len(genuine):,} genuine tokens, {len(others):,} others "
          f"({args.forged_share:.0%} of requests), {args.clients:,} clients, "
          f"{args.agents:,} user agents; idle RSS {result.idle_mb:.1f} MB; "
          f"load average {result.load_before}", flush=True)

    wrk = procs.start(f"{node}-wrk", [
        "taskset", "-c", pixel_bench.WRK_CORE, "wrk", "-t1", f"-c{args.connections}",
        f"-d{round(args.duration)}s", "--timeout", "5s", "--latency", "-s", str(script), url])
    started = time.monotonic()
    next_print = 0.0
    while True:
        now = time.monotonic() - started
        if proc.poll() is not None:
            raise SetupError(f"{node} exited with status {proc.returncode} under load")
        sample = Sample(now, rss_mb(proc.pid), last_view_id(db) - base_views,
                        pixel_bench.group_cpu(proc.pid) - base_cpu)
        if wrk.poll() is not None:
            break  # the load is over: this sample is no longer under load
        result.samples.append(sample)
        if now >= next_print:
            print(f"[{node}] {now:6.0f}s  RSS {sample.rss_mb:7.1f} MB  views "
                  f"{sample.views:>10,}", flush=True)
            next_print += 60
        if now > args.duration + 60:
            raise SetupError(f"wrk still running {now:.0f}s after it started")
        time.sleep(max(0.0, args.interval - (time.monotonic() - started - now)))
    if wrk.returncode != 0:
        raise SetupError(f"wrk failed against {node}:\n{procs.log_tail(f'{node}-wrk')}")
    out = (tmp / f"{node}-wrk.log").read_text()
    res = pixel_bench.parse_wrk(node, "keep-alive", out)
    result.requests, result.rps, result.non_2xx = res.requests, res.rps, res.non_2xx
    result.socket_errors, result.p99_ms = res.socket_errors, res.p99_ms
    result.peak_mb = peak_mb(proc.pid)
    result.load_after = pixel_bench.load_average()
    procs.stop(node)
    procs.stop(f"{node}-wrk")
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return result


# -- the verdict ----------------------------------------------------------------------------

def fit_slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def judge(r: NodeResult, args: argparse.Namespace) -> None:
    if len(r.samples) < 4:
        raise SetupError(f"only {len(r.samples)} samples for {r.node}: raise --duration")
    duration = r.samples[-1].seconds
    warm = next(s for s in r.samples if s.seconds >= args.warmup_fraction * duration)
    end = r.samples[-1]
    r.warm_at, r.warm_mb, r.end_mb = warm.seconds, warm.rss_mb, end.rss_mb
    r.growth_mb = end.rss_mb - warm.rss_mb
    r.allowed_mb = max(args.max_growth_mb, args.max_growth_pct / 100 * warm.rss_mb)
    half = [s for s in r.samples if s.seconds >= duration / 2]
    xs = [s.views / 1e6 for s in half]
    slope = fit_slope(xs, [s.rss_mb for s in half]) if len(half) >= 2 else 0.0
    r.slope_mb_per_million = slope
    r.rise_mb = slope * (xs[-1] - xs[0])
    r.views_per_s = end.views / end.seconds if end.seconds else 0.0
    r.cpu_us_per_request = end.cpu_s / r.requests * 1e6 if r.requests else 0.0
    r.flat = r.growth_mb <= r.allowed_mb and r.rise_mb < args.max_rise_mb


def report(results: list[NodeResult], args: argparse.Namespace) -> None:
    step = 60.0 if args.duration >= 300 else max(args.interval, args.duration / 10)
    for r in results:
        print(f"\n{r.node}: RSS over time ({args.connections} keep-alive connections, "
              f"load average {r.load_before} → {r.load_after})")
        print(f"{'time':>6} {'RSS MB':>8} {'views':>11} {'views/s':>8}")
        mark, prev = 0.0, None
        for s in r.samples:
            if s.seconds + args.interval / 2 >= mark or s is r.samples[-1]:
                rate = ((s.views - prev.views) / (s.seconds - prev.seconds)
                        if prev and s.seconds > prev.seconds else 0.0)
                print(f"{s.seconds:5.0f}s {s.rss_mb:8.1f} {s.views:>11,} {rate:>8,.0f}")
                prev, mark = s, mark + step
                while mark <= s.seconds:
                    mark += step
    print(f"\nflat: RSS at the end at most max({args.max_growth_mb:g} MB, "
          f"{args.max_growth_pct:g}%) above RSS at {args.warmup_fraction:.0%} of the run, and "
          f"the line fitted over the second half (RSS against views) rising < "
          f"{args.max_rise_mb:g} MB across it")
    print(f"{'node':6} {'idle':>6} {'warm':>6} {'end':>6} {'growth':>7} {'allowed':>8} "
          f"{'peak':>6} {'MB/M views':>11} {'rise':>6} {'req/s':>7} {'views/s':>8} "
          f"{'CPU us':>7} {'non-2xx':>8}  verdict")
    for r in results:
        print(f"{r.node:6} {r.idle_mb:6.1f} {r.warm_mb:6.1f} {r.end_mb:6.1f} "
              f"{r.growth_mb:+7.1f} {r.allowed_mb:8.1f} {r.peak_mb:6.1f} "
              f"{r.slope_mb_per_million:+11.2f} {r.rise_mb:+6.1f} {r.rps:7,.0f} "
              f"{r.views_per_s:8,.0f} {r.cpu_us_per_request:7.0f} {r.non_2xx:8,}  "
              f"{'flat' if r.flat else 'GROWS'}")
    print("(MB; warm = at the warm-up mark; CPU us = server CPU per request; req/s counts "
          "every request, views/s only the recorded ones)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600,
                        help="seconds of load per node (600)")
    parser.add_argument("--nodes", default="serve,pixel",
                        help="comma-separated, run in turn: serve (the whole app, "
                             "--no-worker) and/or pixel (the pixel-only node)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between samples (5)")
    parser.add_argument("--messages", type=int, default=8000,
                        help="demo messages; about half are tracked and sent (8000)")
    parser.add_argument("--clients", type=int, default=50_000,
                        help="distinct (X-Forwarded-For, user agent) clients (50000)")
    parser.add_argument("--agents", type=int, default=6000, help="distinct user agents (6000)")
    parser.add_argument("--forged-share", type=float, default=0.2,
                        help="share of requests whose token records nothing (0.2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--warmup-fraction", type=float, default=0.2,
                        help="where the baseline is taken, as a share of the run (0.2)")
    parser.add_argument("--max-growth-mb", type=float, default=20.0)
    parser.add_argument("--max-growth-pct", type=float, default=10.0)
    # 10, not less: RSS moves in steps of 4-6 MB (the allocator) with no trend behind them.
    parser.add_argument("--max-rise-mb", type=float, default=10.0,
                        help="the second half's fitted line may rise less than this (10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every sample and verdict here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]

    if unknown := [n for n in nodes if n not in NODES]:
        parser.error(f"unknown node {unknown[0]!r} (choose from {', '.join(NODES)})")
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/memory.py: {tool} not found (apt-get install -y wrk)", file=sys.stderr)
            return 2
    if not MAILSEEN.exists():
        print(f"bench/memory.py: {MAILSEEN} missing (pip install -e .)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("bench/memory.py: needs 2 cores (server on core 0, wrk on core 1)",
              file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="mailseen-memory-"))
    procs = pixel_bench.Processes(tmp)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    results: list[NodeResult] = []
    try:
        print(f"machine: {pixel_bench.machine()}", flush=True)
        for node in nodes:
            results.append(sustain(procs, node, tmp, args))
            judge(results[-1], args)
    except SetupError as exc:
        print(f"bench/memory.py: {exc}", file=sys.stderr)
        for name in list(procs.procs):
            print(f"--- {name} log ---\n{procs.log_tail(name)}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    report(results, args)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": pixel_bench.machine(), "args": {k: str(v) for k, v in vars(args).items()},
            "nodes": [asdict(r) for r in results]}, indent=2) + "\n")
    return 0 if all(r.flat for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
