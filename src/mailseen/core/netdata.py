"""The data the hit classifier looks things up in: networks and user-agent patterns.

Both live in text files (``src/mailseen/data/networks.txt`` and ``user_agents.txt``) so an
operator can refresh them without a release: ``mailseen data update`` writes files of the same
format into an override folder, and :func:`load_data` merges them over the shipped snapshot.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import os
import re
import socket
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mailseen.core.bots import BotList, load_bots
from mailseen.errors import InvalidInput

__all__ = [
    "NET_KINDS",
    "UA_KINDS",
    "ClassifierData",
    "NetEntry",
    "NetworkTable",
    "UAPattern",
    "collapse",
    "format_networks",
    "load_data",
    "merge_networks",
    "parse_networks",
    "parse_published_list",
    "parse_user_agents",
    "shipped_text",
    "write_override",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NETWORKS_FILE = "networks.txt"
USER_AGENTS_FILE = "user_agents.txt"

# What a network is, which is what the rules weigh (docs/classification.md, "Networks"):
# "apple": Apple Mail Privacy Protection / iCloud Private Relay egress;
# "scanner": a security vendor (mail gateways, link and attachment sandboxes);
# "cloud": a cloud or hosting provider, where programs run;
# "mailproxy": a webmail provider's own network, home of its image proxy (Google);
# "gateway": a secure web gateway that real people browse through (Zscaler and the like);
# "isp", "mobile": people's own connections, for operators who list them.
NET_KINDS = frozenset({"apple", "scanner", "cloud", "mailproxy", "gateway", "isp", "mobile"})
# Machine kinds, then human kinds, then "os" (names the system, never decides anything).
UA_KINDS = frozenset({"mpp", "prefetch", "scanner", "preview", "headless", "script", "bot",
                      "proxy", "client", "applemail", "browser", "os"})


@dataclass(frozen=True)
class NetEntry:
    """One network with what it is. Parsed to integers once: ``ipaddress`` objects cost
    microseconds each, which adds up to seconds over Apple's few hundred thousand lines."""

    cidr: str  # normalised, host bits cleared: "192.0.2.0/24"
    kind: str
    label: str
    version: int  # 4 or 6
    start: int
    end: int

    @classmethod
    def parse(cls, text: str, kind: str, label: str) -> NetEntry:
        """``text`` is a CIDR or a bare address; raises ValueError when it is neither."""
        version, start, prefix = _parse_cidr(text)
        bits = 32 if version == 4 else 128
        end = start | ((1 << (bits - prefix)) - 1)
        return cls(f"{_ntop(version, start)}/{prefix}", kind, label, version, start, end)

    @property
    def network(self) -> Network:
        return ipaddress.ip_network(self.cidr)


def _parse_cidr(text: str) -> tuple[int, int, int]:
    """(version, first address as an integer with host bits cleared, prefix length)."""
    address, slash, length = text.strip().partition("/")
    version, family, bits = (6, socket.AF_INET6, 128) if ":" in address else (
        4, socket.AF_INET, 32)
    try:
        value = int.from_bytes(socket.inet_pton(family, address), "big")
    except OSError:
        raise ValueError(f"not an IPv{version} address: {address!r}") from None
    if slash and not (length.isascii() and length.isdigit() and int(length) <= bits):
        raise ValueError(f"not a prefix length: {length!r}")
    prefix = int(length) if slash else bits
    host = (1 << (bits - prefix)) - 1
    return version, value & ~host, prefix


def _parse_address(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address; IPv4-mapped IPv6 counts as IPv4."""
    try:
        if ":" not in text:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except OSError:
        return None
    if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d
        return 4, value & 0xFFFFFFFF
    return 6, value


@dataclass(frozen=True)
class UAPattern:
    pattern: re.Pattern[str]
    kind: str
    label: str  # may hold "{1}": the pattern's first group

    def name(self, match: re.Match[str]) -> str:
        if "{1}" not in self.label:
            return self.label
        return self.label.replace("{1}", match.group(1) or "").strip()


class NetworkTable:
    """Which entry, if any, holds an address; the most specific network wins.

    CIDR blocks are either nested or disjoint, so after sorting by start (wider first) each
    block has at most one enclosing parent. A lookup bisects to the last block starting at or
    before the address and climbs parents until one also ends after it: O(log n) plus the
    nesting depth; addresses are parsed with ``inet_pton``, not ``ipaddress``.
    """

    def __init__(self, entries: Iterable[NetEntry]) -> None:
        self._tables = {4: _Table(), 6: _Table()}
        seen: set[tuple[int, int, int]] = set()
        ordered: list[NetEntry] = []
        for entry in entries:  # earlier entries (overrides) win over later duplicates
            key = (entry.version, entry.start, entry.end)
            if key not in seen:
                seen.add(key)
                ordered.append(entry)
        for version in (4, 6):
            self._tables[version].build([e for e in ordered if e.version == version])
        self.size = len(ordered)

    def lookup(self, address: str | None) -> NetEntry | None:
        if not address:
            return None
        parsed = _parse_address(address.strip())
        if parsed is None:
            return None
        return self._tables[parsed[0]].find(parsed[1])


@dataclass
class _Table:
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    entries: list[NetEntry] = field(default_factory=list)

    def build(self, entries: list[NetEntry]) -> None:
        entries.sort(key=lambda e: (e.start, -e.end))  # a block before the blocks inside it
        stack: list[int] = []  # indexes of the open enclosing blocks
        for i, entry in enumerate(entries):
            while stack and self.ends[stack[-1]] < entry.start:
                stack.pop()
            self.starts.append(entry.start)
            self.ends.append(entry.end)
            self.parents.append(stack[-1] if stack else -1)
            self.entries.append(entry)
            stack.append(i)

    def find(self, value: int) -> NetEntry | None:
        i = bisect.bisect_right(self.starts, value) - 1
        while i >= 0 and self.ends[i] < value:
            i = self.parents[i]
        return self.entries[i] if i >= 0 else None


@dataclass(frozen=True)
class ClassifierData:
    """Everything the classifier needs besides the hit itself.

    ``fast_seconds`` and ``burst_other_messages`` are policy, not facts about the world; they
    sit here so a test or an operator can change them without touching the rules.
    """

    networks: NetworkTable
    user_agents: tuple[UAPattern, ...]  # every kind but "os", in file order
    systems: tuple[UAPattern, ...]  # the "os" lines
    fast_seconds: float = 2.0
    burst_other_messages: int = 3
    bots: BotList | None = None  # crawler-user-agents, consulted after user_agents.txt

    @classmethod
    def build(cls, networks: Iterable[NetEntry], user_agents: Iterable[UAPattern], *,
              fast_seconds: float = 2.0, burst_other_messages: int = 3,
              bots: BotList | None = None) -> ClassifierData:
        patterns = list(user_agents)
        return cls(
            networks=NetworkTable(by_precedence(networks)),
            user_agents=tuple(p for p in patterns if p.kind != "os"),
            systems=tuple(p for p in patterns if p.kind == "os"),
            fast_seconds=fast_seconds,
            burst_other_messages=burst_other_messages,
            bots=bots,
        )


# When two sources list the very same block, the narrower claim wins: a security vendor's
# or Apple's block inside a cloud, Google Cloud's inside the whole of Google (goog.json is a
# superset of cloud.json). A more specific block always wins whatever its kind.
PRECEDENCE = ("scanner", "apple", "cloud", "gateway", "mailproxy", "isp", "mobile")


def by_precedence(entries: Iterable[NetEntry]) -> list[NetEntry]:
    """Entries ordered by :data:`PRECEDENCE` (stable: overrides stay before shipped lines)."""
    rank = {kind: i for i, kind in enumerate(PRECEDENCE)}
    return sorted(entries, key=lambda e: rank.get(e.kind, len(rank)))


def _lines(text: str) -> Iterable[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line


def _entry(text: str, kind: str, label: str, where: str) -> NetEntry:
    try:
        return NetEntry.parse(text, kind, label)
    except ValueError:
        raise InvalidInput(f"{where}: not a network: {text.strip()!r}") from None


def parse_networks(text: str, source: str = NETWORKS_FILE) -> list[NetEntry]:
    """``CIDR<TAB>kind<TAB>label`` lines; ``#`` starts a comment line."""
    entries = []
    for number, line in _lines(text):
        parts = line.split("\t")
        where = f"{source} line {number}"
        if len(parts) != 3 or parts[1] not in NET_KINDS or not parts[2].strip():
            raise InvalidInput(f"{where}: expected CIDR<TAB>kind<TAB>label with kind one of "
                               f"{', '.join(sorted(NET_KINDS))}")
        entries.append(_entry(parts[0], parts[1], parts[2].strip(), where))
    return entries


def parse_user_agents(text: str, source: str = USER_AGENTS_FILE) -> list[UAPattern]:
    """``regex<TAB>kind<TAB>label`` lines, kept in file order (the first match wins)."""
    patterns = []
    for number, line in _lines(text):
        parts = line.split("\t")
        where = f"{source} line {number}"
        if len(parts) != 3 or parts[1] not in UA_KINDS or not parts[2].strip():
            raise InvalidInput(f"{where}: expected regex<TAB>kind<TAB>label with kind one of "
                               f"{', '.join(sorted(UA_KINDS))}")
        try:
            compiled = re.compile(parts[0])
        except re.error as err:
            raise InvalidInput(f"{where}: bad regex: {err}") from None
        patterns.append(UAPattern(compiled, parts[1], parts[2].strip()))
    return patterns


# What a first field that is data, not a header row, looks like.
HEADER_SAFE_RE = re.compile(r"^[0-9A-Fa-f:.]+(/\d+)?$")


def parse_published_list(text: str, label: str, kind: str = "apple") -> list[NetEntry]:
    """A list as its owner publishes it, as entries labelled ``label``.

    Reads Apple's iCloud Private Relay egress CSV (``prefix,country,region,city,`` per line;
    https://mask-api.icloud.com/egress-ip-ranges.csv) and plain lists with one CIDR or address
    per line. Blank lines, ``#`` comments and a header row are skipped; any other line that is
    not a network is an error, so a changed format or an HTML error page is not half-read.
    """
    if kind not in NET_KINDS:
        raise InvalidInput(f"unknown network kind {kind!r}")
    entries = []
    for number, line in _lines(text):
        first = line.partition(",")[0].strip()
        if number == 1 and not HEADER_SAFE_RE.match(first):
            continue  # a header such as "prefix,country,region,city"
        entries.append(_entry(first, kind, label, f"{label} line {number}"))
    if not entries:
        raise InvalidInput(f"{label}: the list holds no networks")
    return entries


def format_networks(entries: Iterable[NetEntry]) -> str:
    return "".join(f"{e.cidr}\t{e.kind}\t{e.label}\n" for e in entries)


def shipped_text(name: str) -> str:
    """The text of a data file shipped in the package (``networks.txt``, ...)."""
    return resources.files("mailseen.data").joinpath(name).read_text(encoding="utf-8")


def _override_text(override_dir: Path | None, name: str) -> tuple[str, str] | None:
    if override_dir is None:
        return None
    path = override_dir / name
    return (path.read_text(encoding="utf-8"), str(path)) if path.is_file() else None


def merge_networks(override: Sequence[NetEntry], shipped: Sequence[NetEntry]) -> list[NetEntry]:
    """A label present in the override replaces every shipped line with that label."""
    replaced = {e.label for e in override}
    return [*override, *(e for e in shipped if e.label not in replaced)]


def load_data(override_dir: Path | None = None) -> ClassifierData:
    """The shipped snapshot, with the override folder's files merged over it when present.

    Networks: the override's labels replace the shipped lines with the same label, others are
    kept. User agents: the override's patterns are tried first, then the shipped ones.
    """
    found_nets = _override_text(override_dir, NETWORKS_FILE)
    found_uas = _override_text(override_dir, USER_AGENTS_FILE)
    if found_nets is None and found_uas is None:
        return _shipped_data()  # parsed once per process: tests and servers build many
    nets = list(_shipped_networks())
    uas = list(_shipped_agents())
    if found_nets is not None:
        nets = merge_networks(parse_networks(*found_nets), nets)
    if found_uas is not None:
        uas = [*parse_user_agents(*found_uas), *uas]
    return ClassifierData.build(nets, uas, bots=_bots())


@functools.cache
def _shipped_networks() -> tuple[NetEntry, ...]:
    return tuple(parse_networks(shipped_text(NETWORKS_FILE)))


@functools.cache
def _shipped_agents() -> tuple[UAPattern, ...]:
    return tuple(parse_user_agents(shipped_text(USER_AGENTS_FILE)))


@functools.cache
def _bots() -> BotList:
    return load_bots()


@functools.cache
def _shipped_data() -> ClassifierData:
    return ClassifierData.build(_shipped_networks(), _shipped_agents(), bots=_bots())


def collapse(entries: Iterable[NetEntry]) -> list[NetEntry]:
    """The same addresses under the same kind and label in as few CIDR blocks as possible.

    Apple's egress list splits its blocks by city into hundreds of thousands of small
    neighbouring prefixes; merged, they load in a fraction of the time.
    """
    groups: dict[tuple[int, str, str], list[tuple[int, int]]] = {}
    for e in entries:
        groups.setdefault((e.version, e.kind, e.label), []).append((e.start, e.end))
    out: list[NetEntry] = []
    for (version, kind, label), spans in groups.items():
        spans.sort()
        merged: list[list[int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        bits = 32 if version == 4 else 128
        for start, end in merged:
            for first, prefix in _cidrs(start, end, bits):
                out.append(NetEntry.parse(f"{_ntop(version, first)}/{prefix}", kind, label))
    return out


def _cidrs(start: int, end: int, bits: int) -> Iterable[tuple[int, int]]:
    """The fewest aligned blocks covering start..end, as (first address, prefix length)."""
    while start <= end:
        size = start & -start if start else 1 << bits  # the largest block aligned here
        while start + size - 1 > end:
            size >>= 1
        yield start, bits - size.bit_length() + 1
        start += size


def _ntop(version: int, value: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def write_override(override_dir: Path, label: str, entries: Sequence[NetEntry]) -> Path:
    """Put ``entries`` in the override ``networks.txt`` in place of the lines labelled
    ``label``, keeping the other labels; collapsed to few blocks, written to a temporary file
    and renamed, so a server reading it never sees half a file."""
    if any(e.label != label for e in entries):
        raise InvalidInput(f"every entry written for {label!r} must carry that label")
    override_dir.mkdir(parents=True, exist_ok=True)
    path = override_dir / NETWORKS_FILE
    kept = [] if not path.is_file() else [
        e for e in parse_networks(path.read_text(encoding="utf-8"), str(path)) if e.label != label]
    body = ("# Written by `mailseen data update`; lines here replace the shipped lines with the\n"
            "# same label. Format: CIDR<TAB>kind<TAB>label.\n"
            + format_networks([*kept, *collapse(entries)]))
    write_atomic(path, body)
    return path


def write_atomic(path: Path, body: str) -> None:
    """Replace ``path`` with ``body`` at once: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
