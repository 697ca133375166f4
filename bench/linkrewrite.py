#!/usr/bin/env python3
"""What rewriting links costs when a copy is rendered for delivery (``Sender.copy_bytes``).

    .venv/bin/python bench/linkrewrite.py [--rounds 7] [--min-time 0.05]

Every HTML email of ../shared/corpus/newsletters is made into a message (text and HTML
alternatives, the HTML quoted-printable, as the composer writes it). Each round times, per
message and interleaved, ``inject.tag_message`` with the pixel alone and with the pixel and
click tracking's link edits (``core/links.py``, a signed click token per link), each call
repeated for at least --min-time seconds. Reported: the median over rounds of the total time
per message, and the median ratio (links / pixel only), so the figure compares like with like
on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import email.policy
import statistics
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from mailseen.core.inject import tag_message
from mailseen.core.links import Link, find_links, link_edits
from mailseen.core.pixel import click_url, pixel_tag, pixel_url
from mailseen.core.tokens import ClickRef, ClickSigner, TokenRef, TokenSigner

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "newsletters"
BASE = "https://track.example.com"
SECRET = b"bench secret key, 32 bytes long!"


def message(html: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "news@example.com"
    msg["To"] = "reader@example.org"
    msg["Subject"] = "News"
    msg.set_content("text version\n")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg.as_bytes(policy=email.policy.SMTP)


def per_call(fn: Callable[[], object], min_time: float) -> float:
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.05)
    args = parser.parse_args()
    clicks, pixels = ClickSigner(SECRET), TokenSigner(SECRET)
    tag = pixel_tag(pixel_url(BASE, pixels.make(TokenRef(copy_key=42))))
    inputs = [message(p.read_text("utf-8", "replace")) for p in sorted(CORPUS.glob("*.html"))]
    links = sum(len(find_links(p.read_text("utf-8", "replace")))
                for p in sorted(CORPUS.glob("*.html")))

    def with_links(raw: bytes) -> bytes:
        count = [0]

        def new_url(link: Link) -> str:
            count[0] += 1
            return click_url(BASE, clicks.make(ClickRef(42, count[0] - 1, link.url)))

        def edits(html: str, text_of: Callable[[str], str] | None
                  ) -> list[tuple[int, int, str]]:
            return link_edits(html, new_url, text_of=text_of)

        return tag_message(raw, tag, lambda url: False, edits).data

    totals: dict[str, list[float]] = {"pixel only": [], "pixel and links": []}
    ratios: list[float] = []
    for _ in range(args.rounds):
        plain = sum(per_call(lambda r=raw: tag_message(r, tag, lambda u: False), args.min_time)
                    for raw in inputs)
        linked = sum(per_call(lambda r=raw: with_links(r), args.min_time) for raw in inputs)
        totals["pixel only"].append(plain)
        totals["pixel and links"].append(linked)
        ratios.append(linked / plain)
    print(f"{len(inputs)} corpus messages, {links} links; median of {args.rounds} rounds")
    for name, values in totals.items():
        print(f"  {name:16} {statistics.median(values) / len(inputs) * 1e6:9.0f} µs/message")
    print(f"  links / pixel only: {statistics.median(ratios):.2f}x "
          f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
