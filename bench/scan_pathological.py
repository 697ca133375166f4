"""Does the HTML scanner stay linear on hostile markup? Time ratios, not timed tests.

    .venv/bin/python bench/scan_pathological.py [--size 20000] [--repeat 5]

For each kind of pathological markup (piled conditional comments, unfinished tags and quotes,
one huge tag, thousands of angles...), ``splice_pixel`` is timed on the markup repeated ``size``
times and ``4 * size`` times (best of ``repeat`` runs each, in one process). Linear work gives a
ratio near 4; quadratic work near 16. The goal is a ratio under 6 for every kind; exit status 1
when one is over. tests/test_htmlscan.py checks the same inputs for correctness (one pixel,
where it belongs); the figures are in docs/performance.md (Tagging).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from mailseen.core.htmlscan import splice_pixel

TAG = '<img src="https://track.example/t/NEW.gif" width="1" height="1" alt="">'
GOAL = 6.0

# Each kind of markup as a function of how many times its unit is repeated.
KINDS: dict[str, Callable[[int], str]] = {
    "piled-downlevel-openers": lambda n: "<![if x]>" * n,
    "piled-conditional-comments": lambda n: "<!--[if x]>" * n,
    "piled-mixed-conditionals": lambda n: "<!--[if x]><![if y]>" * (n // 2),
    "piled-unfinished-openers": lambda n: "<![if" * n,
    "piled-open-quotes": lambda n: "<a b='" * n,
    "one-huge-tag": lambda n: "<p " + "a=b " * (n * 5 // 2),
    "lone-angles": lambda n: "<" * (n * 5),
    "unfinished-end-tags": lambda n: "</body" * n,
    "unfinished-raw-text-end": lambda n: "<style>" + "</styl" * n,
    "many-tags": lambda n: "<body>" + "<p class=x>y</p>" * n + "</body>",
}


def best(html: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        splice_pixel(html, TAG, lambda url: False)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    worst = 0.0
    print(f"{'markup':28} {'n ms':>8} {'4n ms':>8} {'ratio':>6}")
    for name, build in KINDS.items():
        small = best(build(args.size), args.repeat)
        large = best(build(4 * args.size), args.repeat)
        ratio = large / small
        worst = max(worst, ratio)
        print(f"{name:28} {small * 1e3:8.2f} {large * 1e3:8.2f} {ratio:6.2f}")
    print(f"worst ratio {worst:.2f} (linear ~4, quadratic ~16; goal < {GOAL})")
    return 0 if worst < GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
