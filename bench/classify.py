"""Micro-benchmark: what classifying a pixel hit costs, with and without the user-agent cache.

    .venv/bin/python bench/classify.py [--hits 200000] [--repeat 3]

Hits are drawn from a user-agent mix like a team mailbox's real traffic: a few clients make
most of the hits (Apple's privacy proxy, Gmail's proxy, a handful of Outlook builds), and a
long tail of user agents is seen once or twice. Three runs over the same hits:

- baseline: a no-op in place of the classifier, i.e. the endpoint before classification;
- cached: ``HitClassifier()`` as the server uses it;
- uncached: ``HitClassifier(ua_cache_size=0)``, every user agent matched from scratch;
- clicks: ``ClickClassifier()`` (core/clicks.py) on the same requests, as the click redirect's
  writer uses it.

The figures in docs/classification.md come from this script.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Callable

from mailseen.core.clicks import ClickClassifier
from mailseen.core.hits import Hit, HitClassifier, Verdict
from mailseen.core.netdata import load_data

OUTLOOK = ("Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; "
           ".NET4.0E; Microsoft Outlook 16.0.{build}; ms-office; MSOffice 16)")
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/{v}.0.0.0 Safari/537.36")
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/{v}.1 Safari/605.1.15")
IOS_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS {v}_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148")
APPLE_MAIL = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
              "like Gecko)")
GMAIL = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
         "(via ggpht.com GoogleImageProxy)")
YAHOO = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Thunderbird/{v}.6.0"

# (weight, user-agent factory, address factory)
Mix = list[tuple[float, Callable[[random.Random], str], Callable[[random.Random], str]]]


def _ip(prefix: str) -> Callable[[random.Random], str]:
    return lambda r: f"{prefix}.{r.randrange(256)}"


MIX: Mix = [
    (0.40, lambda r: "Mozilla/5.0", _ip("172.224.224")),  # Apple Mail Privacy Protection
    (0.22, lambda r: GMAIL, _ip("66.249.84")),
    (0.12, lambda r: OUTLOOK.format(build=r.choice([17029, 16827, 17126, 5161])),
     _ip("198.51.100")),
    (0.05, lambda r: IOS_MAIL.format(v=r.choice([16, 17])), _ip("203.0.113")),
    (0.03, lambda r: APPLE_MAIL, _ip("203.0.113")),
    (0.06, lambda r: CHROME.format(v=r.randrange(118, 122)), _ip("192.0.2")),
    (0.02, lambda r: SAFARI.format(v=r.randrange(16, 18)), _ip("192.0.2")),
    (0.02, lambda r: YAHOO, _ip("98.137.27")),
    (0.03, lambda r: CHROME.format(v=72), _ip("13.70.1")),  # Defender's sandbox in Azure
    (0.01, lambda r: THUNDERBIRD.format(v=r.choice([102, 115])), _ip("192.0.2")),
    (0.01, lambda r: r.choice(["curl/8.5.0", "python-requests/2.31.0", ""]), _ip("192.0.2")),
    # the long tail: user agents seen once or twice
    (0.03, lambda r: f"SomeMail/{r.randrange(10_000)}.{r.randrange(100)} (Android 14)",
     _ip("192.0.2")),
]


def make_hits(n: int, seed: int = 2026) -> list[Hit]:
    r = random.Random(seed)
    weights = [w for w, _, _ in MIX]
    hits = []
    for _ in range(n):
        _, agent, address = r.choices(MIX, weights)[0]
        ua = agent(r)
        headers = {"user-agent": ua, "accept": "image/*,*/*;q=0.8"} if ua else {"accept": "*/*"}
        hits.append(Hit("GET", headers, address(r), r.expovariate(1 / 3600)))
    return hits


NOOP = Verdict("human", "baseline", "baseline")


def noop(hit: Hit) -> Verdict:
    return NOOP


def best_rate(make: Callable[[], Callable[[Hit], Verdict]], hits: list[Hit],
              repeat: int) -> float:
    """Hits per second of the best run; each run starts from a new classifier, so the
    cached figure pays for its cold cache (every distinct user agent's first sight)."""
    best = float("inf")
    for _ in range(repeat):
        classify = make()
        start = time.perf_counter()
        for hit in hits:
            classify(hit)
        best = min(best, time.perf_counter() - start)
    return len(hits) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    hits = make_hits(args.hits)
    distinct = len({h.headers.get("user-agent", "") for h in hits})
    print(f"{args.hits} hits, {distinct} distinct user agents; Python {platform.python_version()}"
          f" on {platform.machine()}; best of {args.repeat}")

    data = load_data()  # loaded once: the server loads it at start-up, not per hit
    results = {}
    makers: dict[str, Callable[[], Callable[[Hit], Verdict]]] = {
        "baseline (no-op)": lambda: noop,
        "cached": lambda: HitClassifier(data).classify,
        "uncached": lambda: HitClassifier(data, ua_cache_size=0).classify,
        "clicks": lambda: ClickClassifier(data).classify,
    }
    for name, make in makers.items():
        results[name] = best_rate(make, hits, args.repeat)
    cached, uncached = results["cached"], results["uncached"]
    for name, rate in results.items():
        print(f"  {name:17} {rate:>12,.0f} hits/s {1e6 / rate:>9.2f} µs/hit")
    print(f"  cache speed-up: {cached / uncached:.1f}x; "
          f"classifying adds {1e6 / cached - 1e6 / results['baseline (no-op)']:.2f} µs per hit")


if __name__ == "__main__":
    main()
