"""The "Webhooks" settings pages (admins): endpoints, each with its secret, its health and
its delivery log, where an event can be sent again."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import InvalidInput, NotFound
from ...records import WEBHOOK_EVENTS, WebhookEvent, WebhookFormat, WebhookIn
from .ui import all_mailboxes, instance_of, read_form, redirect, render, require_admin
from .ui_settings import Form

FORMATS = {"standard": "Standard Webhooks: signed JSON for your own receiver",
           "slack": "Slack incoming webhook: one line per event",
           "teams": "Microsoft Teams incoming webhook: one line per event"}
EVENT_HINTS = {
    "message.delivered": "the recipient's server accepted a copy",
    "message.failed": "a copy could not be delivered",
    "message.bounced": "a delivery report said a copy bounced",
    "message.viewed": "a person viewed a copy (never a machine fetch)",
    "message.clicked": "a person followed a tracked link",
    "message.replied": "a person replied (not an auto-reply)",
    "message.not_viewed": "a reminder's deadline passed without a view",
    "message.not_replied": "a reminder's deadline passed without a reply",
}
NOTICES = {"saved": "Saved.", "created": "Webhook added. Its signing secret is below.",
           "enabled": "Enabled: what waited for it is being sent.", "disabled": "Disabled.",
           "resent": "Queued to be sent again.", "secret": "New secret made.",
           "deleted": "Webhook removed."}


def _mailbox_options(request: Request) -> dict[str, str]:
    return {"": "Every mailbox", **{str(b.id): b.address for b in all_mailboxes(request)}}


def _read(form: Form, options: dict[str, str]) -> WebhookIn:
    url = form.text("url", "Address", required=True, max_len=2000)
    if url and not url.lower().startswith(("http://", "https://")):
        form.fail("url", "Address: an http:// or https:// address, like "
                         "https://example.com/hooks/mailseen.")
    events = [e for e in form.data.getlist("events") if isinstance(e, str)]
    form.values["events"] = " ".join(events)
    if not events:
        form.fail("events", "Events: tick at least one.")
    elif any(e not in WEBHOOK_EVENTS for e in events):
        form.fail("events", "Events: choose from the list.")
    fmt = form.raw("format") or "standard"
    form.values["format"] = fmt
    if fmt not in FORMATS:
        form.fail("format", "Format: choose one of the list.")
    box = form.raw("mailbox_id")
    form.values["mailbox_id"] = box
    if box not in options:
        form.fail("mailbox_id", "Mailbox: choose one of the list.")
    every = form.raw("every_view") == "1"
    form.values["every_view"] = "1" if every else ""
    description = form.text("description", "Description")
    return WebhookIn(url, cast(tuple[WebhookEvent, ...], tuple(events)),
                     int(box) if box.isdigit() else None, cast(WebhookFormat, fmt), every,
                     description)


async def webhooks_page(request: Request) -> Response:
    me = require_admin(request)
    hooks = instance_of(request).webhooks
    options = _mailbox_options(request)
    values: dict[str, str] = {"format": "standard", "mailbox_id": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = Form(await read_form(request))
        hook = _read(form, options)
        values, errors = form.values, form.errors
        if not errors:
            try:
                made = hooks.register(me, hook)
            except InvalidInput as exc:
                errors = {exc.field or "url": str(exc)}
            else:
                return redirect(request, f"/settings/webhooks/{made.id}?done=created")
    return render(request, "settings_webhooks.html", 422 if errors else 200,
                  hooks=hooks.all(me), boxes=options, values=values, errors=errors,
                  events=EVENT_HINTS, formats=FORMATS,
                  notice=NOTICES.get(request.query_params.get("done", "")))


def _id(request: Request, name: str = "webhook_id") -> int:
    value = request.path_params[name]
    if not value.isdigit() or len(value) > 18:
        raise NotFound("no such webhook")
    return int(value)


async def webhook_page(request: Request) -> Response:
    me = require_admin(request)
    hooks = instance_of(request).webhooks
    hook = hooks.get(me, _id(request))
    return render(request, "settings_webhook.html", hook=hook, log=hooks.log(me, hook.id),
                  boxes=_mailbox_options(request), formats=FORMATS,
                  notice=NOTICES.get(request.query_params.get("done", "")))


async def webhook_action(request: Request) -> Response:
    me = require_admin(request)
    hooks = instance_of(request).webhooks
    await read_form(request)
    hook_id, action = _id(request), request.path_params["action"]
    if action == "enable":
        hooks.set_enabled(me, hook_id, True)
    elif action == "disable":
        hooks.set_enabled(me, hook_id, False)
    elif action == "secret":
        hooks.rotate_secret(me, hook_id)
    elif action == "delete":
        hooks.delete(me, hook_id)
        return redirect(request, "/settings/webhooks?done=deleted")
    else:
        raise NotFound("no such action")
    done = {"enable": "enabled", "disable": "disabled"}.get(action, action)
    return redirect(request, f"/settings/webhooks/{hook_id}?done={done}")


async def resend(request: Request) -> Response:
    me = require_admin(request)
    await read_form(request)
    hook_id = _id(request)
    instance_of(request).webhooks.resend(me, hook_id, _id(request, "delivery_id"))
    return redirect(request, f"/settings/webhooks/{hook_id}?done=resent")


routes = [
    Route("/settings/webhooks", webhooks_page, methods=["GET", "POST"]),
    Route("/settings/webhooks/{webhook_id}", webhook_page),
    Route("/settings/webhooks/{webhook_id}/{action}", webhook_action, methods=["POST"]),
    Route("/settings/webhooks/{webhook_id}/deliveries/{delivery_id}/resend", resend,
          methods=["POST"]),
]
