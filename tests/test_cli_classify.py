"""`mailseen classify hits|mail`, `mailseen data update` and `mailseen reclassify`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailseen.records import MailboxIn, ViewIn
from mailseen.services.instance import Instance

from .cli_runner import Cli, error, ok

APPLE_MAIL = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko)")
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17231; Pro)"


def test_classify_hits_reads_json_lines_and_explains_each(cli: Cli) -> None:
    lines = [
        {"method": "GET", "headers": {"User-Agent": "Mozilla/5.0"},
         "remote_addr": "17.58.1.1", "seconds_after_send": 40},
        {"method": "GET", "headers": {"User-Agent": OUTLOOK}, "remote_addr": "198.51.100.7",
         "seconds_after_send": 600},
        {"method": "HEAD", "headers": {"User-Agent": OUTLOOK}, "remote_addr": "198.51.100.7"},
        {"method": "GET", "headers": {"User-Agent": OUTLOOK}, "remote_addr": "198.51.100.7",
         "seconds_after_send": 0.4},
    ]
    out = ok(cli("classify", "hits", input="\n".join(json.dumps(x) for x in lines) + "\n"))
    verdicts = [json.loads(x) for x in out.splitlines()]
    assert [v["verdict"] for v in verdicts] == ["machine", "human", "machine", "machine"]
    assert all(set(v) == {"verdict", "reason", "client"} and v["reason"] for v in verdicts)
    assert "Outlook" in verdicts[1]["client"]


def test_classify_hits_refuses_bad_lines_with_one_line(cli: Cli) -> None:
    assert "line 2: not JSON" in error(cli("classify", "hits",
                                            input='{"method": "GET"}\n{oops\n'), 2)
    assert "seconds_after_send" in error(cli("classify", "hits", input=json.dumps(
        {"headers": {}, "seconds_after_send": "soon"}) + "\n"), 2)


def test_classify_mail_tells_auto_replies_from_people(cli: Cli, tmp_path: Path) -> None:
    oof = tmp_path / "oof.eml"
    oof.write_bytes(b"From: bob@example.org\r\nTo: a@example.com\r\nAuto-Submitted: auto-replied"
                    b"\r\nSubject: Automatic reply: Quote\r\n\r\nI am away.\r\n")
    person = tmp_path / "person.eml"
    person.write_bytes(b"From: bob@example.org\r\nTo: a@example.com\r\nSubject: Re: Quote\r\n"
                       b"\r\nI was out of office last week, sorry. Looks good!\r\n")
    out = [json.loads(x) for x in ok(cli("classify", "mail", str(oof), str(person)))
           .splitlines()]
    assert [(o["file"], o["automatic"]) for o in out] == [(str(oof), True),
                                                          (str(person), False)]
    assert out[1]["reason"] == "not automatic"
    error(cli("classify", "mail", str(tmp_path / "missing.eml")), 2)


def test_data_update_then_reclassify_rejudges_stored_hits(cli: Cli, tmp_path: Path,
                                                          instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn("a@example.com", tracking="enabled"))
    msg = instance.sender.submit(box, b"From: a@example.com\r\nTo: b@example.org\r\n"
                                      b"Content-Type: text/html\r\n\r\n<p>hi</p>")
    at = datetime.now(UTC) + timedelta(hours=1)
    instance.store.record_views([ViewIn(msg.id, 0, at, "GET", "81.2.69.9", APPLE_MAIL, {})])
    assert instance.store.get_message(msg.id).view_count == 1  # unjudged: counted
    assert "judged 1 view(s), 1 verdict(s) changed" in ok(cli("reclassify"))
    assert instance.store.get_message(msg.id).view_count == 1  # Apple Mail, not a relay
    relay_list = tmp_path / "egress.csv"
    relay_list.write_text("81.2.69.0/24,GB,GB-EN,London,\n2a02:8010::/32,GB,GB-EN,,\n")
    out = ok(cli("data", "update", "--from", str(relay_list)))
    assert out.startswith("2 network(s) labelled 'iCloud Private Relay' written")
    assert "1 verdict(s) changed" in ok(cli("reclassify"))
    after = instance.store.get_message(msg.id)
    assert (after.view_count, after.machine_count) == (0, 1)
    [view] = instance.store.list_views(msg.id)
    assert view.verdict == "machine" and "Privacy Protection" in view.reason
    # An error page instead of the list is refused whole; the earlier update stays.
    page = tmp_path / "error.html"
    page.write_text("<html><body>503 Service Unavailable</body></html>\n")
    error(cli("data", "update", "--from", str(page)), 2)
    assert "1 verdict(s) changed" not in ok(cli("reclassify"))
    assert instance.store.get_message(msg.id).machine_count == 1
