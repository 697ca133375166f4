"""Settings pages for admins: global mail settings, mailboxes (one form per tab) and users
with their role and mailboxes.

A member who opens the settings of a mailbox they do not belong to gets the same 404 as for a
mailbox that does not exist; every other settings page tells them it is for admins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...core.compose import parse_address
from ...errors import Conflict, InvalidInput, MailseenError, NotFound
from ...records import ConsentEventRecord, MailboxIn, MailboxRecord, Role, UserRecord
from ...services.accounts import MIN_PASSWORD
from .ui import instance_of, read_form, redirect, render, require_admin, require_user

TABS = {"general": "General", "sending": "Sending", "receiving": "Receiving",
        "misc": "Miscellaneous", "privacy": "Privacy"}
POLICIES = {"everyone": "Everyone: every recipient who has not refused",
            "unless-refused": "Unless refused (opt-out): the same, said as an opt-out",
            "with-consent": "With consent (opt-in): only recipients whose consent is recorded",
            "aggregate": "Aggregate: counts only, no personal tracking"}
LANGUAGE_NAMES = {"en": "English", "fr": "Fran\u00e7ais", "it": "Italiano", "de": "Deutsch",
                  "es": "Espa\u00f1ol"}
TRANSPORTS = {"outbox": "Outbox folder (for testing: messages are written to files)",
              "smtp": "SMTP server"}
TLS = {"starttls": "STARTTLS", "implicit": "TLS from the start (implicit TLS)",
       "none": "None (unencrypted)"}
TRACKING = {"global": "Use global setting", "enabled": "Enabled", "disabled": "Disabled"}
ROLES = {"member": "Member: works in the mailboxes ticked below",
         "admin": "Admin: manages settings, mailboxes and users, and sees every mailbox"}
NOTICES = {"saved": "Saved.", "created": "Created.", "deleted": "User deleted.",
           "password": "Password changed. That user is now signed out everywhere."}
_HOST = re.compile(r"^[A-Za-z0-9._:\[\]-]+$")


class Form:
    """A submitted form read field by field: what was typed is kept to show again, and
    each problem is kept under its field, worded with the label the page shows."""

    def __init__(self, data: FormData) -> None:
        self.data = data
        self.values: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def raw(self, name: str) -> str:
        value = self.data.get(name, "")
        return value if isinstance(value, str) else ""

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def text(self, name: str, label: str, *, required: bool = False, max_len: int = 200) -> str:
        value = self.raw(name).strip()
        self.values[name] = value
        if required and not value:
            self.fail(name, f"{label}: this is required.")
        elif len(value) > max_len:
            self.fail(name, f"{label}: at most {max_len} characters, please.")
        elif "\r" in value or "\n" in value:
            self.fail(name, f"{label}: line breaks are not allowed.")
        return value

    def address(self, name: str, label: str) -> str:
        value = self.text(name, label, required=True, max_len=320)
        if name in self.errors:
            return value
        try:
            return parse_address(value, name)
        except InvalidInput:
            self.fail(name, f"{label}: enter one email address, like team@example.com.")
            return value

    def host(self, name: str, label: str, *, required: bool) -> str | None:
        value = self.text(name, label, max_len=255)
        if name not in self.errors and value and not _HOST.match(value):
            self.fail(name, f"{label}: a host name like smtp.example.com, without spaces.")
        if required and not value:
            self.fail(name, f"{label}: needed to send through an SMTP server.")
        return value or None

    def port(self, name: str, label: str) -> int | None:
        value = self.text(name, label, max_len=20)
        if not value:
            return None
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            self.fail(name, f"{label}: a number from 1 to 65535, or empty for the usual one.")
            return None
        return int(value)

    def days(self, name: str, label: str) -> int | None:
        value = self.text(name, label, max_len=20)
        if not value:
            return None
        if not value.isdigit() or not 1 <= int(value) <= 365:
            self.fail(name, f"{label}: a number of days from 1 to 365, or empty for none.")
            return None
        return int(value)

    def choice(self, name: str, label: str, options: Mapping[str, str]) -> str:
        value = self.raw(name)
        self.values[name] = value
        if value not in options:
            self.fail(name, f"{label}: choose one of the options.")
            return next(iter(options))
        return value

    def secret(self, name: str, label: str, remove: str | None = None) -> str | None:
        """A write-only field: never kept to show again. None keeps the stored one; ""
        removes it (when the ``remove`` box is ticked)."""
        value = self.raw(name)
        if remove and self.raw(remove):
            return ""
        if len(value) > 1000:
            self.fail(name, f"{label}: at most 1000 characters, please.")
        return value or None

    def password(self, name: str, label: str) -> str:
        value = self.raw(name)
        if len(value) < MIN_PASSWORD:
            self.fail(name, f"{label}: at least {MIN_PASSWORD} characters.")
        return value

    def ids(self, name: str, allowed: set[int]) -> list[int]:
        chosen = {int(v) for v in self.data.getlist(name)
                  if isinstance(v, str) and v.isdigit() and int(v) in allowed}
        self.values[name] = ",".join(str(i) for i in sorted(chosen))
        return sorted(chosen)


def _role(value: str) -> Role:
    return "admin" if value == "admin" else "member"


def _id(request: Request, name: str) -> int:
    """A path id, refused as unknown when no database column could hold it."""
    value: int = request.path_params[name]
    if value > 2**63 - 1:
        raise NotFound(f"no such {name}")
    return value


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


# -- global mail settings ----------------------------------------------------------------

async def global_settings(request: Request) -> Response:
    me = require_admin(request)
    boxes = instance_of(request).mailboxes
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = Form(await read_form(request))
        choice = form.choice("tracking", "Open tracking", {"on": "", "off": ""})
        # A form without the field (an older page, a script) leaves the setting alone.
        clicks = (form.choice("click_tracking", "Click tracking", {"on": "", "off": ""})
                  if form.raw("click_tracking") else None)
        if form.errors:
            errors = form.errors
        else:
            boxes.set_global_tracking(me, choice == "on")
            if clicks is not None and (clicks == "on") != boxes.global_clicks():
                boxes.set_global_clicks(me, clicks == "on")
            return redirect(request, "/settings?done=saved")
    overrides = [b for b in boxes.all() if b.tracking != "global"]
    return render(request, "settings_global.html", 422 if errors else 200, errors=errors,
                  tracking=boxes.global_tracking(), clicks=boxes.global_clicks(),
                  overrides=overrides, notice=_notice(request))


# -- privacy: policy, do-not-track list, consents, audit log --------------------------

PRIVACY_NOTICES = {"policy": "Saved.", "added": "Added to the do-not-track list.",
                   "removed": "Removed from the do-not-track list.",
                   "consent": "Consent recorded.", "imported": "Consents imported."}


async def privacy(request: Request) -> Response:
    me = require_admin(request)
    inst = instance_of(request)
    consents = inst.consents
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    done = ""
    if request.method == "POST":
        form = Form(await read_form(request))
        action = form.raw("do")
        try:
            if action == "policy":
                consents.set_global_policy(me, form.choice("tracking_policy",
                                                           "Whom tracking follows", POLICIES))
                done = "policy"
            elif action == "add":
                consents.add_do_not_track(me, form.text("entry", "Entry", max_len=320))
                done = "added"
            elif action == "remove":
                consents.remove_do_not_track(me, form.raw("entry"))
                done = "removed"
            elif action == "consent":
                address = form.text("address", "Address", required=True, max_len=320)
                consents.set_consent(me, address, form.raw("state"), "web",
                                     form.text("note", "Note", max_len=1000))
                return redirect(request, f"/settings/privacy?done=consent&address={address}")
            elif action == "import":
                upload = form.data.get("file")
                text = form.raw("csv")
                if upload is not None and not isinstance(upload, str):
                    data = await upload.read(20_000_000)
                    text = data.decode("utf-8-sig", "replace") if data else text
                values["imported"] = str(consents.import_csv(me, text, "web"))
                done = "imported"
        except (InvalidInput, Conflict, NotFound) as exc:
            named = exc.field if isinstance(exc, InvalidInput) else None
            field = {"file": "csv"}.get(named or "", named) or {
                "add": "entry", "remove": "entry", "import": "csv"}.get(action, "address")
            errors[field] = _sentence(exc)
            values.update(form.values)
        if not errors and done != "imported":
            return redirect(request, f"/settings/privacy?done={done}")
    address = request.query_params.get("address", "").strip()
    state: str = "unknown"
    history: list[ConsentEventRecord] = []
    if address:
        try:
            state, history = consents.consent_of(address)
        except InvalidInput as exc:
            errors.setdefault("address", _sentence(exc))
    return render(request, "settings_privacy.html", 422 if errors else 200, errors=errors,
                  values={"address": address, **values}, policies=POLICIES,
                  global_policy=consents.global_policy(), rules=consents.do_not_track(),
                  address=address, state=state, history=history,
                  notice=PRIVACY_NOTICES.get(done or request.query_params.get("done", "")),
                  imported=values.get("imported"))


async def audit(request: Request) -> Response:
    me = require_admin(request)
    entries = instance_of(request).consents.audit_log(me, limit=500)
    return render(request, "settings_audit.html", entries=entries)


# -- mailboxes ---------------------------------------------------------------------------

def _mailbox_values(box: MailboxRecord) -> dict[str, str]:
    skip = {"id", "created_at", "has_smtp_password", "has_imap_password", "imap_status",
            "imap_error", "imap_checked_at"}
    return {k: "" if v is None else str(v) for k, v in box.__dict__.items() if k not in skip}


def _tab_changes(tab: str, form: Form) -> dict[str, Any]:
    if tab == "general":
        return {"address": form.address("address", "Address"),
                "display_name": form.text("display_name", "Display name")}
    if tab == "sending":
        transport = form.choice("transport", "Send through", TRANSPORTS)
        return {"transport": transport,
                "smtp_host": form.host("smtp_host", "SMTP server",
                                       required=transport == "smtp"),
                "smtp_port": form.port("smtp_port", "SMTP port"),
                "smtp_tls": form.choice("smtp_tls", "SMTP encryption", TLS),
                "smtp_username": form.text("smtp_username", "SMTP user name",
                                           max_len=320) or None,
                "smtp_password": form.secret("smtp_password", "SMTP password",
                                             "smtp_password_remove"),
                "aliases": form.text("aliases", "Aliases", max_len=4000)}
    if tab == "receiving":
        return {"imap_host": form.host("imap_host", "IMAP server", required=False),
                "imap_port": form.port("imap_port", "IMAP port"),
                "imap_tls": form.choice("imap_tls", "IMAP encryption", TLS),
                "imap_username": form.text("imap_username", "IMAP user name",
                                           max_len=320) or None,
                "imap_password": form.secret("imap_password", "IMAP password",
                                             "imap_password_remove"),
                "imap_folder": form.text("imap_folder", "Folder", required=True),
                "imap_sent_folder": form.text("imap_sent_folder", "Sent folder"),
                "imap_sent_append": form.raw("imap_sent_append") == "1"}
    if tab == "privacy":
        return {"tracking_policy": form.choice("tracking_policy", "Whom tracking follows",
                                               {"global": "", **POLICIES}),
                "refusal_line": bool(form.raw("refusal_line")),
                "refusal_text": form.text("refusal_text", "Text of the line", max_len=500),
                "language": form.choice("language", "Language", LANGUAGE_NAMES),
                "privacy_url": form.text("privacy_url", "Privacy notice address",
                                         max_len=2000)}
    changes = {"tracking": form.choice("tracking", "Open tracking", TRACKING),
               "remind_not_viewed_days": form.days("remind_not_viewed_days",
                                                   "Remind if not viewed in"),
               "remind_not_replied_days": form.days("remind_not_replied_days",
                                                    "Remind if not replied to in")}
    if form.raw("click_tracking"):  # left alone by a form without it
        changes["click_tracking"] = form.choice("click_tracking", "Click tracking", TRACKING)
    return changes


async def mailboxes(request: Request) -> Response:
    me = require_admin(request)
    inst = instance_of(request)
    boxes = inst.mailboxes.visible(me)
    decisions = inst.mailboxes.decisions(boxes)
    trouble = inst.mailboxes.delivery_trouble(me, boxes)
    rows = [{"box": b, "decision": decisions[b.id], "trouble": trouble.get(b.id)}
            for b in boxes]
    return render(request, "settings_mailboxes.html", rows=rows, notice=_notice(request))


async def new_mailbox(request: Request) -> Response:
    me = require_admin(request)
    values: dict[str, str] = {}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = Form(await read_form(request))
        changes = _tab_changes("general", form)
        values, errors = form.values, form.errors
        if not errors:
            boxes = instance_of(request).mailboxes
            box, errors = _saved(lambda: boxes.add(me, MailboxIn(**changes)))
            if box is not None:
                return redirect(request, f"/settings/mailboxes/{box.id}?tab=sending&done=created")
    return render(request, "settings_mailbox_new.html", 422 if errors else 200,
                  values=values, errors=errors)


def _saved(save: Callable[[], MailboxRecord]) -> tuple[MailboxRecord | None, dict[str, str]]:
    """The mailbox as saved, or the form's errors: what the services refused, under the
    field they named."""
    try:
        return save(), {}
    except Conflict:
        return None, {"address": "Address: there is a mailbox with this address already."}
    except InvalidInput as exc:
        return None, {exc.field or "address": _sentence(exc)}


def _visible_mailbox(request: Request, user: UserRecord) -> MailboxRecord:
    """The mailbox in the URL. Anyone outside it gets a 404 before being told the page is
    for admins, so its existence is never revealed."""
    box = instance_of(request).mailboxes.get(user, _id(request, "mailbox_id"))
    require_admin(request)
    return box


def _tab(request: Request) -> str:
    tab = request.query_params.get("tab", "general")
    return tab if tab in TABS else "general"


async def mailbox(request: Request) -> Response:
    me = require_user(request)
    box = _visible_mailbox(request, me)
    inst = instance_of(request)
    tab = _tab(request)
    values = _mailbox_values(box)
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = Form(await read_form(request))
        changes = _tab_changes(tab, form)
        values, errors = {**values, **form.values}, form.errors
        if not errors:
            saved, errors = _saved(lambda: inst.mailboxes.update(me, box.id, changes))
            if saved is not None:
                return redirect(request, f"/settings/mailboxes/{box.id}?tab={tab}&done=saved")
    return _mailbox_page(request, me, box, tab, values, errors, notice=_notice(request))


def _mailbox_page(request: Request, me: UserRecord, box: MailboxRecord, tab: str,
                  values: dict[str, str], errors: dict[str, str], **extra: Any) -> Response:
    mailboxes = instance_of(request).mailboxes
    on = mailboxes.global_tracking()
    policy = instance_of(request).consents.policy_for(box)
    return render(request, "settings_mailbox.html", 422 if errors else 200, box=box, tab=tab,
                  tabs=TABS, values=values, errors=errors, global_on=on,
                  global_clicks=mailboxes.global_clicks(),
                  policy_options={"global": "Use global policy (currently "
                                            f"{instance_of(request).consents.global_policy()})",
                                  **POLICIES},
                  languages=LANGUAGE_NAMES, policy=policy,
                  decision=mailboxes.decision(box, on), transports=TRANSPORTS, tls=TLS,
                  trouble=mailboxes.delivery_trouble(me, [box]).get(box.id), **extra)


async def mailbox_test(request: Request) -> Response:
    """"Test connection" on the sending (SMTP) or receiving (IMAP) tab: the values in the
    form, saved or not (an empty password field means the saved password), are tried and
    the page comes back as it was filled in, with what the test found. Nothing is saved."""
    me = require_user(request)
    box = _visible_mailbox(request, me)
    tab = _tab(request)
    form = Form(await read_form(request))
    if tab not in ("sending", "receiving"):  # no connection on this tab: nothing to test
        return redirect(request, f"/settings/mailboxes/{box.id}?tab={tab}")
    changes = _tab_changes(tab, form)
    values, errors = {**_mailbox_values(box), **form.values}, form.errors
    if errors:
        return _mailbox_page(request, me, box, tab, values, errors)
    mailboxes = instance_of(request).mailboxes
    test = mailboxes.test_smtp if tab == "sending" else mailboxes.test_imap
    try:
        check = await test(me, box, changes)
    except InvalidInput as exc:
        field = exc.field or ("smtp_host" if tab == "sending" else "imap_host")
        return _mailbox_page(request, me, box, tab, values, {field: _sentence(exc)})
    return _mailbox_page(request, me, box, tab, values, errors, check=check)


# -- users -------------------------------------------------------------------------------

async def users(request: Request) -> Response:
    me = require_admin(request)
    inst = instance_of(request)
    names = {b.id: b.display_name or b.address for b in inst.mailboxes.visible(me)}
    rows = [(u, [names[i] for i in u.mailbox_ids if i in names])
            for u in inst.accounts.list_users(me)]
    return render(request, "settings_users.html", users=rows, notice=_notice(request))


async def new_user(request: Request) -> Response:
    me = require_admin(request)
    inst = instance_of(request)
    boxes = inst.mailboxes.visible(me)
    values: dict[str, str] = {"role": "member"}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = Form(await read_form(request))
        email = form.address("email", "Email")
        name = form.text("name", "Name")
        role = form.choice("role", "Role", ROLES)
        password = form.password("password", "Password")
        chosen = form.ids("mailboxes", {b.id for b in boxes})
        values, errors = form.values, form.errors
        if not errors:
            try:
                user = inst.accounts.add_user(me, email, password, name=name,
                                              role=_role(role), mailbox_ids=sorted(chosen))
            except Conflict:
                errors = {"email": "Email: there is a user with this address already."}
            except InvalidInput as exc:
                errors = {exc.field or "email": str(exc)}
            else:
                return redirect(request, f"/settings/users/{user.id}?done=created")
    return render(request, "settings_user.html", 422 if errors else 200, edited=None,
                  values=values, errors=errors, boxes=boxes, roles=ROLES)


def _user_values(user: UserRecord) -> dict[str, str]:
    return {"name": user.name, "role": user.role,
            "mailboxes": ",".join(str(i) for i in user.mailbox_ids)}


async def user(request: Request) -> Response:
    me = require_admin(request)
    inst = instance_of(request)
    edited = inst.accounts.get_user(me, _id(request, "user_id"))
    boxes = inst.mailboxes.visible(me)
    values, errors = _user_values(edited), {}
    if request.method == "POST":
        form = Form(await read_form(request))
        name = form.text("name", "Name")
        role = form.choice("role", "Role", ROLES)
        chosen = form.ids("mailboxes", {b.id for b in boxes})
        values, errors = {**values, **form.values}, form.errors
        if not errors:
            try:
                inst.accounts.update_user(me, edited.id, name=name, role=_role(role),
                                          mailbox_ids=sorted(chosen))
            except InvalidInput as exc:
                form.fail(exc.field or "role", _sentence(exc))
            else:
                return redirect(request, f"/settings/users/{edited.id}?done=saved")
    return _user_page(request, edited, values, errors, boxes)


def _user_page(request: Request, edited: UserRecord, values: dict[str, str],
               errors: dict[str, str], boxes: list[MailboxRecord]) -> Response:
    return render(request, "settings_user.html", 422 if errors else 200, edited=edited,
                  values=values, errors=errors, boxes=boxes, roles=ROLES,
                  notice=_notice(request))


async def _user_action(request: Request,
                       act: Callable[[Form, UserRecord, UserRecord], str | None]) -> Response:
    me = require_admin(request)
    inst = instance_of(request)
    edited = inst.accounts.get_user(me, _id(request, "user_id"))
    form = Form(await read_form(request))
    try:
        target = act(form, edited, me)
    except InvalidInput as exc:
        form.fail(exc.field or "confirm", _sentence(exc))
        target = None
    if target is not None and not form.errors:
        return redirect(request, target)
    return _user_page(request, edited, _user_values(edited), form.errors,
                      inst.mailboxes.visible(me))


async def user_password(request: Request) -> Response:
    def act(form: Form, edited: UserRecord, me: UserRecord) -> str | None:
        password = form.password("password", "New password")
        if form.errors:
            return None
        instance_of(request).accounts.change_password(me, edited.id, password)
        return f"/settings/users/{edited.id}?done=password"

    return await _user_action(request, act)


async def user_delete(request: Request) -> Response:
    def act(form: Form, edited: UserRecord, me: UserRecord) -> str | None:
        if not form.raw("confirm"):
            form.fail("confirm", "Delete: tick the box to confirm.")
        if form.errors:
            return None
        instance_of(request).accounts.delete_user(me, edited.id)
        return "/settings/users?done=deleted"

    return await _user_action(request, act)


_LABELS = {"role": "Role", "confirm": "Delete", "smtp_host": "SMTP server", "aliases": "Aliases",
           "imap_sent_folder": "Sent folder", "imap_sent_append": "File a copy",
           "imap_host": "IMAP server", "smtp_port": "SMTP port", "imap_port": "IMAP port",
           "entry": "Entry", "address": "Address", "state": "Consent", "note": "Note",
           "file": "CSV", "tracking_policy": "Whom tracking follows",
           "refusal_text": "Text of the line", "language": "Language",
           "privacy_url": "Privacy notice address",
           "remind_not_viewed_days": "Remind if not viewed in",
           "remind_not_replied_days": "Remind if not replied to in"}


def _sentence(exc: MailseenError) -> str:
    """A service's "field: problem" in the page's words: "Label: problem."."""
    text = str(exc)
    field = exc.field if isinstance(exc, InvalidInput) else None
    label = _LABELS.get(field or "", "")
    if label and field and text.startswith(f"{field}: "):
        text = f"{label}: {text.removeprefix(f'{field}: ')}"
    return text if text.endswith(".") else f"{text}."


GET_POST = ["GET", "POST"]
routes = [
    Route("/settings", global_settings, methods=GET_POST),
    Route("/settings/privacy", privacy, methods=GET_POST),
    Route("/settings/audit", audit),
    Route("/settings/mailboxes", mailboxes),
    Route("/settings/mailboxes/new", new_mailbox, methods=GET_POST),
    Route("/settings/mailboxes/{mailbox_id:int}", mailbox, methods=GET_POST),
    Route("/settings/mailboxes/{mailbox_id:int}/test", mailbox_test, methods=["POST"]),
    Route("/settings/users", users),
    Route("/settings/users/new", new_user, methods=GET_POST),
    Route("/settings/users/{user_id:int}", user, methods=GET_POST),
    Route("/settings/users/{user_id:int}/password", user_password, methods=["POST"]),
    Route("/settings/users/{user_id:int}/delete", user_delete, methods=["POST"]),
]
