"""The API's routes: each unpacks its request, calls a service, and shapes the answer.

Who may see or change what is the services' business; a route only says who is asking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ...core.compose import Draft, parse_address
from ...core.reach import public_url_reach
from ...errors import InvalidInput
from ...records import SECRET_FIELDS, MailboxIn, MailboxRecord, Status, UserRecord
from ...services.instance import Instance
from ...services.mailboxes import require_admin
from ...services.reminders import RemindChoice, parse_deadline
from .schemas import (
    ConnectionTestBody,
    ConnectionTestOut,
    ConsentBody,
    ConsentOut,
    DeliveryChange,
    DoNotTrackBody,
    DoNotTrackOut,
    EraseBody,
    ErasureOut,
    Id,
    ImportOut,
    MailboxBody,
    MailboxOut,
    MailboxPatch,
    MessageBody,
    MessageDetail,
    MessageOut,
    NotifyBody,
    PrivacySettingsBody,
    PrivacySettingsOut,
    Problem,
    SettingChangeOut,
    SettingsBody,
    SettingsOut,
    ViewOut,
    WebhookBody,
    WebhookDeliveryOut,
    WebhookOut,
    click_out,
    message_out,
    recipient_out,
    view_out,
)

__all__ = ["Unauthorized", "router"]

router = APIRouter(prefix="/api/v1")


class Unauthorized(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    user: UserRecord | None  # None: an installation-wide token (mailseen token create)


def _instance(request: Request) -> Instance:
    instance: Instance = request.app.state.instance
    return instance


def _principal(request: Request) -> Principal:
    """Who the Bearer token speaks for: a user, or (None) the whole installation."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    valid, user = _instance(request).accounts.token_user(token.strip())
    if not valid:
        raise Unauthorized()
    return Principal(user)


def _admin(who: Annotated[Principal, Depends(_principal)]) -> None:
    # Checked before the body is read, so a member learns nothing from validation errors.
    require_admin(who.user)


Inst = Annotated[Instance, Depends(_instance)]
Who = Annotated[Principal, Depends(_principal)]
Admin = [Depends(_admin)]
_ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: {"model": Problem}}


def _mailbox_out(inst: Instance, box: MailboxRecord, global_on: bool | None = None
                 ) -> dict[str, Any]:
    decision = inst.mailboxes.decision(box, global_on)
    return {**box.__dict__, "effective_tracking": decision.enabled,
            "tracking_reason": decision.reason,
            "effective_click_tracking": inst.mailboxes.click_decision(box).enabled,
            "effective_policy": inst.consents.policy_for(box).policy}


@router.get("/health", include_in_schema=True)
def health(inst: Inst) -> dict[str, Any]:
    return {"ok": True, "queue": inst.messages.pending_counts()}


def _settings_out(inst: Instance) -> dict[str, Any]:
    reach = public_url_reach(inst.settings.base_url)
    return {"tracking_enabled": inst.mailboxes.global_tracking(),
            "click_tracking_enabled": inst.mailboxes.global_clicks(),
            "tracking_policy": inst.consents.global_policy(), "public_url": reach.url,
            "public_url_reach": reach.level, "public_url_problem": reach.message}


@router.get("/settings", response_model=SettingsOut)
def get_settings(inst: Inst, who: Who) -> dict[str, Any]:
    return _settings_out(inst)


@router.put("/settings", response_model=SettingsOut, dependencies=Admin, responses=_ADMIN_ONLY)
def put_settings(inst: Inst, who: Who, body: SettingsBody) -> dict[str, Any]:
    inst.mailboxes.set_global_tracking(who.user, body.tracking_enabled)
    if body.tracking_policy is not None:
        inst.consents.set_global_policy(who.user, body.tracking_policy)
    if body.click_tracking_enabled is not None:
        inst.mailboxes.set_global_clicks(who.user, body.click_tracking_enabled)
    return _settings_out(inst)


def _privacy_out(inst: Instance) -> dict[str, Any]:
    details, retention = inst.privacy.view_details(), inst.privacy.retention()
    run = retention.last_run
    return {"ip": details.ip, "user_agent": details.user_agent,
            "retention_days": retention.days,
            "last_purge": None if run is None else run.__dict__}


@router.get("/settings/privacy", response_model=PrivacySettingsOut)
def get_privacy_settings(inst: Inst, who: Who) -> dict[str, Any]:
    return _privacy_out(inst)


@router.put("/settings/privacy", response_model=PrivacySettingsOut, dependencies=Admin,
            responses={**_ADMIN_ONLY, 422: {"model": Problem}})
def put_privacy_settings(inst: Inst, who: Who, body: PrivacySettingsBody) -> dict[str, Any]:
    """Change what is stored of each view and how long its personal details are kept;
    fields left out stay as they are."""
    given = body.model_fields_set
    if "retention_days" in given:  # checked first: a refusal changes nothing
        inst.privacy.set_retention(who.user, body.retention_days)
    if body.ip is not None or body.user_agent is not None:
        inst.privacy.set_view_details(who.user, ip=body.ip, user_agent=body.user_agent)
    return _privacy_out(inst)


@router.get("/privacy/export", dependencies=Admin,
            responses={**_ADMIN_ONLY, 422: {"model": Problem}})
def privacy_export(inst: Inst, who: Who,
                   address: Annotated[str, Query(max_length=320,
                                                 description="The person's address.")]
                   ) -> dict[str, Any]:
    """Everything stored about one person (admins): the messages sent to them and received
    from them, the copies sent to them and their pixels' views, as stored."""
    return inst.privacy.export(who.user, address)


@router.post("/privacy/erase", response_model=ErasureOut, dependencies=Admin,
             responses={**_ADMIN_ONLY, 422: {"model": Problem}})
def privacy_erase(inst: Inst, who: Who, body: EraseBody) -> dict[str, Any]:
    """Erase one person's personal data (admins): the views of the copies sent to them,
    and their address on those copies. Says what was removed and what was kept."""
    return inst.privacy.erase(who.user, body.address).__dict__


@router.get("/mailboxes", response_model=list[MailboxOut])
def list_mailboxes(inst: Inst, who: Who) -> list[dict[str, Any]]:
    on = inst.mailboxes.global_tracking()  # once, not once per mailbox
    return [_mailbox_out(inst, b, on) for b in inst.mailboxes.visible(who.user)]


@router.post("/mailboxes", response_model=MailboxOut, dependencies=Admin, status_code=201,
             responses={**_ADMIN_ONLY, 409: {"model": Problem}, 422: {"model": Problem}})
def add_mailbox(inst: Inst, who: Who, body: MailboxBody) -> dict[str, Any]:
    return _mailbox_out(inst, inst.mailboxes.add(who.user, MailboxIn(**body.model_dump())))


@router.get("/mailboxes/{mailbox_id}", response_model=MailboxOut,
            responses={404: {"model": Problem}})
def get_mailbox(inst: Inst, who: Who, mailbox_id: Id) -> dict[str, Any]:
    return _mailbox_out(inst, inst.mailboxes.get(who.user, mailbox_id))


@router.patch("/mailboxes/{mailbox_id}", response_model=MailboxOut, dependencies=Admin,
              responses={**_ADMIN_ONLY, 404: {"model": Problem}, 409: {"model": Problem}})
def patch_mailbox(inst: Inst, who: Who, mailbox_id: Id, body: MailboxPatch) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    for key in SECRET_FIELDS:
        if key in changes and changes[key] is None:
            changes[key] = ""  # in the API an explicit null removes a stored password
    return _mailbox_out(inst, inst.mailboxes.update(who.user, mailbox_id, changes))


@router.post("/mailboxes/{mailbox_id}/test", response_model=ConnectionTestOut,
             dependencies=Admin, responses={**_ADMIN_ONLY, 404: {"model": Problem},
                                            422: {"model": Problem}})
async def test_mailbox(inst: Inst, who: Who, mailbox_id: Id, body: ConnectionTestBody
                       ) -> dict[str, Any]:
    """Test the mailbox's saved SMTP relay or IMAP account: connect, TLS, log in (and, for
    IMAP, open the folder). Nothing is sent or read. A failed test is still a 200: ``ok``
    and ``message`` say what failed."""
    box = await run_in_threadpool(inst.mailboxes.get, who.user, mailbox_id)
    test = inst.mailboxes.test_smtp if body.what == "smtp" else inst.mailboxes.test_imap
    return (await test(who.user, box)).__dict__


@router.post("/messages", response_model=MessageOut, status_code=202,
             responses={404: {"model": Problem}, 422: {"model": Problem}})
def send_message(inst: Inst, who: Who, body: MessageBody) -> dict[str, Any]:
    box = inst.mailboxes.find(who.user, body.mailbox)
    draft = Draft(from_addr=box.address, from_name=box.display_name, to=body.to, cc=body.cc,
                  bcc=body.bcc, subject=body.subject, text=body.text, html=body.html,
                  attachments=[a.decode() for a in body.attachments],
                  in_reply_to=body.in_reply_to, references=body.references)
    remind = RemindChoice(body.remind_not_viewed, body.remind_not_replied)
    return message_out(inst.sender.send_draft(box, draft, actor=who.user, track=body.track,
                                              remind=remind))


@router.post("/messages/raw", response_model=MessageOut, status_code=202,
             responses={404: {"model": Problem}, 413: {"model": Problem},
                        422: {"model": Problem}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "message/rfc822": {"schema": {"type": "string", "format": "binary"}}}}})
async def send_raw(request: Request, inst: Inst, who: Who,
                   mailbox: Annotated[str, Query(description="Sending mailbox address.")],
                   to: Annotated[list[str] | None, Query(
                       description="Envelope recipients; default: To, Cc and Bcc.")] = None,
                   track: Annotated[bool, Query(
                       description="false turns tracking off for this message.")] = True,
                   remind_not_viewed: Annotated[str | None, Query(
                       max_length=10, description="Days, a date (YYYY-MM-DD) or never: "
                       "remind the sender if no person viewed it by then.")] = None,
                   remind_not_replied: Annotated[str | None, Query(
                       max_length=10, description="The same for a reply.")] = None,
                   ) -> Any:
    chunks: list[bytes] = []
    try:
        # MailseenApp's receive refuses a body over MAX_API_BODY (web/limits.py).
        async for chunk in request.stream():
            chunks.append(chunk)
    except ClientDisconnect:
        return JSONResponse({"error": "the client went away before sending the whole message",
                             "field": "body"}, status_code=400)
    raw = b"".join(chunks)
    remind = RemindChoice(
        parse_deadline(remind_not_viewed or "", "remind_not_viewed"),
        parse_deadline(remind_not_replied or "", "remind_not_replied"))
    envelope = [parse_address(a, "to") for a in to] if to else None
    parse_address(mailbox, "mailbox")
    box = await run_in_threadpool(inst.mailboxes.find, who.user, mailbox)
    record = await run_in_threadpool(lambda: inst.sender.submit(
        box, raw, envelope_to=envelope, actor=who.user, track=track, remind=remind))
    return message_out(record)


@router.get("/messages", response_model=list[MessageOut])
def list_messages(
    inst: Inst, who: Who,
    mailbox_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    status: Annotated[Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1,
                                        description="Only messages with a smaller id.")] = None,
) -> list[dict[str, Any]]:
    return [message_out(m) for m in inst.messages.newest(
        who.user, mailbox_id=mailbox_id, status=status, limit=limit, before=before)]


@router.get("/messages/{message_id}", response_model=MessageDetail,
            responses={404: {"model": Problem}})
def get_message(inst: Inst, who: Who, message_id: Id) -> dict[str, Any]:
    m = inst.messages.get(who.user, message_id)
    copies = inst.messages.copies(who.user, m)
    whose = {c.id: c.recipient for c in copies}
    clicks = inst.messages.clicks(who.user, m)
    return {**message_out(m), "recipients": [recipient_out(c, clicks) for c in copies],
            "views": [view_out(v, whose) for v in inst.messages.views(who.user, m)],
            "clicks": [click_out(k) for k in clicks],
            "reminders": [r.__dict__ for r in inst.reminders.of([m.id])[m.id]]}


@router.get("/messages/{message_id}/views", response_model=list[ViewOut],
            responses={404: {"model": Problem}})
def get_views(inst: Inst, who: Who, message_id: Id) -> list[dict[str, Any]]:
    m = inst.messages.get(who.user, message_id)
    whose = {c.id: c.recipient for c in inst.messages.copies(who.user, m)}
    return [view_out(v, whose) for v in inst.messages.views(who.user, m)]


@router.post("/messages/{message_id}/retry", response_model=DeliveryChange,
             responses={403: {"model": Problem}, 404: {"model": Problem}})
def retry_message(inst: Inst, who: Who, message_id: Id) -> dict[str, int]:
    """Try the copies that wait or failed again now (admins)."""
    return {"changed": inst.messages.retry(who.user, message_id)}


@router.post("/messages/{message_id}/cancel", response_model=DeliveryChange,
             responses={403: {"model": Problem}, 404: {"model": Problem}})
def cancel_message(inst: Inst, who: Who, message_id: Id) -> dict[str, int]:
    """Withdraw the copies that wait or failed (admins): they will not be sent."""
    return {"changed": inst.messages.cancel(who.user, message_id)}


# -- privacy: consents, the do-not-track list, the settings audit log ----------------------

@router.get("/consents", response_model=ConsentOut, responses={422: {"model": Problem}})
def get_consent(inst: Inst, who: Who, address: Annotated[str, Query(max_length=320)]
                ) -> dict[str, Any]:
    """A recipient's consent to tracking and its history."""
    state, history = inst.consents.consent_of(address)
    return {"address": address, "state": state, "history": [e.__dict__ for e in history]}


@router.post("/consents", response_model=ConsentOut, status_code=201,
             responses={422: {"model": Problem}})
def post_consent(inst: Inst, who: Who, body: ConsentBody) -> dict[str, Any]:
    """Record what a recipient said (granted, refused, or back to unknown)."""
    inst.consents.set_consent(who.user, body.address, body.state, "api", body.note)
    return get_consent(inst, who, body.address)


@router.post("/consents/import", response_model=ImportOut, dependencies=Admin,
             responses={**_ADMIN_ONLY, 422: {"model": Problem}},
             openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {
                 "type": "string"}}}, "required": True}})
async def import_consents(request: Request, inst: Inst, who: Who) -> Any:
    """Consents from CSV (address,state[,note] per line, optional header): every line is
    checked first, and one bad line imports nothing."""
    chunks: list[bytes] = []
    try:
        # MailseenApp's receive refuses a body over MAX_API_BODY (web/limits.py).
        async for chunk in request.stream():
            chunks.append(chunk)
    except ClientDisconnect:
        return JSONResponse({"error": "the client went away before sending the whole file",
                             "field": "file"}, status_code=400)
    body = b"".join(chunks)
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("file: not UTF-8 text", field="file") from exc
    count = await run_in_threadpool(inst.consents.import_csv, who.user, text, "csv")
    return {"imported": count}


@router.get("/do-not-track", response_model=list[DoNotTrackOut])
def list_do_not_track(inst: Inst, who: Who) -> list[dict[str, Any]]:
    return [r.__dict__ for r in inst.consents.do_not_track()]


@router.post("/do-not-track", response_model=DoNotTrackOut, dependencies=Admin,
             status_code=201, responses={**_ADMIN_ONLY, 409: {"model": Problem},
                                         422: {"model": Problem}})
def add_do_not_track(inst: Inst, who: Who, body: DoNotTrackBody) -> dict[str, Any]:
    return inst.consents.add_do_not_track(who.user, body.entry).__dict__


@router.delete("/do-not-track", response_model=DoNotTrackOut, dependencies=Admin,
               responses={**_ADMIN_ONLY, 404: {"model": Problem}, 422: {"model": Problem}})
def remove_do_not_track(inst: Inst, who: Who, entry: Annotated[str, Query(max_length=320)]
                        ) -> dict[str, Any]:
    return inst.consents.remove_do_not_track(who.user, entry).__dict__


@router.get("/audit", response_model=list[SettingChangeOut], dependencies=Admin,
            responses=_ADMIN_ONLY)
def audit_log(inst: Inst, who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
              offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> list[dict[str, Any]]:
    """Changes to tracking and privacy settings, newest first."""
    return [e.__dict__ for e in inst.consents.audit_log(who.user, limit, offset)]


# -- notices to the signed-in user ---------------------------------------------------------

@router.put("/notifications", response_model=NotifyBody, responses={422: {"model": Problem}})
def put_notifications(inst: Inst, who: Who, body: NotifyBody) -> dict[str, Any]:
    """What the token's user is told of the messages they send: off, an e-mail at each
    first view (immediately), or a daily digest."""
    if who.user is None:
        raise InvalidInput("notify: an installation-wide token has no user to tell",
                           field="notify")
    inst.reminders.set_notify(who.user, body.notify)
    return {"notify": body.notify}


# -- webhooks (admins) ---------------------------------------------------------------------

_HOOK_ERRORS: dict[int | str, dict[str, Any]] = {**_ADMIN_ONLY, 404: {"model": Problem},
                                                 422: {"model": Problem}}


@router.get("/webhooks", response_model=list[WebhookOut], dependencies=Admin,
            responses=_ADMIN_ONLY)
def list_webhooks(inst: Inst, who: Who) -> list[dict[str, Any]]:
    return [h.__dict__ for h in inst.webhooks.all(who.user)]


@router.post("/webhooks", response_model=WebhookOut, status_code=201, dependencies=Admin,
             responses=_HOOK_ERRORS)
def add_webhook(inst: Inst, who: Who, body: WebhookBody) -> dict[str, Any]:
    """Register an endpoint; events are signed with its ``secret`` (Standard Webhooks)."""
    return inst.webhooks.register(who.user, body.record()).__dict__


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, dependencies=Admin,
            responses=_HOOK_ERRORS)
def get_webhook(inst: Inst, who: Who, webhook_id: Id) -> dict[str, Any]:
    return inst.webhooks.get(who.user, webhook_id).__dict__


@router.put("/webhooks/{webhook_id}", response_model=WebhookOut, dependencies=Admin,
            responses=_HOOK_ERRORS)
def put_webhook(inst: Inst, who: Who, webhook_id: Id, body: WebhookBody) -> dict[str, Any]:
    return inst.webhooks.update(who.user, webhook_id, body.record()).__dict__


@router.delete("/webhooks/{webhook_id}", status_code=204, dependencies=Admin,
               responses=_HOOK_ERRORS)
def delete_webhook(inst: Inst, who: Who, webhook_id: Id) -> Response:
    inst.webhooks.delete(who.user, webhook_id)
    return Response(status_code=204)


@router.post("/webhooks/{webhook_id}/enable", response_model=WebhookOut, dependencies=Admin,
             responses=_HOOK_ERRORS)
def enable_webhook(inst: Inst, who: Who, webhook_id: Id) -> dict[str, Any]:
    """Enable an endpoint again: the events waiting for it are due at once."""
    return inst.webhooks.set_enabled(who.user, webhook_id, True).__dict__


@router.post("/webhooks/{webhook_id}/disable", response_model=WebhookOut, dependencies=Admin,
             responses=_HOOK_ERRORS)
def disable_webhook(inst: Inst, who: Who, webhook_id: Id) -> dict[str, Any]:
    return inst.webhooks.set_enabled(who.user, webhook_id, False).__dict__


@router.post("/webhooks/{webhook_id}/secret", response_model=WebhookOut, dependencies=Admin,
             responses=_HOOK_ERRORS)
def rotate_webhook_secret(inst: Inst, who: Who, webhook_id: Id) -> dict[str, Any]:
    """A new signing secret; the old one signs nothing from now on."""
    return inst.webhooks.rotate_secret(who.user, webhook_id).__dict__


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[WebhookDeliveryOut],
            dependencies=Admin, responses=_HOOK_ERRORS)
def webhook_deliveries(inst: Inst, who: Who, webhook_id: Id,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                       offset: Annotated[int, Query(ge=0, le=10**9)] = 0
                       ) -> list[dict[str, Any]]:
    """The endpoint's delivery log, newest first."""
    return [d.__dict__ for d in inst.webhooks.log(who.user, webhook_id, limit, offset)]


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/resend",
             response_model=WebhookDeliveryOut, dependencies=Admin, responses=_HOOK_ERRORS)
def resend_webhook(inst: Inst, who: Who, webhook_id: Id, delivery_id: Id) -> dict[str, Any]:
    """Send an event again, with the same webhook-id and body."""
    return inst.webhooks.resend(who.user, webhook_id, delivery_id).__dict__
