"""Crawler user-agent patterns from the crawler-user-agents project (MIT licence), pinned in
pyproject.toml. The patterns are the package's data file; this module only compiles them.

The list calls Gmail's and Yahoo's image proxies crawlers (they are people's opens), so the
classifier consults it only for user agents that ``user_agents.txt`` did not already name as a
mail client, an image proxy or a known machine (see ``hits.describe_agent``).
"""

from __future__ import annotations

import json
import re
from importlib import metadata, resources

__all__ = ["BotList", "load_bots"]

CHUNK = 40  # patterns per compiled alternation: one search per chunk, then the one that hit


class BotList:
    def __init__(self, patterns: list[str], source: str) -> None:
        self.source = source  # "crawler-user-agents 1.67.0"
        self.size = len(patterns)
        self._chunks = [(re.compile("|".join(patterns[i:i + CHUNK])), patterns[i:i + CHUNK])
                        for i in range(0, len(patterns), CHUNK)]

    def match(self, ua: str) -> str | None:
        """The first pattern that matches ``ua``, or None."""
        for combined, patterns in self._chunks:
            if combined.search(ua):
                return next(p for p in patterns if re.search(p, ua))
        return None


def load_bots() -> BotList:
    data = json.loads(resources.files("crawleruseragents").joinpath(
        "crawler-user-agents.json").read_text(encoding="utf-8"))
    version = metadata.version("crawler-user-agents")
    return BotList([item["pattern"] for item in data], f"crawler-user-agents {version}")
