"""A signed-in person's own account: the app passwords their mail clients send with
(SMTP submission, docs/submission.md). Each value is shown once, on the page that made it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import InvalidInput, NotFound
from .ui import instance_of, read_form, redirect, render, require_user

NOTICES = {"revoked": "App password revoked: clients using it can no longer send."}
PAGE = "/account/app-passwords"


async def app_passwords(request: Request) -> Response:
    me = require_user(request)
    accounts = instance_of(request).accounts
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    created = None
    if request.method == "POST":
        form = await read_form(request)
        name = str(form.get("name") or "")
        values = {"name": name[:300]}
        try:
            created = accounts.create_app_password(me, me.id, name)
        except InvalidInput as exc:
            text = str(exc).removeprefix("name: ")
            errors = {"name": f"Name: {text[:1].lower()}{text[1:]}."}
        else:
            values = {}
    settings = instance_of(request).settings
    return render(request, "account_app_passwords.html", 422 if errors else 200,
                  passwords=accounts.list_app_passwords(me, me.id), created=created,
                  values=values, errors=errors,
                  notice=NOTICES.get(request.query_params.get("done", "")),
                  submission=settings.submission or settings.submission_tls)


async def revoke(request: Request) -> Response:
    me = require_user(request)
    await read_form(request)
    value: int = request.path_params["password_id"]
    if value > 2**63 - 1:
        raise NotFound("no such app password")
    instance_of(request).accounts.revoke_app_password(me, me.id, value)
    return redirect(request, f"{PAGE}?done=revoked")


routes = [
    Route(PAGE, app_passwords, methods=["GET", "POST"]),
    Route(PAGE + "/{password_id:int}/revoke", revoke, methods=["POST"]),
]
