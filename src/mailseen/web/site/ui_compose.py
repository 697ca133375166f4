"""Compose and reply: a form that sends through the one send pipeline, and says before
sending what tracking will do and why.

What was typed survives a refused form: fields come back filled in, and attachments already
uploaded come back as checked boxes carrying their bytes, so they are not lost either.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import getaddresses

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...core.compose import Attachment, Draft, parse_address, reply_threading
from ...core.consent import PolicyChoice, RecipientDecision
from ...core.htmlbound import bound_html
from ...core.tracking import Decision
from ...errors import InvalidInput, NotFound
from ...records import ConversationRecord, MailboxRecord, MessageRecord, UserRecord
from ...services.instance import Instance
from .mailhtml import html_to_text, linkify, sanitize
from .ui import instance_of, read_form, redirect, render, require_user
from .ui_conversation import displayed_body, human_size, visible_conversation

__all__ = ["routes", "tracking_preview"]

_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


@dataclass(frozen=True)
class Preview:
    state: str  # "on", "off" or "plain": a class for the page and the script
    words: str
    # Under a privacy policy: the policy, and each typed recipient who will not be followed
    # and why ("not tracked: no consent recorded for erin@example.org").
    details: tuple[str, ...] = ()


def _setting(mailbox: MailboxRecord) -> str:
    return "global setting" if mailbox.tracking == "global" else "mailbox setting"


def tracking_preview(decision: Decision, mailbox: MailboxRecord, has_html: bool,
                     no_track: bool = False,
                     plan: tuple[PolicyChoice, list[RecipientDecision]] | None = None
                     ) -> Preview:
    """What tracking will do with a message from ``mailbox`` (whose tracking ``decision``
    the services made), in the words of the form; ``plan``: the privacy policy's decision
    for the recipients typed so far."""
    if not decision.enabled:
        return Preview("off", f"Tracking off ({_setting(mailbox)})")
    if no_track:
        return Preview("off", "Tracking off (this message)")
    if not has_html:
        return Preview("plain", "Not trackable: plain text")
    words = f"Tracking on ({_setting(mailbox)})"
    if plan is None:
        return Preview("on", words)
    choice, decided = plan
    left_out = tuple(d.reason for d in decided if d.pixel == "none")
    details = ((choice.reason,) if choice.policy != "everyone" or left_out else ()) + left_out
    if decided and len(left_out) == len(decided):
        return Preview("off", "Not tracked: no recipient may be tracked", details)
    if choice.policy == "aggregate":
        words = f"Tracking on, counts only ({_setting(mailbox)})"
    return Preview("on", words, details)


@dataclass
class Fields:
    """The form as typed."""

    mailbox_id: int | None = None
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    html: str = ""
    text: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    no_track: bool = False  # "Don't track this message"


# -- reading the form --------------------------------------------------------------------

def _recipients(f: Fields) -> list[str]:
    """The addresses typed so far, for the preview (checked for real when sending)."""
    out = []
    for value in (f.to, f.cc, f.bcc):
        for _, address in getaddresses(_split(value)):
            if address:
                out.append(address)
    return list(dict.fromkeys(out))


def _split(value: str) -> list[str]:
    """Addresses as typed, split at commas (or semicolons) outside quotes and brackets."""
    parts: list[str] = []
    buf: list[str] = []
    quoted, angle = False, 0
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "<>":
            angle = max(0, angle + (1 if ch == "<" else -1))
        if ch in ",;" and not quoted and not angle:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


def _addresses(value: str, name: str) -> list[str]:
    field_name = name.lower()
    if "\r" in value or "\n" in value:
        raise InvalidInput(f"{name}: one line, addresses separated by commas", field=field_name)
    out: list[str] = []
    for typed in _split(value):
        if re.sub(r'"[^"]*"', "", typed).count("@") > 1:
            raise InvalidInput(f"{name}: separate addresses with commas", field=field_name)
        pairs = getaddresses([typed])
        try:
            if len(pairs) != 1:
                raise InvalidInput("more than one address")
            display, addr = pairs[0]
            bare = parse_address(addr, field_name)
        except InvalidInput:
            raise InvalidInput(f"{name}: {typed!r} is not an email address",
                               field=field_name) from None
        local, _, domain = bare.rpartition("@")
        out.append(str(Address(display_name=display, username=local, domain=domain))
                   if display else bare)
    return out


def _encode_kept(att: Attachment) -> str:
    return json.dumps({"name": att.filename, "type": att.content_type,
                       "data": base64.b64encode(att.data).decode("ascii")})


def _decode_kept(value: str) -> Attachment | None:
    try:
        item = json.loads(value)
        return Attachment(str(item["name"]), str(item["type"]),
                          base64.b64decode(item["data"], validate=True))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


async def _uploads(form: FormData) -> list[Attachment]:
    out: list[Attachment] = []
    for value in form.getlist("kept"):
        if isinstance(value, str):
            kept = _decode_kept(value)
            if kept is not None:
                out.append(kept)
    for upload in form.getlist("attachments"):
        if not isinstance(upload, UploadFile) or not upload.filename:
            continue  # the empty file input
        data = await upload.read()
        name = re.sub(r"[\x00-\x1f\x7f]", "", upload.filename.replace("\\", "/")
                      .rsplit("/", 1)[-1])[:200] or "attachment"
        ctype = (upload.content_type or "").split(";")[0].strip().lower()
        if not _TYPE.match(ctype) or ctype.startswith(("multipart/", "message/")):
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        out.append(Attachment(name, ctype, data))
    return out


async def _read(form: FormData) -> Fields:
    def text(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    try:
        mailbox_id: int | None = int(text("mailbox"))
    except ValueError:
        mailbox_id = None
    return Fields(mailbox_id=mailbox_id, to=text("to").strip(), cc=text("cc").strip(),
                  bcc=text("bcc").strip(), subject=text("subject").strip(),
                  html=text("html").replace("\r\n", "\n"),
                  text=text("text").replace("\r\n", "\n"), attachments=await _uploads(form),
                  no_track=bool(text("no_track")))


def _has_html(html: str) -> bool:
    """An editor left empty still holds a <br> or an empty paragraph."""
    return bool(html.strip()) and (
        bool(html_to_text(html).strip()) or "<img" in html.lower())


def _draft(mailbox: MailboxRecord, f: Fields, reply_to: MessageRecord | None) -> Draft:
    to = _addresses(f.to, "To")
    cc = _addresses(f.cc, "Cc")
    bcc = _addresses(f.bcc, "Bcc")
    if not (to or cc or bcc):
        raise InvalidInput("To: add at least one recipient", field="to")
    has_html = _has_html(f.html)
    if not has_html and not f.text.strip():
        raise InvalidInput("Message: write something to send", field="html")
    html = f.html if has_html else None
    text = f.text if f.text.strip() else (html_to_text(html) if html else "")
    draft = Draft(from_addr=mailbox.address, from_name=mailbox.display_name, to=to, cc=cc,
                  bcc=bcc, subject=f.subject, text=text, html=html,
                  attachments=list(f.attachments))
    if reply_to is not None:
        draft.in_reply_to, draft.references = reply_threading(reply_to.message_id,
                                                              reply_to.references)
    return draft


# -- pages -------------------------------------------------------------------------------

def _usable(inst: Instance, user: UserRecord) -> list[MailboxRecord]:
    return inst.mailboxes.visible(user)


def _mailbox(inst: Instance, user: UserRecord, mailbox_id: int | None,
             default: MailboxRecord | None) -> MailboxRecord | None:
    """The mailbox to send from: another mailbox's id is a 404, as if it did not exist."""
    if mailbox_id is None:
        return default
    return inst.mailboxes.get(user, mailbox_id)


def _show(request: Request, f: Fields, mailbox: MailboxRecord | None, *,
          action: str, boxes: list[MailboxRecord], error: InvalidInput | None = None,
          conversation: ConversationRecord | None = None,
          reply_to: MessageRecord | None = None) -> Response:
    inst = instance_of(request)
    decisions = inst.mailboxes.decisions([*boxes, *([mailbox] if mailbox else [])])
    # Until something is typed, the message is to be written in the (HTML) editor.
    has_html = _has_html(f.html) or not f.text.strip()
    previews = {b.id: tracking_preview(decisions[b.id], b, True) for b in boxes}
    recipients = [a for a in _recipients(f) if "@" in a]
    plan = inst.consents.decide(mailbox, recipients) if mailbox and recipients else None
    return render(
        request, "compose.html", 422 if error else 200, fields=f, mailbox=mailbox,
        boxes=boxes, action=action, previews=previews,
        preview=(tracking_preview(decisions[mailbox.id], mailbox, has_html, f.no_track, plan)
                 if mailbox else None),
        error=str(error) if error else None, error_field=error.field if error else None,
        conversation=conversation, reply_to=reply_to, size=human_size,
        kept=[(_encode_kept(a), a) for a in f.attachments])


async def _submit(request: Request, f: Fields, mailbox: MailboxRecord, *, action: str,
                  boxes: list[MailboxRecord], conversation: ConversationRecord | None = None,
                  reply_to: MessageRecord | None = None) -> Response:
    inst = instance_of(request)
    try:
        draft = _draft(mailbox, f, reply_to)
        sent = await run_in_threadpool(
            lambda: inst.sender.send_draft(mailbox, draft, "web", actor=require_user(request),
                                           track=not f.no_track))
    except InvalidInput as exc:
        return _show(request, f, mailbox, action=action, boxes=boxes, error=exc,
                     conversation=conversation, reply_to=reply_to)
    return redirect(request, f"/conversations/{sent.conversation_id}#message-{sent.id}")


async def compose(request: Request) -> Response:
    user = require_user(request)
    inst = instance_of(request)
    boxes = _usable(inst, user)
    if request.method == "GET":
        try:
            wanted = int(request.query_params["mailbox"])
        except (KeyError, ValueError):
            wanted = None
        mailbox = _mailbox(inst, user, wanted, boxes[0] if boxes else None)
        f = Fields(mailbox_id=mailbox.id if mailbox else None,
                   to=request.query_params.get("to", "")[:500])
        return _show(request, f, mailbox, action="/compose", boxes=boxes)
    form = await read_form(request)
    try:
        f = await _read(form)
    finally:
        await form.close()  # the uploads' temporary files; their bytes are in ``f`` now
    mailbox = _mailbox(inst, user, f.mailbox_id, None)
    if mailbox is None:
        return _show(request, f, None, action="/compose", boxes=boxes,
                     error=InvalidInput("From: choose a mailbox to send from", field="mailbox"))
    if form.get("do") == "preview":  # without JavaScript: the tracking preview, refreshed
        return _show(request, f, mailbox, action="/compose", boxes=boxes)
    return await _submit(request, f, mailbox, action="/compose", boxes=boxes)


# -- reply -------------------------------------------------------------------------------

def _reply_target(messages: list[MessageRecord], wanted: int | None) -> MessageRecord | None:
    """The message asked for, else the latest one received, else the latest one."""
    if wanted is not None:
        found = next((m for m in messages if m.id == wanted), None)
        if found is None:
            raise NotFound(f"no message with id {wanted} in this conversation")
        return found
    received = [m for m in messages if m.direction == "in"]
    candidates = received or messages
    return candidates[-1] if candidates else None


def _subject(subject: str) -> str:
    return subject if re.match(r"(?i)^\s*re\s*:", subject) else f"Re: {subject}".strip()


def _quote(inst: Instance, user: UserRecord, message: MessageRecord) -> str:
    """The earlier message, quoted below an empty first paragraph to write in. Its HTML is
    sanitised (it is put into the editor on our page) and keeps its remote images for the
    recipient; our own pixels never come along."""
    shown = displayed_body(inst, user, message)
    when = (message.sent_at or message.created_at).strftime("%a, %d %b %Y at %H:%M UTC")
    who = message.from_addr or "someone"
    bounded = bound_html(shown.html) if shown.html is not None else None
    if bounded is not None and bounded.html is not None:
        inner = sanitize(bounded.html, images=True, is_own_pixel=inst.sender.is_own_pixel,
                         styles=False).html
    else:  # no HTML, or too complex to quote: its text version
        inner = str(linkify(shown.text or "")).replace("\n", "<br>\n")
    head = str(linkify(f"On {when}, {who} wrote:"))
    return f"<p><br></p>\n<p>{head}</p>\n<blockquote type=\"cite\">\n{inner}\n</blockquote>\n"


def reply_addresses(target: MessageRecord, own: str, everyone: bool
                    ) -> tuple[list[str], list[str]]:
    """(To, Cc) of a reply to ``target`` from the mailbox ``own``: its sender (or, for a
    message the team sent, its recipients); with ``everyone``, every other address on it
    too. The mailbox itself is never among them, nor anyone twice."""
    if target.direction == "in":
        to, cc = [target.from_addr], (target.to + target.cc if everyone else [])
    else:
        to, cc = list(target.to), (list(target.cc) if everyone else [])
    seen = {own.lower()}

    def fresh(addresses: list[str]) -> list[str]:
        kept = []
        for a in addresses:
            if a and a.lower() not in seen:
                seen.add(a.lower())
                kept.append(a)
        return kept

    return fresh(to), fresh(cc)


def _reply_fields(inst: Instance, user: UserRecord, conv: ConversationRecord,
                  target: MessageRecord | None, own: str, everyone: bool) -> Fields:
    if target is None:
        return Fields(mailbox_id=conv.mailbox_id, to=conv.other_party,
                      subject=_subject(conv.subject))
    to, cc = reply_addresses(target, own, everyone)
    return Fields(mailbox_id=conv.mailbox_id, to=", ".join(to), cc=", ".join(cc),
                  subject=_subject(target.subject or conv.subject),
                  html=_quote(inst, user, target))


async def reply(request: Request) -> Response:
    user, conv = visible_conversation(request, request.path_params["conversation_id"])
    inst = instance_of(request)
    mailbox = inst.mailboxes.get(user, conv.mailbox_id)
    action = f"/conversations/{conv.id}/reply"
    messages = await run_in_threadpool(inst.messages.in_conversation, user, conv.id)
    if request.method == "GET":
        raw_id = request.query_params.get("message")
        target = _reply_target(messages, int(raw_id) if raw_id and raw_id.isdigit() else None)
        everyone = request.query_params.get("all") == "1"
        f = await run_in_threadpool(_reply_fields, inst, user, conv, target, mailbox.address,
                                    everyone)
        return _show(request, f, mailbox, action=action, boxes=[mailbox], conversation=conv,
                     reply_to=target)
    form = await read_form(request)
    sent_id = form.get("reply_to")
    target = _reply_target(messages, int(sent_id) if isinstance(sent_id, str)
                           and sent_id.isdigit() else None)
    try:
        f = await _read(form)
    finally:
        await form.close()
    f.mailbox_id = mailbox.id  # a reply goes out from the conversation's mailbox
    if form.get("do") == "preview":
        return _show(request, f, mailbox, action=action, boxes=[mailbox], conversation=conv,
                     reply_to=target)
    return await _submit(request, f, mailbox, action=action, boxes=[mailbox],
                         conversation=conv, reply_to=target)


routes = [
    Route("/compose", compose, methods=["GET", "POST"]),
    Route("/conversations/{conversation_id:int}/reply", reply, methods=["GET", "POST"]),
]
