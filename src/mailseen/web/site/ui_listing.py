"""The conversation listing with the eye, per mailbox and across the user's mailboxes; it
follows changes live (see ui_live)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...services.live import LiveScope
from .ui import all_mailboxes, eye_of, instance_of, redirect, render, require_user
from .ui_live import live_state

PAGE = 25
FILTERS = {"viewed": "Viewed", "waiting": "Not viewed yet", "untracked": "Not tracked",
           "follow-up": "Follow up"}


async def home(request: Request) -> Response:
    require_user(request)
    return redirect(request, "/conversations")


async def listing(request: Request) -> Response:
    user = require_user(request)
    inst = instance_of(request)
    mailbox = None
    raw_id = request.path_params.get("mailbox_id")
    if raw_id is not None:
        mailbox = inst.mailboxes.get(user, raw_id)
    status = request.query_params.get("status") or None
    if status not in FILTERS:
        status = None
    search = (request.query_params.get("q") or "").strip()[:200] or None
    try:
        page = max(1, min(10_000, int(request.query_params.get("page", "1"))))
    except ValueError:
        page = 1
    live = await live_state(request, user, LiveScope("mailbox", mailbox.id) if mailbox
                            else LiveScope("all"))
    rows = await run_in_threadpool(
        lambda: inst.messages.listing(user, mailbox.id if mailbox else None, status=status,
                                      search=search, limit=PAGE + 1, offset=(page - 1) * PAGE))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    machine = inst.messages.machine_clients([m for _, m in rows])
    boxes = {b.id: b for b in all_mailboxes(request)}
    now = inst.clock.now()
    items = [{"conversation": c, "message": m, "mailbox": boxes.get(c.mailbox_id),
              "eye": eye_of(m, machine.get(m.id) if m else None, now)} for c, m in rows]
    return render(request, "listing.html", items=items, mailbox=mailbox, status=status,
                  search=search or "", page=page, more=more, filters=FILTERS, live=live)


routes = [
    Route("/", home),
    Route("/conversations", listing),
    Route("/mailboxes/{mailbox_id:int}/conversations", listing),
]
