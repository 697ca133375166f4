"""Example data: a small installation that looks lived in.

Small (:func:`fill_small`): three mailboxes, an admin and a member, about sixty conversations
over the last thirty days with replies, follow-ups and an out-of-office, and pixel hits from
mail clients, image proxies, Apple Mail Privacy Protection, Gmail's prefetch and security
scanners. Everything goes through the real services (``Sender.submit``, ``Ingestor.ingest``,
``classification.record_views`` with the real classifier); only the clock is moved afterwards,
so the history spreads over a month.

The same shapes at benchmark scale are :mod:`mailseen.services.demo_scale`; what both share
(the accounts, the mail clients and their hits, the people) is here.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TextIO

from ..core.compose import Draft
from ..errors import Conflict, NotFound
from ..records import MailboxIn, MailboxRecord, MessageRecord, Role, ViewIn
from .classification import Judge, record_views
from .instance import Instance

__all__ = ["ADMIN_EMAIL", "MEMBER_EMAIL", "Account", "DemoResult", "Progress", "fill_small"]

ADMIN_EMAIL = "admin@example.com"
MEMBER_EMAIL = "member@example.com"


@dataclass(frozen=True)
class Account:
    email: str
    role: Role
    password: str | None  # None: the user existed already and keeps their password


@dataclass(frozen=True)
class DemoResult:
    accounts: list[Account]
    mailboxes: int
    conversations: int
    messages: int
    views: int
    seconds: float


class Progress:
    """A progress bar on one line of a terminal; elsewhere, a line at every tenth."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, max(1, total), 0
        self.stream = sys.stderr if stream is None else stream
        self.live = self.stream.isatty()
        self.started = self._drawn = time.monotonic()
        self._tenth = 0

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        tenth = self.done * 10 // self.total
        if self.live and time.monotonic() - self._drawn >= 0.2:
            self._draw("\r")
        elif not self.live and tenth > self._tenth:
            self._tenth = tenth
            self._draw("", "\n")

    def close(self) -> None:
        self.done = self.total
        self._draw("\r" if self.live else "", "\n")

    def _draw(self, start: str, end: str = "") -> None:
        share = self.done / self.total
        bar = "#" * int(share * 30)
        self.stream.write(f"{start}{self.label} [{bar:<30}] {share:4.0%} {self.done:,}/"
                          f"{self.total:,} {time.monotonic() - self.started:.0f}s{end}")
        self.stream.flush()
        self._drawn = time.monotonic()


def _refuse_if_filled(inst: Instance, force: bool) -> bool:
    """Whether the database was empty; refuse one with messages unless ``force``."""
    empty = not inst.store.list_messages(limit=1)
    if not empty and not force:
        raise Conflict("the database already has messages; use --force to add demo data "
                       "to it anyway")
    return empty


def _mailbox(inst: Instance, box: MailboxIn) -> MailboxRecord:
    try:
        return inst.store.find_mailbox(box.address)
    except NotFound:
        return inst.store.add_mailbox(box)


def _accounts(inst: Instance, member_boxes: list[int]) -> list[Account]:
    made = []
    people: tuple[tuple[str, str, Role], ...] = ((ADMIN_EMAIL, "Ada Admin", "admin"),
                                                 (MEMBER_EMAIL, "Max Member", "member"))
    for email, name, role in people:
        found = inst.store.find_user(email)
        password: str | None = None
        if found is None:
            password = secrets.token_urlsafe(12)
            user = inst.accounts.create_user(email, password, name=name, role=role)
        else:
            user = found[0]
        if role == "member":
            inst.store.set_memberships(user.id, member_boxes)
        made.append(Account(email, user.role, password))
    return made


# -- who fetches the pixel ---------------------------------------------------------------

@dataclass(frozen=True)
class Client:
    """A kind of pixel fetch: its user agent, its network (the last octet varies) and
    headers."""

    user_agent: str
    network: str  # the first three octets
    accept: str = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"

    def view(self, copy_key: int, at: datetime, host: int) -> ViewIn:
        return ViewIn(0, 0, at, "GET", f"{self.network}.{host}", self.user_agent,
                      {"accept": self.accept, "accept-language": "en-GB,en;q=0.9"},
                      copy_key=copy_key)


_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Safari/537.36")
CLIENTS = {
    # People (judged human by the shipped user-agent patterns).
    "outlook": Client("Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; "
                      "Microsoft Outlook 16.0.17928; ms-office; MSOffice 16)", "198.51.100",
                      "*/*"),
    "apple_mail": Client("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                         "(KHTML, like Gecko)", "203.0.113"),
    "iphone": Client("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
                     "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", "192.0.2"),
    "gmail": Client("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
                    "GoogleImageProxy)", "66.249.84"),
    "webmail": Client(_CHROME, "203.0.113"),
    "thunderbird": Client("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 "
                          "Thunderbird/128.5.0", "192.0.2"),
    # Machines (judged machine by user agent or network).
    "mpp": Client("Mozilla/5.0", "17.58.101"),
    "gmail_prefetch": Client("Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, "
                             "like Gecko) Chrome/42.0.2311.135 Safari/537.36 Edge/12.246 "
                             "Mozilla/5.0", "66.102.8"),
    "mimecast": Client("Mozilla/5.0 (compatible; Mimecast URL Protect)", "205.139.110", "*/*"),
    "defender": Client(_CHROME, "13.70.1"),  # Defender detonates in Azure (AzureCloud tag)
}

# Recipients read in one way: (the machine fetch at delivery or None, the reader's client).
READERS: dict[str, tuple[str | None, str]] = {
    "corporate": (None, "outlook"),
    "scanned": ("defender", "outlook"),
    "gateway": ("mimecast", "webmail"),
    "gmail": (None, "gmail"),
    "gmail_app": ("gmail_prefetch", "gmail"),
    "apple_mpp": ("mpp", "mpp"),  # Privacy Protection: every fetch comes from Apple
    "apple": (None, "iphone"),
    "mac": (None, "apple_mail"),
    "webmail": (None, "webmail"),
    "thunderbird": (None, "thunderbird"),
}
READER_WEIGHTS = {"corporate": 22, "scanned": 10, "gateway": 5, "gmail": 18, "gmail_app": 4,
                  "apple_mpp": 14, "apple": 8, "mac": 5, "webmail": 10, "thunderbird": 4}

FIRST = ("Lena", "Tom", "Rosa", "Kenji", "Amara", "Piotr", "Sofia", "Daniel", "Mei", "Jonas",
         "Fatima", "Lucas", "Ingrid", "Omar", "Chloe", "Ravi", "Marta", "Hugo", "Aiko", "Noah")
LAST = ("Fischer", "Baker", "Okafor", "Tanaka", "Rossi", "Nowak", "Silva", "Ivanova", "Chen",
        "Berg", "Haddad", "Moreau", "Larsen", "Khan", "Dubois", "Patel", "Garcia", "Weber",
        "Sato", "Murphy")
DOMAINS = ("northwind.example", "contoso.example", "fabrikam.example", "tailspin.example",
           "adventure-works.example", "example.org", "example.net", "wingtip.example",
           "litware.example", "proseware.example", "lucerne.example", "margie.example")
SUBJECTS = {
    "support": ("Your ticket #{n}: printer offline", "Your ticket #{n}: VPN drops at 5 pm",
                "Your ticket #{n}: password reset", "Your ticket #{n}: laptop battery",
                "Your ticket #{n}: e-mail quota", "Replacement part shipped (#{n})",
                "Your ticket #{n}: monitor flickers", "Your ticket #{n}: scanner driver"),
    "sales": ("Quote {n} for 40 office chairs", "Follow-up: standing desks demo",
              "Revised offer {n}, valid until Friday", "Catalogue 2026", "Meeting notes and "
              "next steps", "Order confirmation {n}", "Pricing for {n} licences"),
    "billing": ("Invoice {n}", "Payment reminder for invoice {n}", "Credit note {n}",
                "Your new billing address"),
}
REPLIES = ("Thanks, that fixed it!", "Could you send this again as a PDF?",
           "Thank you. Can we talk on Thursday?", "Received, I will pass it on to accounts.",
           "That works for us, please go ahead.", "Sorry, one more question: is VAT included?")
AUTO_REPLY = ("I am out of the office until Monday with limited access to e-mail. For urgent "
              "matters please call the front desk.")


def _person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}@{rng.choice(DOMAINS)}"


def _html(subject: str, sign: str) -> str:
    return (f"<html><body><p>Hello,</p><p>{subject}: the details are below. Reply to this "
            f"message if anything is unclear.</p><p>Kind regards,<br>{sign}</p></body></html>")


def _inbound(name: str, addr: str, to: str, subject: str, when: datetime, refs: list[str],
             body: str, auto: bool = False) -> bytes:
    head = [f"From: {name} <{addr}>", f"To: {to}", f"Subject: {subject}",
            f"Date: {format_datetime(when)}",
            f"Message-ID: <{secrets.token_hex(8)}@{addr.rpartition('@')[2]}>"]
    if refs:
        head += [f"In-Reply-To: {refs[-1]}", f"References: {' '.join(refs)}"]
    if auto:
        head.append("Auto-Submitted: auto-replied")
    head += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


# -- small: through the services ------------------------------------------------------------

# Each story: what happens in one conversation. "out"/"follow" the team writes (tracked HTML;
# "plain" is text only, so not trackable), "reply" a person answers, "auto" an out-of-office,
# "first" the customer starts; views: "read" people open the team's last message, "machine"
# only a machine fetches it, "none" nobody.
STORIES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("out",), "read"), (("out",), "read"), (("out",), "read"), (("out",), "read"),
    (("out",), "none"), (("out",), "none"), (("out",), "machine"), (("out",), "machine"),
    (("out", "reply"), "read"), (("out", "reply"), "none"),
    (("out", "reply", "follow"), "read"), (("out", "reply", "follow"), "none"),
    (("out", "auto"), "read"), (("out", "auto"), "machine"),
    (("plain",), "none"), (("first", "out"), "read"), (("first",), "none"),
    (("out",), "read"), (("out", "reply", "follow", "reply"), "read"), (("out",), "machine"),
)
SMALL_CONVERSATIONS = 60


@dataclass
class _Sent:
    record: MessageRecord
    at: datetime
    reader: str


def fill_small(inst: Instance, *, seed: int = 1, force: bool = False,
               stream: TextIO | None = None) -> DemoResult:
    """Mailboxes, users and a month of conversations with views, made through the services."""
    started = time.monotonic()
    rng = random.Random(seed)
    empty = _refuse_if_filled(inst, force)
    if empty:
        inst.mailboxes.set_global_tracking(None, True)
    boxes = {
        "support": _mailbox(inst, MailboxIn("support@example.com", "Example Support")),
        "sales": _mailbox(inst, MailboxIn("sales@example.com", "Example Sales",
                                          tracking="enabled")),
        "billing": _mailbox(inst, MailboxIn("billing@example.com", "Example Billing",
                                            tracking="disabled")),
    }
    accounts = _accounts(inst, [boxes["support"].id, boxes["sales"].id])
    now = datetime.now(UTC)
    stories = [STORIES[i % len(STORIES)] for i in range(SMALL_CONVERSATIONS)]
    rng.shuffle(stories)
    # Newer days are busier; the newest conversation starts an hour ago.
    starts = sorted(now - timedelta(hours=1) - timedelta(days=29.9) * rng.random() ** 1.4
                    for _ in stories)
    progress = Progress("demo", len(stories) + 2, stream)
    times: dict[int, datetime] = {}  # message id -> when it really happened
    replied: dict[int, datetime] = {}
    last_sent: list[_Sent] = []
    for (steps, views), start in zip(stories, starts, strict=True):
        key = rng.choices(("support", "sales", "billing"), (5, 4, 2))[0]
        sent = _small_conversation(inst, rng, boxes[key], steps, start, now, times, replied)
        if sent is not None and sent.record.tracked and views != "none":
            last_sent.append(_Sent(sent.record, sent.at, views))
        progress.advance()
    asyncio.run(inst.worker().drain())  # into the outbox folder, as `serve` would
    inst.store.backdate(times, replied)
    progress.advance()
    # Each demo message went to one person: their copy's pixel is what they fetch.
    copies = inst.store.copies_of([s.record.id for s in last_sent])
    keys = {mid: found[0].token_key or 0 for mid, found in copies.items()}
    hits = sorted((v for s in last_sent for v in _small_views(rng, s, keys[s.record.id], now)),
                  key=lambda v: v.at)
    stored = record_views(inst.store, hits, Judge(inst.settings.data_dir), inst.privacy.details)
    progress.close()
    return DemoResult(accounts, len(boxes), len(stories), len(times), stored,
                      time.monotonic() - started)


def _small_conversation(inst: Instance, rng: random.Random, box: MailboxRecord,
                        steps: tuple[str, ...], start: datetime, now: datetime,
                        times: dict[int, datetime], replied: dict[int, datetime]
                        ) -> _Sent | None:
    """One conversation's messages; returns the last message the team sent in it."""
    name, addr = _person(rng)
    subject = rng.choice(SUBJECTS[box.address.partition("@")[0]]).format(
        n=rng.randrange(1000, 9999))
    refs: list[str] = []
    at, last = start, None
    for step in steps:
        if step in ("out", "plain", "follow"):
            title = f"Re: {subject}" if refs else subject
            draft = Draft(from_addr=box.address, from_name=box.display_name, to=[addr],
                          subject=title, text=f"Hello,\n\n{title}.\n",
                          html=None if step == "plain" else _html(title, box.display_name),
                          in_reply_to=refs[-1] if refs else None,
                          references=" ".join(refs) or None)
            record = inst.sender.send_draft(box, draft, source="web")
            last = _Sent(record, at, "")
        else:
            auto = step == "auto"
            if auto:
                at = min(now, at + timedelta(seconds=rng.uniform(20, 90)))
            title = (f"Automatic reply: {subject}" if auto else
                     subject if step == "first" else f"Re: {subject}")
            raw = _inbound(name, addr, box.address, title, at, refs,
                           AUTO_REPLY if auto else rng.choice(REPLIES) if refs else
                           f"Hello, I have a question about {subject.lower()}.", auto)
            record = inst.ingestor.ingest(box, raw, "imap").message
            if step == "reply" and last is not None:
                replied[last.record.id] = at
        times[record.id] = at
        refs.append(record.message_id)
        at = min(now, at + timedelta(hours=rng.uniform(0.5, 30)))
    return last


def _small_views(rng: random.Random, sent: _Sent, key: int, now: datetime) -> list[ViewIn]:
    reader = rng.choices(list(READER_WEIGHTS), list(READER_WEIGHTS.values()))[0]
    machine, person = READERS[reader]
    if sent.reader == "machine":
        machine, person = rng.choice(("mpp", "mimecast", "defender", "gmail_prefetch")), ""
    host = rng.randrange(2, 250)
    views = []
    if machine is not None:
        views.append(CLIENTS[machine].view(key, sent.at + timedelta(seconds=rng.uniform(3, 40)),
                                           host))
    if sent.reader == "read":
        at = sent.at
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5))):
            at += timedelta(minutes=rng.lognormvariate(math.log(90), 1.5) + 1)
            views.append(CLIENTS[person].view(key, at, host))
    return [v for v in views if v.at <= now]


# -- scale: bulk rows ------------------------------------------------------------------------

