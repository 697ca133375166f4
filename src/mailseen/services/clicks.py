"""Judging and recording clicks: the pure click rules (core/clicks.py) plus what only the
server remembers (the links each client followed a moment ago, a click repeated), and the
click recorder, which batches clicks as the view recorder batches pixel hits."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from ..core.clicks import CLICK_BURST_SECONDS, ClickClassifier, burst_across_links
from ..core.netdata import ClassifierData, load_data
from ..core.privacy import minimise
from ..records import ClickIn, Judged, ViewIn
from ..storage import Store
from ..storage.clicks import ClickWriter
from .classification import REPEAT_REASON, Details, hit_of
from .recorder import ViewRecorder

__all__ = ["BURST_DEMOTED", "ClickJudge", "ClickRecorder", "record_clicks"]

Client = tuple[str | None, str | None]
LinkKey = tuple[int, int]  # (copy key, link index)
BURST_DEMOTED = "one client followed several links within {seconds} s (a scanner's burst)"
_REPEAT = timedelta(minutes=1)


class LinkWindow:
    """The distinct links each client (IP and user agent) followed in the last
    :data:`CLICK_BURST_SECONDS`; fed in time order, memory bounded by the window."""

    def __init__(self, span: timedelta = timedelta(seconds=CLICK_BURST_SECONDS),
                 limit: int = 50_000) -> None:
        self.span = span
        self.limit = limit
        self._recent: deque[tuple[datetime, Client, LinkKey]] = deque()
        self._by_client: dict[Client, dict[LinkKey, datetime]] = {}

    def others(self, click: ClickIn) -> tuple[int, datetime | None]:
        """How many other links this client followed within the window, and where the
        window starts (None when there were none)."""
        horizon = click.at - self.span
        while self._recent and (self._recent[0][0] < horizon
                                or len(self._recent) >= self.limit):
            at, client, key = self._recent.popleft()
            links = self._by_client.get(client)
            if links is not None and links.get(key) == at:
                del links[key]
                if not links:
                    del self._by_client[client]
        client = (click.ip, click.user_agent)
        links = self._by_client.setdefault(client, {})
        key = (click.copy_key, click.link)
        others = sum(1 for k in links if k != key)
        links[key] = click.at
        self._recent.append((click.at, client, key))
        return others, horizon if others else None


class ClickJudge:
    """The click classifier with what it remembers between clicks: judges each click once,
    in the order they arrived (in the click recorder's writer thread). Returns the verdict
    and, when a burst is found, since when the client's earlier clicks belong to it."""

    def __init__(self, data_dir: Path | None = None, data: ClassifierData | None = None
                 ) -> None:
        self.classifier = ClickClassifier(
            data or load_data(data_dir / "netdata" if data_dir else None))
        self.window = LinkWindow()
        self._counted: dict[tuple[Client, LinkKey], datetime] = {}

    def __call__(self, click: ClickIn, sent_at: datetime | None
                 ) -> tuple[Judged, datetime | None]:
        others, since = self.window.others(click)
        rule, verdict = self.classifier.decide(hit_of(click, sent_at, others))
        burst_since = since if rule is burst_across_links else None
        if verdict.counts and self._repeat(click):
            return Judged("machine", REPEAT_REASON, verdict.client), None
        return Judged(verdict.verdict, verdict.reason, verdict.client), burst_since

    def _repeat(self, click: ClickIn) -> bool:
        """The same client following the same link again within a minute (a double click)
        counts once."""
        key = ((click.ip, click.user_agent), (click.copy_key, click.link))
        last = self._counted.get(key)
        if last is not None and abs(click.at - last) < _REPEAT:
            return True
        self._counted.pop(key, None)
        self._counted[key] = click.at
        horizon = click.at - _REPEAT
        while self._counted:
            first, at = next(iter(self._counted.items()))
            if at >= horizon and len(self._counted) <= 100_000:
                break
            del self._counted[first]
        return False


JudgeClick = Callable[[ClickIn, datetime | None], tuple[Judged, datetime | None]]


def record_clicks(writer: ClickWriter, clicks: Sequence[ClickIn], judge: JudgeClick,
                  details: Details | None = None) -> int:
    """Record a batch of clicks: find each one's copy (clicks of unknown copies, and of a
    recipient who may not be followed now, are dropped), judge it on what the client sent,
    cut it down to what the privacy setting keeps, and write them with the views they
    imply. Returns how many were stored."""
    judged: list[tuple[ClickIn, Judged]] = []
    demote: list[tuple[ClickIn, datetime, str]] = []
    burst_reason = BURST_DEMOTED.format(seconds=f"{CLICK_BURST_SECONDS:g}")
    for click, sent_at in writer.resolve(clicks):
        verdict, since = judge(click, sent_at)
        judged.append((click, verdict))
        if since is not None:
            demote.append((click, since, burst_reason))
    for burst, since, reason in demote:
        # Clicks of this batch the burst caught: not a person's either (those of earlier
        # batches are changed as the batch is written).
        for c, j in judged:
            if (j.verdict == "human" and c.copy_key == burst.copy_key and since <= c.at
                    and (c.ip, c.user_agent) == (burst.ip, burst.user_agent)):
                j.verdict, j.reason = "machine", reason
    level = details() if details is not None else None
    if level is not None and not level.full:
        for c, j in judged:
            c.ip, c.user_agent, c.headers = minimise(c.ip, c.user_agent, c.headers, j.client,
                                                     level)
    return writer.write(judged, demote)


def _no_view_judge(view: ViewIn, sent_at: datetime | None) -> Judged:
    raise AssertionError("the click recorder judges clicks, not views")  # pragma: no cover


class ClickRecorder(ViewRecorder):
    """Group commit for clicks: the view recorder's batching and writer thread, writing
    clicks (:class:`ClickIn`) through a :class:`ClickWriter`."""

    noun = "clicks"

    def __init__(self, store: Store, judge: JudgeClick | None = None,
                 max_batch: int = 1000, details: Details | None = None) -> None:
        super().__init__(store, judge=_no_view_judge, max_batch=max_batch, details=details)
        self.click_judge: JudgeClick = judge if judge is not None else ClickJudge()
        self._clicks: ClickWriter | None = None

    def _write(self, views: list[ViewIn]) -> int:
        """In the writer thread."""
        if self._clicks is None:
            self._clicks = self.store.click_writer()
        return record_clicks(self._clicks, cast(list[ClickIn], views), self.click_judge,
                             self.details)

    def _close_writer(self) -> None:
        if self._clicks is not None:
            self._clicks.close()
            self._clicks = None

