#!/usr/bin/env python3
"""Tagging benchmark: messages per second through the injector for real newsletters, side by
side with pytracking's ``adapt_html`` on the same inputs, and what each changes besides the
pixel.

Inputs: every HTML email in ../shared/corpus/newsletters (37 real ones, 0.2 to 92 KB, used from
there, never copied), bucketed by size, plus newsletters of about 100, 250 and 500 KB grown at
run time from four of them (the corpus has nothing that big): the body's main content container
is found (the element inside <body> with at least three element children that spans the most
bytes between the end of its first child and the end of its last but one) and the run of its
children between those two points is repeated, byte for byte, in the document until it reaches
the target size; the head, the CSS, the first and last child (header, footer) and every Outlook
conditional comment stay as written, and the repeated run carries its own.

Each input is made into the message mailseen sends: ``build_message`` (text and HTML
alternatives, as the API and web composer build them) then ``prepare_raw``, as
``Sender.submit`` does. Timed, per message, with a new token and pixel URL each time on both
sides:

- (a) the HTML step alone, like for like: ``htmlscan.splice_pixel(html, tag, is_own_pixel)``
  against ``adapt_html(html, extra_metadata=…, click_tracking=False, open_tracking=True,
  configuration=…)``, both on the decoded HTML string;
- (b) the whole message: ``inject.tag_message(raw, tag, is_own_pixel)`` (MIME parse, decode,
  splice, re-encode) against what a caller of pytracking needs around ``adapt_html``: the
  email package parses the message, decodes the HTML part, ``set_content`` puts the result
  back and ``as_bytes`` writes the message.

Fidelity, on every input: ours must give the input HTML with only the pixel <img> inserted
(decoded with the email package) and every byte outside the HTML body unchanged; for pytracking
it reports the inputs whose HTML differs beyond the pixel and what changed (doctype, comments,
Outlook conditional comments, characters and entities, <meta http-equiv>, tags re-serialised),
and in (b) whether bytes outside the HTML part, or the HTML part's own headers, changed. Inputs
on which ``adapt_html`` raises (fragments without <body>) are reported and left out of the speed
comparison.

The machine is shared and noisy: all runs are interleaved in one process (each round times
every input with each of the four, in turn), each measurement repeats the call for at least
--min-time seconds, and the tables give medians over rounds; ratios are taken round by round.

    bench/tagging.py [--rounds 7] [--min-time 0.02] [--sizes 100,250,500] [--json FILE]

Needs the ``bench`` extra (``.venv/bin/pip install -e '.[test,bench]'``); re-executes itself in
.venv. Exit status 0 when ours is faster than pytracking in every bucket, in (a) and (b), and
changed nothing but the pixel on every input; 1 when not; 2 when the setup failed.
The figures in docs/performance.md ("Tagging") come from this script.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchlib import REPO, use_repo_venv

use_repo_venv(__file__)

import argparse  # noqa: E402
import email  # noqa: E402
import email.policy  # noqa: E402
import html as htmllib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from email.message import EmailMessage  # noqa: E402
from functools import partial  # noqa: E402
from html.parser import HTMLParser  # noqa: E402
from importlib import metadata  # noqa: E402
from typing import Any  # noqa: E402

from mailseen.core.compose import Draft, build_message, prepare_raw  # noqa: E402
from mailseen.core.htmlscan import scan_html, splice_pixel  # noqa: E402
from mailseen.core.inject import tag_message  # noqa: E402
from mailseen.core.pixel import own_url, pixel_tag, pixel_url  # noqa: E402
from mailseen.core.tokens import TokenRef, TokenSigner  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "newsletters"
# Grown to the --sizes targets: an MJML newsletter, a many-table invoice, a hybrid layout with
# VML and ghost tables, and a marketing mail with 19 MSO conditionals.
GROW_FROM = (
    "ColorlibHQ__email-templates__1-index.html",
    "sendwithus__templates__goldstar-invoice.html",
    "emailmonday__Cerberus__cerberus-hybrid.html",
    "sendgrid__email-templates__special_sale.html",
)
BASE_URL = "https://track.example.com"
DOMAIN = "example.com"
SIGNER = TokenSigner(b"bench-secret-key-0123456789abcdef")
KB = 1024


def is_own_pixel(url: str) -> bool:
    """As ``Sender.is_own_pixel``."""
    return own_url(url, BASE_URL, lambda t: SIGNER.check(t) is not None) is not None


def our_tag(n: int) -> str:
    """The pixel ``Sender.submit`` puts into message ``n``."""
    return pixel_tag(pixel_url(BASE_URL, SIGNER.make(TokenRef(n))))


class SetupError(Exception):
    pass


# --- inputs ---------------------------------------------------------------------------------

@dataclass
class Input:
    name: str
    bucket: str
    html: str
    raw: bytes = b""  # the message as Sender.submit hands it to tag_message

    @property
    def size(self) -> int:
        return len(self.html.encode("utf-8"))


@dataclass
class _Element:
    tag: str
    start: int
    end: int = -1
    children: list[_Element] = field(default_factory=list)


_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"})


class _Elements(HTMLParser):
    """Element offsets, end tags matched to the nearest open element of the same name."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=False)
        self.html = html
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", html)]
        self.root = _Element("#document", 0, len(html))
        self.stack = [self.root]
        self.body: _Element | None = None

    def _offset(self) -> int:
        line, col = self.getpos()
        return self.line_starts[line - 1] + col

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        start = self._offset()
        el = _Element(tag, start)
        self.stack[-1].children.append(el)
        if tag == "body" and self.body is None:
            self.body = el
        if tag in _VOID:
            el.end = start + len(self.get_starttag_text() or "")
        else:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        start = self._offset()
        el = _Element(tag, start, start + len(self.get_starttag_text() or ""))
        self.stack[-1].children.append(el)

    def handle_endtag(self, tag: str) -> None:
        start = self._offset()
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                for unclosed in self.stack[i + 1 :]:
                    unclosed.end = start
                self.stack[i].end = self.html.index(">", start) + 1
                del self.stack[i:]
                return


def _walk(el: _Element) -> list[_Element]:
    out = [el]
    for child in el.children:
        out.extend(_walk(child))
    return out


def content_run(html: str) -> tuple[list[int], str]:
    """The ends of the repeatable children of the body's main content container, and its tag."""
    parser = _Elements(html)
    parser.feed(html)
    parser.close()
    best: tuple[int, list[int], str] = (0, [], "")
    for el in _walk(parser.body or parser.root):
        kids = [k for k in el.children if k.end > 0]
        if len(kids) >= 3 and kids[-2].end - kids[0].end > best[0]:
            best = (kids[-2].end - kids[0].end, [k.end for k in kids[:-1]], el.tag)
    if not best[1]:
        raise SetupError("no content container with three children to repeat")
    return best[1], best[2]


def grow(html: str, target: int) -> str:
    """``html`` with the run of content rows between its first and last but one repeated
    (whole, then the first rows of it) until it is about ``target`` bytes."""
    ends, _ = content_run(html)
    first, last = ends[0], ends[-1]
    block = html[first:last]
    need = max(target - len(html.encode("utf-8")), 0)
    size = len(block.encode("utf-8"))
    copies, rest = divmod(need, size)
    part = min(ends, key=lambda e: abs(len(html[first:e].encode("utf-8")) - rest))
    return html[:last] + block * copies + html[first:part] + html[last:]


def text_version(html: str) -> str:
    """A plain-text alternative, as a sender would include it."""
    text = re.sub(r"(?is)<(head|style|script|title)\b.*?</\1\s*>|<!--.*?-->", " ", html)
    text = htmllib.unescape(re.sub(r"(?s)<[^>]*>", " ", text))
    words = text.split()
    return "\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12)) + "\n"


def make_message(html: str) -> bytes:
    draft = Draft(from_addr=f"news@{DOMAIN}", from_name="Newsletter", to=["reader@example.org"],
                  subject="This week's news", text=text_version(html), html=html)
    raw, _ = prepare_raw(build_message(draft, DOMAIN), DOMAIN)
    return raw


def corpus_bucket(size: int) -> str:
    if size < 10 * KB:
        return "corpus < 10 KB"
    if size < 30 * KB:
        return "corpus 10-30 KB"
    return "corpus 30-93 KB"


def load_inputs(corpus: Path, sizes: list[int]) -> list[Input]:
    files = sorted(corpus.glob("*.html"))
    if not files:
        raise SetupError(f"no HTML files in {corpus}")
    inputs = []
    for path in files:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SetupError(f"{path.name} is not UTF-8") from exc
        inputs.append(Input(path.stem, "", text))
    for inp in inputs:
        inp.bucket = corpus_bucket(inp.size)
    by_name = {inp.name: inp for inp in inputs}
    for kb in sizes:
        for source in GROW_FROM:
            src = by_name.get(source.removesuffix(".html"))
            if src is None:
                raise SetupError(f"{source} missing from the corpus")
            grown = grow(src.html, kb * KB)
            check_grown(src.html, grown)
            inputs.append(Input(f"{src.name} grown to {kb} KB", f"grown ~{kb} KB", grown))
    for inp in inputs:
        inp.raw = make_message(inp.html)
    return inputs


def check_grown(html: str, grown: str) -> None:
    """The grown document still ends where the original ends: same tail, same real </body>."""
    before, after = scan_html(html, is_own_pixel), scan_html(grown, is_own_pixel)
    added = len(grown) - len(html)
    if before.body_close is None or after.body_close != before.body_close + added:
        raise SetupError("growing a newsletter moved its </body>")


# --- the four timed operations ---------------------------------------------------------------

@dataclass(frozen=True)
class Pytracking:
    adapt_html: Callable[..., str]
    open_url: Callable[..., str]
    config: Any  # pytracking.Configuration
    version: str

    def tag_html(self, html: str, n: int) -> str:
        """What a pytracking user calls to add the open pixel to message ``n``."""
        return self.adapt_html(html, extra_metadata={"message_id": n}, click_tracking=False,
                               open_tracking=True, configuration=self.config)

    def pixel(self, n: int) -> str:
        """The <img> adapt_html adds to message ``n``, as lxml writes it."""
        url = self.open_url({"message_id": n}, configuration=self.config)
        return f'<img src="{htmllib.escape(url)}">'


def load_pytracking() -> Pytracking:
    try:
        import lxml.etree  # type: ignore[import-untyped]
        import pytracking  # type: ignore[import-untyped]
        from pytracking.html import adapt_html  # type: ignore[import-untyped]
    except ImportError as exc:
        raise SetupError(f"pytracking not installed ({exc}): "
                         ".venv/bin/pip install -e '.[test,bench]'") from exc
    lxml_version = ".".join(map(str, lxml.etree.LXML_VERSION[:3]))
    return Pytracking(adapt_html, pytracking.get_open_tracking_url,
                      pytracking.Configuration(base_open_tracking_url=f"{BASE_URL}/o/"),
                      f"pytracking {metadata.version('pytracking')}, lxml {lxml_version}")


def ours_html(inp: Input, n: int) -> str:
    return splice_pixel(inp.html, our_tag(n), is_own_pixel)[0]


def theirs_html(py: Pytracking, inp: Input, n: int) -> str:
    return py.tag_html(inp.html, n)


def ours_message(inp: Input, n: int) -> bytes:
    return tag_message(inp.raw, our_tag(n), is_own_pixel).data


def theirs_message(py: Pytracking, inp: Input, n: int) -> bytes:
    msg = email.message_from_bytes(inp.raw, policy=email.policy.SMTP)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(("html",))
    assert isinstance(part, EmailMessage)
    part.set_content(py.tag_html(part.get_content(), n), subtype="html")
    return msg.as_bytes()


# --- fidelity ---------------------------------------------------------------------------------

def html_of(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(("html",))
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content


def html_spans(raw: bytes) -> tuple[int, int, int]:
    """Offsets of the HTML part (its headers), its body, and the body's end, in a message
    build_message made (the HTML part is the last alternative)."""
    boundary = re.search(rb'boundary="([^"]+)"', raw)
    assert boundary is not None
    delimiter = b"--" + boundary.group(1) + b"\r\n"
    head = raw.index(b"Content-Type: text/html")
    part = raw.rindex(delimiter, 0, head) + len(delimiter)
    body = raw.index(b"\r\n\r\n", head) + 4
    return part, body, raw.rindex(b"\r\n--" + boundary.group(1) + b"--")


def unchanged_outside(raw: bytes, out: bytes, start: int, end: int) -> bool:
    """Whether ``out`` keeps every byte of ``raw`` before ``start`` and from ``end`` on."""
    tail = len(raw) - end
    return out[:start] == raw[:start] and out[len(out) - tail :] == raw[end:]


def without_once(text: str, piece: str) -> str | None:
    return text.replace(piece, "", 1) if text.count(piece) == 1 else None


def ours_is_exact(inp: Input) -> list[str]:
    """What ours changed besides the pixel (empty: nothing)."""
    problems = []
    tag = our_tag(1)
    if without_once(splice_pixel(inp.html, tag, is_own_pixel)[0], tag) != inp.html:
        problems.append("splice_pixel changed more than the pixel")
    result = tag_message(inp.raw, tag, is_own_pixel)
    if not result.trackable:
        return [f"not trackable: {result.reason}"]
    before, after = html_of(inp.raw), html_of(result.data)
    rest = without_once(after, tag)
    if rest != before and rest is not None:
        # A 7bit/8bit part whose line would pass 998 octets gets the tag on a line of its own.
        rest = next((after.replace(eol + tag + eol, "", 1) for eol in ("\r\n", "\n")
                     if after.count(eol + tag + eol) == 1), rest)
    if rest != before:
        problems.append("decoded HTML part differs beyond the pixel")
    _, body, end = html_spans(inp.raw)
    if not unchanged_outside(inp.raw, result.data, body, end):
        problems.append("bytes outside the HTML body changed")
    return problems


_DETECTORS: dict[str, Callable[[str, str], bool]] = {
    "doctype dropped": lambda a, b: bool(re.search("(?i)<!doctype", a))
    and not re.search("(?i)<!doctype", b),
    "comments dropped or changed": lambda a, b:
        re.findall(r"(?s)<!--.*?-->", a) != re.findall(r"(?s)<!--.*?-->", b),
    "Outlook conditional comments changed": lambda a, b:
        re.findall(r"(?si)<!--\[if.*?<!\[endif\]-->|<!\[if.*?\]>|<!\[endif\]>", a)
        != re.findall(r"(?si)<!--\[if.*?<!\[endif\]-->|<!\[if.*?\]>|<!\[endif\]>", b),
    "characters or entities rewritten": lambda a, b:
        Counter(re.findall(r"&#?\w+;|[^\x00-\x7f]", a))
        != Counter(re.findall(r"&#?\w+;|[^\x00-\x7f]", b)),
    "<meta http-equiv> removed": lambda a, b:
        len(re.findall("(?i)http-equiv", b)) < len(re.findall("(?i)http-equiv", a)),
    "start tags re-serialised": lambda a, b:
        re.findall(r"<[A-Za-z][^>]*>", a) != re.findall(r"<[A-Za-z][^>]*>", b),
    "whitespace changed": lambda a, b: a.split() == b.split() and a != b,
}


@dataclass
class TheirFidelity:
    error: str | None = None
    exact: bool = False
    changes: list[str] = field(default_factory=list)
    other_parts_unchanged: bool | None = None  # (b): headers and text part, byte for byte
    html_headers_unchanged: bool | None = None  # (b): the HTML part's own headers
    size_delta: int = 0


def theirs_fidelity(inp: Input, py: Pytracking) -> TheirFidelity:
    fid = TheirFidelity()
    try:
        out = theirs_html(py, inp, 1)
    except Exception as exc:  # pytracking's own failure is the finding
        fid.error = f"{type(exc).__name__}: {exc}"
        return fid
    rest = without_once(out, py.pixel(1))
    if rest is None:
        fid.changes.append("pixel not found as <img src=…>")
        rest = out
    fid.exact = rest == inp.html
    fid.size_delta = len(rest) - len(inp.html)
    fid.changes += [name for name, differs in _DETECTORS.items() if differs(inp.html, rest)]
    out_raw = theirs_message(py, inp, 1)
    part, body, end = html_spans(inp.raw)
    fid.other_parts_unchanged = unchanged_outside(inp.raw, out_raw, part, end)
    fid.html_headers_unchanged = fid.other_parts_unchanged and \
        html_spans(out_raw)[:2] == (part, body) and out_raw[part:body] == inp.raw[part:body]
    return fid


# --- timing -----------------------------------------------------------------------------------

KINDS = ("ours-html", "theirs-html", "ours-msg", "theirs-msg")


def timed(fn: Callable[[int], object], reps: int, counter: list[int]) -> float:
    """Seconds per call over ``reps`` calls, each with a new message number."""
    start = time.perf_counter()
    for _ in range(reps):
        counter[0] += 1
        fn(counter[0])
    return (time.perf_counter() - start) / reps


def run(inputs: list[Input], rounds: int, min_time: float, py: Pytracking
        ) -> dict[str, dict[str, list[float]]]:
    """Seconds per message: times[input name][kind] = one figure per round."""
    counter = [0]
    fns: dict[str, dict[str, Callable[[int], object]]] = {}
    reps: dict[str, dict[str, int]] = {}
    for inp in inputs:
        fns[inp.name] = {
            "ours-html": partial(ours_html, inp),
            "theirs-html": partial(theirs_html, py, inp),
            "ours-msg": partial(ours_message, inp),
            "theirs-msg": partial(theirs_message, py, inp),
        }
        # Calibrate (and warm up): enough calls that one measurement takes min_time.
        reps[inp.name] = {k: max(1, round(min_time / max(timed(f, 3, counter), 1e-7)))
                          for k, f in fns[inp.name].items()}
    times: dict[str, dict[str, list[float]]] = {i.name: {k: [] for k in KINDS} for i in inputs}
    for r in range(rounds):
        for inp in inputs:
            # Alternate the order so neither side always runs right after the other.
            order = KINDS if r % 2 == 0 else KINDS[::-1]
            for kind in order:
                times[inp.name][kind].append(timed(fns[inp.name][kind], reps[inp.name][kind],
                                                   counter))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return times


@dataclass
class BucketFigures:
    bucket: str
    inputs: int
    compared: int
    mean_kb: float
    rates: dict[str, float]  # messages/s over the bucket's inputs, each once (median rounds)
    mbps: dict[str, float]
    ratio_html: float  # theirs time / ours time, median over rounds
    ratio_msg: float
    ours_exact: int
    theirs_exact: int
    theirs_errors: int


def figures(inputs: list[Input], times: dict[str, dict[str, list[float]]],
            ours_ok: dict[str, list[str]], theirs: dict[str, TheirFidelity], rounds: int
            ) -> list[BucketFigures]:
    out = []
    smallest: dict[str, int] = {}
    for i in inputs:
        smallest[i.bucket] = min(smallest.get(i.bucket, i.size), i.size)
    for bucket in sorted(smallest, key=smallest.__getitem__):
        members = [i for i in inputs if i.bucket == bucket]
        compared = [i for i in members if theirs[i.name].error is None]
        size = sum(i.size for i in compared)
        rates, mbps = {}, {}
        for kind in KINDS:
            total = sum(statistics.median(times[i.name][kind]) for i in compared)
            rates[kind] = len(compared) / total if total else 0.0
            mbps[kind] = size / total / 1e6 if total else 0.0

        def ratio(ours: str, theirs_kind: str, group: list[Input] = compared) -> float:
            per_round = [sum(times[i.name][theirs_kind][r] for i in group)
                         / sum(times[i.name][ours][r] for i in group) for r in range(rounds)]
            return statistics.median(per_round) if group else 0.0

        out.append(BucketFigures(
            bucket, len(members), len(compared), sum(i.size for i in members) / len(members) / KB,
            rates, mbps, ratio("ours-html", "theirs-html"), ratio("ours-msg", "theirs-msg"),
            sum(1 for i in members if not ours_ok[i.name]),
            sum(1 for i in members if theirs[i.name].exact),
            sum(1 for i in members if theirs[i.name].error is not None)))
    return out


def slowest(times: dict[str, dict[str, list[float]]], ours: str, theirs_kind: str
            ) -> tuple[float, str]:
    """The input on which ours is the least ahead: (median ratio over rounds, its name)."""
    return min((statistics.median(t / o for t, o in zip(kinds[theirs_kind], kinds[ours],
                                                        strict=True)), name)
               for name, kinds in times.items())


def print_report(rows: list[BucketFigures], inputs: list[Input],
                 ours_ok: dict[str, list[str]], theirs: dict[str, TheirFidelity],
                 times: dict[str, dict[str, list[float]]]) -> None:
    print("\n(a) HTML step alone: splice_pixel vs adapt_html (messages/s, MB/s of HTML)")
    print(f"{'bucket':18} {'n':>3} {'avg KB':>7} {'ours msg/s':>11} {'MB/s':>6} "
          f"{'pytr msg/s':>11} {'MB/s':>6} {'ours/pytr':>9}")
    for b in rows:
        print(f"{b.bucket:18} {b.compared:>3} {b.mean_kb:>7.1f} {b.rates['ours-html']:>11,.0f} "
              f"{b.mbps['ours-html']:>6.1f} {b.rates['theirs-html']:>11,.0f} "
              f"{b.mbps['theirs-html']:>6.1f} {b.ratio_html:>8.2f}x")
    print("\n(b) whole message: tag_message vs email parse + adapt_html + set_content + as_bytes")
    print(f"{'bucket':18} {'n':>3} {'avg KB':>7} {'ours msg/s':>11} {'MB/s':>6} "
          f"{'pytr msg/s':>11} {'MB/s':>6} {'ours/pytr':>9}")
    for b in rows:
        print(f"{b.bucket:18} {b.compared:>3} {b.mean_kb:>7.1f} {b.rates['ours-msg']:>11,.0f} "
              f"{b.mbps['ours-msg']:>6.1f} {b.rates['theirs-msg']:>11,.0f} "
              f"{b.mbps['theirs-msg']:>6.1f} {b.ratio_msg:>8.2f}x")
    for label, ours, theirs_kind in (("a", "ours-html", "theirs-html"),
                                     ("b", "ours-msg", "theirs-msg")):
        ratio, name = slowest(times, ours, theirs_kind)
        print(f"least ahead in ({label}): {ratio:.2f}x on {name}")
    print("\nFidelity (inputs whose HTML is exactly the input plus the pixel)")
    print(f"{'bucket':18} {'n':>3} {'ours exact':>10} {'pytr exact':>10} {'pytr errors':>11}")
    for b in rows:
        print(f"{b.bucket:18} {b.inputs:>3} {b.ours_exact:>10} {b.theirs_exact:>10} "
              f"{b.theirs_errors:>11}")
    changes = Counter(c for f in theirs.values() for c in f.changes)
    ok = [f for f in theirs.values() if f.error is None]
    print(f"\npytracking, what changed besides the pixel ({len(ok)} inputs it took):")
    for name, count in changes.most_common():
        print(f"  {count:>3}  {name}")
    moved = sum(1 for f in ok if not f.other_parts_unchanged)
    print(f"  {moved:>3}  (b) bytes outside the HTML part changed (other headers, text part)")
    moved = sum(1 for f in ok if not f.html_headers_unchanged)
    print(f"  {moved:>3}  (b) the HTML part's headers rewritten (set_content)")
    for inp in inputs:
        if theirs[inp.name].error:
            print(f"  error on {inp.name}: {theirs[inp.name].error}")
    for inp in inputs:
        if ours_ok[inp.name]:
            print(f"ours changed more than the pixel on {inp.name}: {ours_ok[inp.name]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.02,
                        help="seconds per measurement (calls are repeated to reach it)")
    parser.add_argument("--sizes", default="100,250,500",
                        help="KB sizes of the newsletters grown from the corpus")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()

    try:
        py = load_pytracking()
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        inputs = load_inputs(args.corpus, sizes)
    except (SetupError, OSError, ValueError) as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    print(f"{len(inputs)} inputs; Python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {py.version}; {args.rounds} rounds of "
          f"{args.min_time * 1000:.0f} ms per measurement; load average "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    ours_ok = {i.name: ours_is_exact(i) for i in inputs}
    theirs = {i.name: theirs_fidelity(i, py) for i in inputs}
    compared = [i for i in inputs if theirs[i.name].error is None]
    times = run(compared, args.rounds, args.min_time, py)
    rows = figures(inputs, times, ours_ok, theirs, args.rounds)
    print_report(rows, inputs, ours_ok, theirs, times)
    load_after = os.getloadavg()
    print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")

    faster = all(b.ratio_html > 1 and b.ratio_msg > 1 for b in rows if b.compared)
    exact = not any(ours_ok.values())
    print(f"goal: faster in every bucket, (a) and (b): {'yes' if faster else 'NO'}; "
          f"nothing but the pixel changed on every input: {'yes' if exact else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({
            "load_before": load_before, "load_after": load_after,
            "inputs": [{"name": i.name, "bucket": i.bucket, "bytes": i.size,
                        "message_bytes": len(i.raw), "ours_problems": ours_ok[i.name],
                        "pytracking": theirs[i.name].__dict__,
                        "seconds": times.get(i.name)} for i in inputs],
            "buckets": [b.__dict__ for b in rows],
        }, indent=1))
    return 0 if faster and exact else 1


if __name__ == "__main__":
    sys.exit(main())
