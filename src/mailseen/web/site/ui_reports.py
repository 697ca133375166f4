"""Reports: pictures of how sent mail was seen, per mailbox and across the user's mailboxes.

Charts are inline SVG drawn on the server (no script), each with a text alternative that
carries the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import NotFound
from ...records import Report
from .ui import instance_of, render, require_user

PERIODS = {7: "Last 7 days", 30: "Last 30 days", 90: "Last 90 days"}
DEFAULT_DAYS = 30
# Time-to-first-view buckets: (short label under the bar, words for the text alternative).
BUCKETS = (("<1 h", "under 1 hour"), ("1\u20136 h", "1 to 6 hours"),
           ("6\u201324 h", "6 to 24 hours"), ("1\u20133 d", "1 to 3 days"),
           (">3 d", "over 3 days"))
# Chart drawing units: bars are drawn in a viewBox this tall and stretched to the width.
HEIGHT = 100


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    label: str


def _day(d: date) -> str:
    return f"{d.day} {d:%b}"


def _percent(part: int, whole: int) -> int:
    return round(100 * part / whole) if whole else 0


def day_bars(per_day: list[tuple[date, int]]) -> list[Bar]:
    top = max([n for _, n in per_day] + [1])
    slot = 10.0
    return [Bar(i * slot + 1.5, HEIGHT - h, slot - 3, h, n, f"{_day(d)}: {n}")
            for i, (d, n) in enumerate(per_day)
            for h in [max(1.0, HEIGHT * n / top) if n else 1.0]]


def bucket_bars(counts: list[int]) -> list[Bar]:
    top = max([*counts, 1])
    return [Bar(i * 100 + 15, HEIGHT - h, 70, h, n, f"{BUCKETS[i][1]}: {n}")
            for i, n in enumerate(counts)
            for h in [max(1.0, HEIGHT * n / top) if n else 1.0]]


def share_text(report: Report) -> str:
    untracked = report.sent - report.tracked
    extra = (f" {untracked} more sent message{'s were' if untracked > 1 else ' was'} not "
             "tracked." if untracked else "")
    if not report.tracked:
        return f"No tracked messages were sent in this period.{extra}"
    return (f"{report.viewed} of {report.tracked} tracked messages viewed "
            f"({_percent(report.viewed, report.tracked)}%), "
            f"{report.tracked - report.viewed} not viewed yet.{extra}")


def days_text(report: Report) -> str:
    per_day = report.views_per_day
    total = sum(n for _, n in per_day)
    span = f"from {_day(per_day[0][0])} to {_day(per_day[-1][0])}" if per_day else ""
    if not total:
        return f"No views {span}."
    best_day, best = max(per_day, key=lambda item: (item[1], item[0]))
    return (f"{total} views by people {span}; the most, {best}, on {_day(best_day)}.")


def delays_text(counts: list[int]) -> str:
    total = sum(counts)
    if not total:
        return "No tracked message from this period has been viewed yet."
    parts = ", ".join(f"{long} {n}" for (_, long), n in zip(BUCKETS, counts, strict=True))
    return f"Time from sending to first view, for {total} viewed messages: {parts}."


async def reports(request: Request) -> Response:
    user = require_user(request)
    inst = instance_of(request)
    visible = inst.mailboxes.visible(user)
    mailbox = None
    raw = request.query_params.get("mailbox", "")
    if raw:
        mailbox = next((b for b in visible if str(b.id) == raw), None)
        if mailbox is None:  # unknown, or another team's: the same answer
            raise NotFound("no such mailbox")
    try:
        days = int(request.query_params.get("days", DEFAULT_DAYS))
    except ValueError:
        days = DEFAULT_DAYS
    if days not in PERIODS:
        days = DEFAULT_DAYS
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    ids = [mailbox.id] if mailbox else [b.id for b in visible]
    report = await run_in_threadpool(inst.messages.report, user, ids, since, days)
    by_mailbox: list[dict[str, Any]] = []
    if not mailbox and len(visible) > 1:
        shares = {s.mailbox_id: s for s in report.by_mailbox}
        for b in visible:
            share = shares.get(b.id)
            tracked, viewed = (share.tracked, share.viewed) if share else (0, 0)
            by_mailbox.append({"name": b.display_name or b.address, "id": b.id,
                               "tracked": tracked, "viewed": viewed,
                               "percent": _percent(viewed, tracked)})
    by_sender = [{"name": x.sent_by or "(not recorded)", "sent": x.sent, "tracked": x.tracked,
                  "viewed": x.viewed, "percent": _percent(x.viewed, x.tracked)}
                 for x in report.by_sender]
    per_day = report.views_per_day
    return render(
        request, "reports.html", mailbox=mailbox, visible=visible, days=days, periods=PERIODS,
        report=report, percent=_percent(report.viewed, report.tracked),
        arc=100 * report.viewed / report.tracked if report.tracked else 0.0,
        share_text=share_text(report), day_bars=day_bars(per_day),
        day_axis=[_day(per_day[i][0]) for i in (0, len(per_day) // 2, -1)],
        days_text=days_text(report), day_max=max([n for _, n in per_day] + [0]),
        bucket_bars=bucket_bars(report.first_view_buckets), buckets=BUCKETS,
        delays_text=delays_text(report.first_view_buckets), by_mailbox=by_mailbox,
        by_sender=by_sender)


routes = [Route("/reports", reports)]
