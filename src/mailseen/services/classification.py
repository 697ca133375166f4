"""Judging pixel hits where they are recorded: the pure classifier plus what only the
server knows (how long after sending, what else the same client fetched just now)."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from pathlib import Path

from ..core.hits import Hit, HitClassifier
from ..core.netdata import load_data
from ..storage import Judged, ViewIn

__all__ = ["OWN_VIEWER_HEADER", "BurstWindow", "Judge", "hit_of"]

# Set by the pixel endpoint, and kept with the view, when the request carried a mailseen
# session cookie: the team's own browser, never a view.
OWN_VIEWER_HEADER = "x-mailseen-own-viewer"
BURST_WINDOW = timedelta(seconds=2)


class BurstWindow:
    """How many *other* messages the same client (IP and user agent) fetched pixels of in
    the last two seconds. Fed in time order; memory is bounded by the window."""

    def __init__(self, span: timedelta = BURST_WINDOW) -> None:
        self.span = span
        self._recent: deque[tuple[datetime, tuple[str | None, str | None], int]] = deque()

    def count(self, view: ViewIn) -> int:
        horizon = view.at - self.span
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        key = (view.ip, view.user_agent)
        others = {mid for _, k, mid in self._recent if k == key and mid != view.message_id}
        self._recent.append((view.at, key, view.message_id))
        if len(self._recent) > 50_000:  # a flood: keep the newest only
            self._recent.popleft()
        return len(others)


def hit_of(view: ViewIn, sent_at: datetime | None, others: int) -> Hit:
    headers = dict(view.headers)
    if view.user_agent is not None:
        headers["user-agent"] = view.user_agent
    seconds = (view.at - sent_at).total_seconds() if sent_at is not None else None
    return Hit(method=view.method, headers=headers, remote_addr=view.ip,
               seconds_after_send=seconds, other_messages_from_client=others,
               own_viewer=headers.get(OWN_VIEWER_HEADER) == "1")


class Judge:
    """The ``judge`` the store calls for each view it records (in the writer thread)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.classifier = HitClassifier(load_data(data_dir / "netdata" if data_dir else None))
        self.window = BurstWindow()

    def __call__(self, view: ViewIn, sent_at: datetime | None) -> Judged:
        verdict = self.classifier.classify(hit_of(view, sent_at, self.window.count(view)))
        return Judged(verdict.verdict, verdict.reason, verdict.client)
