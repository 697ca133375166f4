"""Reading delivery status notifications (RFC 3464 in RFC 6522): who bounced, and why."""

from __future__ import annotations

from mailseen.core.dsn import Bounce, read_report
from mailseen.core.mailbody import parse_message


def _report(status_groups: str, returned: str, report_type: str = "delivery-status") -> bytes:
    return (f"From: postmaster@mx.example.org\r\nTo: sales@example.com\r\nSubject: Failure\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type={report_type}; "
            f"boundary=\"R\"\r\n\r\n--R\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
            f"--R\r\nContent-Type: message/delivery-status\r\n\r\n{status_groups}\r\n"
            f"{returned}--R--\r\n").encode()


RETURNED_WHOLE = ("--R\r\nContent-Type: message/rfc822\r\n\r\nFrom: sales@example.com\r\n"
                  "To: a@example.org, b@example.org\r\nMessage-ID: <q-9@example.com>\r\n"
                  "Subject: Quote\r\n\r\nHello\r\n")


def test_only_failed_recipients_are_bounces_named_by_their_final_recipient() -> None:
    groups = ("Reporting-MTA: dns; exchange.example.org\r\n\r\n"
              "Original-Recipient: rfc822;A@Example.org\r\n"
              "Final-Recipient: rfc822;a@example.org\r\n"
              "Action: failed\r\nStatus: 5.2.2\r\n"
              "Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n\r\n"
              "Final-Recipient: rfc822; b@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n")
    report = read_report(parse_message(_report(groups, RETURNED_WHOLE)))
    assert report is not None and report.message_id == "<q-9@example.com>"
    assert report.bounces == [Bounce("a@example.org", "5.2.2", "552 5.2.2 mailbox full")]
    assert report.reporter == "dns; exchange.example.org"


def test_without_a_diagnostic_the_status_is_the_reason() -> None:
    groups = ("Reporting-MTA: dns; mx\r\n\r\n"
              "Final-Recipient: rfc822; <c@example.org>\r\nAction: failed\r\nStatus: 5.1.1\r\n")
    report = read_report(parse_message(_report(groups, "")))
    assert report is not None and report.message_id is None
    assert report.bounces == [Bounce("c@example.org", "5.1.1", "5.1.1")]


def test_other_reports_and_ordinary_mail_are_not_bounces() -> None:
    read_receipt = _report("Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\n",
                           "", report_type="disposition-notification")
    assert read_report(parse_message(read_receipt)) is None
    plain = b"From: a@example.org\r\nSubject: failed\r\n\r\nAction: failed\r\n"
    assert read_report(parse_message(plain)) is None
