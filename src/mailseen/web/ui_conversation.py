"""The conversation view: every message in order, the tracking story of each one the team
sent, and message bodies shown safely.

An HTML body is never part of the page. It is a document of its own, ``/messages/{id}/body``,
sanitised (see mailhtml), served under its own Content-Security-Policy (nothing runs, nothing
loads but images, and remote ones only when asked) and shown in an iframe sandboxed without
scripts or same-origin. Our own pixels are taken out before any of that, so reading the
team's sent mail here never counts as a view.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..core.inject import tag_message
from ..core.status import Eye
from ..errors import NotFound
from ..services.accounts import can_see_mailbox
from ..services.instance import Instance
from ..storage import ConversationRecord, MessageRecord, ViewRecord
from ..storage.records import UserRecord
from .framecsp import frame_csp
from .mailhtml import Body, attachment_data, linkify, read_body, sanitize
from .ui import eye_of, finish, instance_of, render, require_user, templates

__all__ = ["displayed_body", "human_size", "routes", "short_agent", "visible_conversation",
           "visible_message"]

_VIEW_LIMIT = 1000


def visible_conversation(request: Request, conversation_id: int
                         ) -> tuple[UserRecord, ConversationRecord]:
    """The conversation, if the signed-in user may see its mailbox; else NotFound, the same
    answer as for one that does not exist."""
    user = require_user(request)
    conv = instance_of(request).store.get_conversation(conversation_id)
    if not can_see_mailbox(user, conv.mailbox_id):
        raise NotFound(f"no conversation with id {conversation_id}")
    return user, conv


def visible_message(request: Request, message_id: int) -> tuple[UserRecord, MessageRecord]:
    user = require_user(request)
    message = instance_of(request).store.get_message(message_id)
    if not can_see_mailbox(user, message.mailbox_id):
        raise NotFound(f"no message with id {message_id}")
    return user, message


def displayed_body(inst: Instance, message: MessageRecord) -> Body:
    """The message's body as stored, with our pixels taken out of what we sent (received
    mail had them taken out on the way in)."""
    raw = inst.store.get_raw(message.id)
    if message.direction == "out":
        cleaned = tag_message(raw, "", inst.sender.is_own_pixel)
        if cleaned.pixels_removed:
            raw = cleaned.data
    return read_body(raw)


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


# -- who fetched the pixel ---------------------------------------------------------------

_PLATFORMS = (("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"),
              ("Windows", "Windows"), ("Mac OS X", "macOS"), ("Macintosh", "macOS"),
              ("CrOS", "ChromeOS"), ("Linux", "Linux"))
_BROWSERS = ("Edg", "OPR", "Firefox", "Chrome", "Thunderbird", "Outlook")
_PRODUCT = re.compile(r"([A-Za-z][\w.-]*)/(\d+)")


def short_agent(user_agent: str | None) -> str:
    """A user agent in a few words ("Chrome 120 on Windows"), for views the classifier did
    not name."""
    ua = (user_agent or "").strip()
    if not ua:
        return "no user agent"
    products = dict(_PRODUCT.findall(ua))
    name = next((f"{'Edge' if b == 'Edg' else 'Opera' if b == 'OPR' else b} {products[b]}"
                 for b in _BROWSERS if b in products), None)
    if name is None and "Safari" in products and "Version" in products:
        name = f"Safari {products['Version']}"
    if name is None:
        name = next((f"{p} {v}" for p, v in products.items() if p != "Mozilla"), None)
    if name is None:
        return ua if len(ua) <= 40 else ua[:39] + "…"
    system = next((words for token, words in _PLATFORMS if token in ua), None)
    return f"{name} on {system}" if system else name


@dataclass(frozen=True)
class Event:
    view: ViewRecord
    human: bool
    client: str


@dataclass
class Item:
    message: MessageRecord
    body: Body
    blocked_images: int
    eye: Eye | None
    events: list[Event]
    truncated: bool

    @property
    def outgoing(self) -> bool:
        return self.message.direction == "out"

    @property
    def when(self) -> datetime:
        return self.message.sent_at or self.message.created_at


def _item(inst: Instance, message: MessageRecord, machine: dict[int, str]) -> Item:
    body = displayed_body(inst, message)
    blocked = 0
    if body.html is not None:
        blocked = sanitize(body.html, is_own_pixel=inst.sender.is_own_pixel,
                           inline=body.inline).blocked_images
    eye = events = None
    truncated = False
    if message.direction == "out":
        eye = eye_of(message, machine.get(message.id))
        views = inst.store.list_views(message.id, limit=_VIEW_LIMIT)
        truncated = len(views) >= _VIEW_LIMIT
        events = [Event(v, v.verdict == "human", v.client or short_agent(v.user_agent))
                  for v in views]
    return Item(message, body, blocked, eye, events or [], truncated)


def _load(inst: Instance, conversation_id: int) -> list[Item]:
    messages = inst.store.conversation_messages(conversation_id)
    machine = inst.store.machine_clients(
        [m.id for m in messages if m.direction == "out" and m.machine_count and not m.viewed])
    return [_item(inst, m, machine) for m in messages]


async def conversation(request: Request) -> Response:
    user, conv = visible_conversation(request, request.path_params["conversation_id"])
    inst = instance_of(request)
    items = await run_in_threadpool(_load, inst, conv.id)
    try:
        show_images = int(request.query_params.get("images", "0"))
    except ValueError:
        show_images = 0
    mailbox = inst.store.get_mailbox(conv.mailbox_id)
    return render(request, "conversation.html", conversation=conv, items=items,
                  mailbox=mailbox, show_images=show_images, is_admin=user.is_admin,
                  last_view_id=inst.store.last_view_id(), linkify=linkify, size=human_size)


async def body(request: Request) -> Response:
    """The message body as a document of its own, for a sandboxed iframe."""
    _, message = visible_message(request, request.path_params["message_id"])
    inst = instance_of(request)
    images = request.query_params.get("images") == "1"
    shown = await run_in_threadpool(displayed_body, inst, message)
    if shown.html is not None:
        html = sanitize(shown.html, images=images, is_own_pixel=inst.sender.is_own_pixel,
                        inline=shown.inline).html
        text = None
    else:
        html, text = None, linkify(shown.text or "")
    page = templates.get_template("conv_body.html").render(html=html, text=text)
    response = HTMLResponse(page, headers={
        "Content-Security-Policy": frame_csp(html, images=images,
                                             is_own=inst.sender.is_own_pixel,
                                             own_hosts=(inst.sender.base_url, str(request.url))),
        "X-Frame-Options": "SAMEORIGIN",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "private, no-store",
        "X-DNS-Prefetch-Control": "off",
        "Cross-Origin-Resource-Policy": "same-origin",
    })
    finish(request, response)
    return response


async def attachment(request: Request) -> Response:
    """An attachment, always as a download: never shown by the browser in our origin."""
    _, message = visible_message(request, request.path_params["message_id"])
    inst = instance_of(request)
    raw = await run_in_threadpool(inst.store.get_raw, message.id)
    index = request.path_params["index"]
    # Only what the page lists: the body parts (with our pixel, in what we sent) stay out.
    listed = {a.index for a in read_body(raw).attachments}
    found = attachment_data(raw, index) if index in listed else None
    if found is None:
        raise NotFound("no such attachment")
    meta, data = found
    safe = re.sub(r"[^\w.-]", "_", meta.filename)[:100] or "attachment"
    response = Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f"attachment; filename=\"{safe}\"; "
                               f"filename*=UTF-8''{quote(meta.filename[:200])}",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    })
    finish(request, response)
    return response


routes = [
    Route("/conversations/{conversation_id:int}", conversation),
    Route("/messages/{message_id:int}/body", body),
    Route("/messages/{message_id:int}/attachments/{index:int}", attachment),
]
