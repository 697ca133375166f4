"""First-run setup, sign-in and sign-out."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...core.clientip import client_ip
from ...errors import Conflict, InvalidInput
from ...services.accounts import SignInRefused
from ..cookies import SESSION_COOKIE
from .ui import (
    current_session,
    instance_of,
    is_https,
    read_form,
    redirect,
    render,
)


def _safe_next(value: object) -> str:
    """Only local paths: never redirect a signed-in user to another site."""
    text = value if isinstance(value, str) else ""
    parts = urlsplit(text)
    if not text.startswith("/") or text.startswith("//") or parts.scheme or parts.netloc:
        return "/"
    return text


def _client_address(request: Request) -> str:
    """The address failures are counted for: behind a trusted proxy the client's, not the
    proxy's (every user would share it, and one guesser would lock out all of them)."""
    peer = request.client.host if request.client else None
    real = client_ip(peer, request.headers.get("x-forwarded-for"),
                     instance_of(request).settings.trusted_proxies)
    return real or "unknown"


def _signed_in(request: Request, url: str, cookie_value: str) -> Response:
    response = redirect(request, url)
    response.set_cookie(SESSION_COOKIE, cookie_value, max_age=14 * 86400, httponly=True,
                        samesite="lax", secure=is_https(request))
    return response


async def setup(request: Request) -> Response:
    """Create the first admin: works only while no user exists."""
    accounts = instance_of(request).accounts
    if not accounts.needs_setup():
        return redirect(request, "/login")
    error = None
    values = {"email": "", "name": ""}
    if request.method == "POST":
        form = await read_form(request)
        values = {"email": str(form.get("email", "")), "name": str(form.get("name", ""))}
        password = str(form.get("password", ""))
        try:
            if password != str(form.get("password2", "")):
                raise InvalidInput("the two passwords differ", field="password2")
            user = accounts.create_user(values["email"], password, name=values["name"],
                                        role="admin", first_run=True)
        except (InvalidInput, Conflict) as exc:
            error = str(exc)
        else:
            session = accounts.start_session(user)
            return _signed_in(request, "/settings/mailboxes", session.cookie_value)
    return render(request, "setup.html", status_code=422 if error else 200, error=error,
                  values=values)


async def login(request: Request) -> Response:
    accounts = instance_of(request).accounts
    if accounts.needs_setup():
        return redirect(request, "/setup")
    next_url = _safe_next(request.query_params.get("next"))
    if request.method == "GET":
        if current_session(request) is not None:
            return redirect(request, next_url)
        return render(request, "login.html", next_url=next_url, email="")
    form = await read_form(request)
    email = str(form.get("email", ""))
    next_url = _safe_next(form.get("next"))
    try:
        _, session = accounts.sign_in(email, str(form.get("password", "")),
                                      _client_address(request))
    except SignInRefused as exc:
        response = render(request, "login.html", status_code=429 if exc.retry_after else 401,
                          error=str(exc), next_url=next_url, email=email)
        if exc.retry_after:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    return _signed_in(request, next_url, session.cookie_value)


async def logout(request: Request) -> Response:
    await read_form(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        instance_of(request).accounts.sign_out(cookie)
    response = redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE)
    return response


routes = [
    Route("/setup", setup, methods=["GET", "POST"]),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
