"""The web app: pages for the team, each module contributing its routes."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ...errors import InvalidInput, MailseenError, NotFound, StorageFull, StorageUnavailable
from ...services.instance import Instance
from ...services.mailboxes import Forbidden
from ..limits import BodyTooLarge
from . import (
    ui_account,
    ui_auth,
    ui_compose,
    ui_conversation,
    ui_listing,
    ui_live,
    ui_notices,
    ui_privacy,
    ui_refusal,
    ui_reports,
    ui_settings,
    ui_webhooks,
)
from .ui import CsrfFailed, NotSignedIn, redirect, render

__all__ = ["build_site"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


# Each page module contributes its ``routes``.
PAGES = (ui_auth, ui_listing, ui_conversation, ui_compose, ui_settings, ui_privacy, ui_reports,
         ui_live, ui_refusal, ui_account, ui_webhooks, ui_notices)


def build_site(instance: Instance) -> Starlette:
    routes = [r for page in PAGES for r in page.routes]
    routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))

    async def not_signed_in(request: Request, exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.url.path == "/live":
            return Response(status_code=401)
        return redirect(request, f"/login?next={target}" if target != "/" else "/login")

    async def forbidden(request: Request, exc: Exception) -> Response:
        return render(request, "error.html", 403, title="Not allowed",
                      message="Only admins can open this page.")

    async def csrf_failed(request: Request, exc: Exception) -> Response:
        return render(request, "error.html", 403, title="Form expired",
                      message="This form is no longer valid. Go back, reload the page and "
                              "try again.")

    async def too_large(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BodyTooLarge)
        return render(request, "error.html", 413, title="Too large",
                      message=f"That upload is larger than {exc.limit_mb} MB.")

    async def domain_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, NotFound):
            return render(request, "error.html", 404, title="Not found",
                          message="There is nothing here, or you do not have access to it.")
        if isinstance(exc, StorageUnavailable):
            full = isinstance(exc, StorageFull)
            return render(request, "error.html", 503, title="Try again shortly",
                          message="The database is full: nothing was saved. Tell your admin."
                          if full else "The database is unavailable right now.")
        status = 422 if isinstance(exc, InvalidInput) else 400
        return render(request, "error.html", status, title="That did not work",
                      message=str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return render(request, "error.html", 404, title="Not found",
                          message="There is nothing here, or you do not have access to it.")
        return render(request, "error.html", exc.status_code, title="Request refused",
                      message=str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("page failed: %s", request.url.path)
        return render(request, "error.html", 500, title="Something went wrong",
                      message="The error was logged. Try again, or tell your admin.")

    app = Starlette(routes=routes, exception_handlers={
        NotSignedIn: not_signed_in, Forbidden: forbidden, CsrfFailed: csrf_failed,
        BodyTooLarge: too_large, MailseenError: domain_error, HTTPException: http_error,
        Exception: server_error,
    })
    app.state.instance = instance
    return app
