"""What every page of the web app shares: templates, the signed-in user, CSRF, errors.

Sessions are server-side rows; the cookie holds only a random id (HttpOnly, SameSite=Lax,
Secure when served over HTTPS). Every form carries a CSRF token: the session's own once signed
in, a double-submit cookie before (setup and sign-in forms).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ...core.reach import Reach, public_url_reach
from ...core.status import Eye, eye_for, relative_time
from ...errors import StorageUnavailable
from ...records import MailboxRecord, MessageRecord, SessionRecord, UserRecord
from ...services.instance import Instance
from ...services.mailboxes import Forbidden
from ..cookies import CSRF_COOKIE, SESSION_COOKIE
from ..headers import CONTENT_SECURITY_POLICY

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True,
)
templates.filters["ago"] = lambda when: relative_time(when, datetime.now(UTC)) if when else ""
templates.filters["datetime"] = (
    lambda when: when.strftime("%Y-%m-%d %H:%M UTC") if when else "")


class NotSignedIn(Exception):
    """Raised by pages that need a user; turned into a redirect to the sign-in page."""


def instance_of(request: Request) -> Instance:
    inst: Instance = request.app.state.instance
    return inst


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or instance_of(request).settings.base_url.startswith(
        "https://")


def current_session(request: Request) -> SessionRecord | None:
    cached = request.scope.get("mailseen.session", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    session = instance_of(request).accounts.session(request.cookies.get(SESSION_COOKIE))
    request.scope["mailseen.session"] = session
    return session


def require_user(request: Request) -> UserRecord:
    session = current_session(request)
    if session is None:
        raise NotSignedIn()
    return session.user


def require_admin(request: Request) -> UserRecord:
    user = require_user(request)
    if not user.is_admin:
        raise Forbidden("only admins may do this")
    return user


def csrf_token(request: Request) -> str:
    session = current_session(request)
    if session is not None:
        return session.csrf_token
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) > 100:
        token = request.scope.setdefault("mailseen.new_csrf", secrets.token_urlsafe(32))
    return str(token)


async def read_form(request: Request) -> FormData:
    """The submitted form, after checking its CSRF token (raises CsrfFailed); a body that
    is no form is a 400 with a page saying so, never a crash."""
    try:
        form = await request.form(max_files=20, max_fields=200)
    except ValueError as exc:  # python-multipart's parse errors (and bad bytes) among them
        raise HTTPException(400, "That form could not be read. Go back, reload the page "
                                 "and try again.") from exc
    sent = form.get("csrf")
    # As bytes: compare_digest refuses str with non-ASCII characters (TypeError).
    if not isinstance(sent, str) or not secrets.compare_digest(
            sent.encode("utf-8", "surrogateescape"), csrf_token(request).encode()):
        await form.close()  # uploads sent along are temporary files
        raise CsrfFailed()
    return form


class CsrfFailed(Exception):
    pass


def eye_of(message: MessageRecord | None, machine_client: str | None, now: datetime) -> Eye:
    if message is None:
        return Eye("none", "Nothing sent yet")
    return eye_for(message, machine_client, now)


def all_mailboxes(request: Request) -> list[MailboxRecord]:
    """Every mailbox, read once per request: the navigation lists them and so do the pages."""
    boxes: list[MailboxRecord] | None = request.scope.get("mailseen.mailboxes")
    if boxes is None:
        boxes = request.scope["mailseen.mailboxes"] = instance_of(request).mailboxes.all()
    return boxes


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    try:
        session = current_session(request)
    except StorageUnavailable:  # the "try again shortly" page must not need the database
        request.scope["mailseen.session"] = session = None
    user = session.user if session else None
    try:
        boxes = ([b for b in all_mailboxes(request)
                  if user.is_admin or b.id in user.mailbox_ids] if user else [])
    except StorageUnavailable:
        boxes = []
    hooks_off: list[tuple[int, str, str]] = []
    if user is not None and user.is_admin:
        # Told on every page, as the public URL's trouble is: events stop until it is fixed.
        with contextlib.suppress(StorageUnavailable):
            hooks_off = instance_of(request).webhooks.disabled_summary(user)
    html = templates.get_template(name).render(
        request=request, user=user, my_mailboxes=boxes, csrf=csrf_token(request),
        path=request.url.path, reach=reach_of(request), hooks_off=hooks_off, **context)
    response = HTMLResponse(html, status_code=status_code)
    finish(request, response)
    return response


def reach_of(request: Request) -> Reach:
    """Whether recipients can reach the pixel: admins see a banner on every page unless they
    can, members a note on compose."""
    return public_url_reach(instance_of(request).settings.base_url)


def finish(request: Request, response: Response) -> None:
    """Security headers on every page, and the pre-sign-in CSRF cookie when one was made."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    new = request.scope.get("mailseen.new_csrf")
    if new:
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict",
                            secure=is_https(request))


def redirect(request: Request, url: str) -> Response:
    response = RedirectResponse(url, status_code=303)
    finish(request, response)
    return response


Handler = Callable[[Request], Awaitable[Response]]
