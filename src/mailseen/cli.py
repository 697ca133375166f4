"""The `mailseen` command line. Every command loads settings once and reports failures as
one line on stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

import click

from .config import Settings, listen_address, load_settings
from .core.autoreply import detect_automatic
from .core.compose import Attachment, Draft, parse_address
from .core.consent import POLICIES
from .core.hits import Hit, HitClassifier, Verdict, describe_agent
from .core.netdata import NET_KINDS, load_data
from .core.netsources import FORMATS, Source, load_manifest, update_source
from .core.reach import Reach, public_url_reach
from .core.refusal import LANGUAGES
from .errors import InvalidInput, MailseenError
from .receivers import ImapPoller, SentFiler, SmtpReceiver, SubmissionServer
from .receivers.imap import ImapChecker
from .records import (
    WEBHOOK_EVENTS,
    MailboxIn,
    MailboxRecord,
    MessageRecord,
    Retention,
    Status,
    UserRecord,
    WebhookEvent,
    WebhookFormat,
    WebhookIn,
    WebhookRecord,
)
from .services.inbound import Renderer
from .services.instance import Instance
from .services.privacy import ERASED
from .services.reminders import RemindChoice, parse_deadline
from .services.tagging import CANNOT_WRITE, not_sent, tag_filter, write_whole

F = TypeVar("F", bound=Callable[..., Any])


class _Cli(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Usage errors too are one line on stderr (click prints usage and a hint)."""
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.ClickException as exc:
            click.echo(f"mailseen: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("mailseen: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailseenError as exc:
            click.echo(f"mailseen: error: {_in_cli_words(exc)}", err=True)
            ctx.exit(2 if isinstance(exc, InvalidInput) else 1)
        except OSError as exc:
            click.echo(f"mailseen: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(
                ": "), err=True)
            ctx.exit(1)


def _in_cli_words(exc: MailseenError) -> str:
    """A service's error names its field ("smtp_host: ..."); on the command line the option
    carries that name ("--smtp-host: ...")."""
    text = str(exc)
    field = exc.field if isinstance(exc, InvalidInput) else None
    if field and text.startswith(f"{field}: "):
        option = "--" + field.replace("_", "-")
        if option in _option_names(main):
            return f"{option}: {text.removeprefix(f'{field}: ')}"
    return text


def _option_names(command: click.Command) -> set[str]:
    names = {o for p in command.params for o in p.opts}
    for sub in getattr(command, "commands", {}).values():
        names |= _option_names(sub)
    return names


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML config file (or MAILSEEN_CONFIG).")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Data folder (or MAILSEEN_DATA_DIR). Default: ./data")
@click.option("--database-url", help="Database URL (or MAILSEEN_DATABASE_URL). "
              "Default: SQLite in the data folder.")
@click.version_option(package_name="mailseen")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, data_dir: Path | None,
         database_url: str | None) -> None:
    """mailseen: see whether the mail your team sends is viewed."""
    ctx.obj = {"config_file": config_file,
               "options": {"data_dir": data_dir, "database_url": database_url}}


def _settings(ctx: click.Context, **extra: Any) -> Settings:
    obj = ctx.find_root().obj
    return load_settings({**obj["options"], **extra}, config_file=obj["config_file"])


def _open(settings: Settings, render: Renderer | None = None) -> Instance:
    """An instance that can also test IMAP accounts (the checker lives beside the IMAP
    receiver, which services cannot import)."""
    return Instance.open(settings, render=render,
                         imap_probe=ImapChecker(settings.ca_file or None))


def _instance(ctx: click.Context, render: Renderer | None = None) -> Instance:
    inst = _open(_settings(ctx), render=render)
    ctx.call_on_close(inst.close)
    return inst


def _receiving(ctx: click.Context) -> Instance:
    """An instance for a process that receives mail: each message is sanitised for display
    as it arrives (the web layer's sanitiser, imported here only where it is needed)."""
    from .web.site.display import render_display

    return _instance(ctx, render_display)


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- serve / worker / db ---------------------------------------------------------------------

@main.command()
@click.option("--host", help="Listen address (MAILSEEN_HOST). Default 127.0.0.1")
@click.option("--port", type=int, help="Listen port (MAILSEEN_PORT). Default 8000")
@click.option("--public-url", help="Base URL recipients reach this server at.")
@click.option("--trusted-proxies", help="Comma-separated proxy addresses/networks.")
@click.option("--secret-key", help="Instance secret (default: generated into the data folder).")
@click.option("--worker/--no-worker", default=None, help="Run the delivery worker here.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, public_url: str | None,
          trusted_proxies: str | None, secret_key: str | None, worker: bool | None) -> None:
    """Run the HTTP server (pixel and REST API) and the delivery worker."""
    import uvicorn

    from .web.app import Background, MailseenApp, server_config
    from .web.connections import raise_open_files_limit
    from .web.site.display import render_display

    settings = _settings(ctx, host=host, port=port, public_url=public_url,
                         trusted_proxies=trusted_proxies, secret_key=secret_key, worker=worker)
    _logging(settings)
    inst = _open(settings, render=render_display)
    background: list[Background] = []
    if settings.imap_poll:
        background.append(_imap_poller(inst).run)
    if settings.smtp_receiver:
        background.append(_smtp_receiver(inst, settings.smtp_receiver))
    if settings.submission or settings.submission_tls:
        background.append(_submission(inst, settings.submission, settings.submission_tls))
    if settings.worker:  # the daily purge and webhooks run where the delivery worker does
        background.append(inst.retention_job().run)
        background.append(inst.webhook_worker().run)
        background.append(inst.reminder_job().run)
    app = MailseenApp(inst, run_worker=settings.worker, background=background)
    files = raise_open_files_limit()
    click.echo(f"mailseen on http://{settings.host}:{settings.port} "
               f"(pixels at {settings.base_url}/t/…, data in {settings.data_dir}, "
               f"open files limit {files})", err=True)
    if (reach := public_url_reach(settings.base_url)).message:
        click.echo(f"mailseen: warning: {_reach_line(reach)}", err=True)
    uvicorn.Server(server_config(app, settings.host, settings.port)).run()
    inst.close()


@main.command()
@click.option("--host", help="Listen address (MAILSEEN_HOST). Default 127.0.0.1")
@click.option("--port", type=int, help="Listen port (MAILSEEN_PORT). Default 8000")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds a connection may stay open without a complete request.")
@click.pass_context
def pixel(ctx: click.Context, host: str | None, port: int | None, idle_timeout: float) -> None:
    """Run a pixel-only node: just /t/<token>.gif and its recording, on a lean HTTP server.

    For the busiest installations: run several behind a load balancer that sends /t/ here
    and everything else to `mailseen serve` (same database, same secret key).
    """
    from .web.connections import raise_open_files_limit
    from .web.pixel.node import run_pixel_node

    settings = _settings(ctx, host=host, port=port)
    _logging(settings)
    inst = Instance.open(settings)
    click.echo(f"mailseen pixel node on http://{settings.host}:{settings.port} "
               f"(open files limit {raise_open_files_limit()})", err=True)
    run_pixel_node(inst, settings.host, settings.port, idle_timeout)
    inst.close()


def _imap_poller(inst: Instance) -> ImapPoller:
    return ImapPoller(inst.mailboxes, inst.ingestor, poll_seconds=inst.settings.imap_poll_seconds,
                      ca_file=inst.settings.ca_file or None)


def _smtp_receiver(inst: Instance, listen: str
                   ) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    host, port = inst.settings.receiver_address(listen)
    s = inst.settings
    receiver = SmtpReceiver(inst.mailboxes, inst.ingestor, host=host, port=port,
                            tls_cert=s.smtp_receiver_tls_cert or None,
                            tls_key=s.smtp_receiver_tls_key or None)

    async def run(stop: asyncio.Event) -> None:
        bound = await receiver.start()
        logging.getLogger("mailseen").info("receiving mail by SMTP on %s:%d", host, bound)
        try:
            await stop.wait()
        finally:
            await receiver.stop()

    return run


def _submission(inst: Instance, starttls: str, implicit: str
                ) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """SMTP submission on ``starttls`` (HOST:PORT, STARTTLS) and/or ``implicit`` (implicit
    TLS); both checked (certificate, addresses) before anything listens."""
    s = inst.settings
    rules = inst.submissions()
    filer = SentFiler(inst.mailboxes, ca_file=s.ca_file or None)
    servers = [SubmissionServer(rules, host=host, port=port, implicit=tls,
                                tls_cert=s.submission_tls_cert or None,
                                tls_key=s.submission_tls_key or None,
                                max_size=s.submission_max_size, file_sent=filer)
               for listen, name, tls in ((starttls, "submission", False),
                                         (implicit, "submission_tls", True)) if listen
               for host, port in [listen_address(listen, name)]]

    async def run(stop: asyncio.Event) -> None:
        try:
            for server in servers:
                await server.start()
            await stop.wait()
        finally:
            for server in servers:
                await server.stop()

    return run


async def _until_signal(*jobs: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` until SIGTERM or SIGINT; each finishes what it holds, then returns."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.gather(*(job(stop) for job in jobs))


@main.command()
@click.pass_context
def poll(ctx: click.Context) -> None:
    """Poll the mailboxes' IMAP accounts on their own (then set MAILSEEN_IMAP_POLL=false
    for `serve`)."""
    inst = _receiving(ctx)
    _logging(inst.settings)
    asyncio.run(_until_signal(_imap_poller(inst).run))


@main.command()
@click.option("--listen", help="HOST:PORT to receive on (default: MAILSEEN_SMTP_RECEIVER, "
              "else 0.0.0.0:25).")
@click.pass_context
def receive(ctx: click.Context, listen: str | None) -> None:
    """Receive mail by SMTP for the mailboxes (MX or forwarding) on its own."""
    inst = _receiving(ctx)
    _logging(inst.settings)
    address = listen or inst.settings.smtp_receiver or "0.0.0.0:25"
    asyncio.run(_until_signal(_smtp_receiver(inst, address)))


@main.command()
@click.option("--listen", help="HOST:PORT for submission with STARTTLS (default: "
              "MAILSEEN_SUBMISSION, else 127.0.0.1:587).")
@click.option("--listen-tls", help="HOST:PORT for submission with implicit TLS (default: "
              "MAILSEEN_SUBMISSION_TLS, else none).")
@click.pass_context
def submission(ctx: click.Context, listen: str | None, listen_tls: str | None) -> None:
    """Take mail from the team's mail clients (SMTP submission, RFC 6409) on its own.

    Users log in with an app password (`mailseen user app-password add`) and send as a
    mailbox they work in; each message is queued like one sent from compose, and the
    server's worker (or `mailseen worker`) delivers it. See docs/submission.md."""
    inst = _instance(ctx)
    _logging(inst.settings)
    starttls = listen or inst.settings.submission or ("" if listen_tls else "127.0.0.1:587")
    implicit = listen_tls or inst.settings.submission_tls
    job = _submission(inst, starttls, implicit)
    asyncio.run(_until_signal(job))


@main.command()
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.pass_context
def worker(ctx: click.Context, once: bool) -> None:
    """Run a delivery worker on its own, with the webhook sender (several may run against
    PostgreSQL)."""
    inst = _instance(ctx)
    _logging(inst.settings)
    w = inst.worker()
    hooks = inst.webhook_worker()
    if once:
        click.echo(f"delivered {asyncio.run(w.drain())} message(s)")
        done = asyncio.run(inst.reminder_job().run_once())
        click.echo(f"reminders: {done['fired']} fired, {done['cancelled']} cancelled, "
                   f"{done['reminded']} sender(s) told")
        click.echo(f"sent {asyncio.run(hooks.drain())} webhook event(s)")
        return

    asyncio.run(_until_signal(w.run, inst.retention_job().run, hooks.run,
                              inst.reminder_job().run))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply migrations (also done on every start)."""
    inst = Instance.open(_settings(ctx), migrate=False)
    ctx.call_on_close(inst.close)
    inst.upgrade()
    click.echo("database is up to date")


# -- settings ------------------------------------------------------------------------------

@main.group("settings")
def settings_group() -> None:
    """Global mail settings."""


@settings_group.command("show")
@click.pass_context
def settings_show(ctx: click.Context) -> None:
    """Show the global settings."""
    inst = _instance(ctx)
    click.echo(f"tracking: {'on' if inst.mailboxes.global_tracking() else 'off'}")
    click.echo(f"click tracking: {'on' if inst.mailboxes.global_clicks() else 'off'}")
    click.echo(f"tracking policy: {inst.consents.global_policy()}")
    details = inst.privacy.view_details()
    click.echo(f"view IP address: {details.ip}")
    click.echo(f"view user agent: {details.user_agent}")
    click.echo(f"view details kept: {_retention_line(inst.privacy.retention())}")
    reach = public_url_reach(inst.settings.base_url)
    click.echo(f"public URL: {reach.url}")
    if reach.message:
        click.echo(f"warning: {_reach_line(reach)}")


def _retention_line(retention: Retention) -> str:
    if retention.days is None:
        return "for ever"
    run = retention.last_run
    last = ("never" if run is None else
            f"{run.at:%Y-%m-%d %H:%M} UTC, {run.views} view(s) cleared")
    return f"{retention.days} days (last purge: {last})"


def _reach_line(reach: Reach) -> str:
    """The public URL's problem and what to do, on one line."""
    return (f"{reach.message[:1].lower()}{reach.message[1:]} Set MAILSEEN_PUBLIC_URL "
            "(or --public-url) to the https address recipients reach this server at."
            if reach.message else "")


@settings_group.command("tracking")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_context
def settings_tracking(ctx: click.Context, state: str) -> None:
    """Switch open tracking on or off for mailboxes that use the global setting."""
    inst = _instance(ctx)
    inst.mailboxes.set_global_tracking(None, state == "on")
    click.echo(f"tracking: {state}")


@settings_group.command("clicks")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_context
def settings_clicks(ctx: click.Context, state: str) -> None:
    """Switch click tracking on or off for mailboxes that use the global setting."""
    inst = _instance(ctx)
    inst.mailboxes.set_global_clicks(None, state == "on")
    click.echo(f"click tracking: {state}")


@settings_group.command("policy")
@click.argument("policy", type=click.Choice(list(POLICIES)))
@click.pass_context
def settings_policy(ctx: click.Context, policy: str) -> None:
    """Whom tracking follows, for mailboxes that use the global policy."""
    inst = _instance(ctx)
    click.echo(f"tracking policy: {inst.consents.set_global_policy(None, policy)}")


@settings_group.command("audit")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.pass_context
def settings_audit(ctx: click.Context, limit: int) -> None:
    """Changes to tracking and privacy settings, newest first."""
    inst = _instance(ctx)
    for e in inst.consents.audit_log(None, limit):
        click.echo(f"{e.at.isoformat(timespec='seconds')}\t{e.user}\t{e.scope}\t{e.setting}"
                   f"\t{e.old or '-'} -> {e.new or '-'}")


# -- consent and the do-not-track list -------------------------------------------------------

@main.group()
def consent() -> None:
    """Recipients' consent to tracking (granted, refused, unknown)."""


@consent.command("set")
@click.argument("address")
@click.argument("state", type=click.Choice(["granted", "refused", "unknown"]))
@click.option("--note", default="", help="How the recipient said so.")
@click.pass_context
def consent_set(ctx: click.Context, address: str, state: str, note: str) -> None:
    """Record what ADDRESS said about being tracked."""
    inst = _instance(ctx)
    event = inst.consents.set_consent(None, address, state, "cli", note)
    click.echo(f"{event.address}: {event.state}")


@consent.command("show")
@click.argument("address")
@click.pass_context
def consent_show(ctx: click.Context, address: str) -> None:
    """ADDRESS's consent and its history."""
    inst = _instance(ctx)
    state, history = inst.consents.consent_of(address)
    _out({"address": address, "state": state,
          "history": [{**e.__dict__, "at": e.at.isoformat()} for e in history]})


@consent.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@click.pass_context
def consent_import(ctx: click.Context, file: Any) -> None:
    """Consents from a CSV FILE (address,state[,note]; "-" for standard input). Every line is
    checked first: one bad line imports nothing."""
    inst = _instance(ctx)
    try:
        text = file.read()
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{file.name}: not UTF-8 text") from exc
    click.echo(f"imported {inst.consents.import_csv(None, text, 'cli')} consent records")


@consent.command("verify")
@click.pass_context
def consent_verify(ctx: click.Context) -> None:
    """Check that no consent record was changed or removed outside mailseen."""
    inst = _instance(ctx)
    seen, broken = inst.consents.verify(None)
    if broken is not None:
        raise click.ClickException(f"the consent records were changed outside mailseen at "
                                   f"event {broken} ({seen} checked)")
    click.echo(f"{seen} consent records checked: none changed")


@main.group("do-not-track")
def do_not_track() -> None:
    """Addresses, domains and *.tld never to track."""


@do_not_track.command("add")
@click.argument("entries", nargs=-1, required=True)
@click.pass_context
def dnt_add(ctx: click.Context, entries: tuple[str, ...]) -> None:
    """Add ENTRIES (erin@example.org, example.fr, *.fr)."""
    inst = _instance(ctx)
    for entry in entries:
        click.echo(f"added {inst.consents.add_do_not_track(None, entry).text}")


@do_not_track.command("remove")
@click.argument("entry")
@click.pass_context
def dnt_remove(ctx: click.Context, entry: str) -> None:
    """Take ENTRY off the list."""
    inst = _instance(ctx)
    click.echo(f"removed {inst.consents.remove_do_not_track(None, entry).text}")


@do_not_track.command("list")
@click.pass_context
def dnt_list(ctx: click.Context) -> None:
    """The list."""
    inst = _instance(ctx)
    for rule in inst.consents.do_not_track():
        click.echo(f"{rule.text}\t{rule.kind}\t{rule.created_by}")
@settings_group.command("privacy")
@click.option("--ip", type=click.Choice(["full", "truncated", "none"]),
              help="What is stored of a view's IP address: all of it, its network (IPv4 /24, "
              "IPv6 /48) or nothing.")
@click.option("--user-agent", type=click.Choice(["full", "family"]),
              help="What is stored of a view's user agent: all of it, or the client's family "
              "(\"Outlook on Windows\").")
@click.option("--retention-days", metavar="DAYS|forever",
              help="Clear views' IP address, user agent, headers and recipient after this "
              "many days (counts stay); `forever` keeps them.")
@click.pass_context
def settings_privacy(ctx: click.Context, ip: str | None, user_agent: str | None,
                     retention_days: str | None) -> None:
    """Set what is stored of each view and how long its personal details are kept."""
    inst = _instance(ctx)
    if retention_days is not None:  # checked before anything is changed
        days = None if retention_days.strip().lower() == "forever" else retention_days
        if days is not None and not days.strip().isdigit():
            raise InvalidInput("--retention-days: a number of days, or forever")
        inst.privacy.set_retention(None, None if days is None else int(days))
    if ip is not None or user_agent is not None:
        inst.privacy.set_view_details(None, ip=ip, user_agent=user_agent)
    details = inst.privacy.view_details()
    click.echo(f"view IP address: {details.ip}")
    click.echo(f"view user agent: {details.user_agent}")
    click.echo(f"view details kept: {_retention_line(inst.privacy.retention())}")


# -- privacy ---------------------------------------------------------------------------------

@main.group()
def privacy() -> None:
    """Requests of the people mailseen tracks, and the retention purge."""


def _person(address: str) -> str:
    """The ADDRESS argument, refused with the service's own words (no option is to blame)."""
    try:
        return parse_address(address, "address")
    except InvalidInput as exc:
        raise InvalidInput(str(exc)) from None


@privacy.command("export")
@click.argument("address")
@click.pass_context
def privacy_export(ctx: click.Context, address: str) -> None:
    """Print everything stored about ADDRESS as JSON: messages to and from them, the
    copies sent to them and their pixels' views."""
    _out(_instance(ctx).privacy.export(None, _person(address)))


@privacy.command("erase")
@click.argument("address")
@click.pass_context
def privacy_erase(ctx: click.Context, address: str) -> None:
    """Erase the personal data of ADDRESS: the views of the copies sent to them, and their
    address on those copies. Says what it removed and what it kept."""
    done = _instance(ctx).privacy.erase(None, _person(address))
    removed = done.removed
    click.echo(f"{done.address}: removed {removed.get('views', 0)} view(s); "
               f"{removed.get('copy_recipients', 0)} copy recipient(s) replaced by "
               f"{ERASED!r}")
    others = {k: v for k, v in removed.items() if k not in ("views", "copy_recipients")}
    for what, count in others.items():
        click.echo(f"removed {count} {what.replace('_', ' ')}")
    kept = sum(done.kept.values())
    click.echo(f"kept {kept} message(s) naming them (the team's correspondence)")


@privacy.command("purge")
@click.pass_context
def privacy_purge(ctx: click.Context) -> None:
    """Clear now the personal details of views older than the retention period (the daily
    job does the same)."""
    inst = _instance(ctx)
    run = inst.privacy.purge(None)
    if run is None:
        click.echo("purge: off (view details are kept for ever; set "
                   "`mailseen settings privacy --retention-days N`)")
        return
    click.echo(f"purged the details of {run.views} view(s) older than "
               f"{run.before:%Y-%m-%d %H:%M} UTC")


# -- mailboxes -------------------------------------------------------------------------------

def _mailbox_options(f: F) -> F:
    opts = [
        click.option("--name", "display_name", help="Display name."),
        click.option("--transport", type=click.Choice(["outbox", "smtp"]),
                     help="How mail leaves: the local outbox or an SMTP relay."),
        click.option("--smtp-host"), click.option("--smtp-port", type=click.IntRange(1, 65535)),
        click.option("--smtp-tls", type=click.Choice(["none", "starttls", "implicit"])),
        click.option("--smtp-username"),
        click.option("--smtp-password", help="Better: MAILSEEN_SMTP_PASSWORD in the env.",
                     envvar="MAILSEEN_SMTP_PASSWORD"),
        click.option("--tracking", type=click.Choice(["global", "enabled", "disabled"]),
                     help="Use the global setting, or override it."),
        click.option("--click-tracking", type=click.Choice(["global", "enabled", "disabled"]),
                     help="Click tracking: the global setting, or override it."),
        click.option("--aliases", help="Other addresses mail clients may send as from this "
                     "mailbox (comma-separated; \"\" for none)."),
        click.option("--policy", "tracking_policy", type=click.Choice(["global", *POLICIES]),
                     help="Whom tracking follows: the global policy, or this one."),
        click.option("--refusal-line/--no-refusal-line", default=None,
                     help="A one-click refusal link at the bottom of tracked mail."),
        click.option("--refusal-text", help="The refusal line's sentence (\"\": standard)."),
        click.option("--language", type=click.Choice(list(LANGUAGES)),
                     help="Of the refusal line and page."),
        click.option("--privacy-url", help="Your privacy notice, linked from the refusal page."),
        click.option("--remind-not-viewed-days", type=click.IntRange(0, 365),
                     help="Remind senders when a message is not viewed in N days, unless "
                          "they say otherwise (0: no default)."),
        click.option("--remind-not-replied-days", type=click.IntRange(0, 365),
                     help="The same for a reply."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _no_zero_days(values: dict[str, Any]) -> dict[str, Any]:
    """A reminder default of 0 days is no default."""
    return {k: None if k.startswith("remind_") and v == 0 else v for k, v in values.items()}


def _mailbox_json(inst: Instance, box: MailboxRecord) -> dict[str, Any]:
    d = inst.mailboxes.decision(box)
    return {**box.__dict__, "effective_tracking": d.enabled, "tracking_reason": d.reason,
            "effective_click_tracking": inst.mailboxes.click_decision(box).enabled,
            "effective_policy": inst.consents.policy_for(box).policy}


@main.group()
def mailbox() -> None:
    """Team mailboxes (support@, sales@ …)."""


@mailbox.command("add")
@click.argument("address")
@_mailbox_options
@click.pass_context
def mailbox_add(ctx: click.Context, /, address: str, **opts: Any) -> None:
    """Create a mailbox."""
    inst = _instance(ctx)
    values = _no_zero_days({k: v for k, v in opts.items() if v is not None})
    _out(_mailbox_json(inst, inst.mailboxes.add(None, MailboxIn(address, **values))))


@mailbox.command("list")
@click.pass_context
def mailbox_list(ctx: click.Context) -> None:
    """List mailboxes."""
    inst = _instance(ctx)
    boxes = inst.mailboxes.all()
    decisions = inst.mailboxes.decisions(boxes)
    for box in boxes:
        d = decisions[box.id]
        click.echo(f"{box.id}\t{box.address}\t{box.transport}\ttracking {box.tracking} "
                   f"({d.reason})")


@mailbox.command("show")
@click.argument("address")
@click.pass_context
def mailbox_show(ctx: click.Context, address: str) -> None:
    """Show one mailbox."""
    inst = _instance(ctx)
    _out(_mailbox_json(inst, inst.mailboxes.named(None, address)))


@mailbox.command("set")
@click.argument("address")
@click.option("--address", "new_address", help="Change the address.")
@_mailbox_options
@click.pass_context
def mailbox_set(ctx: click.Context, /, address: str, new_address: str | None,
                **opts: Any) -> None:
    """Change a mailbox, e.g. `mailbox set support@example.com --tracking disabled`."""
    inst = _instance(ctx)
    box = inst.mailboxes.named(None, address)
    values = _no_zero_days({k: v for k, v in opts.items() if v is not None})
    if new_address:
        values["address"] = new_address
    _out(_mailbox_json(inst, inst.mailboxes.update(None, box.id, values)))


@mailbox.command("test")
@click.argument("address")
@click.option("--smtp", "what", flag_value="smtp", help="Test only the SMTP relay.")
@click.option("--imap", "what", flag_value="imap", help="Test only the IMAP account.")
@click.pass_context
def mailbox_test(ctx: click.Context, address: str, what: str | None) -> None:
    """Test the mailbox's SMTP relay and IMAP account (those that are set): connect, TLS,
    log in; nothing is sent or read. Exits non-zero when one fails."""
    inst = _instance(ctx)
    box = inst.mailboxes.named(None, address)
    kinds = [what] if what else [k for k, host in (("smtp", box.smtp_host),
                                                    ("imap", box.imap_host)) if host]
    if not kinds:
        raise InvalidInput("the mailbox has no SMTP server and no IMAP server to test",
                           field="address")
    failures = []
    for kind in kinds:
        test = inst.mailboxes.test_smtp if kind == "smtp" else inst.mailboxes.test_imap
        result = asyncio.run(test(None, box))
        if result.ok:
            click.echo(f"{kind}: {result.message}")
        else:
            failures.append(f"{kind}: {result.message}")
    if failures:
        raise MailseenError("; ".join(failures))


# -- sending ------------------------------------------------------------------------------

def _message_json(m: MessageRecord) -> dict[str, Any]:
    return {**m.__dict__, "viewed": m.viewed}


@main.command()
@click.option("--mailbox", "mailbox_address", required=True, help="Sending mailbox address.")
@click.option("--to", multiple=True, help="Recipient (repeatable).")
@click.option("--cc", multiple=True, help="Cc recipient (repeatable).")
@click.option("--bcc", multiple=True, help="Bcc recipient (repeatable; no Bcc header is sent).")
@click.option("--subject", default="")
@click.option("--text", help="Plain-text body.")
@click.option("--html", "html_file", type=click.File("r"), help="File with the HTML body.")
@click.option("--attach", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="File to attach (repeatable).")
@click.option("--in-reply-to", help="Message-ID this replies to.")
@click.option("--references", help="References header for a reply.")
@click.option("--raw", "raw_file", type=click.File("rb"),
              help="Send this complete RFC 5322 message as is ('-' for stdin).")
@click.option("--no-track", is_flag=True,
              help="Do not track this message (it never turns tracking on).")
@click.option("--remind-not-viewed", metavar="DAYS|DATE",
              help="Follow up if no person viewed it in DAYS days or by DATE (YYYY-MM-DD); "
                   "never: no reminder. Default: the mailbox's.")
@click.option("--remind-not-replied", metavar="DAYS|DATE", help="The same for a reply.")
@click.pass_context
def send(ctx: click.Context, mailbox_address: str, to: tuple[str, ...], cc: tuple[str, ...],
         bcc: tuple[str, ...], subject: str, text: str | None, html_file: Any,
         attach: tuple[Path, ...], in_reply_to: str | None, references: str | None,
         raw_file: Any, no_track: bool, remind_not_viewed: str | None,
         remind_not_replied: str | None) -> None:
    """Queue a message for delivery (the server's worker or `mailseen worker` sends it)."""
    import mimetypes

    inst = _instance(ctx)
    box = inst.mailboxes.named(None, mailbox_address)
    remind = RemindChoice(parse_deadline(remind_not_viewed or "", "remind_not_viewed"),
                          parse_deadline(remind_not_replied or "", "remind_not_replied"))
    if raw_file is not None:
        record = inst.sender.submit(box, raw_file.read(), bcc=list(bcc), source="cli",
                                    envelope_to=list(to + cc + bcc) or None,
                                    track=not no_track, remind=remind)
    else:
        attachments = [Attachment(p.name, mimetypes.guess_type(p.name)[0] or
                                  "application/octet-stream", p.read_bytes()) for p in attach]
        draft = Draft(from_addr=box.address, to=list(to), cc=list(cc), bcc=list(bcc),
                      subject=subject, text=text, html=html_file.read() if html_file else None,
                      attachments=attachments, in_reply_to=in_reply_to, references=references)
        record = inst.sender.send_draft(box, draft, source="cli", track=not no_track,
                                        remind=remind)
    click.echo(f"queued message {record.id} {record.message_id} "
               f"(tracking: {record.tracking_reason})")


@main.command()
@click.option("--mailbox", "mailbox_address", required=True, help="Sending mailbox address.")
@click.option("--recipient", help="Write this recipient's own copy (for software that sends "
              "one copy per recipient): its views name them.")
@click.pass_context
def tag(ctx: click.Context, mailbox_address: str, recipient: str | None) -> None:
    """Filter: read a message on stdin, write it tracked to stdout.

    The message is registered as sent by MAILBOX. One line on stderr says
    `trackable=true recipients=shared` (one pixel for every recipient: a view cannot say
    whose), `trackable=true recipient=ADDRESS` with --recipient, or
    `trackable=false reason=...`. The same message (Message-ID) tagged again is registered
    once. Whatever goes wrong (the database
    locked, gone or full, a malformed message), the message comes out unchanged with exit
    status 0; only input that is not a message (2) or an unknown mailbox (1) is refused, with
    nothing on stdout. A message that cannot be written out exits 75 (try again).
    """
    raw = sys.stdin.buffer.read()

    def open_instance() -> Instance:
        return Instance.open(_settings(ctx))

    done = tag_filter(raw, mailbox_address, open_instance, recipient)
    try:
        write_whole(sys.stdout.buffer, done.data)
    except OSError as exc:
        why = f"cannot write the message out: {exc.strerror or exc}"
        if done.message_id is not None:
            not_sent(open_instance, done.message_id, f"the tag filter {why}")
        click.echo(f"mailseen: error: {why}", err=True)
        ctx.exit(CANNOT_WRITE)
    click.echo(done.status, err=True)


@main.group()
def message() -> None:
    """Sent messages and their views."""


@message.command("list")
@click.option("--mailbox", "mailbox_address", help="Only this mailbox.")
@click.option("--status", type=click.Choice(list(get_args(Status))))
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
@click.pass_context
def message_list(ctx: click.Context, mailbox_address: str | None, status: str | None,
                 limit: int) -> None:
    """List messages, newest first."""
    inst = _instance(ctx)
    box_id = inst.mailboxes.named(None, mailbox_address).id if mailbox_address else None
    for m in inst.messages.newest(None, mailbox_id=box_id, status=status, limit=limit):
        seen = (f"viewed {m.view_count}x" if m.view_count else "replied" if m.replied_at
                else "not viewed" if m.tracked else "not tracked")
        err = f"\t{m.last_error}" if m.status == "failed" and m.last_error else ""
        click.echo(f"{m.id}\t{m.status}\t{seen}\t{m.subject}{err}")


@message.command("show")
@click.argument("message_id", type=click.IntRange(1))
@click.pass_context
def message_show(ctx: click.Context, message_id: int) -> None:
    """Show one message with its tracking status and views."""
    inst = _instance(ctx)
    m = inst.messages.get(None, message_id)
    data = _message_json(m)
    copies = inst.messages.copies(None, m)
    whose = {c.id: c.recipient for c in copies}
    data["recipients"] = [{**c.__dict__, "tracked": c.token_key is not None} for c in copies]
    for r in data["recipients"]:
        del r["token_key"]  # what its pixel names: not for display
    data["views"] = [{**v.__dict__, "recipient_address": whose.get(v.copy_id or 0)}
                     for v in inst.messages.views(None, m)]
    data["clicks"] = [k.__dict__ for k in inst.messages.clicks(None, m)]
    _out(data)


@message.command("retry")
@click.argument("message_id", type=click.IntRange(1))
@click.pass_context
def message_retry(ctx: click.Context, message_id: int) -> None:
    """Try the copies of a message that wait or failed again now."""
    n = _instance(ctx).messages.retry(None, message_id)
    click.echo(f"queued {n} cop{'y' if n == 1 else 'ies'} again")


@message.command("cancel")
@click.argument("message_id", type=click.IntRange(1))
@click.pass_context
def message_cancel(ctx: click.Context, message_id: int) -> None:
    """Withdraw the copies of a message that wait or failed: they will not be sent."""
    n = _instance(ctx).messages.cancel(None, message_id)
    click.echo(f"cancelled {n} cop{'y' if n == 1 else 'ies'}")


# -- users --------------------------------------------------------------------------------

def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    env = os.environ.get("MAILSEEN_USER_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        raise InvalidInput("no password: use --password-stdin or MAILSEEN_USER_PASSWORD",
                           field="password")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _user_json(u: UserRecord, inst: Instance) -> dict[str, Any]:
    boxes = {b.id: b.address for b in inst.mailboxes.all()}
    return {"id": u.id, "email": u.email, "name": u.name, "role": u.role,
            "mailboxes": [boxes[i] for i in u.mailbox_ids if i in boxes], "notify": u.notify}


@main.group()
def user() -> None:
    """People who sign in to the web app."""


@user.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, help="Admins manage settings, mailboxes and users.")
@click.option("--mailboxes", default="", help="Comma-separated mailbox addresses (members).")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from stdin (else MAILSEEN_USER_PASSWORD or a prompt).")
@click.pass_context
def user_add(ctx: click.Context, email: str, name: str, admin: bool, mailboxes: str,
             password_stdin: bool) -> None:
    """Create a user (the first admin, for instance)."""
    inst = _instance(ctx)
    ids = inst.mailboxes.find_many(None, mailboxes)
    created = inst.accounts.add_user(None, email, _read_password(password_stdin), name=name,
                                     role="admin" if admin else "member", mailbox_ids=ids)
    _out(_user_json(created, inst))


@user.command("list")
@click.pass_context
def user_list(ctx: click.Context) -> None:
    """List users."""
    inst = _instance(ctx)
    for u in inst.accounts.list_users(None):
        data = _user_json(u, inst)
        click.echo(f"{u.id}\t{u.email}\t{u.role}\t{','.join(data['mailboxes'])}")


@user.command("set")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "member"]))
@click.option("--name")
@click.option("--mailboxes", help="Comma-separated mailbox addresses (replaces the list).")
@click.option("--password", "new_password", is_flag=True,
              help="Set a new password (stdin, MAILSEEN_USER_PASSWORD or a prompt).")
@click.option("--notify", type=click.Choice(["off", "immediately", "daily"]),
              help="E-mail them when a message they sent is first viewed: at once, or in a "
                   "daily digest.")
@click.pass_context
def user_set(ctx: click.Context, email: str, role: str | None, name: str | None,
             mailboxes: str | None, new_password: bool, notify: str | None) -> None:
    """Change a user's role, name, mailboxes, password or notices."""
    inst = _instance(ctx)
    u = inst.accounts.find_user(None, email)
    ids = None if mailboxes is None else inst.mailboxes.find_many(None, mailboxes)
    u = inst.accounts.update_user(None, u.id, role=role, name=name,  # type: ignore[arg-type]
                                  mailbox_ids=ids)
    if new_password:
        inst.accounts.change_password(None, u.id, _read_password(not sys.stdin.isatty()))
    if notify is not None:
        inst.reminders.set_notify(u, notify)
        u = inst.accounts.find_user(None, email)
    _out(_user_json(u, inst))


@user.command("remove")
@click.argument("email")
@click.pass_context
def user_remove(ctx: click.Context, email: str) -> None:
    """Delete a user, their sessions and tokens."""
    inst = _instance(ctx)
    inst.accounts.delete_user(None, inst.accounts.find_user(None, email).id)
    click.echo(f"user {email} removed")


@user.group("app-password")
def app_password() -> None:
    """App passwords: what a user's mail client logs in to SMTP submission with."""


@app_password.command("add")
@click.argument("email")
@click.argument("name")
@click.pass_context
def app_password_add(ctx: click.Context, email: str, name: str) -> None:
    """Create an app password for EMAIL named NAME (the client or device it is for) and
    print it: it is shown only once."""
    inst = _instance(ctx)
    u = inst.accounts.find_user(None, email)
    try:
        record, value = inst.accounts.create_app_password(None, u.id, name)
    except InvalidInput as exc:  # the argument, not `user add`'s --name option
        raise InvalidInput(str(exc).replace("name: ", "NAME: ", 1)) from exc
    click.echo(value)
    click.echo(f"app password {record.id} ({record.name}) for {u.email}: give the mail "
               f"client the user name {u.email} and this password", err=True)


@app_password.command("list")
@click.argument("email")
@click.pass_context
def app_password_list(ctx: click.Context, email: str) -> None:
    """List a user's app passwords (never their values)."""
    inst = _instance(ctx)
    u = inst.accounts.find_user(None, email)
    for p in inst.accounts.list_app_passwords(None, u.id):
        used = f"last used {p.last_used_at:%Y-%m-%d %H:%M}" if p.last_used_at else "never used"
        click.echo(f"{p.id}\t{p.name}\tcreated {p.created_at:%Y-%m-%d}\t{used}")


@app_password.command("revoke")
@click.argument("email")
@click.argument("password_id", type=click.IntRange(1))
@click.pass_context
def app_password_revoke(ctx: click.Context, email: str, password_id: int) -> None:
    """Revoke one of a user's app passwords: clients using it can no longer send."""
    inst = _instance(ctx)
    inst.accounts.revoke_app_password(None, inst.accounts.find_user(None, email).id,
                                      password_id)
    click.echo(f"app password {password_id} revoked")


# -- API tokens --------------------------------------------------------------------------------

@main.group()
def token() -> None:
    """API tokens for the REST API."""


@token.command("create")
@click.argument("name")
@click.option("--user", "user_email", help="Carry this user's rights (default: admin token "
              "for the whole installation).")
@click.pass_context
def token_create(ctx: click.Context, name: str, user_email: str | None) -> None:
    """Create a token and print it (it is shown only once)."""
    inst = _instance(ctx)
    user_id = inst.accounts.find_user(None, user_email).id if user_email else None
    click.echo(inst.accounts.create_token(None, name, user_id))


@token.command("list")
@click.pass_context
def token_list(ctx: click.Context) -> None:
    """List tokens (never their values)."""
    for tid, name, created, used in _instance(ctx).accounts.list_tokens(None):
        click.echo(f"{tid}\t{name}\tcreated {created:%Y-%m-%d}\t"
                   f"last used {used:%Y-%m-%d %H:%M}" if used else
                   f"{tid}\t{name}\tcreated {created:%Y-%m-%d}\tnever used")


@token.command("revoke")
@click.argument("token_id", type=click.IntRange(1))
@click.pass_context
def token_revoke(ctx: click.Context, token_id: int) -> None:
    """Delete a token."""
    _instance(ctx).accounts.revoke_token(None, token_id)
    click.echo(f"token {token_id} revoked")


# -- what counts as a view ---------------------------------------------------------------------

@main.group()
def classify() -> None:
    """Explain how mailseen judges pixel hits and inbound mail."""


@classify.command("hits")
@click.option("--explain", is_flag=True, help="Also say which rule decided, from which data "
              "(and that data's date), and what the network and user agent were taken for.")
@click.pass_context
def classify_hits(ctx: click.Context, explain: bool) -> None:
    """Judge pixel hits given as JSON lines on stdin.

    Each line: {"method": "GET", "headers": {...}, "remote_addr": "...",
    "seconds_after_send": 12.5}. Each output line: {"verdict": "human"|"machine",
    "reason": "...", "client": "..."}. The same classifier the server uses.
    """
    settings = _settings(ctx)
    folder = settings.data_dir / "netdata"
    classifier = HitClassifier(load_data(folder))
    sources = load_manifest(folder).by_label() if explain else {}
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        hit = _hit_from_json(line, number)
        rule, verdict = classifier.decide(hit)
        out: dict[str, Any] = {"verdict": verdict.verdict, "reason": verdict.reason,
                               "client": verdict.client}
        if explain:
            out.update(_explanation(classifier, hit, rule.__name__, verdict, sources))
        click.echo(json.dumps(out, ensure_ascii=False))


def _explanation(classifier: HitClassifier, hit: Hit, rule: str, verdict: Verdict,
                 sources: dict[str, Source]) -> dict[str, Any]:
    network = classifier.data.networks.lookup(hit.remote_addr)
    agent = describe_agent(classifier.data, hit.headers.get("user-agent", "").strip())
    out: dict[str, Any] = {
        "rule": rule, "source": verdict.source,
        "network": {"label": network.label, "kind": network.kind, "cidr": network.cidr}
        if network else None,
        "agent": {"kind": agent.kind, "system": agent.system, "list": agent.source},
    }
    decided_by = sources.get(verdict.source.removeprefix("networks: "))
    if verdict.source.startswith("networks: ") and decided_by is not None:
        out["data"] = {"source": decided_by.key, "retrieved": decided_by.retrieved,
                       "origin": decided_by.origin, "via": decided_by.via,
                       "licence": decided_by.licence}
    return out


def _hit_from_json(line: str, number: int) -> Hit:
    where = f"line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: expected a JSON object")
    headers = data.get("headers", {})
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise InvalidInput(f"{where}: headers must be an object of strings", field="headers")
    method = data.get("method", "GET")
    addr = data.get("remote_addr")
    seconds = data.get("seconds_after_send")
    others = data.get("other_messages_from_client", 0)
    if not isinstance(method, str) or (addr is not None and not isinstance(addr, str)):
        raise InvalidInput(f"{where}: method and remote_addr must be strings")
    if seconds is not None and (isinstance(seconds, bool) or
                                not isinstance(seconds, int | float)):
        raise InvalidInput(f"{where}: seconds_after_send must be a number",
                           field="seconds_after_send")
    if isinstance(others, bool) or not isinstance(others, int) or others < 0:
        raise InvalidInput(f"{where}: other_messages_from_client must be a whole number")
    return Hit(method=method.upper(), headers={k.lower(): v for k, v in headers.items()},
               remote_addr=addr, seconds_after_send=seconds,
               other_messages_from_client=others)


@classify.command("mail")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def classify_mail(files: tuple[Path, ...]) -> None:
    """Say for each message file whether it is an automatic reply (or bounce), and why."""
    for path in files:
        result = detect_automatic(path.read_bytes())
        click.echo(json.dumps({"file": str(path), "automatic": result.automatic,
                               "reason": result.reason}, ensure_ascii=False))


@main.command()
@click.pass_context
def reclassify(ctx: click.Context) -> None:
    """Judge every stored pixel hit again and rebuild every message's summary (after the
    rules or the network data changed)."""
    inst = _instance(ctx)
    seen, changed = inst.reclassify()
    click.echo(f"judged {seen} view(s), {changed} verdict(s) changed")


@main.group()
def data() -> None:
    """Network ranges and user-agent patterns the classifier uses."""


@data.command("update")
@click.argument("source_key", metavar="SOURCE", default="icloud-relay")
@click.option("--from", "origin", help="URL or file of the published list (default: the "
              "source's own address, see `mailseen data show`).")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)),
              help="The list's format (default: the source's).")
@click.option("--kind", type=click.Choice(sorted(NET_KINDS)),
              help="What these networks are (default: the source's).")
@click.option("--label", help="The networks' name, for a new source (default: the source's).")
@click.pass_context
def data_update(ctx: click.Context, source_key: str, origin: str | None, fmt: str | None,
                kind: str | None, label: str | None) -> None:
    """Refresh one network source in the data folder from its publisher's list, then run
    `mailseen reclassify` to apply it to stored hits.

    SOURCE is a source of `mailseen data show` (aws, azure, gcp, google, oracle, eop,
    icloud-relay...) or a new name, which then needs --format, --kind, --label and --from."""
    settings = _settings(ctx)
    folder = settings.data_dir / "netdata"
    known = load_manifest(folder).get(source_key)
    if known is None and not (fmt and kind and label and origin):
        raise InvalidInput(f"unknown source {source_key!r}: a new one needs --format, --kind, "
                           "--label and --from")
    source = known or Source(source_key, label or source_key, kind or "cloud", fmt or "cidr")
    source = replace(source, format=fmt or source.format, kind=kind or source.kind,
                     label=label or source.label)
    where = origin or source.url
    if not where:
        raise InvalidInput(f"source {source_key!r} has no address of its own: give --from")
    recorded = update_source(folder, source, _read_list(where), fetched_from=where,
                             now=datetime.now(UTC))
    click.echo(f"{recorded.networks} network(s) labelled {recorded.label!r} written to "
               f"{folder / 'networks.txt'}; restart the server and run `mailseen reclassify` "
               "to apply them")


def _read_list(where: str) -> str:
    if where.startswith(("https://", "http://")):
        try:
            with urllib.request.urlopen(where, timeout=60) as resp:
                return str(resp.read(200 * 1024 * 1024).decode("utf-8", "replace"))
        except (OSError, ValueError) as exc:
            raise MailseenError(f"cannot fetch {where}: {exc}") from exc
    return Path(where).read_text("utf-8", "replace")


@data.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source.")
@click.pass_context
def data_show(ctx: click.Context, as_json: bool) -> None:
    """List the network sources: what they are, how many blocks, how old, from where."""
    settings = _settings(ctx)
    manifest = load_manifest(settings.data_dir / "netdata")
    today = datetime.now(UTC).date()
    for s in manifest.sources:
        age = s.age_days(today)
        if as_json:
            click.echo(json.dumps({**asdict(s), "age_days": age}, ensure_ascii=False))
            continue
        when = f"{s.retrieved} ({age} days old)" if age is not None else "date unknown"
        click.echo(f"{s.key:13} {s.kind:9} {s.networks:>6}  {when:26} {s.origin:8} {s.label}")


# -- demo data ---------------------------------------------------------------------------------

@main.command()
@click.option("--messages", type=click.IntRange(1), help="Scale mode: this many messages in "
              "bulk (e.g. 1000000) instead of the small demo made through the services.")
@click.option("--views", type=click.IntRange(0), help="Scale mode: pixel hits in all "
              "(default: three per message).")
@click.option("--mailboxes", type=click.IntRange(1), help="Scale mode: mailboxes (default 20).")
@click.option("--force", is_flag=True, help="Add demo data to a database that has messages.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
@click.pass_context
def demo(ctx: click.Context, messages: int | None, views: int | None, mailboxes: int | None,
         force: bool, seed: int) -> None:
    """Fill the data folder with example data: mailboxes, users, conversations and views.

    Without options, a small installation that looks lived in; with --messages (and
    --views, --mailboxes), the same shapes at benchmark scale.
    """
    from .services.demo import fill_small
    from .services.demo_scale import fill_scale

    inst = _instance(ctx)
    if messages is None and views is None and mailboxes is None:
        result = fill_small(inst, seed=seed, force=force)
    else:
        n = messages or 10_000
        result = fill_scale(inst, messages=n, views=3 * n if views is None else views,
                            mailboxes=mailboxes or 20, seed=seed, force=force)
    click.echo(f"demo data: {result.mailboxes} mailboxes, {result.conversations:,} "
               f"conversations, {result.messages:,} messages, {result.views:,} views "
               f"in {result.seconds:.0f}s")
    for account in result.accounts:
        password = account.password or "(existing user: password unchanged)"
        click.echo(f"{account.role:7} {account.email}  password: {password}")
    click.echo(f"start it with `mailseen serve` and sign in at {inst.settings.base_url}/login")


# -- backup and restore ----------------------------------------------------------------------

@main.command()
@click.argument("dest", type=click.Path(path_type=Path))
@click.pass_context
def backup(ctx: click.Context, dest: Path) -> None:
    """Copy the SQLite database to DEST (a new file, or a folder for a dated file); safe
    while mailseen runs. For PostgreSQL use pg_dump (docs/operations.md)."""
    from .services.backup import backup as take_backup

    settings = _settings(ctx)
    done = take_backup(settings, dest)
    click.echo(f"backed up to {done.path} ({done.size:,} bytes, schema {done.revision})")
    if not settings.secret_key:
        click.echo(f"keep {settings.data_dir / 'secret.key'} too (not in the copy): without "
                   "it stored SMTP/IMAP passwords and sent pixels are unreadable", err=True)


@main.command()
@click.argument("src", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def restore(ctx: click.Context, src: Path) -> None:
    """Put the backup SRC in place of the SQLite database (stop mailseen first); the old
    database is kept beside it as .bak."""
    from .services.backup import restore as put_back

    done = put_back(_settings(ctx), src)
    kept = f"; the previous database is now {done.kept}" if done.kept else ""
    click.echo(f"restored {src} to {done.path} (schema {done.revision}){kept}")


# -- webhooks -------------------------------------------------------------------------------

@main.group()
def webhook() -> None:
    """Webhook endpoints: events POSTed, signed, to other systems (docs/integrations.md)."""


def _webhook_out(hook: WebhookRecord) -> dict[str, Any]:
    return {**hook.__dict__, "events": list(hook.events)}


@webhook.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True, required=True,
              type=click.Choice(list(WEBHOOK_EVENTS)), help="An event to send (repeatable).")
@click.option("--mailbox", "mailbox_ref", help="Only this mailbox's events (default: all).")
@click.option("--format", "fmt", type=click.Choice(["standard", "slack", "teams"]),
              default="standard", show_default=True,
              help="Signed JSON, or a Slack or Microsoft Teams incoming-webhook message.")
@click.option("--every-view", is_flag=True,
              help="message.viewed on every human view, not only a copy's first.")
@click.option("--description", default="", help="A note for the admins.")
@click.pass_context
def webhook_add(ctx: click.Context, url: str, events: tuple[str, ...], mailbox_ref: str | None,
                fmt: str, every_view: bool, description: str) -> None:
    """Register URL; prints the endpoint with its signing secret."""
    inst = _instance(ctx)
    box = inst.mailboxes.find(None, mailbox_ref, "mailbox") if mailbox_ref else None
    hook = inst.webhooks.register(None, WebhookIn(
        url, cast(tuple[WebhookEvent, ...], events), box.id if box else None,
        cast(WebhookFormat, fmt), every_view, description))
    _out(_webhook_out(hook))


@webhook.command("list")
@click.pass_context
def webhook_list(ctx: click.Context) -> None:
    """Every endpoint, with its health (disabled ones say why)."""
    inst = _instance(ctx)
    for hook in inst.webhooks.all(None):
        state = "enabled" if hook.enabled else f"DISABLED: {hook.disabled_reason}"
        click.echo(f"{hook.id}\t{hook.url}\t{' '.join(hook.events)}\t{state}")


@webhook.command("remove")
@click.argument("webhook_id", type=click.IntRange(min=1))
@click.pass_context
def webhook_remove(ctx: click.Context, webhook_id: int) -> None:
    """Remove an endpoint and its delivery log."""
    _instance(ctx).webhooks.delete(None, webhook_id)
    click.echo(f"removed webhook {webhook_id}")


@webhook.command("enable")
@click.argument("webhook_id", type=click.IntRange(min=1))
@click.pass_context
def webhook_enable(ctx: click.Context, webhook_id: int) -> None:
    """Enable an endpoint again (what waits for it is sent at once)."""
    _instance(ctx).webhooks.set_enabled(None, webhook_id, True)
    click.echo(f"webhook {webhook_id} enabled")


@webhook.command("disable")
@click.argument("webhook_id", type=click.IntRange(min=1))
@click.pass_context
def webhook_disable(ctx: click.Context, webhook_id: int) -> None:
    """Stop sending to an endpoint (nothing is written for it while it is off)."""
    _instance(ctx).webhooks.set_enabled(None, webhook_id, False)
    click.echo(f"webhook {webhook_id} disabled")


@webhook.command("log")
@click.argument("webhook_id", type=click.IntRange(min=1))
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_context
def webhook_log(ctx: click.Context, webhook_id: int, limit: int) -> None:
    """An endpoint's delivery log, newest first."""
    inst = _instance(ctx)
    for d in inst.webhooks.log(None, webhook_id, limit):
        answer = d.response_status if d.response_status is not None else "-"
        click.echo(f"{d.id}\t{d.created_at:%Y-%m-%d %H:%M:%S}\t{d.event}\t{d.status}\t"
                   f"attempts={d.attempts}\tanswer={answer}\t{d.last_error or ''}".rstrip())


@webhook.command("resend")
@click.argument("webhook_id", type=click.IntRange(min=1))
@click.argument("delivery_id", type=click.IntRange(min=1))
@click.pass_context
def webhook_resend(ctx: click.Context, webhook_id: int, delivery_id: int) -> None:
    """Send an event of the log again (same webhook-id and body)."""
    _instance(ctx).webhooks.resend(None, webhook_id, delivery_id)
    click.echo(f"delivery {delivery_id} queued again")
