"""Example data at benchmark scale: conversations of one to four messages in ``mailboxes``
mailboxes over a year, the shapes of :mod:`mailseen.services.demo`, written by storage's bulk
loader in few transactions (the per-message services cost a transaction each, hours at a
million messages). Each message's view summary is computed from the very events written, so it
matches what ``reclassify`` would rebuild, and views are skewed as in life: most messages get
none to three, a few get hundreds.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import secrets
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from ..core.autoreply import detect_automatic
from ..core.pixel import pixel_tag, pixel_url
from ..core.tokens import TokenRef, new_copy_key
from ..core.tracking import not_trackable
from ..records import MailboxIn, MailboxRecord, TrackingMode
from ..storage.bulk import BATCH, BulkLoader
from .classification import Judge, hit_of
from .demo import (
    AUTO_REPLY,
    CLIENTS,
    READER_WEIGHTS,
    READERS,
    REPLIES,
    SUBJECTS,
    DemoResult,
    Progress,
    _accounts,
    _mailbox,
    _person,
    _refuse_if_filled,
)
from .instance import Instance

__all__ = ["fill_scale"]

TEAMS = ("support", "sales", "billing", "orders", "service", "projects", "hr", "accounts",
         "press", "partners")
REPEAT = 61.0  # seconds between two views of a message by one client
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
        self.copy_of: dict[int, tuple[int, int]] = {}  # message id -> (copy id, position)
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
        ids = self.inst.store.last_ids()
        with self.inst.store.bulk_loader(progress.advance) as bulk:
            conv_ids = self._conversations(bulk, order, ids)
            counts = self._counts(order, total_views)
            stored = self._messages(bulk, order, ids, conv_ids, counts)
            bulk.finish()
        return stored

    def _conversations(self, bulk: BulkLoader, order: list[int], ids: dict[str, int]
                       ) -> list[int]:
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
                bulk.add("conversations", rows)
                rows = []
        bulk.add("conversations", rows)
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

    def _messages(self, bulk: BulkLoader, order: list[int], ids: dict[str, int],
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
            row, raw, copy = self._message_row(j, mid, conv_ids, prev_msgid, hits, ids)
            bulk.add("messages", [row])
            bulk.add("message_data", [{"message_id": mid, "raw": raw}])
            if copy is not None:
                bulk.add("copies", [copy])
                self.copy_of[mid] = (copy["id"], copy["position"])
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
                     hits: list[tuple[float, str]], ids: dict[str, int]
                     ) -> tuple[dict[str, Any], bytes, dict[str, Any] | None]:
        """A message's row and bytes, and for one the team sent, its one copy: the
        recipient's own, with a pixel of its own when tracked."""
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
            from_addr=box.address if out else addr, copies=0, viewed_copies=0,
            failed_copies=0, sent_by="", sent_by_user_id=None)
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
            return row, raw.encode(), None
        decision = self.tracking[box.id]
        tracked = decision.enabled and j not in self.plain
        row.update(source="web" if mid % 2 else "api", tracked=tracked,
                   sent_by="web app" if mid % 2 else "API token",
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
        ids["copies"] += 1
        copy = {key: row[key] for key in _COPY_FROM_MESSAGE}
        copy.update(id=ids["copies"], message_id=mid, position=1 if tracked else 0,
                    recipient=addr if tracked else None, lease_until=None,
                    next_attempt_at=None, last_attempt_at=row["sent_at"] or created,
                    token_key=new_copy_key() if tracked else None)
        row.update(copies=1 if tracked else 0, viewed_copies=int(
            tracked and (bool(row["view_count"]) or row["replied_at"] is not None)),
            failed_copies=int(j in self.failed))
        if tracked:
            token = self.inst.signer.make(TokenRef(copy_key=copy["token_key"]))
            raw = _T_HTML.format(**fields, body=body, pixel=self.pixel.replace("TOKEN", token))
        else:
            raw = _T_PLAIN.format(**fields, extra="", body=f"Hello,\r\n\r\n{body}")
        return row, raw.encode(), copy

    def _view(self, bulk: BulkLoader, item: tuple[float, int, int, str], ids: dict[str, int]
              ) -> int:
        at, _, mid, name = item
        ids["view_events"] += 1  # in the order written, which is time order
        bulk.add("view_events", [{**self.view_rows[name], "id": ids["view_events"],
                              "message_id": mid, "copy_id": self.copy_of[mid][0],
                              "recipient": self.copy_of[mid][1], "at": _utc(at),
                              "ip": f"{CLIENTS[name].network}.{mid % 250 + 2}"}])
        return 1


# What a bulk-loaded message's one copy shares with it.
_COPY_FROM_MESSAGE = ("status", "attempts", "last_error", "sent_at", "view_count",
                      "first_viewed_at", "last_viewed_at", "machine_count", "first_machine_at",
                      "last_machine_at", "replied_at")
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
