"""Automatic replies: out-of-office, vacation, help-desk acknowledgements and bounces are
machine-made; a person's reply, even one that mentions being out of office, is not.

Every message below is written for these tests, in the shape its sender really produces.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pytest

from mailseen.core.autoreply import RULES, AutoResult, detect_automatic, parse_headers

ORIGINAL = "<20240513091000.4f2a@mailseen.test>"
FULLWIDTH_COLON = "\uff1a"  # what Chinese and Japanese subjects use


def message(headers: str, body: str = "Thanks.\n") -> bytes:
    """RFC 5322 bytes with CRLF line ends; a str header block may hold raw UTF-8."""
    text = headers.strip("\n") + "\n\n" + body
    return text.replace("\n", "\r\n").encode("utf-8")


def exchange_oof(subject: str, *, auto_submitted: bool = True, loop: bool = True,
                 language: str = "en-US") -> bytes:
    extra = ""
    if auto_submitted:
        extra += "Auto-Submitted: auto-generated\n"
    if loop:
        extra += "X-MS-Exchange-Inbox-Rules-Loop: anna.schmidt@example.de\n"
    return message(f"""\
Received: from AM0PR02MB5678.eurprd02.prod.outlook.com (2603:10a6:208:c0::14) by
 AM0PR02MB1234.eurprd02.prod.outlook.com with HTTPS; Mon, 13 May 2024 09:12:01 +0000
From: Anna Schmidt <anna.schmidt@example.de>
To: Sales <sales@mailseen.test>
Subject: {subject}
Thread-Topic: Quote 2291
Thread-Index: AQHapRz8uN3kQ0a9XUKm2h3QbWd6Qw==
Date: Mon, 13 May 2024 09:12:01 +0000
Message-ID: <5c1e0a2b-oof@AM0PR02MB1234.eurprd02.prod.outlook.com>
In-Reply-To: {ORIGINAL}
References: {ORIGINAL}
{extra}X-Auto-Response-Suppress: All
X-MS-Has-Attach:
X-MS-TNEF-Correlator:
Content-Language: {language}
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 8bit
MIME-Version: 1.0
""", "Ich bin bis 20. Mai nicht im Büro. / I am out of the office until 20 May.\n")


def subject_only(subject: str) -> bytes:
    """An auto-reply from a server that sets no machine headers at all: only its subject
    gives it away (older Exchange behind a gateway that strips X- headers, small hosts)."""
    return message(f"""\
From: Lena Berg <lena@example.se>
To: sales@mailseen.test
Subject: {subject}
Date: Mon, 13 May 2024 09:15:44 +0200
Message-ID: <oof-{len(subject)}@mail.example.se>
In-Reply-To: {ORIGINAL}
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
""", "Jag är på semester till och med 20 maj.\n")


GMAIL_VACATION = message(f"""\
MIME-Version: 1.0
Received: by 2002:a05:6a10:8c0a:b0:4e3:1c2:7d1 with HTTP; Mon, 13 May 2024 02:13:10 -0700 (PDT)
Auto-Submitted: auto-replied
Date: Mon, 13 May 2024 02:13:10 -0700
Message-ID: <CAFx3Qm1vacation@mail.gmail.com>
In-Reply-To: {ORIGINAL}
References: {ORIGINAL}
Subject: Re: Quote 2291
From: Tom Baker <tom.baker@gmail.com>
To: sales@mailseen.test
Content-Type: text/plain; charset="UTF-8"
""", "I'm travelling until Friday with limited access to email.\n")

ZENDESK_ACK = message(f"""\
Date: Mon, 13 May 2024 09:12:30 +0000
From: Example Support <support@example.zendesk.com>
Reply-To: Example Support <support+id88213@example.zendesk.com>
To: sales@mailseen.test
Message-ID: <ZX8Q1A2B_664@zendesk.com>
In-Reply-To: {ORIGINAL}
Subject: [Example Support] Re: Quote 2291
X-Autoreply: yes
X-Mailer: Zendesk Mailer
Mime-Version: 1.0
Content-Type: text/plain; charset=UTF-8
""", "Your request (#88213) has been received and is being reviewed by our support staff.\n")

KAYAKO_ACK = message(f"""\
From: Helpdesk <helpdesk@example.net>
To: sales@mailseen.test
Subject: [#ABC-123-45678]: Quote 2291
X-Autorespond: Ticket created
In-Reply-To: {ORIGINAL}
Content-Type: text/plain
""", "Thank you for contacting us.\n")

VACATION_SCRIPT = message(f"""\
From: Piet de Vries <piet@example.nl>
To: sales@mailseen.test
Subject: Re: Quote 2291
X-Autoresponder: vacation
Precedence: junk
In-Reply-To: {ORIGINAL}
""", "Ik ben afwezig tot 20 mei.\n")

AUTO_REPLY_PRECEDENCE = message(f"""\
From: Office <office@example.it>
To: sales@mailseen.test
Subject: Re: Quote 2291
Precedence: auto_reply
In-Reply-To: {ORIGINAL}
""")

BULK_NO_LIST = message(f"""\
From: noreply@example.com
To: sales@mailseen.test
Subject: Re: Quote 2291
Precedence: bulk
In-Reply-To: {ORIGINAL}
""")

DSN_BOUNCE = message("""\
Return-Path: <>
Received: from mx.example.org (mx.example.org [192.0.2.25]) by mx.mailseen.test
 (Postfix) with ESMTPS id 4VdKq21yQSz9sTx for <sales@mailseen.test>; Mon, 13 May 2024
 09:10:07 +0000 (UTC)
Date: Mon, 13 May 2024 09:10:07 +0000 (UTC)
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: sales@mailseen.test
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
 boundary="4VdKq21yQSz9sTx.1715591407/mx.example.org"
Message-Id: <20240513091007.4VdKq21yQSz9sTx@mx.example.org>
""", """This is a MIME-encapsulated message.

--4VdKq21yQSz9sTx.1715591407/mx.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

<nobody@example.org>: host mx.example.org said: 550 5.1.1 User unknown

--4VdKq21yQSz9sTx.1715591407/mx.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
Final-Recipient: rfc822; nobody@example.org
Action: failed
Status: 5.1.1

--4VdKq21yQSz9sTx.1715591407/mx.example.org--
""")

# The same bounce as an IMAP server shows it when no Return-Path was recorded, and without
# Auto-Submitted (Exim's older bounces).
EXIM_BOUNCE = message("""\
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: sales@mailseen.test
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1s6Xyz-0004kP-3a@mx.example.net>
Date: Mon, 13 May 2024 09:10:09 +0000
""", "This message was created automatically by mail delivery software.\n")

EXCHANGE_NDR = message("""\
From: postmaster@example.com
To: sales@mailseen.test
Subject: Undeliverable: Quote 2291
Date: Mon, 13 May 2024 09:10:11 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type="delivery-status";
\tboundary="_000_ndr_"
""", "--_000_ndr_\nContent-Type: text/plain\n\nDelivery has failed.\n--_000_ndr_--\n")

READ_RECEIPT = message("""\
From: Anna Schmidt <anna.schmidt@example.de>
To: sales@mailseen.test
Subject: Read: Quote 2291
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="mdn"
""", "--mdn\nContent-Type: text/plain\n\nYour message was read.\n--mdn--\n")

PERSON_WAS_OUT = message(f"""\
From: Anna Schmidt <anna.schmidt@example.de>
To: Sales <sales@mailseen.test>
Subject: RE: Quote 2291
Thread-Topic: Quote 2291
Thread-Index: AQHapRz8uN3kQ0a9XUKm2h3QbWd6Q7Ab
Date: Tue, 21 May 2024 08:02:17 +0000
Message-ID: <AM0PR02MB1234C0FFEE@AM0PR02MB1234.eurprd02.prod.outlook.com>
In-Reply-To: {ORIGINAL}
References: {ORIGINAL}
Content-Language: en-US
Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0
""", "Sorry for the slow answer, I was out of office last week. Automatic reply aside, "
     "the quote looks good.\n")

# Outlook puts X-Auto-Response-Suppress on ordinary mail (here a reply with voting buttons).
OUTLOOK_ORDINARY = message(f"""\
From: Anna Schmidt <anna.schmidt@example.de>
To: Sales <sales@mailseen.test>
Subject: RE: Quote 2291
Date: Tue, 21 May 2024 08:05:40 +0000
Message-ID: <AM0PR02MB1234BEEF@AM0PR02MB1234.eurprd02.prod.outlook.com>
In-Reply-To: {ORIGINAL}
X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply
X-MS-Has-Attach:
X-MS-Exchange-Organization-AuthAs: Internal
Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0
""", "Approved.\n")

LIST_REPLY = message(f"""\
Return-Path: <users-bounces+sales=mailseen.test@lists.example.org>
From: Maria Rossi <maria@example.it>
To: users@lists.example.org
Subject: Re: [users] Quote 2291
Date: Tue, 21 May 2024 10:30:00 +0200
Message-ID: <b1c2d3@example.it>
In-Reply-To: {ORIGINAL}
Precedence: list
List-Id: Users of Example <users.lists.example.org>
List-Unsubscribe: <https://lists.example.org/mailman/options/users>,
 <mailto:users-request@lists.example.org?subject=unsubscribe>
List-Post: <mailto:users@lists.example.org>
List-Archive: <https://lists.example.org/pipermail/users/>
Sender: "users" <users-bounces+sales=mailseen.test@lists.example.org>
""", "We had the same question; the answer above works for us.\n")

# Some lists (older Majordomo, some Google Groups) mark what they relay Precedence: bulk.
BULK_LIST_REPLY = LIST_REPLY.replace(b"Precedence: list", b"Precedence: bulk")

AUTO_SUBMITTED_NO = message(f"""\
From: Maria Rossi <maria@example.it>
To: sales@mailseen.test
Subject: Re: Quote 2291
Auto-Submitted: no
In-Reply-To: {ORIGINAL}
""")

OWN_SUBJECT = message("""\
From: Anna Schmidt <anna.schmidt@example.de>
To: sales@mailseen.test
Subject: Out of office next week
""", "Heads-up: I'm away from Monday.\n")

REPLY_TO_AN_OOF = message("""\
From: Anna Schmidt <anna.schmidt@example.de>
To: sales@mailseen.test
Subject: RE: Automatic reply: Quote 2291
""", "Ignore my auto-reply, I'm back.\n")

X_AUTOREPLY_NO = message("""\
From: Anna Schmidt <anna.schmidt@example.de>
Subject: Re: Quote 2291
X-Autoreply: no
""")


@dataclass(frozen=True)
class Row:
    name: str
    raw: bytes
    automatic: bool
    reason: str
    rule: str | None  # the rule that decides, None when none does


ROWS = [
    # --- Exchange out-of-office in each language ------------------------------------------
    Row("Exchange Online OOF, English", exchange_oof("Automatic reply: Quote 2291"),
        True, "Auto-Submitted: auto-generated", "auto_submitted"),
    Row("Exchange on-premises OOF, German", exchange_oof(
        "Abwesenheitsnotiz: Angebot 2291", auto_submitted=False, language="de-DE"),
        True, "Exchange out-of-office", "exchange_out_of_office"),
    Row("Exchange OOF, German (Microsoft 365 wording)", subject_only(
        "Automatische Antwort: Angebot 2291"),
        True, "subject: Automatische Antwort:", "subject_prefix"),
    Row("French, encoded ISO-8859-1", subject_only(
        "=?iso-8859-1?Q?R=E9ponse_automatique=A0:_Devis_2291?="),
        True, "subject: Réponse automatique:", "subject_prefix"),
    Row("French, raw UTF-8 with a space before the colon", subject_only(
        "Réponse automatique : Devis 2291"),
        True, "subject: Réponse automatique:", "subject_prefix"),
    Row("Spanish, encoded UTF-8", subject_only(
        "=?utf-8?B?UmVzcHVlc3RhIGF1dG9tw6F0aWNhOiBQcmVzdXB1ZXN0byAyMjkx?="),
        True, "subject: Respuesta automática:", "subject_prefix"),
    Row("Italian", subject_only("Risposta automatica: Preventivo 2291"),
        True, "subject: Risposta automatica:", "subject_prefix"),
    Row("Dutch", subject_only("Automatisch antwoord: Offerte 2291"),
        True, "subject: Automatisch antwoord:", "subject_prefix"),
    Row("Swedish", subject_only("Autosvar: Offert 2291"),
        True, "subject: Autosvar:", "subject_prefix"),
    Row("Chinese, encoded UTF-8", subject_only("=?UTF-8?B?6Ieq5Yqo5Zue5aSNOiDmiqXku7cgMjI5MQ==?="),
        True, "subject: 自动回复:", "subject_prefix"),
    Row("Chinese, raw UTF-8 with a full-width colon",
        subject_only(f"自动回复{FULLWIDTH_COLON}报价 2291"),
        True, "subject: 自动回复:", "subject_prefix"),
    Row("Exchange 2003 wording", subject_only("Out of Office AutoReply: Quote 2291"),
        True, "subject: Out of Office AutoReply:", "subject_prefix"),
    Row("Outlook wording", subject_only("Out of Office: Quote 2291"),
        True, "subject: Out of Office:", "subject_prefix"),
    # --- other auto-responders ---------------------------------------------------------------
    Row("Gmail vacation responder", GMAIL_VACATION,
        True, "Auto-Submitted: auto-replied", "auto_submitted"),
    Row("Zendesk acknowledgement", ZENDESK_ACK, True, "X-Autoreply header", "autoreply_headers"),
    Row("help-desk ticket acknowledgement", KAYAKO_ACK,
        True, "X-Autorespond header", "autoreply_headers"),
    Row("vacation script", VACATION_SCRIPT, True, "X-Autoresponder header", "autoreply_headers"),
    Row("Precedence: auto_reply", AUTO_REPLY_PRECEDENCE,
        True, "Precedence: auto_reply", "precedence"),
    Row("Precedence: bulk outside a list", BULK_NO_LIST, True, "Precedence: bulk", "precedence"),
    Row("Precedence: junk outside a list", BULK_NO_LIST.replace(b"bulk", b"junk"),
        True, "Precedence: junk", "precedence"),
    # --- bounces and reports ---------------------------------------------------------------
    Row("DSN bounce from MAILER-DAEMON with an empty return path", DSN_BOUNCE,
        True, "Auto-Submitted: auto-replied", "auto_submitted"),
    Row("the same bounce without Auto-Submitted", DSN_BOUNCE.replace(
        b"Auto-Submitted: auto-replied\r\n", b""),
        True, "bounce (empty return path)", "empty_return_path"),
    Row("Exim bounce seen over IMAP", EXIM_BOUNCE,
        True, "bounce (mailer-daemon)", "mailer_daemon"),
    Row("Exchange non-delivery report", EXCHANGE_NDR,
        True, "bounce (delivery-status report)", "delivery_report"),
    Row("read receipt", READ_RECEIPT,
        True, "automatic report (disposition-notification)", "delivery_report"),
    # --- people --------------------------------------------------------------------------------
    Row("a person who was out of office last week", PERSON_WAS_OUT,
        False, "not automatic", None),
    Row("Outlook mail with X-Auto-Response-Suppress alone", OUTLOOK_ORDINARY,
        False, "not automatic", None),
    Row("a reply through a mailing list", LIST_REPLY, False, "not automatic", None),
    Row("a reply through a list that says Precedence: bulk", BULK_LIST_REPLY,
        False, "not automatic", None),
    Row("Auto-Submitted: no", AUTO_SUBMITTED_NO, False, "not automatic", None),
    Row("a person's own subject about being away", OWN_SUBJECT, False, "not automatic", None),
    Row("a person replying to an auto-reply", REPLY_TO_AN_OOF, False, "not automatic", None),
    Row("X-Autoreply: no", X_AUTOREPLY_NO, False, "not automatic", None),
]


def deciding_rule(raw: bytes) -> str | None:
    headers = parse_headers(raw)
    for rule in RULES:
        if rule(headers) is not None:
            return rule.__name__
    return None


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_each_message_is_judged_with_its_reason(row: Row) -> None:
    assert detect_automatic(row.raw) == AutoResult(row.automatic, row.reason)
    assert deciding_rule(row.raw) == row.rule


def test_every_rule_decides_some_message_of_the_table() -> None:
    assert {r.rule for r in ROWS} - {None} == {rule.__name__ for rule in RULES}


def test_every_rule_cites_the_source_of_its_facts() -> None:
    for rule in RULES:
        assert inspect.getsource(rule).splitlines()[1].strip().startswith("# "), rule.__name__


def test_every_language_of_an_exchange_oof_is_automatic_with_its_headers() -> None:
    subjects = ["Automatic reply: Q", "Abwesenheitsnotiz: Q", "Réponse automatique : Q",
                "Respuesta automática: Q", "Risposta automatica: Q", "Automatisch antwoord: Q",
                "Autosvar: Q", f"自动回复{FULLWIDTH_COLON}Q"]
    for subject in subjects:
        full = exchange_oof(subject)
        assert detect_automatic(full) == AutoResult(True, "Auto-Submitted: auto-generated")
        bare = exchange_oof(subject, auto_submitted=False, loop=False)
        assert detect_automatic(bare).automatic, subject  # the subject alone still tells


@pytest.mark.parametrize("raw", [
    b"", b"\x00\xff\xfe\x00binary", b"no colon here\r\n\r\nbody",
    b"Subject: =?utf-8?B?garbage===?=\r\n\r\n", b"Subject: =?x-unknown?Q?abc?=\r\n\r\n",
    b"From: \xff\xfe <broken@@example>\r\nSubject: \xc3\r\n\r\n",
])
def test_garbage_is_not_automatic_and_never_raises(raw: bytes) -> None:
    assert detect_automatic(raw) == AutoResult(False, "not automatic")


def test_the_body_is_not_read() -> None:
    # A subject-like line in a huge body must not count; the header block alone decides.
    raw = PERSON_WAS_OUT + b"Subject: Automatic reply: x\r\n" + b"x" * 5_000_000
    assert detect_automatic(raw).automatic is False


def test_unix_newlines_work_too() -> None:
    raw = subject_only("Autosvar: Offert 2291").replace(b"\r\n", b"\n")
    assert detect_automatic(raw) == AutoResult(True, "subject: Autosvar:")


def test_header_names_are_matched_whatever_their_case() -> None:
    raw = b"auto-submitted: Auto-Replied\r\nsubject: hi\r\n\r\n"
    assert detect_automatic(raw) == AutoResult(True, "Auto-Submitted: auto-replied")
