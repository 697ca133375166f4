"""The "Privacy" settings page (admins): what is stored of each view, and how long the
personal details of views are kept, with the retention purge's last run."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import InvalidInput
from ...services.privacy import MAX_RETENTION_DAYS
from .ui import instance_of, read_form, redirect, render, require_admin
from .ui_settings import NOTICES, Form

IPS = {"full": "The whole address",
       "truncated": "Its network only (IPv4 /24, IPv6 /48: 203.0.113.77 is kept as 203.0.113.0)",
       "none": "None"}
AGENTS = {"full": "The whole user agent",
          "family": "The client's family only (\"Outlook on Windows\")"}
_RETENTION_LABEL = "Keep view details"


def _days(form: Form) -> int | None:
    value = form.text("retention_days", _RETENTION_LABEL, max_len=20)
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_RETENTION_DAYS:
        form.fail("retention_days", f"{_RETENTION_LABEL}: a number of days from 1 to "
                                    f"{MAX_RETENTION_DAYS}, or empty to keep them.")
        return None
    return int(value)


async def privacy_settings(request: Request) -> Response:
    me = require_admin(request)
    privacy = instance_of(request).privacy
    details, retention = privacy.view_details(), privacy.retention()
    values = {"ip": details.ip, "user_agent": details.user_agent,
              "retention_days": "" if retention.days is None else str(retention.days)}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = Form(await read_form(request))
        ip = form.choice("ip", "IP address", IPS)
        agent = form.choice("user_agent", "User agent", AGENTS)
        days = _days(form)
        values, errors = {**values, **form.values}, form.errors
        if not errors:
            try:
                privacy.set_retention(me, days)
                privacy.set_view_details(me, ip=ip, user_agent=agent)
            except InvalidInput as exc:
                errors = {exc.field or "ip": str(exc)}
            else:
                return redirect(request, "/settings/data?done=saved")
    return render(request, "settings_data.html", 422 if errors else 200, values=values,
                  errors=errors, ips=IPS, agents=AGENTS, last_run=retention.last_run,
                  notice=NOTICES.get(request.query_params.get("done", "")))


routes = [Route("/settings/data", privacy_settings, methods=["GET", "POST"])]
