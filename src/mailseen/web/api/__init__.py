"""The REST API under /api/v1: JSON in and out, Bearer tokens, an OpenAPI document.

Every error is a JSON body ``{"error": ..., "field": ...}`` naming the field where one is to
blame: mailseen's own errors are mapped here once, whichever service raised them."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import (
    Conflict,
    InvalidInput,
    MailseenError,
    NotFound,
    StorageFull,
    StorageUnavailable,
)
from ...services.instance import Instance
from ...services.mailboxes import Forbidden
from ..limits import BodyTooLarge
from .docs import add_docs
from .routes import Unauthorized, router

__all__ = ["build_api"]


def problem(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(loc) or None
    msg = str(first.get("msg", "invalid request"))
    ctx = first.get("ctx", {}) or {}
    if isinstance(ctx.get("error"), InvalidInput):
        msg, field = str(ctx["error"]), ctx["error"].field or field
    return problem(422, f"{field}: {msg}" if field and not msg.startswith(field) else msg, field)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Unknown routes, wrong methods, unparsable bodies: the API's error shape too.
    assert isinstance(exc, StarletteHTTPException)
    resp = problem(exc.status_code, str(exc.detail))
    for name, value in (exc.headers or {}).items():
        resp.headers[name] = value
    return resp


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidInput):
        return problem(422, str(exc), exc.field)
    if isinstance(exc, Forbidden):
        return problem(403, "only admins may do this")
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


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyTooLarge)
    return problem(413, str(exc.detail), "body")


async def _unauthorized(request: Request, exc: Exception) -> JSONResponse:
    resp = problem(401, "missing or invalid API token")
    resp.headers["WWW-Authenticate"] = "Bearer"
    return resp


def build_api(instance: Instance) -> FastAPI:
    api = FastAPI(
        title="mailseen", version="1", openapi_url="/api/v1/openapi.json",
        docs_url=None, redoc_url=None,  # the docs page is served by .docs (no CDN)
        description="Email open tracking for team mailboxes. Authenticate with "
                    "`Authorization: Bearer <token>` (`mailseen token create`).",
    )
    api.add_exception_handler(RequestValidationError, _invalid)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(MailseenError, _domain_error)
    api.add_exception_handler(BodyTooLarge, _too_large)
    api.add_exception_handler(Unauthorized, _unauthorized)
    api.state.instance = instance
    add_docs(api, "/api/v1/docs", "/api/v1/openapi.json")
    api.include_router(router)
    return api
