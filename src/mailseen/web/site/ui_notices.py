"""The signed-in user's own page: what they are told by e-mail of the messages they send."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .ui import instance_of, read_form, redirect, render, require_user
from .ui_settings import Form

PAGE = "/account/notices"
NOTIFY = {"off": "Nothing",
          "immediately": "An e-mail each time a message I sent is viewed for the first time",
          "daily": "A daily digest: what was viewed, replied to, and is still waiting"}


async def notices(request: Request) -> Response:
    me = require_user(request)
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = Form(await read_form(request))
        mode = form.choice("notify", "E-mail me", NOTIFY)
        errors = form.errors
        if not errors:
            instance_of(request).reminders.set_notify(me, mode)
            return redirect(request, f"{PAGE}?done=saved")
    return render(request, "account_notices.html", 422 if errors else 200, notify=NOTIFY,
                  current=me.notify, errors=errors,
                  notice="Saved." if request.query_params.get("done") == "saved" else None)


routes = [Route(PAGE, notices, methods=["GET", "POST"])]
