"""Typed settings, loaded once at the edge (the CLI) and passed down.

Precedence: command-line options, then ``MAILSEEN_*`` environment variables, then the config
file (TOML, ``--config`` or ``MAILSEEN_CONFIG``), then the defaults below. Every setting has a
help line; ``tests/test_config.py`` checks that each one is documented in the README.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidInput

__all__ = ["Settings", "listen_address", "load_settings"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = _help("Folder for the SQLite database, the outbox and the secret key.",
                           default=Path("data"))
    host: str = _help("Address the HTTP server listens on.", default="127.0.0.1")
    port: int = _help("Port the HTTP server listens on.", default=8000)
    database_url: str = _help(
        "SQLAlchemy URL of the database; empty means SQLite in the data folder.", default="")
    public_url: str = _help(
        "Base URL recipients reach this server at; pixel URLs start with it. "
        "Empty means http://HOST:PORT.", default="")
    trusted_proxies: tuple[_Network, ...] = _help(
        "Comma-separated addresses/networks of reverse proxies whose X-Forwarded-For is "
        "believed.", default=())
    head_timeout: float = _help(
        "Seconds `mailseen serve` gives a connection to send a complete request head (after "
        "connecting or after its last answer) before closing it.", default=10.0)
    connections_per_client: int = _help(
        "Connections one client address (an IPv6 /64) may hold open to `mailseen serve`; "
        "trusted proxies are not limited.", default=100)
    secret_key: str = _help(
        "Secret that signs pixel tokens and encrypts stored passwords; generated into the data "
        "folder on first run when empty. Every node of one installation needs the same.",
        default="")
    worker: bool = _help("Run the delivery worker inside `mailseen serve`.", default=True)
    retry_base_seconds: float = _help(
        "First retry delay after a temporary delivery failure; doubles each attempt.",
        default=30.0)
    retry_max_seconds: float = _help("Longest delay between two delivery attempts.",
                                     default=3600.0)
    max_attempts: int = _help("Delivery attempts before a message is marked failed.",
                              default=12)
    smtp_timeout: float = _help("Seconds to wait on an SMTP relay before giving up an attempt.",
                                default=60.0)
    delivery_batch: int = _help(
        "Queued copies a delivery worker reserves at a time (the rest stay for other "
        "workers); a worker killed mid-batch leaves the unsent ones to the next after "
        "five minutes.", default=50)
    smtp_connections_per_relay: int = _help(
        "SMTP connections one delivery worker keeps open to one relay at a time, each "
        "sending one message after another.", default=1)
    smtp_messages_per_connection: int = _help(
        "Messages sent over one SMTP connection before it is closed and a new one opened.",
        default=100)
    smtp_idle_seconds: float = _help(
        "Seconds a kept SMTP connection may stay unused before the worker closes it (relays "
        "cut idle ones off).", default=30.0)
    ca_file: str = _help(
        "Extra CA certificates (PEM file) to trust for SMTP relays and IMAP servers with private "
        "certificates.",
        default="")
    notify_relay: str = _help(
        "SMTP relay for follow-up reminders and notices to users, as "
        "smtp://USER:PASSWORD@HOST:PORT (STARTTLS) or smtps://… (TLS from the start); empty: "
        "each leaves through the sending mailbox's own transport.", default="")
    notify_from: str = _help(
        "Sender address of reminders and notices sent through notify_relay; empty: the "
        "sending mailbox's address.", default="")
    imap_poll: bool = _help(
        "Poll the mailboxes' IMAP accounts inside `mailseen serve` (else run `mailseen poll`).",
        default=True)
    imap_poll_seconds: float = _help(
        "Seconds between two looks at an IMAP folder whose server offers no IDLE.",
        default=60.0)
    smtp_receiver: str = _help(
        "HOST:PORT where `mailseen serve` receives mail by SMTP for its mailboxes (MX or "
        "forwarding); empty: off (or run `mailseen receive`).", default="")
    smtp_receiver_tls_cert: str = _help(
        "Certificate (PEM) the SMTP receiver offers with STARTTLS; empty: no STARTTLS.",
        default="")
    smtp_receiver_tls_key: str = _help("Private key (PEM) for smtp_receiver_tls_cert.",
                                       default="")
    submission: str = _help(
        "HOST:PORT where `mailseen serve` takes mail from the team's mail clients (SMTP "
        "submission with STARTTLS, usually :587); empty: off (or run `mailseen submission`).",
        default="")
    submission_tls: str = _help(
        "HOST:PORT for SMTP submission with implicit TLS (usually :465); empty: off.",
        default="")
    submission_tls_cert: str = _help(
        "Certificate (PEM, with its chain) SMTP submission offers; without it submission "
        "listens only on loopback addresses.", default="")
    submission_tls_key: str = _help("Private key (PEM) for submission_tls_cert.", default="")
    submission_max_size: int = _help(
        "Largest message (bytes) SMTP submission takes; announced with SIZE.",
        default=25 * 1024 * 1024)
    submission_max_recipients: int = _help(
        "Most recipients one submitted message may have.", default=100)
    submission_per_minute: int = _help(
        "Messages one user may submit per minute (per submission process).", default=30)
    log_level: str = _help("Logging level: debug, info, warning or error.", default="info")
    password_memory_kib: int = _help(
        "Memory (KiB) each argon2id password hash uses; at least 64. Lower it only on a "
        "machine that cannot spare the default for each sign-in.", default=65536)

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'mailseen.db'}"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    def receiver_address(self, value: str | None = None) -> tuple[str, int]:
        """The SMTP receiver's listen address from ``HOST:PORT`` (or ``:PORT``)."""
        return listen_address(self.smtp_receiver if value is None else value, "smtp_receiver")

    def secret(self) -> bytes:
        """The instance secret, created in the data folder the first time it is needed."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()


def listen_address(text: str, name: str) -> tuple[str, int]:
    """(host, port) from ``HOST:PORT`` (or ``:PORT``: every address) for setting ``name``."""
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 <= number < 65536:
        raise InvalidInput(f"{name} must be HOST:PORT, not {text!r}", field=name)
    return host.strip("[]") or "0.0.0.0", number


def setting_help() -> dict[str, str]:
    return {f.name: f.metadata["help"] for f in fields(Settings)}


def settings_table() -> str:
    """The README's settings table, made from the fields above."""
    rows = ["| environment variable | config file key | default | meaning |",
            "| --- | --- | --- | --- |"]
    for f in fields(Settings):
        default = f.default
        shown = (", ".join(map(str, default)) if isinstance(default, tuple) else
                 str(default).lower() if isinstance(default, bool) else str(default))
        rows.append(f"| `MAILSEEN_{f.name.upper()}` | `{f.name}` | "
                    f"{'`' + shown + '`' if shown else '(empty)'} | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"


def _convert(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind == "Path":
            return Path(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return lowered in ("1", "true", "yes", "on")
        if name == "trusted_proxies":
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(ipaddress.ip_network(str(i).strip(), strict=False)
                         for i in items if str(i).strip())
        return str(value)
    except ValueError as exc:
        raise InvalidInput(f"invalid value for {name}: {value!r}", field=name) from exc


def load_settings(options: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None,
                  config_file: Path | None = None) -> Settings:
    """Merge defaults, the config file, the environment and explicit options."""
    environ = os.environ if environ is None else environ
    names = {f.name for f in fields(Settings)}
    merged: dict[str, Any] = {}
    path = config_file or (Path(environ["MAILSEEN_CONFIG"]) if environ.get("MAILSEEN_CONFIG")
                           else None)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"cannot read config file {path}: {exc}", field="config") from exc
        for key, value in data.items():
            key = key.replace("-", "_")
            if key not in names:
                raise InvalidInput(f"unknown setting {key!r} in {path}", field=key)
            merged[key] = value
    for name in names:
        env = environ.get(f"MAILSEEN_{name.upper()}")
        if env is not None:
            merged[name] = env
    for key, value in (options or {}).items():
        if value is not None:
            merged[key] = value
    settings = Settings(**{k: _convert(k, v) for k, v in merged.items()})
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput("public_url must be an absolute http(s) URL", field="public_url")
    if settings.smtp_receiver:
        settings.receiver_address()  # validates
    for name in ("submission", "submission_tls"):
        if getattr(settings, name):
            listen_address(getattr(settings, name), name)  # validates
    for name in ("submission_max_size", "submission_max_recipients", "submission_per_minute"):
        if getattr(settings, name) < 1:
            raise InvalidInput(f"{name} must be at least 1", field=name)
    if settings.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise InvalidInput("log_level must be debug, info, warning or error", field="log_level")
    if not 0 <= settings.port < 65536:
        raise InvalidInput("port must be between 0 and 65535", field="port")
    if not settings.head_timeout > 0:
        raise InvalidInput("head_timeout must be more than 0 seconds", field="head_timeout")
    if settings.connections_per_client < 1:
        raise InvalidInput("connections_per_client must be at least 1",
                           field="connections_per_client")
    for name in ("delivery_batch", "smtp_connections_per_relay",
                 "smtp_messages_per_connection"):
        if getattr(settings, name) < 1:
            raise InvalidInput(f"{name} must be at least 1", field=name)
    if settings.password_memory_kib < 64:
        # argon2id needs 8 KiB per lane, and the hasher uses four lanes.
        raise InvalidInput("password_memory_kib must be at least 64",
                           field="password_memory_kib")
    return settings
