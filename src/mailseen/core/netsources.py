"""Network lists as their owners publish them, and the manifest that says where each came from.

Every network the classifier knows belongs to a *source*: one published list (AWS's
``ip-ranges.json``, Apple's Private Relay egress CSV, a vendor's registered networks...). The
manifest (``sources.json``, shipped in ``mailseen.data`` and rewritten in the override folder by
``mailseen data update``) names, for each source, its label (the name the networks carry in
``networks.txt``), what kind of network it is, the format and address it is published in, how
the shipped copy was obtained, its licence and the date of the data. :func:`parse_source` reads
each owner's format; none of them is half-read: a file that does not parse, or parses to no
networks, is refused whole.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from mailseen.core.netdata import (
    NET_KINDS,
    NetEntry,
    collapse,
    parse_published_list,
    shipped_text,
    write_atomic,
    write_override,
)
from mailseen.errors import InvalidInput

__all__ = ["FORMATS", "Manifest", "Parsed", "Source", "load_manifest", "parse_source",
           "public_only", "update_source"]


@dataclass(frozen=True)
class Source:
    """One published list and where the shipped (or updated) copy came from."""

    key: str  # "aws"; what `mailseen data update KEY` takes
    label: str  # the networks' label in networks.txt: "Amazon Web Services"
    kind: str  # a NET_KINDS value
    format: str  # a FORMATS key
    url: str = ""  # the owner's address of the list (`data update KEY` fetches it)
    owner: str = ""  # who publishes or registered the networks
    via: str = ""  # how the copy was obtained: a mirror and its commit, or the owner itself
    licence: str = ""
    retrieved: str = ""  # ISO date the data is as of
    published: str = ""  # the owner's own date or serial in the file, when it has one
    networks: int = 0  # blocks after collapsing
    note: str = ""
    origin: str = "shipped"  # "shipped" or "updated" (written by `mailseen data update`)

    def age_days(self, today: date) -> int | None:
        try:
            return (today - date.fromisoformat(self.retrieved[:10])).days
        except ValueError:
            return None


@dataclass(frozen=True)
class Manifest:
    sources: tuple[Source, ...] = ()
    snapshot: str = ""  # date of the shipped snapshot

    def get(self, key: str) -> Source | None:
        return next((s for s in self.sources if s.key == key), None)

    def by_label(self) -> dict[str, Source]:
        return {s.label: s for s in self.sources}

    def with_source(self, source: Source) -> Manifest:
        """This manifest with ``source`` in place of the one with its key (or added)."""
        kept = [s for s in self.sources if s.key != source.key]
        return replace(self, sources=(*kept, source))

    def merged_over(self, shipped: Manifest) -> Manifest:
        """The shipped manifest with this (override) manifest's sources in place of theirs."""
        out = shipped
        for source in self.sources:
            out = out.with_source(source)
        return out

    @classmethod
    def parse(cls, text: str, where: str = "sources.json") -> Manifest:
        try:
            data = json.loads(text)
            sources = tuple(Source(**item) for item in data.get("sources", []))
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"{where}: not a sources manifest ({exc})") from None
        for s in sources:
            if s.kind not in NET_KINDS or s.format not in FORMATS:
                raise InvalidInput(f"{where}: source {s.key!r} has an unknown kind or format")
        return cls(sources, str(data.get("snapshot", "")))

    def dumps(self) -> str:
        return json.dumps({"snapshot": self.snapshot,
                           "sources": [asdict(s) for s in self.sources]},
                          indent=1, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Parsed:
    entries: list[NetEntry]
    published: str = ""  # the file's own date or serial, "" when it has none
    notes: list[str] = field(default_factory=list)


def _json(text: str, what: str, fmt: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidInput(f"{what}: not JSON, so not in the {fmt} format") from None


def _entries(prefixes: Iterable[object], kind: str, label: str) -> list[NetEntry]:
    out = []
    for prefix in prefixes:
        if not isinstance(prefix, str):
            raise InvalidInput(f"{label}: a prefix is not a string: {prefix!r}")
        try:
            out.append(NetEntry.parse(prefix, kind, label))
        except ValueError:
            raise InvalidInput(f"{label}: not a network: {prefix!r}") from None
    return out


def _require(cond: bool, label: str, fmt: str) -> None:
    if not cond:
        raise InvalidInput(f"{label}: not in the {fmt} format")


def _aws(text: str, kind: str, label: str) -> Parsed:
    # https://ip-ranges.amazonaws.com/ip-ranges.json ("AWS IP address ranges", AWS General
    # Reference): {"syncToken", "createDate": "YYYY-MM-DD-hh-mm-ss", "prefixes": [{"ip_prefix",
    # "region", "service", ...}], "ipv6_prefixes": [{"ipv6_prefix", ...}]}. Every service
    # counts: "AMAZON" is the superset, EC2 the part customers run code on.
    data = _json(text, label, "AWS ip-ranges.json")
    _require(isinstance(data, dict) and isinstance(data.get("prefixes"), list), label,
             "AWS ip-ranges.json")
    v4 = [p.get("ip_prefix") for p in data["prefixes"] if isinstance(p, dict)]
    v6 = [p.get("ipv6_prefix") for p in data.get("ipv6_prefixes", []) if isinstance(p, dict)]
    _require(None not in v4 and None not in v6, label, "AWS ip-ranges.json")
    return Parsed(_entries([*v4, *v6], kind, label), str(data.get("createDate", "")))


def _azure(text: str, kind: str, label: str) -> Parsed:
    # Azure IP Ranges and Service Tags - Public Cloud (download 56519, the same document as
    # the Service Tag Discovery API): {"changeNumber", "cloud", "values": [{"name",
    # "properties": {"addressPrefixes": [...]}}]}. "AzureCloud" is the address space of the
    # whole public cloud; a file without it (a regional extract) is taken whole.
    data = _json(text, label, "Azure service tags JSON")
    _require(isinstance(data, dict) and isinstance(data.get("values"), list), label,
             "Azure service tags JSON")
    values = [v for v in data["values"] if isinstance(v, dict)]
    cloud = [v for v in values if v.get("name") == "AzureCloud"] or values
    prefixes = [p for v in cloud for p in v.get("properties", {}).get("addressPrefixes", [])]
    return Parsed(_entries(prefixes, kind, label), f"change {data.get('changeNumber', '?')}")


def _google(text: str, kind: str, label: str) -> Parsed:
    # Google's https://www.gstatic.com/ipranges/goog.json and cloud.json ("Obtain Google IP
    # address ranges", support.google.com/a/answer/10026322): {"syncToken", "creationTime",
    # "prefixes": [{"ipv4Prefix"} | {"ipv6Prefix"}, ...]}. goog.json is every address Google
    # serves from; cloud.json the part its cloud customers use. Google's own services are
    # goog.json minus cloud.json: load both, the cloud source takes precedence.
    data = _json(text, label, "Google goog.json/cloud.json")
    _require(isinstance(data, dict) and isinstance(data.get("prefixes"), list), label,
             "Google goog.json/cloud.json")
    prefixes = [p.get("ipv4Prefix") or p.get("ipv6Prefix") for p in data["prefixes"]
                if isinstance(p, dict)]
    _require(None not in prefixes, label, "Google goog.json/cloud.json")
    return Parsed(_entries(prefixes, kind, label), str(data.get("creationTime", "")))


def _oracle(text: str, kind: str, label: str) -> Parsed:
    # https://docs.oracle.com/iaas/tools/public_ip_ranges.json ("IP Address Ranges", OCI
    # documentation): {"last_updated_timestamp", "regions": [{"region", "cidrs": [{"cidr",
    # "tags"}]}]}.
    data = _json(text, label, "Oracle public_ip_ranges.json")
    _require(isinstance(data, dict) and isinstance(data.get("regions"), list), label,
             "Oracle public_ip_ranges.json")
    prefixes = [c.get("cidr") for r in data["regions"] if isinstance(r, dict)
                for c in r.get("cidrs", []) if isinstance(c, dict)]
    return Parsed(_entries(prefixes, kind, label), str(data.get("last_updated_timestamp", "")))


# Microsoft 365 "URLs and IP address ranges" (https://endpoints.office.com/endpoints/worldwide):
# a list of endpoint sets {"id", "serviceArea", "urls", "ips", "tcpPorts", ...}. Exchange
# Online Protection, which receives, filters and scans inbound mail, is the Exchange set for
# the MX hosts: *.mail.protection.outlook.com, joined by *.mx.microsoft since 2024 (ID 10 in
# 2018-2021, ID 9 since). The other Exchange sets are Outlook's own front ends (people).
EOP_URL_RE = re.compile(r"(^|\.)(mail\.protection\.outlook\.com|mx\.microsoft)$")


def _m365(text: str, kind: str, label: str) -> Parsed:
    data = _json(text, label, "Microsoft 365 endpoints JSON")
    _require(isinstance(data, list), label, "Microsoft 365 endpoints JSON")
    sets = [s for s in data if isinstance(s, dict) and s.get("serviceArea") == "Exchange"
            and any(EOP_URL_RE.search(str(u)) for u in s.get("urls", []))]
    prefixes = [ip for s in sets for ip in s.get("ips", [])]
    ids = ", ".join(str(s.get("id")) for s in sets)
    return Parsed(_entries(prefixes, kind, label), f"endpoint set {ids}" if ids else "")


def _apple(text: str, kind: str, label: str) -> Parsed:
    # Apple's https://mask-api.icloud.com/egress-ip-ranges.csv ("Prepare your network or web
    # server for iCloud Private Relay"): prefix,country,region,city, per line.
    return Parsed(parse_published_list(text, label, kind))


def _cidr(text: str, kind: str, label: str) -> Parsed:
    # One CIDR or address per line (a vendor's published list, an ASN's announced routes).
    return Parsed(parse_published_list(text, label, kind))


FORMATS: Mapping[str, Callable[[str, str, str], Parsed]] = {
    "aws": _aws,
    "azure": _azure,
    "goog": _google,
    "gcp": _google,
    "oracle": _oracle,
    "m365": _m365,
    "apple-csv": _apple,
    "geofeed": _apple,  # RFC 8805 geofeeds have Apple's shape: prefix,country,region,city,...
    "cidr": _cidr,
}


def parse_source(fmt: str, text: str, kind: str, label: str) -> Parsed:
    """The networks in ``text``, published in ``fmt``, as entries of ``kind`` and ``label``."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; one of {', '.join(sorted(FORMATS))}")
    if kind not in NET_KINDS:
        raise InvalidInput(f"unknown network kind {kind!r}")
    parsed = FORMATS[fmt](text, kind, label)
    entries = public_only(parsed.entries)
    if not entries:
        raise InvalidInput(f"{label}: the list holds no public networks")
    return replace(parsed, entries=entries)


def public_only(entries: list[NetEntry]) -> list[NetEntry]:
    """Entries outside the special-purpose ranges (RFC 6890: private, documentation, CGNAT...).

    Published lists carry a few by mistake (a geofeed listed 203.0.113.0/24); they are
    nobody's network on the internet, and listing them would misjudge local test traffic.
    """
    return [e for e in entries if ipaddress.ip_network(e.cidr).is_global]


SOURCES_FILE = "sources.json"


def load_manifest(override_dir: Path | None = None) -> Manifest:
    """The shipped manifest with the override folder's updates merged over it."""
    shipped = Manifest.parse(shipped_text(SOURCES_FILE))
    if override_dir is None or not (override_dir / SOURCES_FILE).is_file():
        return shipped
    path = override_dir / SOURCES_FILE
    return Manifest.parse(path.read_text(encoding="utf-8"), str(path)).merged_over(shipped)


def update_source(override_dir: Path, source: Source, text: str, *, fetched_from: str,
                  now: datetime) -> Source:
    """Read ``text`` in ``source``'s format and put its networks in the override folder in
    place of the source's earlier lines; record the update (date, origin, counts) in the
    override manifest. Returns the source as recorded."""
    parsed = parse_source(source.format, text, source.kind, source.label)
    collapsed = collapse(parsed.entries)
    write_override(override_dir, source.label, collapsed)
    recorded = replace(source, origin="updated", retrieved=now.date().isoformat(),
                       published=parsed.published, networks=len(collapsed),
                       via=f"`mailseen data update` from {fetched_from}")
    path = override_dir / SOURCES_FILE
    current = (Manifest.parse(path.read_text(encoding="utf-8"), str(path))
               if path.is_file() else Manifest())
    write_atomic(path, current.with_source(recorded).dumps())
    return recorded


