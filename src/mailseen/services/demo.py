"""Example data: a small installation that looks lived in, and the same shapes at benchmark
scale.

Small (:func:`fill_small`): three mailboxes, an admin and a member, about sixty conversations
over the last thirty days with replies, follow-ups and an out-of-office, and pixel hits from
mail clients, image proxies, Apple Mail Privacy Protection, Gmail's prefetch and security
scanners. Everything goes through the real services (``Sender.submit``, ``Ingestor.ingest``,
``classification.record_views`` with the real classifier); only the clock is moved afterwards,
so the history spreads over a month.

Scale (:func:`fill_scale`): conversations of one to four messages in ``mailboxes`` mailboxes
over a year, written with batched inserts in few transactions. Each message's view summary is
computed from the very events written, so it matches what ``reclassify`` would rebuild, and
views are skewed as in life: most messages get none to three, a few get hundreds.

The bulk writer below works on the storage tables directly (the per-message services cost a
transaction each, hours at a million messages); it is the one place outside ``storage`` that
does, and it only appends rows.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import random
import secrets
import sys
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, TextIO

from ..core.autoreply import detect_automatic
from ..core.compose import Draft
from ..core.pixel import pixel_tag, pixel_url
from ..core.tokens import TokenRef
from ..core.tracking import not_trackable
from ..errors import Conflict, NotFound
from ..records import MailboxIn, MailboxRecord, MessageRecord, Role, TrackingMode, ViewIn
from ..storage.models import Conversation, Message, MessageData, ViewEvent
from .classification import Judge, hit_of, record_views
from .instance import Instance

__all__ = ["ADMIN_EMAIL", "MEMBER_EMAIL", "Account", "DemoResult", "Progress", "fill_scale",
           "fill_small"]

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

    def view(self, message_id: int, at: datetime, host: int) -> ViewIn:
        return ViewIn(message_id, 0, at, "GET", f"{self.network}.{host}", self.user_agent,
                      {"accept": self.accept, "accept-language": "en-GB,en;q=0.9"})


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
    "defender": Client(_CHROME, "40.94.16"),
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
    _backdate(inst, times, replied)
    progress.advance()
    hits = sorted((v for s in last_sent for v in _small_views(rng, s, now)),
                  key=lambda v: v.at)
    stored = record_views(inst.store, hits, Judge(inst.settings.data_dir))
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


def _backdate(inst: Instance, times: dict[int, datetime], replied: dict[int, datetime]) -> None:
    """Move each message (and its conversation) to when it happened in the story."""
    messages: Any = Message.__table__
    conversations: Any = Conversation.__table__
    m, c = messages.c, conversations.c
    spans: dict[int, list[datetime]] = {}
    with inst.db.engine.begin() as conn:
        for mid, at in times.items():
            values: dict[str, Any] = {"created_at": at, "sent_at": at}
            if mid in replied:
                values["replied_at"] = replied[mid]
            conn.execute(messages.update().where(m.id == mid).values(**values))
        for cid, mid in conn.execute(messages.select().with_only_columns(
                m.conversation_id, m.id).where(m.id.in_(list(times)))):
            spans.setdefault(cid, []).append(times[mid])
        for cid, when in spans.items():
            conn.execute(conversations.update().where(c.id == cid).values(
                created_at=min(when), last_activity_at=max(when)))


def _small_views(rng: random.Random, sent: _Sent, now: datetime) -> list[ViewIn]:
    reader = rng.choices(list(READER_WEIGHTS), list(READER_WEIGHTS.values()))[0]
    machine, person = READERS[reader]
    if sent.reader == "machine":
        machine, person = rng.choice(("mpp", "mimecast", "defender", "gmail_prefetch")), ""
    mid, host = sent.record.id, rng.randrange(2, 250)
    views = []
    if machine is not None:
        views.append(CLIENTS[machine].view(mid, sent.at + timedelta(seconds=rng.uniform(3, 40)),
                                           host))
    if sent.reader == "read":
        at = sent.at
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5))):
            at += timedelta(minutes=rng.lognormvariate(math.log(90), 1.5) + 1)
            views.append(CLIENTS[person].view(mid, at, host))
    return [v for v in views if v.at <= now]


# -- scale: bulk rows ------------------------------------------------------------------------

TEAMS = ("support", "sales", "billing", "orders", "service", "projects", "hr", "accounts",
         "press", "partners")
BATCH = 20_000
REPEAT = 61.0  # seconds between two views of a message by one client
COMMIT_EVERY = 200_000
SCALE_DAYS = 365


@dataclass
class _Plan:
    """Every conversation and message of a scale run, in compact arrays."""

    conv_box: array[int]  # mailbox id
    conv_person: array[int]  # index into people
    conv_subject: list[str]
    msg_time: array[float]  # epoch seconds, in planning order
    msg_conv: array[int]  # conversation index
    msg_kind: array[int]  # 0 sent by the team, 1 a person's reply, 2 an automatic reply
    replied: dict[int, float]  # planning index of a sent message -> when a person replied


def fill_scale(inst: Instance, *, messages: int, views: int, mailboxes: int, seed: int = 1,
               force: bool = False, stream: TextIO | None = None,
               days: int = SCALE_DAYS) -> DemoResult:
    """``messages`` messages in conversations of one to four over ``days`` days, in
    ``mailboxes`` mailboxes, and ``views`` pixel hits spread over the sent ones."""
    started = time.monotonic()
    rng = random.Random(seed)
    empty = _refuse_if_filled(inst, force)
    if empty:
        inst.mailboxes.set_global_tracking(None, True)
    modes: tuple[TrackingMode, ...] = ("global",) * 8 + ("enabled", "disabled")
    boxes = [_mailbox(inst, MailboxIn(f"{TEAMS[i % len(TEAMS)]}-{i + 1:03d}@example.com",
                                      f"{TEAMS[i % len(TEAMS)].title()} {i + 1}",
                                      tracking=modes[i % len(modes)]))
             for i in range(mailboxes)]
    accounts = _accounts(inst, [b.id for b in boxes[:3]])
    now = time.time()
    readers = list(READER_WEIGHTS)
    people = [(*_person(rng), rng.choices(readers, list(READER_WEIGHTS.values()))[0])
              for _ in range(max(50, min(50_000, messages // 20)))]
    plan = _plan(rng, boxes, len(people), messages, now, days)
    loader = _Loader(inst, rng, boxes, people, plan, now)
    progress = Progress("demo", len(plan.conv_box) + messages + views, stream)
    stored = loader.run(views, progress)
    progress.close()
    return DemoResult(accounts, len(boxes), len(plan.conv_box), messages, stored,
                      time.monotonic() - started)


def _plan(rng: random.Random, boxes: list[MailboxRecord], people: int, messages: int,
          now: float, days: int) -> _Plan:
    window = days * 86400.0
    # Some mailboxes are far busier than others (a Zipf-like spread).
    weights = [1 / (i + 1) ** 0.8 for i in range(len(boxes))]
    rng.shuffle(weights)
    box_cum = list(_cumulative(weights))
    person_cum = list(_cumulative(1 / (i + 1) ** 0.6 for i in range(people)))
    plan = _Plan(array("q"), array("q"), [], array("d"), array("q"), array("b"), {})
    while len(plan.msg_time) < messages:
        size = min(rng.choices((1, 2, 3, 4), (45, 30, 15, 10))[0],
                   messages - len(plan.msg_time))
        # The team writes first, mostly; then turns alternate, an out-of-office answering
        # straight away now and then (its sender replies later).
        kinds = [0 if rng.random() < 0.88 else 1]
        gaps = [0.0]
        for _ in range(size - 1):
            auto = kinds[-1] == 0 and rng.random() < 0.08
            kinds.append(2 if auto else 0 if kinds[-1] == 1 else 1)
            gaps.append(rng.uniform(20, 120) if auto else
                        min(10 * 86400.0, max(60.0, rng.lognormvariate(math.log(10800), 1.5))))
        span = sum(gaps)
        at = now - span - rng.random() * max(0.0, window - span) - 1
        conv = len(plan.conv_box)
        plan.conv_box.append(boxes[_pick(rng, box_cum)].id)
        plan.conv_person.append(_pick(rng, person_cum))
        plan.conv_subject.append(rng.choice(SUBJECTS[rng.choice(list(SUBJECTS))]).format(
            n=rng.randrange(1000, 99999)))
        last_out = None
        for kind, gap in zip(kinds, gaps, strict=True):
            at += gap
            if kind == 0:
                last_out = len(plan.msg_time)
            elif kind == 1 and last_out is not None:
                plan.replied[last_out] = at
                last_out = None
            plan.msg_time.append(at)
            plan.msg_conv.append(conv)
            plan.msg_kind.append(kind)
    return plan


def _cumulative(weights: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def _pick(rng: random.Random, cum: list[float]) -> int:
    return rng.choices(range(len(cum)), cum_weights=cum)[0]


def _view_counts(rng: random.Random, ages: list[float], total: int) -> Counter[int]:
    """How many hits each trackable message gets: about a third none, most of the rest a
    few, a heavy tail up to hundreds (newsletters forwarded around, a quote read by a
    committee). Messages younger than three days have had less time."""
    weights = [0.0 if rng.random() < 0.3 else
               min(400.0, rng.paretovariate(1.3)) * min(1.0, age / (3 * 86400))
               for age in ages]
    if not ages or total <= 0 or not any(weights):
        return Counter()
    return Counter(rng.choices(range(len(ages)), cum_weights=list(_cumulative(weights)),
                               k=total))


_T_PLAIN = ("From: {name} <{box}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
            "Message-ID: {msgid}\r\n{thread}MIME-Version: 1.0\r\n{extra}"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n")
_T_HTML = ("From: {name} <{box}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
           "Message-ID: {msgid}\r\n{thread}MIME-Version: 1.0\r\n"
           "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello,</p><p>"
           "{body}</p><p>Kind regards,<br>{name}</p>{pixel}</body></html>\r\n")


class _Loader:
    """Writes the plan: conversations, then messages in time order (ids follow time, as in
    life) with their raw bytes, and pixel hits in time order as time passes them."""

    def __init__(self, inst: Instance, rng: random.Random, boxes: list[MailboxRecord],
                 people: list[tuple[str, str, str]], plan: _Plan, now: float) -> None:
        self.inst, self.rng, self.plan, self.now = inst, rng, plan, now
        self.boxes = {b.id: b for b in boxes}
        self.people = people
        self.tracking = inst.mailboxes.decisions(boxes)
        self.run_tag = secrets.token_hex(4)
        self.auto_reason = detect_automatic(_T_PLAIN.format(
            name="x", box="x@example.com", to="y@example.com", subject="Automatic reply: x",
            date="", msgid="<x@example.com>", thread="",
            extra="Auto-Submitted: auto-replied\r\n", body="").encode()).reason
        self.judged = self._judge_clients()
        self.view_rows = {name: {
            "recipient": 0, "method": "GET", "user_agent": c.user_agent,
            "headers_json": json.dumps(c.view(1, _utc(0), 1).headers, separators=(",", ":")),
            "verdict": self.judged[name][0], "reason": self.judged[name][1],
            "client": self.judged[name][2]} for name, c in CLIENTS.items()}
        # The pixel tag with a placeholder for the token: escaping the URL once will do.
        self.pixel = pixel_tag(pixel_url(inst.settings.base_url, "TOKEN"))

    def _judge_clients(self) -> dict[str, tuple[str, str, str]]:
        """Each client's verdict, reason and name, as the real classifier gives them."""
        judge = Judge(self.inst.settings.data_dir)
        sent = datetime.now(UTC) - timedelta(hours=1)
        out: dict[str, tuple[str, str, str]] = {}
        for name, client in CLIENTS.items():
            seconds = 20 if name in ("mpp", "mimecast", "defender", "gmail_prefetch") else 600
            hit = hit_of(client.view(1, sent + timedelta(seconds=seconds), 9), sent, 0)
            v = judge.classifier.classify(hit)
            out[name] = (v.verdict, v.reason, v.client)
        return out

    def run(self, total_views: int, progress: Progress) -> int:
        plan = self.plan
        order = sorted(range(len(plan.msg_time)), key=plan.msg_time.__getitem__)
        ids = self._first_ids()
        with self.inst.db.engine.connect() as conn:
            bulk = _Bulk(conn, self.inst.db.is_sqlite, progress)
            try:
                conv_ids = self._conversations(bulk, order, ids)
                counts = self._counts(order, total_views)
                stored = self._messages(bulk, order, ids, conv_ids, counts)
                bulk.finish()
            finally:
                bulk.restore()
        return stored

    def _first_ids(self) -> dict[str, int]:
        with self.inst.db.engine.connect() as conn:
            return {t: int(conn.exec_driver_sql(f"SELECT max(id) FROM {t}").scalar() or 0)
                    for t in ("conversations", "messages", "view_events")}

    def _conversations(self, bulk: _Bulk, order: list[int], ids: dict[str, int]) -> list[int]:
        plan = self.plan
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        latest_sent: dict[int, int] = {}
        for rank, j in enumerate(order):
            conv = plan.msg_conv[j]
            first.setdefault(conv, plan.msg_time[j])
            last[conv] = plan.msg_time[j]
            if plan.msg_kind[j] == 0:
                latest_sent[conv] = ids["messages"] + rank + 1
        by_start = sorted(first, key=first.__getitem__)
        conv_ids = [0] * len(plan.conv_box)
        rows = []
        for n, conv in enumerate(by_start):
            conv_ids[conv] = cid = ids["conversations"] + n + 1
            addr = self.people[plan.conv_person[conv]][1]
            rows.append({"id": cid, "mailbox_id": plan.conv_box[conv],
                         "subject": plan.conv_subject[conv], "other_party": addr,
                         "created_at": _utc(first[conv]), "last_activity_at": _utc(last[conv]),
                         "latest_sent_id": latest_sent.get(conv)})
            if len(rows) >= BATCH:
                bulk.add(Conversation, rows)
                rows = []
        bulk.add(Conversation, rows)
        bulk.flush()
        return conv_ids

    def _counts(self, order: list[int], total: int) -> dict[int, int]:
        """Hits per planning index of the trackable, delivered messages."""
        plan = self.plan
        self.failed = {j for j in order if plan.msg_kind[j] == 0 and self.rng.random() < 0.005}
        self.plain = {j for j in order if plan.msg_kind[j] == 0 and self.rng.random() < 0.06}
        targets = [j for j in order if plan.msg_kind[j] == 0 and j not in self.failed
                   and j not in self.plain
                   and self.tracking[plan.conv_box[plan.msg_conv[j]]].enabled]
        counts = _view_counts(self.rng, [self.now - plan.msg_time[j] for j in targets], total)
        return {targets[i]: n for i, n in counts.items()}

    def _messages(self, bulk: _Bulk, order: list[int], ids: dict[str, int],
                  conv_ids: list[int], counts: dict[int, int]) -> int:
        plan = self.plan
        pending: list[tuple[float, int, int, str]] = []  # (at, tie-break, message, client)
        prev_msgid: dict[int, str] = {}
        seq = stored = 0
        for rank, j in enumerate(order):
            mid = ids["messages"] + rank + 1
            t = plan.msg_time[j]
            # Hits happen after their message was sent: every hit up to now can be written.
            while pending and pending[0][0] <= t:
                stored += self._view(bulk, heapq.heappop(pending), ids)
            hits = self._hits(j, t, counts.get(j, 0))
            for at, client in hits:
                seq += 1
                heapq.heappush(pending, (at, seq, mid, client))
            row, raw = self._message_row(j, mid, conv_ids, prev_msgid, hits)
            bulk.add(Message, [row])
            bulk.add(MessageData, [{"message_id": mid, "raw": raw}])
        while pending:
            stored += self._view(bulk, heapq.heappop(pending), ids)
        return stored

    def _hits(self, j: int, sent: float, count: int) -> list[tuple[float, str]]:
        if not count:
            return []
        rng, age = self.rng, self.now - sent
        machine, person = READERS[self.people[self.plan.conv_person[self.plan.msg_conv[j]]][2]]
        first = [(sent + min(age, rng.uniform(3, 60)), machine)] if machine is not None else []
        times = []
        for _ in range(count - len(first)):
            delay = max(60.0, rng.lognormvariate(math.log(7200), 2.0))
            times.append(sent + (delay if delay <= age else rng.uniform(min(60.0, age), age)))
        # One client's views of a message count once a minute (RepeatWindow): keep them
        # apart, so that `mailseen reclassify` finds the same verdicts.
        times.sort()
        for i in range(1, len(times)):
            times[i] = max(times[i], times[i - 1] + REPEAT)
        limit = self.now
        for i in reversed(range(len(times))):
            times[i] = min(times[i], limit)
            limit = times[i] - REPEAT
        return sorted([*first, *((at, person) for at in times)])

    def _message_row(self, j: int, mid: int, conv_ids: list[int], prev_msgid: dict[int, str],
                     hits: list[tuple[float, str]]) -> tuple[dict[str, Any], bytes]:
        plan = self.plan
        conv = plan.msg_conv[j]
        box = self.boxes[plan.conv_box[conv]]
        name, addr, _ = self.people[plan.conv_person[conv]]
        kind, t = plan.msg_kind[j], plan.msg_time[j]
        subject = plan.conv_subject[conv]
        if conv in prev_msgid:
            subject = ("Automatic reply: " if kind == 2 else "Re: ") + subject
        out = kind == 0
        domain = "example.com" if out else addr.rpartition("@")[2]
        msgid = f"<{self.run_tag}.{mid}@{domain}>"
        reply_to = prev_msgid.get(conv)
        prev_msgid[conv] = msgid
        created = _utc(t)
        row: dict[str, Any] = dict.fromkeys(_MESSAGE_NULLABLE)
        row.update(
            id=mid, mailbox_id=box.id, message_id=msgid, subject=subject,
            conversation_id=conv_ids[conv],
            to_json=f'["{addr}"]' if out else f'["{box.address}"]', cc_json="[]", bcc_json="[]",
            envelope_json=f'["{addr}"]' if out else "[]", in_reply_to=reply_to,
            references=reply_to, created_at=created, direction="out" if out else "in",
            attempts=1 if out else 0, automatic=kind == 2, view_count=0, machine_count=0,
            auto_reason=self.auto_reason if kind == 2 else "",
            from_addr=box.address if out else addr)
        thread = f"In-Reply-To: {reply_to}\r\nReferences: {reply_to}\r\n" if reply_to else ""
        fields = {"name": box.display_name if out else name, "box": box.address if out else addr,
                  "to": addr if out else box.address, "subject": subject,
                  "date": _date_header(created), "msgid": msgid, "thread": thread}
        if not out:
            row.update(source="imap", status="received", sent_at=created, tracked=False,
                       tracking_reason="")
            raw = _T_PLAIN.format(**fields, extra="Auto-Submitted: auto-replied\r\n"
                                  if kind == 2 else "",
                                  body=AUTO_REPLY if kind == 2 else REPLIES[mid % len(REPLIES)])
            return row, raw.encode()
        decision = self.tracking[box.id]
        tracked = decision.enabled and j not in self.plain
        row.update(source="web" if mid % 2 else "api", tracked=tracked,
                   tracking_reason=(not_trackable("plain text") if j in self.plain and
                                    decision.enabled else decision.reason))
        if j in self.failed:
            row.update(status="failed", attempts=12,
                       last_error="550 5.1.1 recipient address rejected: user unknown")
        else:
            row.update(status="sent", sent_at=_utc(t + 2), replied_at=_utc(plan.replied[j])
                       if j in plan.replied else None)
        for verdict_of, count, first, last in _summary(hits, self.judged):
            row[count] = len(verdict_of)
            row[first], row[last] = (_utc(min(verdict_of)), _utc(max(verdict_of))
                                     ) if verdict_of else (None, None)
        body = f"{subject}: the details are below. Reply to this message if anything is unclear."
        if tracked:
            token = self.inst.signer.make(TokenRef(mid))
            raw = _T_HTML.format(**fields, body=body, pixel=self.pixel.replace("TOKEN", token))
        else:
            raw = _T_PLAIN.format(**fields, extra="", body=f"Hello,\r\n\r\n{body}")
        return row, raw.encode()

    def _view(self, bulk: _Bulk, item: tuple[float, int, int, str], ids: dict[str, int]) -> int:
        at, _, mid, name = item
        ids["view_events"] += 1  # in the order written, which is time order
        bulk.add(ViewEvent, [{**self.view_rows[name], "id": ids["view_events"],
                              "message_id": mid, "at": _utc(at),
                              "ip": f"{CLIENTS[name].network}.{mid % 250 + 2}"}])
        return 1


_MESSAGE_NULLABLE = ("last_error", "next_attempt_at", "lease_until", "sent_at",
                     "first_viewed_at", "last_viewed_at", "first_machine_at", "last_machine_at",
                     "replied_at", "in_reply_to", "references")


def _summary(hits: list[tuple[float, str]], judged: dict[str, tuple[str, str, str]]
             ) -> list[tuple[list[float], str, str, str]]:
    human = [at for at, name in hits if judged[name][0] == "human"]
    machine = [at for at, name in hits if judged[name][0] != "human"]
    return [(human, "view_count", "first_viewed_at", "last_viewed_at"),
            (machine, "machine_count", "first_machine_at", "last_machine_at")]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _date_header(t: datetime) -> str:
    """RFC 5322 date in UTC; format_datetime's strftime costs more than the rest of a row."""
    return (f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year} "
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} +0000")


class _Bulk:
    """Batched inserts on one connection, committed every COMMIT_EVERY rows. On SQLite the
    connection skips fsync and gets a large page cache for the load only."""

    def __init__(self, conn: Any, is_sqlite: bool, progress: Progress) -> None:
        self.conn, self.is_sqlite, self.progress = conn, is_sqlite, progress
        self.rows: dict[Any, list[dict[str, Any]]] = {}
        self.uncommitted = 0
        if is_sqlite:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-524288")  # 512 MiB

    def add(self, model: Any, rows: list[dict[str, Any]]) -> None:
        pending = self.rows.setdefault(model, [])
        pending.extend(rows)
        if len(pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        # Parents before children: conversations, messages, then their bytes and hits.
        for model in (Conversation, Message, MessageData, ViewEvent):
            rows = self.rows.pop(model, [])
            if not rows:
                continue
            table: Any = model.__table__
            self.conn.execute(table.insert(), rows)
            if model is not MessageData:
                self.progress.advance(len(rows))
            self.uncommitted += len(rows)
        if self.uncommitted >= COMMIT_EVERY:
            self.conn.commit()
            self.uncommitted = 0

    def finish(self) -> None:
        """Commit, and gather the planner's statistics: PostgreSQL's autovacuum would soon
        after a bulk load; SQLite only when asked (docs/performance.md, "At scale")."""
        self.flush()
        self.conn.commit()
        if self.is_sqlite:
            self.conn.exec_driver_sql("ANALYZE")
            self.conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            return
        for table in ("conversations", "messages", "view_events"):
            self.conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))")
        self.conn.commit()
        auto = self.conn.execution_options(isolation_level="AUTOCOMMIT")
        auto.exec_driver_sql("VACUUM ANALYZE")

    def restore(self) -> None:
        if self.is_sqlite:
            self.conn.rollback()
            self.conn.exec_driver_sql("PRAGMA synchronous=FULL")
            self.conn.exec_driver_sql("PRAGMA cache_size=-2000")

