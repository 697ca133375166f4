"""Micro-benchmark: what writing webhook events costs the pixel writer, per human view.

    /work/main/.venv/bin/python bench/webhooks.py [--batches 300] [--batch 64] [--rounds 5]

bench/pixel --webhook measures the whole pixel under wrk, but wrk's hits come from one
address in bursts, and the classifier rightly takes nearly all of them for a machine: no
event is written. This script writes batches of views judged human straight through
``ViewWriter.write`` (the writer thread's work for one batch: the view rows, the copies' and
messages' summaries, and the events) into three SQLite databases set up alike:

  plain  no webhook endpoint
  first  an endpoint taking message.viewed: a copy's first human view is an event
  every  an endpoint taking every human view: one outbox row per view

Each round writes ``--batches`` batches into each database in turn (interleaved); the median
round's microseconds per view and its ratio to plain are reported. The figures in
docs/performance.md ("Webhooks and the pixel") come from this script.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mailseen.clock import ManualClock
from mailseen.config import load_settings
from mailseen.core.compose import Draft
from mailseen.records import Judged, MailboxIn, ViewIn, WebhookIn
from mailseen.services.instance import Instance

RECIPIENTS = 30
HUMAN = Judged("human", "no machine signal", "Outlook on Windows")
VARIANTS = {"plain": None, "first": False, "every": True}


def setup(folder: Path, every: bool | None) -> tuple[Instance, list[tuple[int, int]]]:
    settings = load_settings({"data_dir": folder, "secret_key": "bench-secret-0123456789abcdef",
                              "password_memory_kib": 64}, environ={})
    inst = Instance.open(settings, clock=ManualClock(datetime.now(UTC) - timedelta(days=1)))
    box = inst.store.add_mailbox(MailboxIn("bench@example.com", tracking="enabled"))
    msg = inst.sender.send_draft(box, Draft(
        from_addr=box.address, to=[f"r{i}@example.org" for i in range(RECIPIENTS)],
        subject="s", text="x", html="<p>x</p>"))
    asyncio.run(inst.worker().drain())
    if every is not None:
        inst.webhooks.register(None, WebhookIn("http://127.0.0.1:9/hooks", ("message.viewed",),
                                               every_view=every))
    copies = [(c.id, c.position) for c in inst.store.copies_of([msg.id])[msg.id]]
    return inst, [(msg.id, 0), *copies]


def round_of(inst: Instance, targets: list[tuple[int, int]], batches: int, size: int
             ) -> tuple[float, float]:
    """Microseconds per view for ``batches`` batches of ``size`` human views: elapsed, and
    CPU (the writer's and SQLite's, in this one thread; the elapsed time is mostly the
    commit's fsync, which a busy machine makes vary)."""
    msg_id = targets[0][0]
    copies = targets[1:]
    writer = inst.store.view_writer()
    now = datetime.now(UTC)
    try:
        spent = cpu = 0.0
        for b in range(batches):
            views = []
            for i in range(size):
                cid, pos = copies[(b * size + i) % len(copies)]
                views.append(ViewIn(msg_id, pos, now, "GET", "198.51.100.7", "Mozilla/5.0",
                                    {"accept": "image/*"}, copy_id=cid))
            judged = [(v, HUMAN) for v in views]
            start, start_cpu = time.perf_counter(), time.thread_time()
            writer.write(judged)
            spent += time.perf_counter() - start
            cpu += time.thread_time() - start_cpu
        return spent / (batches * size) * 1e6, cpu / (batches * size) * 1e6
    finally:
        writer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mailseen-bench-webhooks-"))
    setups = {name: setup(tmp / name, every) for name, every in VARIANTS.items()}
    print(f"machine: {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}; {RECIPIENTS} copies, batches of {args.batch}")
    runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpus: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for rnd in range(1, args.rounds + 1):
        for name, (inst, targets) in setups.items():
            us, cpu = round_of(inst, targets, args.batches, args.batch)
            runs[name].append(us)
            cpus[name].append(cpu)
            print(f"round {rnd}/{args.rounds} {name:6} {us:7.2f} us/view, CPU {cpu:6.2f} us",
                  flush=True)
    events = {name: inst.store.webhook_counts().get("pending", 0)
              for name, (inst, _) in setups.items()}
    views = args.rounds * args.batches * args.batch
    print()
    for name in VARIANTS:
        per_round = [p / r for p, r in zip(runs["plain"], runs[name], strict=True)]
        by_cpu = [p / r for p, r in zip(cpus["plain"], cpus[name], strict=True)]
        print(f"{name:6} {statistics.median(runs[name]):7.2f} us/view, CPU "
              f"{statistics.median(cpus[name]):6.2f} us (median rounds); speed "
              f"{statistics.median(per_round):.2f}x plain's (rounds "
              f"{', '.join(f'{x:.2f}' for x in per_round)}), by CPU "
              f"{statistics.median(by_cpu):.2f}x (rounds {', '.join(f'{x:.2f}' for x in by_cpu)}); "
              f"{events[name]:,} events for {views:,} human views")
    for inst, _ in setups.values():
        inst.close()
    ok = (events["plain"] == 0 and events["first"] == RECIPIENTS
          and events["every"] == views)
    print("events: as expected" if ok else "events: UNEXPECTED COUNT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
