"""Automatic replies: out-of-office, vacation, help-desk acknowledgements and bounces are
machine-made; a person's reply, even one that mentions being out of office, is not.

Every message below is written for these tests, in the shape its sender really produces: for
the markers taken from other projects, the header blocks their code, manuals or sample mails
show (docs/inbound.md names each source). Every entry of the data files is also tried on its
own, and quoted in a person's reply.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from mailseen.core.autoreply import (
    NOT_AUTOMATIC,
    RULES,
    AutoResult,
    detect_automatic,
    parse_headers,
)
from mailseen.core.replydata import (
    HeaderMarker,
    SubjectPrefix,
    parse_header_markers,
    parse_senders,
    parse_subject_prefixes,
    shipped_reply_data,
)
from mailseen.errors import InvalidInput

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


# --- one auto-responder per source, in the shape it really sends -----------------------------
# Header blocks follow the samples the sources describe or ship (Sisimai's set-of-emails, the
# multi_mail wiki, ezmlm-weed's manual, Mailman's and RT's code); addresses and bodies are ours.

def reply_with(extra: str, *, subject: str = "Re: Quote 2291",
               sender: str = "Lena Berg <lena@example.se>", body: str = "I am away.\n") -> bytes:
    """A reply to our message that only ``extra`` (header lines) can give away."""
    return message(f"""\
Received: from mx.example.se (mx.example.se [192.0.2.40]) by mx.mailseen.test
 (Postfix) with ESMTPS id 4VdKq3; Mon, 13 May 2024 09:20:00 +0000 (UTC)
From: {sender}
To: sales@mailseen.test
Subject: {subject}
Date: Mon, 13 May 2024 09:20:00 +0000
Message-ID: <r{len(extra)}.{len(subject)}@mail.example.se>
In-Reply-To: {ORIGINAL}
References: {ORIGINAL}
{extra}MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
""", body)


ICLOUD_VACATION = reply_with("""\
X-Apple-Criteria: {kind=VACATION,startDate=2024-05-10T00:00:00Z,endDate=2024-05-20T23:59:59Z}
X-Apple-Action: VACATION
X-Apple-UUID: 7e23258d-247f-479e-996d-e01f0f30af85
""", subject="Auto reply: Quote 2291", sender="lena@icloud.example")

QMAIL_AUTORESPONDER = reply_with("""\
Delivered-To: sales@mailseen.test
Delivered-To: Autoresponder
""")

MAILMAN_NOTICE = message(f"""\
From: users-owner@lists.example.org
To: sales@mailseen.test
Subject: Your message to Users awaits moderator approval
Message-ID: <notice.1@lists.example.org>
In-Reply-To: {ORIGINAL}
Precedence: bulk
List-Id: Users of Example <users.lists.example.org>
X-List-Administrivia: yes
X-BeenThere: users@lists.example.org
X-Mailman-Version: 2.1.39
""", "Your mail to 'Users' is being held until the list moderator can review it.\n")

MAILMAN_REPLYBOT = message(f"""\
From: users-bounces@lists.example.org
To: sales@mailseen.test
Subject: Auto-response for your message to the "Users" mailing list
Message-ID: <replybot.1@lists.example.org>
In-Reply-To: {ORIGINAL}
X-Mailer: The Mailman Replybot
X-Ack: No
Precedence: bulk
""", "Thanks for writing to the list; the moderators read every message.\n")

CRON_OUTPUT = message("""\
From: root (Cron Daemon)
To: sales@mailseen.test
Subject: Cron <root@mail> /usr/local/bin/backup
X-Cron-Env: <SHELL=/bin/sh>
X-Cron-Env: <HOME=/root>
X-Cron-Env: <LOGNAME=root>
""", "backup: 3 files copied\n")

LISTSERV_REPLY = message(f"""\
From: "L-Soft list server at LISTS.EXAMPLE.ORG" <LISTSERV@LISTS.EXAMPLE.ORG>
To: sales@mailseen.test
Subject: Output of your job "sales"
Message-ID: <LISTSERV%2024051309@LISTS.EXAMPLE.ORG>
In-Reply-To: {ORIGINAL}
""", "> Quote 2291\nUnknown command - \"QUOTE\". Try HELP.\n")

IIS_BOUNCE = message("""\
Return-Path: <MAILER-DAEMON>
From: postmaster@example.com
To: sales@mailseen.test
Subject: Delivery Status Notification
""", "Your message could not be delivered.\n")

FREESCOUT_ACK = message(f"""\
From: Example Support <support@example.com>
To: sales@mailseen.test
Subject: Re: Quote 2291
Message-ID: <autoreply-4711-0123456789abcdef@example.com>
In-Reply-To: {ORIGINAL}
References: {ORIGINAL}
""", "Thank you for your message. We will get back to you within one business day.\n")

FREESCOUT_AGENT_REPLY = FREESCOUT_ACK.replace(
    b"<autoreply-4711-0123456789abcdef@", b"<reply-4711-5-0123456789abcdef@").replace(
    b"Thank you for your message.", b"Hi, Maria here: I checked the quote, it is fine.")

NOTES_OOF = subject_only("AUTO: Anna Schmidt is out of the office (returning 20.05.2024)")
GROUPWISE_READ = subject_only("Message status - opened")
RT_ACK = subject_only("[rt.example.com #4711] AutoReply: Quote 2291")
ZENDESK_RECEIVED = subject_only("[Request received] Quote 2291")
HEADERLESS_NDR = subject_only("Undeliverable: Quote 2291")

FEEDBACK_REPORT = message("""\
From: staff@abuse.example.net
To: sales@mailseen.test
Subject: FW: Quote 2291
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="arf"
""", "--arf\nContent-Type: text/plain\n\nThis is an email abuse report.\n--arf--\n")

SOURCE_ROWS = [
    Row("iCloud vacation (Sisimai rfc3834-03)", ICLOUD_VACATION,
        True, "X-Apple-Action: vacation", "autoreply_headers"),
    Row("FirstClass rule (RT, multi_mail)", reply_with("X-FC-MachineGenerated: true\n"),
        True, "X-FC-MachineGenerated: true", "autoreply_headers"),
    Row("Mailtraq (multi_mail)", reply_with("X-POST-MessageClass: 9; Autoresponder\n"),
        True, "X-POST-MessageClass: 9; Autoresponder", "autoreply_headers"),
    Row("qmail autoresponder, below the server's own Delivered-To (multi_mail)",
        QMAIL_AUTORESPONDER, True, "Delivered-To: Autoresponder", "autoreply_headers"),
    Row("CommuniGate Pro auto-reply (multi_mail)", reply_with("X-Autogenerated: Reply\n"),
        True, "X-Autogenerated: Reply", "autoreply_headers"),
    Row("Domain Technologie Control (multi_mail)", reply_with(
        "X-AutoReply-From: lena@example.se\nX-Mail-Autoreply: dtc-autoreply\n"),
        True, "X-AutoReply-From header", "autoreply_headers"),
    Row("Amazon (ezmlm-weed)", reply_with("X-Amazon-Auto-Reply: yes\n"),
        True, "X-Amazon-Auto-Reply header", "autoreply_headers"),
    Row("KANA Response (ezmlm-weed)", reply_with("X-Mailer: KANA Response 7.0.1\n"),
        True, "X-Mailer: KANA Response", "autoreply_headers"),
    Row("Mailman notice through its own list (Mailman)", MAILMAN_NOTICE,
        True, "X-List-Administrivia: yes", "autoreply_headers"),
    Row("Mailman replybot (Mailman)", MAILMAN_REPLYBOT,
        True, "X-Mailer: The Mailman Replybot", "autoreply_headers"),
    Row("help desk's X-Loop: yes (Zammad)", reply_with("X-Loop: yes\n"),
        True, "X-Loop: yes", "autoreply_headers"),
    Row("FreeScout auto-reply, known by its Message-ID (FreeScout)", FREESCOUT_ACK,
        True, r"Message-ID like <autoreply-\d+-[0-9a-f]{16}@", "autoreply_headers"),
    Row("cron job output (Vixie cron)", CRON_OUTPUT, True, "X-Cron-Env header",
        "autoreply_headers"),
    Row("Unix vacation(1) (MIT IS&T)", reply_with("X-Mailer: vacation\n"),
        True, "X-Mailer: vacation", "autoreply_headers"),
    Row("cPanel X-Precedence (multi_mail)", reply_with("X-Precedence: auto_reply\n"),
        True, "X-Precedence: auto_reply", "precedence"),
    Row("Zimbra vacation (Zammad's spec, Zimbra's own tests)", reply_with(
        "Auto-Submitted: auto-replied (zimbra; vacation)\nPrecedence: bulk\n"
        "X-Mailer: Zimbra 7.1.3_GA_3346\n"),
        True, "Auto-Submitted: auto-replied", "auto_submitted"),
    Row("IIS bounce with Return-Path <MAILER-DAEMON> (multi_mail)", IIS_BOUNCE,
        True, "bounce (mailer-daemon)", "mailer_daemon"),
    Row("LISTSERV command reply (MIT IS&T)", LISTSERV_REPLY,
        True, "list server (listserv)", "list_robot"),
    Row("abuse feedback report (RFC 6522)", FEEDBACK_REPORT,
        True, "automatic report (feedback-report)", "delivery_report"),
    Row("Lotus Notes out-of-office (Discourse, Sisimai)", NOTES_OOF,
        True, "subject: AUTO:", "subject_prefix"),
    Row("GroupWise read notification (ezmlm-weed)", GROUPWISE_READ,
        True, "subject: Message status - opened", "subject_prefix"),
    Row("Request Tracker acknowledgement behind its ticket tag (RT)", RT_ACK,
        True, "subject: AutoReply:", "subject_prefix"),
    Row("Zendesk acknowledgement (go-zendesk)", ZENDESK_RECEIVED,
        True, "subject: [Request received]", "subject_prefix"),
    Row("Exchange NDR whose headers a gateway dropped (Sisimai)", HEADERLESS_NDR,
        True, "subject: Undeliverable:", "subject_prefix"),
]


# --- people whose replies look tempting: never automatic -------------------------------------

RT_CORRESPONDENCE = reply_with("""\
Precedence: bulk
X-RT-Loop-Prevention: rt.example.com
X-RT-Ticket: rt.example.com #4711
X-Managed-BY: RT 5.0.5 (http://www.bestpractical.com/rt/)
""", subject="[rt.example.com #4711] Re: Quote 2291", sender="Maria Rossi <support@example.it>",
    body="Hello, I looked into your quote and we can confirm it.\n")

LIST_REPLY_SMARTLIST = reply_with("""\
X-Loop: users@lists.example.org
X-Mailing-List: <users@lists.example.org>
Precedence: bulk
""", body="Same here, the quote looks fine to us.\n")

def person(name: str, raw: bytes) -> Row:
    return Row(name, raw, False, "not automatic", None)


PEOPLE_ROWS = [
    person("out of office inside a sentence", reply_with(
        "", subject="Re: Quote 2291 - I'm out of office next week, can we talk today?")),
    person("automatic inside a sentence", reply_with(
        "", subject="Automatic renewal of our contract")),
    person("auto reply inside a sentence", reply_with(
        "", subject="Re: Quote 2291 (sorry for the auto reply earlier)")),
    person("a person quoting an out-of-office subject", reply_with(
        "", subject="Re: Out of Office: Quote 2291")),
    person("a German reply to an automatic answer", reply_with(
        "", subject="AW: Automatische Antwort: Angebot 2291")),
    person("a Swedish reply to an Autosvar", reply_with("", subject="SV: Autosvar: Offert 2291")),
    person("Auto as the word for car", reply_with(
        "", subject="Auto: Termin für den Reifenwechsel")),
    person("a person writing from a no-reply-looking address", reply_with(
        "", sender="Anna Schmidt <no-reply@example.de>",
        body="Writing from our shared box: yes, please send the contract.\n")),
    person("a postmaster answering in person", reply_with(
        "", sender="Postmaster <postmaster@example.de>",
        body="We checked our logs; your mail reached us, the user is on leave.\n")),
    person("a person asking for a read receipt", reply_with(
        "Disposition-Notification-To: Anna Schmidt <anna@example.de>\n")),
    person("Outlook mail with X-Auto-Response-Suppress: All alone", reply_with(
        "X-Auto-Response-Suppress: All\nX-MS-Has-Attach:\n")),
    person("a person's reply in an Outlook thread begun by an auto-response", reply_with(
        "Thread-Topic: AutoResponse - Quote 2291\n", subject="RE: AutoResponse - Quote 2291")),
    person("a person's message forwarded by a CommuniGate rule", reply_with(
        "X-Autogenerated: Forward\n")),
    person("a Mailman member's post with X-Ack: no", reply_with(
        "X-Ack: no\nPrecedence: list\nList-Id: <users.lists.example.org>\n")),
    person("a reply relayed by SmartList (X-Loop with an address)", LIST_REPLY_SMARTLIST),
    person("a person's answer typed into Request Tracker (Precedence: bulk)", RT_CORRESPONDENCE),
    person("an Exchange inbox-rule loop header alone (Zammad's spec)", reply_with(
        "X-MS-Exchange-Inbox-Rules-Loop: anna.schmidt@example.de\n")),
    person("an agent's own answer sent from FreeScout", FREESCOUT_AGENT_REPLY),
    person("a subject that only begins like a bounce", reply_with(
        "", subject="Undeliverable parcels in the warehouse")),
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


@pytest.mark.parametrize("row", SOURCE_ROWS, ids=[r.name for r in SOURCE_ROWS])
def test_each_sources_auto_responder_is_automatic_with_its_marker_and_source(row: Row) -> None:
    result = detect_automatic(row.raw)
    assert result == AutoResult(True, row.reason)
    assert deciding_rule(row.raw) == row.rule
    assert result.source and result.source in result.explained


@pytest.mark.parametrize("row", PEOPLE_ROWS, ids=[r.name for r in PEOPLE_ROWS])
def test_a_persons_tempting_message_is_never_automatic(row: Row) -> None:
    assert detect_automatic(row.raw) == NOT_AUTOMATIC


DATA = shipped_reply_data()


# A real value for each regex marker of the data (FreeScout's Message-IDs).
REGEX_SAMPLES = [
    "<autoreply-4711-0123456789abcdef@support.example.com>",
    "<notify-4711-3-1715591407@support.example.com>",
]


def _value_for(marker: HeaderMarker) -> str:
    if marker.test == "regex":
        return next(s for s in REGEX_SAMPLES if re.match(marker.value, s, re.IGNORECASE))
    return {"set": "yes", "is": marker.value, "starts": f"{marker.value} 7.1"}[marker.test]


@pytest.mark.parametrize("marker", DATA.headers, ids=lambda m: f"{m.header}/{m.value}")
def test_every_header_marker_alone_makes_a_reply_automatic(marker: HeaderMarker) -> None:
    # Upper-cased value and name: the data matches whatever the case.
    raw = reply_with(f"{marker.header.upper()}: {_value_for(marker).upper()}\n")
    result = detect_automatic(raw)
    assert result == AutoResult(True, marker.reason)
    assert result.source == marker.source


@pytest.mark.parametrize("entry", DATA.subjects, ids=lambda s: s.prefix)
def test_every_subject_prefix_starts_an_automatic_subject(entry: SubjectPrefix) -> None:
    result = detect_automatic(subject_only(f"{entry.prefix} Quote 2291"))
    assert result == AutoResult(True, f"subject: {entry.prefix}")
    assert result.source == entry.source


@pytest.mark.parametrize("entry", DATA.subjects, ids=lambda s: s.prefix)
@pytest.mark.parametrize("reply", ["Re:", "AW:", "SV:", "RE :", "Fwd:"])
def test_every_subject_prefix_quoted_in_a_persons_reply_is_not_automatic(
        entry: SubjectPrefix, reply: str) -> None:
    assert detect_automatic(reply_with("", subject=f"{reply} {entry.prefix} Quote 2291")) \
        == NOT_AUTOMATIC


def test_an_upper_case_only_prefix_ignores_other_cases() -> None:
    assert detect_automatic(subject_only("AUTO: Anna Schmidt is out of the office")).automatic
    assert not detect_automatic(subject_only("Auto: Anna Schmidt is out of the office")).automatic


def test_every_data_entry_names_its_source_and_none_is_repeated() -> None:
    entries: list[tuple[str, str]] = (
        [(f"{m.header}|{m.test}|{m.value}".lower(), m.source) for m in DATA.headers]
        + [(s.local, s.source) for s in DATA.senders.values()]
        + [(s.prefix.lower(), s.source) for s in DATA.subjects])
    assert all(source.strip() for _, source in entries)
    keys = [key for key, _ in entries]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


@pytest.mark.parametrize(("parse", "text"), [
    (parse_header_markers, "X-Autoreply\tmaybe\t-\tsomewhere\n"),
    (parse_header_markers, "X-Autoreply\tset\n"),
    (parse_senders, "mailer-daemon\tghost\tsomewhere\n"),
    (parse_header_markers, "Message-ID\tregex\t<auto(\tsomewhere\n"),
    (parse_subject_prefixes, "Automatic reply:\n"),  # no @source above it
    (parse_subject_prefixes, "@source x\nAUTO:\tshouting\n"),
])
def test_a_malformed_data_line_is_refused_naming_its_line(
        parse: Callable[[str], object], text: str) -> None:
    with pytest.raises(InvalidInput, match=r"line \d"):
        parse(text)


def test_a_machine_message_through_a_list_still_counts_by_its_strong_marker() -> None:
    through_list = LIST_REPLY.replace(b"Precedence: list", b"Auto-Submitted: auto-replied")
    assert detect_automatic(through_list) == AutoResult(True, "Auto-Submitted: auto-replied")


def test_precedence_bulk_outside_a_list_and_outside_rt_still_counts() -> None:
    bare = reply_with("Precedence: bulk\n")
    assert detect_automatic(bare) == AutoResult(True, "Precedence: bulk")
    assert detect_automatic(reply_with("Precedence: junk\nX-RT-Loop-Prevention: rt\n")) \
        == AutoResult(True, "Precedence: junk")


def test_every_rule_decides_some_message_of_the_table() -> None:
    rows = ROWS + SOURCE_ROWS
    assert {r.rule for r in rows} - {None} == {rule.__name__ for rule in RULES}


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
