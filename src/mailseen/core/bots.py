"""Crawler user-agent patterns from the crawler-user-agents project (MIT licence), pinned in
pyproject.toml. The patterns are the package's data file; this module only compiles them.

The list calls Gmail's and Yahoo's image proxies crawlers (they are people's opens), so the
classifier consults it only for user agents that ``user_agents.txt`` did not already name as a
mail client, an image proxy or a known machine (see ``hits.describe_agent``).

Speed: the list has some 1,500 patterns and is consulted once per distinct user agent. Trying
them as 40 alternations costs ~50 µs per agent; instead the ~1,470 that are plain text are
found in one pass by an Aho-Corasick automaton (ahocorasick-rs), and each of the ~30 others
runs only when a piece of text it requires is present (found by a second automaton): ~1 µs.
"""

from __future__ import annotations

import json
import re
from importlib import metadata, resources

from ahocorasick_rs import AhoCorasick

__all__ = ["BotList", "load_bots"]

_TOKEN = re.compile(r"\\(.)|([^\\^$.*+?()\[\]{}|])|(.)", re.S)


def _literal(pattern: str) -> str | None:
    """The text ``pattern`` matches when it is plain text (escapes allowed), else None."""
    out = []
    for escaped, plain, meta in _TOKEN.findall(pattern):
        if meta or (escaped and escaped.isalnum()):  # a metacharacter, or \d \w \b...
            return None
        out.append(escaped or plain)
    return "".join(out)


def _literals(pattern: str) -> list[str] | None:
    """The texts ``pattern`` matches when it is plain text or plain texts joined by "|"."""
    texts = [_literal(part) for part in pattern.split("|")]
    return None if any(not t for t in texts) else [t for t in texts if t]


def _required(pattern: str) -> str:
    """A piece of text every match of ``pattern`` contains ("" when none can be told):
    the longest run of plain characters outside groups and classes, not quantified."""
    if "|" in re.sub(r"\\.|\[[^\]]*\]|\([^()]*\)", "", pattern):
        return ""  # an alternation at the top: no single piece is required
    best, run, depth, i = "", "", 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            run = run + nxt if depth == 0 and not nxt.isalnum() else ""
            i += 2
            continue
        if c in "([":
            depth += 1
            run = ""
        elif c in ")]":
            depth = max(0, depth - 1)
            run = ""
        elif c in "*?{":
            run = run[:-1]
            best = max(best, run, key=len)
            run = ""
        elif c in "+^$.":
            best = max(best, run, key=len)
            run = ""
        elif depth == 0:
            run += c
        i += 1
        best = max(best, run, key=len)
    return best


class BotList:
    def __init__(self, patterns: list[str], source: str) -> None:
        self.source = source  # "crawler-user-agents 1.67.0"
        self.size = len(patterns)
        literals = [text for p in patterns for text in _literals(p) or []]
        self._plain = AhoCorasick(literals)
        others = [(_required(p), p) for p in patterns if _literals(p) is None]
        self._unguarded = [re.compile(p) for required, p in others if not required]
        guarded = [(required, p) for required, p in others if required]
        self._required = AhoCorasick([required for required, _ in guarded])
        self._guarded = [(p, re.compile(p)) for _, p in guarded]

    def match(self, ua: str) -> str | None:
        """The text or pattern that marks ``ua`` as a crawler, or None."""
        found = self._plain.find_matches_as_strings(ua)
        if found:
            return found[0]
        for index, _, _ in self._required.find_matches_as_indexes(ua, overlapping=True):
            pattern, compiled = self._guarded[index]
            if compiled.search(ua):
                return pattern
        for compiled in self._unguarded:
            if compiled.search(ua):
                return compiled.pattern
        return None


def load_bots() -> BotList:
    data = json.loads(resources.files("crawleruseragents").joinpath(
        "crawler-user-agents.json").read_text(encoding="utf-8"))
    version = metadata.version("crawler-user-agents")
    return BotList([item["pattern"] for item in data], f"crawler-user-agents {version}")
