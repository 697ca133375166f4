"""Judging pixel hits where they are recorded: the pure classifier plus what only the
server knows (how long after sending, what else the same client fetched just now, whether
this client's view of the message was counted a moment ago)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from ..core.hits import Hit, HitClassifier
from ..core.netdata import ClassifierData, load_data
from ..core.privacy import DETAILS_HEADER, minimise
from ..records import Judged, ViewDetails, ViewIn
from ..storage import Store
from ..storage.views import ViewWriter

__all__ = ["CROWD_REASON", "OWN_VIEWER_HEADER", "REPEAT_REASON", "BurstWindow", "CrowdWindow",
           "Judge", "RepeatWindow", "hit_of"]

# Set by the pixel endpoint, and kept with the view, when the request carried a mailseen
# session cookie: the team's own browser, never a view.
OWN_VIEWER_HEADER = "x-mailseen-own-viewer"
BURST_WINDOW = timedelta(seconds=2)
REPEAT_WINDOW = timedelta(minutes=1)
REPEAT_REASON = "repeat within a minute (not counted again)"
# One person opens their copy on a few devices; a copy fetched by more distinct clients than
# this within the window is being fetched by something else (a token shared or replayed to
# inflate the count).
CROWD_WINDOW = timedelta(minutes=10)
CROWD_LIMIT = 4
CROWD_REASON = ("one recipient's copy fetched by more than {limit} different clients within "
                "{minutes} minutes: not one person's views")

Client = tuple[str | None, str | None]  # (IP, user agent)
Pixel = tuple[int, int]  # (message id, recipient)


class BurstWindow:
    """How many *other* pixels -- other messages, or the same message's other recipients --
    the same client (IP and user agent) fetched in the last two seconds. A gateway scanning
    a mailing for the ten colleagues it went to fetches ten pixels of one message. Fed in
    time order; memory is bounded by the window.

    Constant time per hit: besides the time-ordered queue, each client's message ids in the
    window are counted, so a hit never scans the window (it runs for every pixel hit).
    """

    def __init__(self, span: timedelta = BURST_WINDOW, limit: int = 50_000) -> None:
        self.span = span
        self.limit = limit
        self._recent: deque[tuple[datetime, Client, Pixel]] = deque()
        self._by_client: dict[Client, dict[Pixel, int]] = {}

    def _expire(self) -> None:
        _, key, mid = self._recent.popleft()
        ids = self._by_client[key]
        left = ids[mid] - 1
        if left:
            ids[mid] = left
        else:
            del ids[mid]
            if not ids:
                del self._by_client[key]

    def count(self, view: ViewIn) -> int:
        horizon = view.at - self.span
        while self._recent and (self._recent[0][0] < horizon
                                or len(self._recent) >= self.limit):
            self._expire()
        key = (view.ip, view.user_agent)
        ids = self._by_client.get(key)
        if ids is None:
            ids = self._by_client[key] = {}
        mid = (view.message_id, view.recipient)
        ids[mid] = ids.get(mid, 0) + 1
        self._recent.append((view.at, key, mid))
        return len(ids) - 1  # the pixels of this client's window, this one excepted


class RepeatWindow:
    """When each client (IP and user agent) last had a view of each message counted.

    A client's views of one message count at most once a minute: mail clients fetch the
    image again each time the message is shown, and anyone holding a token could otherwise
    inflate its count by fetching it in a loop. Fed in time order, like :class:`BurstWindow`;
    memory is bounded by the window and by ``limit``.
    """

    def __init__(self, span: timedelta = REPEAT_WINDOW, limit: int = 100_000) -> None:
        self.span = span
        self.limit = limit
        self._counted: dict[tuple[str | None, str | None, int, int], datetime] = {}

    def repeat(self, view: ViewIn) -> bool:
        """Whether ``view`` repeats one counted less than a minute before (or after: views
        from several nodes arrive slightly out of order); if not, it is counted from now."""
        key = (view.ip, view.user_agent, view.message_id, view.recipient)
        last = self._counted.get(key)
        if last is not None and abs(view.at - last) < self.span:
            return True
        self._counted.pop(key, None)  # re-inserted last: the dict stays in time order
        self._counted[key] = view.at
        self._forget(view.at - self.span)
        return False

    def _forget(self, horizon: datetime) -> None:
        while self._counted:
            key, at = next(iter(self._counted.items()))
            if at >= horizon and len(self._counted) <= self.limit:
                return
            del self._counted[key]


class CrowdWindow:
    """Which distinct clients (IP and user agent) fetched each personal copy in the last ten
    minutes. Fed in time order; memory is bounded by the window and by ``limit``."""

    def __init__(self, span: timedelta = CROWD_WINDOW, most: int = CROWD_LIMIT,
                 limit: int = 100_000) -> None:
        self.span = span
        self.most = most
        self.limit = limit
        self._seen: dict[tuple[int, int], dict[Client, datetime]] = {}
        self._order: deque[tuple[datetime, tuple[int, int]]] = deque()

    def crowded(self, view: ViewIn) -> bool:
        """Whether ``view`` comes from one client too many for one person's copy. Copies
        every recipient shares (position 0) may be fetched by many people: never."""
        if not view.recipient:
            return False
        horizon = view.at - self.span
        while self._order and (self._order[0][0] < horizon or len(self._order) > self.limit):
            _, key = self._order.popleft()
            clients = self._seen.get(key)
            if clients is not None:
                for client in [c for c, at in clients.items() if at < horizon]:
                    del clients[client]
                if not clients:
                    del self._seen[key]
        key = (view.message_id, view.recipient)
        clients = self._seen.setdefault(key, {})
        client = (view.ip, view.user_agent)
        if client not in clients and len(clients) >= self.most:
            return True
        clients[client] = view.at
        self._order.append((view.at, key))
        return False


def hit_of(view: ViewIn, sent_at: datetime | None, others: int) -> Hit:
    headers = dict(view.headers)
    if view.user_agent is not None:
        headers["user-agent"] = view.user_agent
    seconds = (view.at - sent_at).total_seconds() if sent_at is not None else None
    return Hit(method=view.method, headers=headers, remote_addr=view.ip,
               seconds_after_send=seconds, other_messages_from_client=others,
               own_viewer=headers.get(OWN_VIEWER_HEADER) == "1")


# What judges a pixel hit, given the time its message was sent (None if not yet known).
JudgeHit = Callable[[ViewIn, datetime | None], Judged]
# What is to be stored of each view (services/privacy.py's cached setting).
Details = Callable[[], ViewDetails]


class Judge:
    """The hit classifier with what it remembers between hits (bursts, repeats): judges
    each view once, in the order they arrived (in the recorder's writer thread)."""

    def __init__(self, data_dir: Path | None = None, data: ClassifierData | None = None
                 ) -> None:
        self.classifier = HitClassifier(
            data or load_data(data_dir / "netdata" if data_dir else None))
        self.window = BurstWindow()
        self.repeats = RepeatWindow()
        self.crowd = CrowdWindow()
        self._crowd_reason = CROWD_REASON.format(
            limit=self.crowd.most, minutes=int(self.crowd.span.total_seconds() // 60))

    def __call__(self, view: ViewIn, sent_at: datetime | None) -> Judged:
        verdict = self.classifier.classify(hit_of(view, sent_at, self.window.count(view)))
        if verdict.counts:
            if self.repeats.repeat(view):
                # Judged a machine fetch, not a second view: summaries stay a count of human
                # events, and `mailseen reclassify` (same Judge, same order) agrees.
                return Judged("machine", REPEAT_REASON, verdict.client)
            if self.crowd.crowded(view):  # only a client's first view in a minute gets here
                return Judged("machine", self._crowd_reason, verdict.client)
        return Judged(verdict.verdict, verdict.reason, verdict.client)


def record_judged(writer: ViewWriter, views: Sequence[ViewIn], judge: JudgeHit,
                  details: Details | None = None) -> int:
    """Record a batch of pixel hits: read what judging needs (whose copy each hit is, and
    when it was sent), judge each view once on what the client sent, cut each down to
    what ``details`` says is stored (core/privacy.py), then write them. Nothing of a hit
    reaches the database before it is cut down. Views of copies or messages that do not
    exist are dropped; returns how many were stored."""
    judged = [(v, judge(v, sent_at)) for v, sent_at in writer.resolve(views)]
    level = details() if details is not None else None
    if level is not None and not level.full:
        for v, j in judged:
            v.ip, v.user_agent, v.headers = minimise(v.ip, v.user_agent, v.headers, j.client,
                                                     level)
    return writer.write(judged)


def record_views(store: Store, views: Sequence[ViewIn], judge: JudgeHit,
                 details: Details | None = None) -> int:
    """:func:`record_judged` on a writer of its own (demo data, imports, tests)."""
    writer = store.view_writer()
    try:
        return record_judged(writer, views, judge, details)
    finally:
        writer.close()


def reclassify(store: Store, judge: JudgeHit, batch: int = 5000) -> tuple[int, int]:
    """Judge every stored view again, in the order they arrived, and re-derive every
    message's summary. Views stored with less than what the client sent (minimised, or
    purged after the retention period) keep the verdict they got on the full details.
    Returns (views judged, verdicts changed)."""
    seen = changed = 0
    after = 0
    while rows := store.stored_views(after, batch):
        changes = []
        for view_id, view, sent_at, old in rows:
            if DETAILS_HEADER in view.headers:
                continue
            new = judge(view, sent_at)
            if new != old:
                changes.append((view_id, new))
        store.set_verdicts(changes)
        seen, changed, after = seen + len(rows), changed + len(changes), rows[-1][0]
    store.rebuild_summaries()
    return seen, changed
