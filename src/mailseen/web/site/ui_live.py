"""Live pages: what a page polls to learn that what it shows has changed.

A page that shows something that changes (the listing, a conversation) is rendered with the
change cursor of what it shows (``data-live`` and ``data-live-cursor``). Its script asks
``/live`` every few seconds whether the cursor moved; when it has, the script fetches the page
again and patches its live part in place (static/app.js). The answer also carries the
notifications of new views and new mail in every mailbox the user may see. Plain polling of
the database: it works behind any proxy and with several web nodes, and holds no connection
open.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...errors import InvalidInput, NotFound
from ...records import UserRecord
from ...services.instance import Instance
from ...services.live import LiveChanges, LiveScope, LiveView
from .ui import finish, instance_of, require_user

__all__ = ["LiveState", "live_state", "routes"]

# A page polled after a long sleep must not raise a storm of notifications.
_MOST_NOTES = 5


@dataclass(frozen=True)
class LiveState:
    """What a live page renders on its live element (``data-live``, ``data-live-cursor``)."""

    scope: str
    cursor: str


async def live_state(request: Request, user: UserRecord, scope: LiveScope) -> LiveState:
    """The page's scope and its cursor as of now: call this before reading what the page
    shows, so that a change made in between is seen as one."""
    inst = instance_of(request)
    return LiveState(str(scope), await run_in_threadpool(inst.messages.live_cursor, user, scope))


async def live(request: Request) -> Response:
    """``?scope=…&cursor=…`` → ``{"cursor", "changed", "notes"}``; 401 when signed out,
    404 for what the user may not see, 400 for a scope that cannot be read."""
    user = require_user(request)
    inst = instance_of(request)
    try:
        scope = LiveScope.parse(request.query_params.get("scope", "none"))
    except InvalidInput as exc:
        return _json(request, {"error": str(exc), "field": "scope"}, 400)
    cursor = request.query_params.get("cursor", "")[:100]
    try:
        found = await run_in_threadpool(inst.messages.live_changes, user, scope, cursor)
    except NotFound:
        return _json(request, {"error": "nothing here, or you do not have access to it"}, 404)
    notes = await run_in_threadpool(_notes, inst, user, found)
    return _json(request, {"cursor": found.cursor, "changed": found.changed, "notes": notes})


def _notes(inst: Instance, user: UserRecord, found: LiveChanges) -> list[dict[str, str]]:
    """A notification per message a person newly viewed (machine fetches are not views) and
    per message received (automatic replies aside): the latest few of each."""
    viewed: dict[int, LiveView] = {}
    for v in found.views:
        if v.verdict == "human" and v.conversation_id is not None:
            viewed.pop(v.message_id, None)
            viewed[v.message_id] = v
    notes = []
    for v in list(viewed.values())[-_MOST_NOTES:]:
        msg = inst.messages.get(user, v.message_id)
        # Named only when the copy proves it: a shared pixel's view could be any
        # recipient's.
        who = v.recipient or "One of the recipients"
        notes.append({"tag": f"mailseen-view-{v.view_id}",
                      "title": f"{who} viewed {msg.subject or 'your message'}",
                      "url": f"/conversations/{v.conversation_id}"})
    received = [m for m in found.messages if m.direction == "in" and m.conversation_id]
    for m in received[-_MOST_NOTES:]:
        msg = inst.messages.get(user, m.message_id)
        if msg.automatic:
            continue
        notes.append({"tag": f"mailseen-mail-{msg.id}",
                      "title": f"{msg.from_addr or 'Someone'} wrote: "
                               f"{msg.subject or '(no subject)'}",
                      "url": f"/conversations/{m.conversation_id}"})
    return notes


def _json(request: Request, body: object, status: int = 200) -> Response:
    response = JSONResponse(body, status, headers={"Cache-Control": "no-store"})
    finish(request, response)
    return response


routes = [Route("/live", live)]
