"""Whether a request of a click redirect was a person following a link, or a machine.

The same evidence as for pixel hits (core/hits.py) and mostly the same rules, reused as they
are: the request itself (our own web app, HEAD, prefetch headers, no user agent), machines
that name themselves or their network (security scanners, link previewers, scripts, headless
browsers, crawlers), and user agent and network together (Google's own network, a browser
from a cloud network). What differs for links:

- **No Apple Mail Privacy Protection rule**: it fetches images, never follows links; a click
  from Apple's relay is a person on Safari with iCloud Private Relay.
- **An image proxy does not click**: GoogleImageProxy and its kind fetch images; one
  following a link is something else using its name.
- **Timing**: security gateways follow every link of a message within seconds of delivery
  (Microsoft Defender Safe Links' detonation, Mimecast, Proofpoint URL Defense, Barracuda;
  the ESP field guides on "bot clicks"). A click within :data:`CLICK_FAST_SECONDS` of the
  copy's sending is taken for one: a person needs longer to receive, open, read and click.
- **Bursts across links**: a scanner follows all the links of a message at once; a person
  follows one, reads, maybe comes back for another. A client that followed another link
  within :data:`CLICK_BURST_SECONDS` (of this copy, or of another copy) is a scanner.
- **People**: a browser or a mail client (some open links in their own web view); an
  unknown client naming an operating system. An unknown client naming none is a program.
"""

from __future__ import annotations

import functools

from .hits import (
    Facts,
    Hit,
    Rule,
    Verdict,
    cloud_without_mail_client,
    describe_agent,
    head_request,
    link_preview,
    no_user_agent,
    own_viewer,
    prefetch_header,
    provider_network,
    scanner_by_agent,
    scanner_by_network,
    script_or_headless,
    unknown_without_system,
)
from .netdata import ClassifierData, load_data

__all__ = ["CLICK_BURST_SECONDS", "CLICK_FAST_SECONDS", "CLICK_RULES", "ClickClassifier"]

CLICK_FAST_SECONDS = 15.0
CLICK_BURST_SECONDS = 2.0


def _machine(reason: str, client: str, source: str) -> Verdict:
    return Verdict("machine", reason, client, source)


def image_proxy_click(f: Facts) -> Verdict | None:
    # user_agents.txt, kind "proxy": the mail providers' image proxies fetch images when a
    # message is shown (their documentation); they do not follow links. Nor do the
    # prefetchers (kind "prefetch", "mpp").
    if f.agent.kind in ("proxy", "prefetch", "mpp"):
        return _machine(f"{f.agent.client} does not follow links", f.agent.client,
                        f.agent.source)
    return None


def burst_across_links(f: Facts) -> Verdict | None:
    # A scanner follows every link of a message at once (ESP guides: Postmark, SendGrid,
    # Mailgun on "bot clicks"). ``other_messages_from_client`` counts, for a click, the other
    # links this client followed within CLICK_BURST_SECONDS.
    others = f.hit.other_messages_from_client
    if others >= 1:
        return _machine(f"one client followed {others + 1} links within "
                        f"{CLICK_BURST_SECONDS:g} s", f.agent.client, "behaviour")
    return None


def click_at_delivery(f: Facts) -> Verdict | None:
    # Security gateways follow links as the message is delivered; see the module docstring.
    seconds = f.hit.seconds_after_send
    if seconds is not None and seconds < CLICK_FAST_SECONDS:
        return _machine(f"followed within {CLICK_FAST_SECONDS:g} s of sending",
                        f.agent.client, "behaviour")
    return None


def person_clicked(f: Facts) -> Verdict | None:
    # user_agents.txt, kinds "browser", "client", "applemail": a person's browser, or a mail
    # app that opens links in its own view.
    if f.agent.kind in ("browser", "client", "applemail"):
        return Verdict("human", "followed the link", f.agent.client, f.agent.source)
    return None


def anyone_else_clicked(f: Facts) -> Verdict:
    # No rule above saw a machine, and the client names a system: a person.
    return Verdict("human", "followed the link (client not recognised)", f.agent.client,
                   "request")


CLICK_RULES: tuple[Rule, ...] = (
    own_viewer,
    head_request,
    prefetch_header,
    no_user_agent,
    scanner_by_agent,
    scanner_by_network,
    link_preview,
    script_or_headless,
    image_proxy_click,
    provider_network,
    cloud_without_mail_client,
    burst_across_links,
    click_at_delivery,
    person_clicked,
    unknown_without_system,
    anyone_else_clicked,
)


class ClickClassifier:
    """Classifies click redirect requests with :data:`CLICK_RULES`. ``Hit`` is the pixel's
    record of a request; for a click its ``other_messages_from_client`` is the number of
    other links the client followed within :data:`CLICK_BURST_SECONDS`."""

    def __init__(self, data: ClassifierData | None = None, *, cache_size: int = 4096) -> None:
        self.data = data if data is not None else load_data()
        self._agent = functools.lru_cache(maxsize=cache_size)(
            functools.partial(describe_agent, self.data))
        self._network = functools.lru_cache(maxsize=cache_size)(self.data.networks.lookup)

    def classify(self, hit: Hit) -> Verdict:
        return self.decide(hit)[1]

    def decide(self, hit: Hit) -> tuple[Rule, Verdict]:
        ua = hit.headers.get("user-agent", "").strip()
        facts = Facts(hit, ua, self._agent(ua), self._network(hit.remote_addr), self.data)
        for rule in CLICK_RULES:
            verdict = rule(facts)
            if verdict is not None:
                return rule, verdict
        raise AssertionError("anyone_else_clicked always answers")  # pragma: no cover


def rule_names() -> list[str]:
    """The rules' names in order (for docs and tests)."""
    return [rule.__name__ for rule in CLICK_RULES]

