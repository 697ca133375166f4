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
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ...core.consent import address_key
from ...core.mailbody import Body, Display, attachment_data, read_body
from ...core.status import Eye, delivery_state
from ...errors import NotFound
from ...records import (
    ClickRecord,
    ConversationRecord,
    CopyRecord,
    MessageRecord,
    UserRecord,
    ViewRecord,
)
from ...services.instance import Instance
from ...services.live import LiveScope
from .display import display_of, shown_raw, stored_display
from .framecsp import frame_csp
from .mailhtml import linkify
from .ui import (
    eye_of,
    finish,
    instance_of,
    read_form,
    redirect,
    render,
    require_user,
    templates,
)
from .ui_live import live_state

__all__ = ["content_disposition", "displayed_body", "human_size", "routes", "short_agent",
           "short_url", "visible_conversation", "visible_message"]

_VIEW_LIMIT = 1000


def visible_conversation(request: Request, conversation_id: int
                         ) -> tuple[UserRecord, ConversationRecord]:
    """The conversation, if the signed-in user may see its mailbox; else NotFound, the same
    answer as for one that does not exist."""
    user = require_user(request)
    return user, instance_of(request).messages.conversation(user, conversation_id)


def visible_message(request: Request, message_id: int) -> tuple[UserRecord, MessageRecord]:
    user = require_user(request)
    return user, instance_of(request).messages.get(user, message_id)


def displayed_body(inst: Instance, user: UserRecord, message: MessageRecord) -> Body:
    """The message's body, unsanitised, with our pixels taken out of what we sent. Blocking:
    call it from a worker thread."""
    return read_body(shown_raw(inst, user, message))


def content_disposition(filename: str) -> str:
    """A download named ``filename`` (RFC 6266): any name in ``filename*`` (RFC 5987), and
    an ASCII stand-in in ``filename`` for clients that know no other (header values are
    Latin-1 at most, so a non-ASCII name there would not even be sent)."""
    name = re.sub(r"[\x00-\x1f\x7f]", "", filename)[:200]
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", name, flags=re.ASCII)[:100].strip("._")
    return (f'attachment; filename="{fallback or "attachment"}"; '
            f"filename*=UTF-8''{quote(name, safe='')}")


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
    who: str = ""


@dataclass(frozen=True)
class Recipient:
    """One row of a sent message's recipients table: one copy and what its pixel saw."""

    copy: CopyRecord
    label: str  # the recipient, or who a shared pixel stands for
    delivery: str  # where its delivery stands, in words
    client: str  # the client of its latest human view, if any
    note: str = ""  # why the copy is not (or no longer) followed, in words
    clicks: int = 0  # links of this copy a person followed
    last_link: str = ""  # the latest of them

    @property
    def pending(self) -> bool:
        return self.copy.status in ("queued", "failed")


@dataclass
class Item:
    message: MessageRecord
    body: Display
    text: Markup | None  # the plain body, linkified here rather than on the event loop
    eye: Eye | None
    events: list[Event]
    truncated: bool
    recipients: list[Recipient] = field(default_factory=list)
    clicks: list[ClickRecord] = field(default_factory=list)  # human and machine, oldest first

    @property
    def can_retry(self) -> bool:
        return any(r.pending for r in self.recipients)

    @property
    def outgoing(self) -> bool:
        return self.message.direction == "out"

    @property
    def when(self) -> datetime:
        return self.message.sent_at or self.message.created_at


def _item(inst: Instance, user: UserRecord, message: MessageRecord, machine: dict[int, str],
          copies: list[CopyRecord], refused: set[str] | None = None) -> Item:
    body = display_of(inst, user, message)
    eye = events = None
    truncated = False
    recipients: list[Recipient] = []
    clicks: list[ClickRecord] = []
    if message.direction == "out":
        now = inst.clock.now()
        eye = eye_of(message, machine.get(message.id), now)
        views = inst.messages.views(user, message, limit=_VIEW_LIMIT)
        truncated = len(views) >= _VIEW_LIMIT
        whose = {c.id: c.recipient for c in copies}
        events = [Event(v, v.verdict == "human", v.client or short_agent(v.user_agent),
                        _whose(v, whose, message))
                  for v in views]
        if message.clicks_tracked:
            clicks = inst.messages.clicks(user, message, limit=_VIEW_LIMIT)
        for c in copies:
            latest = next((e.client for e in reversed(events)
                           if e.human and e.view.copy_id == c.id), "")
            followed = [k for k in clicks if k.copy_id == c.id and k.verdict == "human"]
            recipients.append(Recipient(c, c.recipient or _everyone(message, c),
                                        delivery_state(c, now), latest,
                                        _tracking_note(c, refused or set()), len(followed),
                                        short_url(followed[-1].url) if followed else ""))
    text = None if body.text is None else linkify(body.text)
    return Item(message, body, text, eye, events or [], truncated, recipients, clicks)


def short_url(url: str) -> str:
    """A link's target in a few characters: its host and path, cut to fit a table cell."""
    shown = url.split("://", 1)[-1]
    return shown if len(shown) <= 48 else shown[:47] + "…"


def _everyone(message: MessageRecord, copy: CopyRecord) -> str:
    envelope = copy.envelope or message.envelope_to
    n = len(envelope)
    return (envelope[0] if n == 1 else
            f"All {n} recipients (one copy; a view cannot say whose)")


def _tracking_note(copy: CopyRecord, refused: set[str]) -> str:
    """Why a copy's row shows no (or no more) views: a refusal since, or the reason it
    left without a pixel of its own."""
    if copy.recipient and copy.token_key is not None and address_key(copy.recipient) in refused:
        return "tracking refused by recipient"
    if copy.pixel != "personal" and copy.reason:
        return copy.reason
    return ""


def _whose(view: ViewRecord, whose: dict[int, str | None], message: MessageRecord) -> str:
    """Whose view it was, as far as the pixel proves it."""
    recipient = whose.get(view.copy_id) if view.copy_id is not None else None
    if recipient:
        return recipient
    return message.envelope_to[0] if len(message.envelope_to) == 1 else (
        "one of the recipients")


def _load(inst: Instance, user: UserRecord, conversation_id: int) -> list[Item]:
    messages = inst.messages.in_conversation(user, conversation_id)
    machine = inst.messages.machine_clients(messages)
    copies = inst.messages.recipients_of(user, messages)
    refused = inst.consents.refused({c.recipient for cs in copies.values() for c in cs
                                     if c.recipient})
    return [_item(inst, user, m, machine, copies.get(m.id, []), refused) for m in messages]


async def conversation(request: Request) -> Response:
    user, conv = visible_conversation(request, request.path_params["conversation_id"])
    inst = instance_of(request)
    live = await live_state(request, user, LiveScope("conversation", conv.id))
    items = await run_in_threadpool(_load, inst, user, conv.id)
    reminders = await run_in_threadpool(
        inst.reminders.of, [i.message.id for i in items if i.message.direction == "out"])
    try:
        show_images = int(request.query_params.get("images", "0"))
    except ValueError:
        show_images = 0
    mailbox = inst.mailboxes.get(user, conv.mailbox_id)
    return render(request, "conversation.html", conversation=conv, items=items,
                  mailbox=mailbox, show_images=show_images, is_admin=user.is_admin,
                  size=human_size, live=live, reminders=reminders)


async def body(request: Request) -> Response:
    """The message body as a document of its own, for a sandboxed iframe."""
    user, message = visible_message(request, request.path_params["message_id"])
    inst = instance_of(request)
    images = request.query_params.get("images") == "1"
    shown = await stored_display(inst, user, message)
    if shown.html is not None:
        html = shown.html_images if images and shown.html_images is not None else shown.html
        text = None
    else:
        html, text = None, await run_in_threadpool(linkify, shown.text or "")
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
    user, message = visible_message(request, request.path_params["message_id"])
    inst = instance_of(request)
    index = request.path_params["index"]
    # Only what the page lists: the body parts (with our pixel, in what we sent) stay out.
    listed = {a.index for a in (await stored_display(inst, user, message)).attachments}
    found = None
    if index in listed:
        raw = await run_in_threadpool(inst.messages.raw, user, message.id)
        found = await run_in_threadpool(attachment_data, raw, index)
    if found is None:
        raise NotFound("no such attachment")
    meta, data = found
    return _download(request, data, meta.filename)


async def original(request: Request) -> Response:
    """The whole message as received (what we sent: without our pixels), to read elsewhere
    what is too complex to show here."""
    user, message = visible_message(request, request.path_params["message_id"])
    raw = await run_in_threadpool(shown_raw, instance_of(request), user, message)
    return _download(request, raw, f"message-{message.id}.eml")


def _download(request: Request, data: bytes, filename: str) -> Response:
    """Always a download: never shown by the browser in our origin."""
    response = Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": content_disposition(filename),
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    })
    finish(request, response)
    return response


async def delivery_action(request: Request) -> Response:
    """An admin's "retry now" or "cancel" for a message's copies that wait or failed."""
    user = require_user(request)
    await read_form(request)
    inst = instance_of(request)
    message_id = request.path_params["message_id"]
    message = inst.messages.get(user, message_id)
    retry = request.url.path.endswith("/retry")
    change = inst.messages.retry if retry else inst.messages.cancel
    await run_in_threadpool(change, user, message_id)
    return redirect(request, f"/conversations/{message.conversation_id}#message-{message_id}")


routes = [
    Route("/conversations/{conversation_id:int}", conversation),
    Route("/messages/{message_id:int}/retry", delivery_action, methods=["POST"]),
    Route("/messages/{message_id:int}/cancel", delivery_action, methods=["POST"]),
    Route("/messages/{message_id:int}/body", body),
    Route("/messages/{message_id:int}/attachments/{index:int}", attachment),
    Route("/messages/{message_id:int}/original", original),
]
