"""A message made ready to show, once: read within bounds, sanitised, and stored.

Sanitising costs CPU in proportion to the mail (and, unbounded, far more: see core/htmlbound),
so it never runs on the event loop and never on every view. :func:`render_display` is the
whole job; the ingest path runs it as each message arrives (it is handed this function, as
sanitising is the web layer's, see services/inbound), and :func:`stored_display` makes it
for anything that has none yet (what the team sent, mail stored before) or that older rules
made, in a worker thread, and stores the result.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from ...core.htmlbound import bound_html
from ...core.mailbody import Display, read_body
from ...records import MessageRecord, UserRecord
from ...services.instance import Instance
from .mailhtml import sanitize

__all__ = ["DISPLAY_VERSION", "display_of", "render_display", "shown_raw", "stored_display"]

# Raise when the sanitiser's rules or the bounds change: stored displays made by older rules
# are made again when next shown.
DISPLAY_VERSION = 2


def _storable(text: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; a browser shows U+FFFD for it anyway.
    return None if text is None else text.replace("\x00", "\ufffd")


def render_display(raw: bytes, is_own_pixel: Callable[[str], bool]) -> Display:
    """``raw`` made ready to show; CPU-bound (run it off the event loop)."""
    body = read_body(raw)
    note = body.note
    html = html_images = None
    text = body.text
    blocked = 0
    if body.html is not None:
        bounded = bound_html(body.html)
        note = note or bounded.note
        if bounded.html is not None:
            cleaned = sanitize(bounded.html, is_own_pixel=is_own_pixel, inline=body.inline)
            html, blocked = cleaned.html, cleaned.blocked_images
            if blocked:
                html_images = sanitize(bounded.html, images=True, is_own_pixel=is_own_pixel,
                                       inline=body.inline).html
            text = None  # the HTML is shown; its plain version is not needed
    return Display(DISPLAY_VERSION, _storable(html), _storable(html_images), _storable(text),
                   blocked, body.attachments, note)


def shown_raw(inst: Instance, user: UserRecord, message: MessageRecord) -> bytes:
    """The message's bytes as the team may see them (see Messages.shown_raw)."""
    return inst.messages.shown_raw(user, message)


def display_of(inst: Instance, user: UserRecord, message: MessageRecord) -> Display:
    """The message's display, made and stored first if need be. Blocking: call it from a
    worker thread."""
    return inst.messages.display(
        user, message, DISPLAY_VERSION,
        lambda raw: render_display(raw, inst.sender.is_own_pixel))


async def stored_display(inst: Instance, user: UserRecord, message: MessageRecord
                         ) -> Display:
    """The message's display, read (or made and stored) in a worker thread."""
    return await run_in_threadpool(display_of, inst, user, message)
