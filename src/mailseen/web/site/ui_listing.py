"""The conversation listing with the eye, per mailbox and across the user's mailboxes, and
the event stream that updates it live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .ui import all_mailboxes, eye_of, instance_of, redirect, render, require_user

PAGE = 25
FILTERS = {"viewed": "Viewed", "waiting": "Not viewed yet", "untracked": "Not tracked"}


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
                  search=search or "", page=page, more=more, filters=FILTERS,
                  last_view_id=inst.messages.last_view_id())


async def events(request: Request) -> Response:
    """Server-sent events: one "view" event per new pixel view in the user's mailboxes, with
    the message's new eye. Polls the database, so it works with several web nodes."""
    user = require_user(request)
    inst = instance_of(request)
    try:
        after = int(request.query_params.get("after", "0"))
    except ValueError:
        after = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal after
        yield b"retry: 3000\n\n"
        idle = 0
        while not await request.is_disconnected():
            fresh = await run_in_threadpool(inst.messages.views_since, user, after)
            for view_id, message_id, conversation_id, verdict, recipient in fresh:
                after = view_id
                msg = await run_in_threadpool(inst.messages.get, user, message_id)
                machine = inst.messages.machine_clients([msg]).get(msg.id)
                eye = eye_of(msg, machine, inst.clock.now())
                payload = {"message_id": message_id, "conversation_id": conversation_id,
                           "kind": eye.kind, "icon": eye.icon, "label": eye.label,
                           "subject": msg.subject,
                           # Named only when the copy proves it: a shared pixel's view
                           # could be any recipient's.
                           "recipient": recipient or "One of the recipients",
                           "human": verdict == "human"}
                yield f"id: {view_id}\nevent: view\ndata: {json.dumps(payload)}\n\n".encode()
            idle = 0 if fresh else idle + 1
            if idle and idle % 15 == 0:
                yield b": keep-alive\n\n"
            await asyncio.sleep(1.0)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


routes = [
    Route("/", home),
    Route("/conversations", listing),
    Route("/mailboxes/{mailbox_id:int}/conversations", listing),
    Route("/events", events),
]
