"""The REST API under /api/v1: JSON in and out, Bearer tokens, an OpenAPI document."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..core.compose import Attachment, Draft, parse_address
from ..core.tracking import decide
from ..errors import (
    Conflict,
    InvalidInput,
    MailseenError,
    NotFound,
    StorageFull,
    StorageUnavailable,
)
from ..services.accounts import can_see_mailbox, hash_token
from ..services.instance import Instance
from ..storage import MailboxIn, MailboxRecord, MessageRecord, ViewRecord
from ..storage.records import SECRET_FIELDS, UserRecord
from .apidocs import add_docs
from .limits import BodyTooLarge

__all__ = ["build_api"]

Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


# -- schemas ----------------------------------------------------------------------------

class Problem(BaseModel):
    error: str
    field: str | None = None


class SettingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_enabled: bool = Field(description="Open tracking for mailboxes that use the "
                                               "global setting.")


TrackingMode = Literal["global", "enabled", "disabled"]


class MailboxBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(max_length=320)
    display_name: str = Field("", max_length=200)
    transport: Literal["outbox", "smtp"] = "outbox"
    smtp_host: str | None = Field(None, max_length=255)
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "implicit"] = "starttls"
    smtp_username: str | None = Field(None, max_length=320)
    smtp_password: str | None = Field(None, max_length=1000, description="Write-only.")
    tracking: TrackingMode = "global"
    imap_host: str | None = Field(None, max_length=255, description="Receive by IMAP.")
    imap_port: int | None = Field(None, ge=1, le=65535)
    imap_tls: Literal["none", "starttls", "implicit"] = "implicit"
    imap_username: str | None = Field(None, max_length=320)
    imap_password: str | None = Field(None, max_length=1000, description="Write-only.")
    imap_folder: str = Field("INBOX", min_length=1, max_length=200)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return parse_address(v, "address")


class MailboxPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, max_length=320)
    display_name: str | None = Field(None, max_length=200)
    transport: Literal["outbox", "smtp"] | None = None
    smtp_host: str | None = Field(None, max_length=255)
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "implicit"] | None = None
    smtp_username: str | None = Field(None, max_length=320)
    smtp_password: str | None = Field(None, max_length=1000)
    tracking: TrackingMode | None = None
    imap_host: str | None = Field(None, max_length=255)
    imap_port: int | None = Field(None, ge=1, le=65535)
    imap_tls: Literal["none", "starttls", "implicit"] | None = None
    imap_username: str | None = Field(None, max_length=320)
    imap_password: str | None = Field(None, max_length=1000)
    imap_folder: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else parse_address(v, "address")


class MailboxOut(BaseModel):
    id: int
    address: str
    display_name: str
    transport: str
    smtp_host: str | None
    smtp_port: int | None
    smtp_tls: str
    smtp_username: str | None
    has_smtp_password: bool
    tracking: str
    effective_tracking: bool
    tracking_reason: str
    created_at: datetime
    imap_host: str | None
    imap_port: int | None
    imap_tls: str
    imap_username: str | None
    has_imap_password: bool
    imap_folder: str
    imap_status: str = Field(description='"ok", "error" or "" (never polled).')
    imap_error: str | None
    imap_checked_at: datetime | None


class AttachmentBody(BaseModel):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field("application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")
    data_base64: str

    def decode(self) -> Attachment:
        try:
            data = base64.b64decode(self.data_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("attachments: data_base64 is not valid base64",
                               field="attachments") from exc
        return Attachment(self.filename, self.content_type, data)


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mailbox: str = Field(description="Address of the sending mailbox.")
    to: list[str] = Field(default_factory=list, max_length=500)
    cc: list[str] = Field(default_factory=list, max_length=500)
    bcc: list[str] = Field(default_factory=list, max_length=500)
    subject: str = Field("", max_length=998)
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentBody] = Field(default_factory=list, max_length=100)
    in_reply_to: str | None = Field(None, max_length=998)
    references: str | None = Field(None, max_length=20000)

    @field_validator("mailbox")
    @classmethod
    def _mailbox(cls, v: str) -> str:
        return parse_address(v, "mailbox")


class Tracking(BaseModel):
    tracked: bool
    reason: str


class MessageOut(BaseModel):
    id: int
    mailbox_id: int
    message_id: str
    subject: str
    from_addr: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    tracking: Tracking
    viewed: bool = Field(description="Seen by a person: a human view, or a human reply.")
    first_viewed_at: datetime | None
    last_viewed_at: datetime | None
    view_count: int = Field(description="Views judged human.")
    replied_at: datetime | None
    machine_count: int = Field(description="Fetches judged machine (never count as views).")
    first_machine_at: datetime | None
    last_machine_at: datetime | None
    direction: Literal["out", "in"]
    conversation_id: int | None
    automatic: bool = Field(description="An inbound auto-reply or bounce.")
    auto_reason: str


class ViewOut(BaseModel):
    id: int
    at: datetime
    method: str
    ip: str | None
    user_agent: str | None
    recipient: int
    headers: dict[str, str]
    verdict: Literal["human", "machine"]
    reason: str
    client: str


class MessageDetail(MessageOut):
    views: list[ViewOut]


def _message(m: MessageRecord) -> dict[str, Any]:
    return {
        "id": m.id, "mailbox_id": m.mailbox_id, "message_id": m.message_id,
        "subject": m.subject, "from_addr": m.from_addr, "to": m.to, "cc": m.cc, "bcc": m.bcc,
        "status": m.status, "attempts": m.attempts, "last_error": m.last_error,
        "created_at": m.created_at, "next_attempt_at": m.next_attempt_at, "sent_at": m.sent_at,
        "tracking": {"tracked": m.tracked, "reason": m.tracking_reason},
        "viewed": m.viewed, "first_viewed_at": m.first_viewed_at,
        "last_viewed_at": m.last_viewed_at, "view_count": m.view_count,
        "replied_at": m.replied_at, "machine_count": m.machine_count,
        "first_machine_at": m.first_machine_at, "last_machine_at": m.last_machine_at,
        "direction": m.direction, "conversation_id": m.conversation_id,
        "automatic": m.automatic, "auto_reason": m.auto_reason,
    }


def _view(v: ViewRecord) -> dict[str, Any]:
    return {"id": v.id, "at": v.at, "method": v.method, "ip": v.ip,
            "user_agent": v.user_agent, "recipient": v.recipient, "headers": v.headers,
            "verdict": v.verdict, "reason": v.reason, "client": v.client}


# -- the app -----------------------------------------------------------------------------

def build_api(instance: Instance) -> FastAPI:
    store, sender = instance.store, instance.sender
    api = FastAPI(
        title="mailseen", version="1", openapi_url="/api/v1/openapi.json",
        docs_url=None, redoc_url=None,  # the docs page is served by apidocs (no CDN)
        description="Email open tracking for team mailboxes. Authenticate with "
                    "`Authorization: Bearer <token>` (`mailseen token create`).",
    )

    def problem(status: int, message: str, field: str | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "field": field}, status_code=status)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        msg = str(first.get("msg", "invalid request"))
        ctx = first.get("ctx", {}) or {}
        if isinstance(ctx.get("error"), InvalidInput):
            msg, field = str(ctx["error"]), ctx["error"].field or field
        return problem(422, f"{field}: {msg}" if field and not msg.startswith(field) else msg,
                       field)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes, wrong methods, unparsable bodies: the API's error shape too.
        resp = problem(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            resp.headers[name] = value
        return resp

    @api.exception_handler(MailseenError)
    async def _domain_error(request: Request, exc: MailseenError) -> JSONResponse:
        if isinstance(exc, InvalidInput):
            return problem(422, str(exc), exc.field)
        if isinstance(exc, NotFound):
            return problem(404, str(exc))
        if isinstance(exc, Conflict):
            return problem(409, str(exc))
        if isinstance(exc, StorageFull):
            return problem(503, "the database is full: nothing was changed; try again once "
                                "disk space is freed")
        if isinstance(exc, StorageUnavailable):
            return problem(503, "the database is unavailable; try again shortly")
        return problem(400, str(exc))

    @api.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return problem(413, str(exc.detail), "body")

    @api.exception_handler(_Forbidden)
    async def _forbidden(request: Request, exc: _Forbidden) -> JSONResponse:
        return problem(403, "only admins may do this")

    @api.exception_handler(_Unauthorized)
    async def _unauth(request: Request, exc: _Unauthorized) -> JSONResponse:
        resp = problem(401, "missing or invalid API token")
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    api.state.instance = instance
    add_docs(api, "/api/v1/docs", "/api/v1/openapi.json")

    def visible_mailbox(who: Principal, mailbox_id: int) -> MailboxRecord:
        instance.accounts.require_mailbox(who.user, mailbox_id)
        return store.get_mailbox(mailbox_id)

    def visible_message(who: Principal, message_id: int) -> MessageRecord:
        m = store.get_message(message_id)
        if not can_see_mailbox(who.user, m.mailbox_id):
            raise NotFound(f"no message with id {message_id}")
        return m

    def mailbox_out(box: MailboxRecord, global_tracking: bool | None = None
                    ) -> dict[str, Any]:
        if global_tracking is None:
            global_tracking = sender.global_tracking()
        decision = decide(global_tracking, box.tracking)
        return {**box.__dict__, "effective_tracking": decision.enabled,
                "tracking_reason": decision.reason}

    @api.get("/api/v1/health", include_in_schema=True)
    def health() -> dict[str, Any]:
        return {"ok": True, "queue": store.pending_counts()}

    @api.get("/api/v1/settings", response_model=SettingsBody)
    def get_settings(who: Who) -> dict[str, Any]:
        return {"tracking_enabled": sender.global_tracking()}

    @api.put("/api/v1/settings", dependencies=Admin, response_model=SettingsBody,
             responses={403: {"model": Problem}})
    def put_settings(body: SettingsBody) -> dict[str, Any]:
        sender.set_global_tracking(body.tracking_enabled)
        return {"tracking_enabled": sender.global_tracking()}

    @api.get("/api/v1/mailboxes", response_model=list[MailboxOut])
    def list_mailboxes(who: Who) -> list[dict[str, Any]]:
        tracking = sender.global_tracking()  # once, not once per mailbox
        return [mailbox_out(b, tracking) for b in store.list_mailboxes()
                if can_see_mailbox(who.user, b.id)]

    @api.post("/api/v1/mailboxes", dependencies=Admin, response_model=MailboxOut,
              status_code=201, responses={403: {"model": Problem}, 409: {"model": Problem},
                                          422: {"model": Problem}})
    def add_mailbox(body: MailboxBody) -> dict[str, Any]:
        _check_smtp(body.transport, body.smtp_host)
        return mailbox_out(store.add_mailbox(MailboxIn(**body.model_dump())))

    @api.get("/api/v1/mailboxes/{mailbox_id}", response_model=MailboxOut,
             responses={404: {"model": Problem}})
    def get_mailbox(mailbox_id: Id, who: Who) -> dict[str, Any]:
        return mailbox_out(visible_mailbox(who, mailbox_id))

    @api.patch("/api/v1/mailboxes/{mailbox_id}", dependencies=Admin, response_model=MailboxOut,
               responses={403: {"model": Problem}, 404: {"model": Problem},
                          409: {"model": Problem}})
    def patch_mailbox(mailbox_id: Id, body: MailboxPatch) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        for key, value in list(changes.items()):
            if value is None and key in SECRET_FIELDS:
                changes[key] = ""  # an explicit null removes a stored password
            elif value is None and key in _REQUIRED_ON_PATCH:
                raise InvalidInput(f"{key}: may not be null", field=key)

        def change(current: MailboxIn) -> MailboxIn:
            new = replace(current, **changes)
            _check_smtp(new.transport, new.smtp_host)
            return new

        return mailbox_out(store.update_mailbox(mailbox_id, change))

    @api.post("/api/v1/messages", response_model=MessageOut,
              status_code=202, responses={404: {"model": Problem}, 422: {"model": Problem}})
    def send_message(body: MessageBody, who: Who) -> dict[str, Any]:
        box = _find_mailbox(who, body.mailbox)
        draft = Draft(from_addr=box.address, from_name=box.display_name, to=body.to,
                      cc=body.cc, bcc=body.bcc, subject=body.subject, text=body.text,
                      html=body.html, attachments=[a.decode() for a in body.attachments],
                      in_reply_to=body.in_reply_to, references=body.references)
        return _message(sender.send_draft(box, draft))

    @api.post("/api/v1/messages/raw", response_model=MessageOut,
              status_code=202, responses={404: {"model": Problem}, 413: {"model": Problem},
                                          422: {"model": Problem}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "message/rfc822": {"schema": {"type": "string", "format": "binary"}}}}})
    async def send_raw(request: Request, who: Who,
                       mailbox: Annotated[str, Query(description="Sending mailbox address.")],
                       to: Annotated[list[str] | None, Query(
                           description="Envelope recipients; default: To, Cc and Bcc.")] = None,
                       ) -> Any:
        chunks: list[bytes] = []
        try:
            # MailseenApp's receive refuses a body over MAX_API_BODY (web/limits.py).
            async for chunk in request.stream():
                chunks.append(chunk)
        except ClientDisconnect:
            return problem(400, "the client went away before sending the whole message",
                           "body")
        raw = b"".join(chunks)
        envelope = [parse_address(a, "to") for a in to] if to else None
        parse_address(mailbox, "mailbox")
        box = await run_in_threadpool(_find_mailbox, who, mailbox)
        record = await run_in_threadpool(
            lambda: sender.submit(box, raw, envelope_to=envelope))
        return _message(record)

    @api.get("/api/v1/messages", response_model=list[MessageOut])
    def list_messages(
        who: Who,
        mailbox_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        status: Annotated[Literal["queued", "sending", "sent", "failed", "received"] | None,
                          Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1,
                                            description="Only messages with a smaller id.")
                          ] = None,
    ) -> list[dict[str, Any]]:
        if mailbox_id is not None:
            visible_mailbox(who, mailbox_id)
        allowed = None if who.user is None or who.user.is_admin else who.user.mailbox_ids
        return [_message(m) for m in store.list_messages(
            mailbox_id=mailbox_id, status=status, limit=limit, before_id=before,
            mailbox_ids=allowed)]

    @api.get("/api/v1/messages/{message_id}", response_model=MessageDetail,
             responses={404: {"model": Problem}})
    def get_message(message_id: Id, who: Who) -> dict[str, Any]:
        m = visible_message(who, message_id)
        return {**_message(m), "views": [_view(v) for v in store.list_views(m.id)]}

    @api.get("/api/v1/messages/{message_id}/views",
             response_model=list[ViewOut], responses={404: {"model": Problem}})
    def get_views(message_id: Id, who: Who) -> list[dict[str, Any]]:
        visible_message(who, message_id)
        return [_view(v) for v in store.list_views(message_id)]

    def _find_mailbox(who: Principal, ref: str) -> MailboxRecord:
        try:
            box = store.find_mailbox(ref)
            instance.accounts.require_mailbox(who.user, box.id)
            return box
        except NotFound as exc:
            raise InvalidInput(f"mailbox: no mailbox {ref}", field="mailbox") from exc

    return api


class _Unauthorized(Exception):
    pass


class _Forbidden(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    user: UserRecord | None  # None: an installation-wide token (mailseen token create)

    @property
    def is_admin(self) -> bool:
        return self.user is None or self.user.is_admin


_REQUIRED_ON_PATCH = {"address", "display_name", "transport", "smtp_tls", "tracking",
                      "imap_tls", "imap_folder"}


def principal(request: Request) -> Principal:
    """Who the Bearer token speaks for: a user, or (None) the whole installation."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Unauthorized()
    instance: Instance = request.app.state.instance
    valid, user = instance.store.token_user(hash_token(token.strip()))
    if not valid:
        raise _Unauthorized()
    return Principal(user)


Who = Annotated[Principal, Depends(principal)]


def _admin(who: Who) -> None:
    if not who.is_admin:
        raise _Forbidden()


Admin = [Depends(_admin)]


def _check_smtp(transport: str, host: str | None) -> None:
    if transport == "smtp" and not host:
        raise InvalidInput("smtp_host: needed when transport is smtp", field="smtp_host")
