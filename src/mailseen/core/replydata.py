"""The data the auto-reply rules look things up in: header markers, sender addresses and
subject prefixes of machine-made mail.

Each lives in a text file under ``src/mailseen/data/`` (``autoreply_headers.txt``,
``autoreply_senders.txt``, ``autoreply_subjects.txt``), every entry with the project, file and
licence it comes from, so that a verdict can name its source and the lists can grow without
touching the rules.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from mailseen.core.netdata import shipped_text
from mailseen.errors import InvalidInput

__all__ = [
    "HEADER_TESTS",
    "SENDER_KINDS",
    "HeaderMarker",
    "ReplyData",
    "SenderMarker",
    "SubjectPrefix",
    "parse_header_markers",
    "parse_senders",
    "parse_subject_prefixes",
    "shipped_reply_data",
]

HEADERS_FILE = "autoreply_headers.txt"
SENDERS_FILE = "autoreply_senders.txt"
SUBJECTS_FILE = "autoreply_subjects.txt"

HEADER_TESTS = frozenset({"set", "is", "starts", "regex"})
SENDER_KINDS = frozenset({"bounce", "robot"})
# Values that switch a flag header off ("X-Autoreply: no").
FALSE_VALUES = frozenset({"", "no", "false", "0", "off"})


def _fold(text: str) -> str:
    """``text`` lower-cased with every run of white space made one space."""
    return " ".join(text.split()).lower()


@dataclass(frozen=True)
class HeaderMarker:
    """One header field (and value) that only machine-made mail carries."""

    header: str  # as written in the data file: "X-Apple-Action"
    test: str  # "set", "is" or "starts"
    value: str  # as written; "" for "set"
    source: str

    @functools.cached_property
    def name(self) -> str:
        """The field name lower-cased, as :class:`Headers` keys it."""
        return self.header.lower()

    @functools.cached_property
    def _folded(self) -> str:
        return _fold(self.value)

    @functools.cached_property
    def _regex(self) -> re.Pattern[str]:
        return re.compile(self.value, re.IGNORECASE)

    def matches(self, value: str) -> bool:
        if self.test == "regex":
            return self._regex.match(value.strip()) is not None
        folded = _fold(value)
        if self.test == "set":
            return folded not in FALSE_VALUES
        if self.test == "is":
            return folded == self._folded
        return folded.startswith(self._folded)

    @property
    def reason(self) -> str:
        if self.test == "set":
            return f"{self.header} header"
        if self.test == "regex":
            return f"{self.header} like {self.value}"
        return f"{self.header}: {self.value}"


@dataclass(frozen=True)
class SenderMarker:
    local: str  # lower-cased local part: "mailer-daemon"
    kind: str  # "bounce" or "robot"
    source: str


@dataclass(frozen=True)
class SubjectPrefix:
    prefix: str  # as written: "Réponse automatique:"
    exact_case: bool
    source: str

    @property
    def body(self) -> str:
        """The regular expression of the prefix itself, with its case flag inline. A final
        ":" also matches " :" and the full-width colon."""
        text = self.prefix.strip()
        colon = text.endswith(":")
        words = text[:-1].rstrip() if colon else text
        body = r"\s+".join(re.escape(word) for word in words.split())
        if colon:
            body += r"\s*[:\uff1a]"
        return f"(?:{body})" if self.exact_case else f"(?i:{body})"

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        """Matches a subject that starts with this prefix, after white space and at most one
        "[tag] " of a help desk."""
        return re.compile(SUBJECT_START + self.body)


# Where a prefix may start: after white space and one "[tag] " a help desk puts first.
SUBJECT_START = r"\s*(?:\[[^\]]*\]\s*)?"


@dataclass(frozen=True)
class ReplyData:
    headers: tuple[HeaderMarker, ...]
    senders: dict[str, SenderMarker]
    subjects: tuple[SubjectPrefix, ...]  # longest first, so the most specific one names itself

    @functools.cached_property
    def header_names(self) -> frozenset[str]:
        """The lower-cased names of all header markers: most messages carry none of them."""
        return frozenset(marker.name for marker in self.headers)

    @functools.cached_property
    def any_subject(self) -> re.Pattern[str]:
        """One pattern for all prefixes: most subjects match none, and one search is much
        cheaper than one per prefix; which prefix it was is then looked up."""
        return re.compile(SUBJECT_START + "(?:" + "|".join(s.body for s in self.subjects) + ")")


def _rows(text: str) -> list[tuple[int, str]]:
    return [(number, line) for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def parse_header_markers(text: str, name: str = HEADERS_FILE) -> list[HeaderMarker]:
    """``header<TAB>test<TAB>value<TAB>source`` lines; a bad line is an error naming it."""
    markers = []
    for number, line in _rows(text):
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 4 or fields[1] not in HEADER_TESTS or not all(fields):
            raise InvalidInput(f"{name} line {number}: expected header, one of "
                               f"{'/'.join(sorted(HEADER_TESTS))}, value and source "
                               f"separated by tabs")
        header, test, value, source = fields
        if test == "regex":
            try:
                re.compile(value)
            except re.error as exc:
                raise InvalidInput(f"{name} line {number}: bad regular expression: {exc}") \
                    from None
        markers.append(HeaderMarker(header, test, "" if test == "set" else value, source))
    return markers


def parse_senders(text: str, name: str = SENDERS_FILE) -> list[SenderMarker]:
    """``local-part<TAB>kind<TAB>source`` lines."""
    senders = []
    for number, line in _rows(text):
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 3 or fields[1] not in SENDER_KINDS or not all(fields):
            raise InvalidInput(f"{name} line {number}: expected local part, one of "
                               f"{'/'.join(sorted(SENDER_KINDS))} and source separated by tabs")
        senders.append(SenderMarker(fields[0].lower(), fields[1], fields[2]))
    return senders


def parse_subject_prefixes(text: str, name: str = SUBJECTS_FILE) -> list[SubjectPrefix]:
    """Prefix lines, each under an ``@source`` line; ``<TAB>case`` keeps the letter case."""
    prefixes = []
    source = ""
    for number, line in _rows(text):
        if line.startswith("@source"):
            source = line.removeprefix("@source").strip()
            continue
        prefix, _, flag = line.partition("\t")
        if not source or flag.strip() not in ("", "case") or not prefix.strip():
            raise InvalidInput(f"{name} line {number}: expected a prefix (optionally TAB "
                               f"\"case\") below an @source line")
        prefixes.append(SubjectPrefix(prefix.strip(), flag.strip() == "case", source))
    return prefixes


@functools.cache
def shipped_reply_data() -> ReplyData:
    """The data files shipped in the package, parsed once per process."""
    subjects = parse_subject_prefixes(shipped_text(SUBJECTS_FILE))
    subjects.sort(key=lambda s: len(s.prefix), reverse=True)
    return ReplyData(
        headers=tuple(parse_header_markers(shipped_text(HEADERS_FILE))),
        senders={s.local: s for s in parse_senders(shipped_text(SENDERS_FILE))},
        subjects=tuple(subjects),
    )
