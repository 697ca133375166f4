"""The command line: every command, its output, and one-line errors with non-zero exits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from mailseen.cli import main

from .cli_runner import Cli, error, ok

HTML_MESSAGE = (b"From: support@example.com\r\nTo: bob@example.org\r\nSubject: Hi\r\n"
                b"Content-Type: text/html; charset=utf-8\r\n\r\n"
                b"<html><body><p>Hello</p></body></html>\r\n")
TEXT_MESSAGE = (b"From: support@example.com\r\nTo: bob@example.org\r\nSubject: Hi\r\n"
                b"\r\nHello\r\n")


def test_mailbox_add_list_show_set(cli: Cli) -> None:
    box = json.loads(ok(cli("mailbox", "add", "support@example.com", "--name", "Support")))
    assert box["tracking"] == "global" and box["tracking_reason"] == "disabled globally"
    assert "support@example.com" in ok(cli("mailbox", "list"))
    changed = json.loads(ok(cli("mailbox", "set", "support@example.com",
                                 "--tracking", "enabled")))
    assert changed["tracking_reason"] == "enabled by mailbox setting"
    shown = json.loads(ok(cli("mailbox", "show", "SUPPORT@example.com")))
    assert shown["id"] == box["id"] and shown["display_name"] == "Support"


def test_smtp_mailbox_needs_a_host_and_hides_the_password(cli: Cli) -> None:
    assert "--smtp-host" in error(cli("mailbox", "add", "a@example.com", "--transport", "smtp"),
                                   2)
    out = ok(cli("mailbox", "add", "a@example.com", "--transport", "smtp", "--smtp-host",
                  "smtp.example.com", "--smtp-password", "hunter2"))
    assert "hunter2" not in out and json.loads(out)["has_smtp_password"] is True


def test_global_tracking_setting(cli: Cli) -> None:
    assert ok(cli("settings", "show")).splitlines()[0] == "tracking: off"
    ok(cli("settings", "tracking", "on"))
    assert ok(cli("settings", "show")).splitlines()[0] == "tracking: on"
    ok(cli("mailbox", "add", "a@example.com"))
    assert json.loads(ok(cli("mailbox", "show", "a@example.com")))["effective_tracking"]


@pytest.mark.parametrize(("args", "code"), [
    (("mailbox", "add", "not-an-address"), 2),
    (("mailbox", "show", "nobody@example.com"), 1),
    (("mailbox", "set", "nobody@example.com", "--tracking", "enabled"), 1),
    (("send", "--mailbox", "nobody@example.com", "--to", "x@y.org", "--text", "t"), 1),
    (("message", "show", "42"), 1),
    (("token", "revoke", "42"), 1),
])
def test_bad_input_is_one_line_and_non_zero(cli: Cli, args: tuple[str, ...], code: int) -> None:
    error(cli(*args), code)


def test_duplicate_mailbox_is_anerror(cli: Cli) -> None:
    ok(cli("mailbox", "add", "a@example.com"))
    assert "exists already" in error(cli("mailbox", "add", "a@example.com"))


def test_send_queues_and_worker_delivers_to_the_outbox(cli: Cli, tmp_path: Path) -> None:
    ok(cli("mailbox", "add", "support@example.com", "--tracking", "enabled"))
    html = tmp_path / "body.html"
    html.write_text("<p>Hello <b>there</b></p>")
    att = tmp_path / "notes.txt"
    att.write_text("attached")
    out = ok(cli("send", "--mailbox", "support@example.com", "--to", "bob@example.org",
                  "--bcc", "boss@example.org", "--subject", "Hello", "--text", "Hello there",
                  "--html", str(html), "--attach", str(att)))
    assert out.startswith("queued message 1 <") and "enabled by mailbox setting" in out
    # Tracked: one copy for each recipient, each with a pixel of its own.
    assert "delivered 2 message(s)" in ok(cli("worker", "--once"))
    copies = [eml.read_bytes() for eml in (tmp_path / "data" / "outbox").glob("*.eml")]
    assert len(copies) == 2
    for raw in copies:
        assert b"/t/" in raw and b"Bcc" not in raw and b'filename="notes.txt"' in raw
    assert len({re.search(rb"/t/[^.]+", raw).group() for raw in copies}) == 2  # type: ignore[union-attr]
    listing = ok(cli("message", "list"))
    assert listing.startswith("1\tsent\tnot viewed\tHello")
    shown = json.loads(ok(cli("message", "show", "1")))
    assert shown["envelope_to"] == ["bob@example.org", "boss@example.org"]
    assert shown["views"] == []


@pytest.mark.parametrize(("option", "value"), [
    ("--subject", "=?UTF-8?Q?x=0ABcc:_evil@evil.example?="),
    ("--in-reply-to", "<a =?UTF-8?Q?=0ABcc:_spy@evil.example=0AX-Pad:?= b@example.org>"),
    ("--to", "=?UTF-8?Q?x=0ABcc=3A_evil=40evil.example=0A?= <bob@example.org>"),
])
def test_send_refuses_encoded_words_that_would_add_a_bcc(cli: Cli, option: str,
                                                         value: str) -> None:
    ok(cli("mailbox", "add", "support@example.com"))
    args = {"--to": "bob@example.org", "--subject": "Hello", option: value}
    result = cli("send", "--mailbox", "support@example.com", "--text", "hi",
                 *[x for pair in args.items() for x in pair])
    assert error(result, 2).startswith(f"mailseen: error: {option}: ")  # named as typed
    assert "RFC 2047" in result.stderr
    assert ok(cli("message", "list")) == ""


def test_send_raw_from_stdin(cli: Cli) -> None:
    ok(cli("mailbox", "add", "support@example.com"))
    out = ok(cli("send", "--mailbox", "support@example.com", "--raw", "-",
                  input=TEXT_MESSAGE))
    assert "disabled globally" in out


def test_tag_filter_tracks_html_and_registers_the_message(cli: Cli) -> None:
    ok(cli("mailbox", "add", "support@example.com", "--tracking", "enabled"))
    result = cli("tag", "--mailbox", "support@example.com", input=HTML_MESSAGE)
    assert result.exit_code == 0
    assert result.stderr == "trackable=true recipients=shared\n"
    out = result.stdout_bytes
    assert out.startswith(b"Message-ID: <") and b"/t/" in out
    assert out.endswith(b'</body></html>\r\n')
    # Everything but the added Message-ID and the pixel is unchanged.
    tag_start = out.index(b"<img")
    tag_end = out.index(b"/>", tag_start) + 2
    body = out[out.index(b"From:"):tag_start] + out[tag_end:]
    assert body == HTML_MESSAGE
    assert ok(cli("message", "list")).startswith("1\tsent\tnot viewed\tHi")


@pytest.mark.parametrize(("message", "reason"), [
    (TEXT_MESSAGE, "plain text"),
    (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com\r\n" + HTML_MESSAGE, "signed"),
    (b"From: a@example.com\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhi\r\n",
     "broken MIME: multipart/mixed without a boundary"),
])
def test_tag_filter_passes_what_it_cannot_track_unchanged(cli: Cli, message: bytes,
                                                          reason: str) -> None:
    ok(cli("mailbox", "add", "support@example.com", "--tracking", "enabled"))
    message = b"Message-ID: <fixed@example.com>\r\n" + message
    result = cli("tag", "--mailbox", "support@example.com", input=message)
    assert result.exit_code == 0
    assert result.stdout_bytes == message
    assert result.stderr == f"trackable=false reason={reason}\n"


def test_tag_filter_reports_disabled_tracking(cli: Cli) -> None:
    ok(cli("mailbox", "add", "support@example.com", "--tracking", "disabled"))
    result = cli("tag", "--mailbox", "support@example.com", input=HTML_MESSAGE)
    assert result.stderr == "trackable=false reason=disabled by mailbox setting\n"
    assert b"/t/" not in result.stdout_bytes


@pytest.mark.parametrize("garbage", [b"", b"   \n", b"\x00\x01\x02\xff\xfe binary", b"hello"])
def test_tag_filter_refuses_what_is_not_a_message(cli: Cli, garbage: bytes) -> None:
    ok(cli("mailbox", "add", "support@example.com"))
    result = cli("tag", "--mailbox", "support@example.com", input=garbage)
    assert "not" in error(result, 2)
    assert result.stdout_bytes == b""


def test_tag_filter_refuses_an_unknown_mailbox(cli: Cli) -> None:
    result = cli("tag", "--mailbox", "nobody@example.com", input=HTML_MESSAGE)
    assert "no mailbox nobody@example.com" in error(result)


def test_tag_runs_as_a_real_process_filter(cli: Cli, tmp_path: Path) -> None:
    ok(cli("mailbox", "add", "support@example.com", "--tracking", "enabled"))
    proc = subprocess.run([sys.executable, "-m", "mailseen", "tag", "--mailbox",
                           "support@example.com"], input=HTML_MESSAGE, capture_output=True,
                          env={**cli.env, "PATH": "/usr/bin:/bin"}, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b"trackable=true recipients=shared\n" and b"/t/" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "mailseen", "tag", "--mailbox",
                          "support@example.com"], input=b"", capture_output=True,
                         env={**cli.env, "PATH": "/usr/bin:/bin"}, timeout=60, check=False)
    assert bad.returncode == 2
    assert bad.stderr.decode().count("\n") == 1 and b"Traceback" not in bad.stderr


def test_token_create_list_revoke(cli: Cli) -> None:
    token = ok(cli("token", "create", "ci")).strip()
    assert token.startswith("ms_") and len(token) > 30
    assert "ci" in ok(cli("token", "list")) and token not in ok(cli("token", "list"))
    ok(cli("token", "revoke", "1"))
    assert ok(cli("token", "list")) == ""


def test_db_upgrade_is_idempotent(cli: Cli) -> None:
    assert "up to date" in ok(cli("db", "upgrade"))
    assert "up to date" in ok(cli("db", "upgrade"))


def test_every_command_has_help(cli: Cli) -> None:
    def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    for path, cmd in walk(main, []):
        assert "Usage:" in ok(cli(*path, "--help"))
        assert cmd.help, f"mailseen {' '.join(path)} has no help text"
