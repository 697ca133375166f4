"""Whether a fetch of the tracking pixel was a person displaying the message, or a machine.

Every hit gets a verdict, a reason, the client in words and the data source that decided;
only ``human`` verdicts count as views. The rules weigh four kinds of evidence: the request
itself (method, prefetch headers, user agent present), what the user agent is (mail client,
browser, image proxy, bot, nothing known), what the network is (``networks.txt``: security
vendor, cloud, a webmail provider's own network, Apple's relay, a secure web gateway, or
unlisted, which is people's ISPs and mobile networks) and behaviour (timing after sending,
one client fetching many recipients' pixels at once). The rules are tried in order and the
first that answers wins. Their order is the design:

1. Facts about the request itself come first (our own web app, HEAD, prefetch headers, no
   user agent): nothing about the client can make them a view.
2. Then the machines that name themselves or their network: security vendors (by user agent
   or by network, whatever the user agent), link-preview bots, scripts, headless browsers and
   crawlers (``user_agents.txt``, then the crawler-user-agents list), Apple Mail Privacy
   Protection, Gmail's prefetch.
3. Then user agent and network together: a browser or an unknown client from a cloud network
   with no mail-client sign is a program rendering the mail; from Google's own network
   anything but its image proxy is Google's scanners; an image proxy's user agent from a
   cloud network is an impostor. A mail client on a cloud network is a person on a virtual
   desktop and goes on.
4. Then behaviour: one client fetching pixels of several messages or recipients at once, and
   fetches within about two seconds of sending. Both run *before* the human image proxies:

   - The burst rule skips the image proxies (Gmail, Yahoo, Fastmail, HEY) and secure web
     gateways and mobile networks, because one address and user agent there serve many
     people, who may well open our messages in the same second. For anyone else, pixels of
     several recipients or messages in two seconds are a scanner working through mailboxes.
   - The two-second rule does *not* skip them. ``seconds_after_send`` counts from when we
     handed the message over, so a fetch inside two seconds means relay, delivery, a person
     noticing the message and opening it all took under two seconds. No person is that
     quick; a delivery-time check is.
5. Last, the people: image proxies, mail clients, browsers (webmail), unknown clients that
   name an operating system (the long tail of mail apps). An unknown client that names no
   system at all is a program.

Everything that depends on the user agent alone is computed once per distinct user agent and
kept in an LRU cache: user agents repeat heavily. Going further, every rule except the two
behaviour rules (:data:`BEHAVIOUR`) sees only the request's method, user agent, the listed
network its address falls in (if any), prefetch headers and whether it came from our web app:
their verdict is kept per such request, so a known client costs a network lookup (cached per
address), one dict lookup and the behaviour tests.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mailseen.core.netdata import USER_AGENTS_FILE, ClassifierData, NetEntry, load_data

__all__ = ["BEHAVIOUR", "RULES", "Hit", "HitClassifier", "Verdict"]


@dataclass(slots=True)  # built for every pixel hit: not frozen, whose __init__ costs 4x
class Hit:
    method: str  # "GET" / "HEAD"
    headers: Mapping[str, str]  # request headers, names lower-cased
    remote_addr: str | None
    seconds_after_send: float | None = None  # None when unknown
    # distinct OTHER (message, recipient) pixels this client (IP + user agent) fetched in
    # the last ~2 s: other messages, or the same message's other recipients
    other_messages_from_client: int = 0
    own_viewer: bool = False  # mailseen's own web app: the team looking at its sent mail


@dataclass(frozen=True)
class Verdict:
    verdict: Literal["human", "machine"]
    reason: str  # short and user-facing
    client: str  # the client in words, "unknown" when there is nothing to go on
    # The data that decided: "request", "behaviour", "user_agents.txt",
    # "crawler-user-agents 1.67.0" or "networks: <label>" (a source of sources.json).
    # Not part of equality: two verdicts are the same judgement whatever file said it.
    source: str = field(default="", compare=False)

    @property
    def counts(self) -> bool:
        """Whether this hit is a view: only a person displaying the message is."""
        return self.verdict == "human"


@dataclass(frozen=True)
class Agent:
    """What the user agent alone says: the kind of its first matching pattern and a name."""

    kind: str | None  # a kind from user_agents.txt, or None when no pattern matched
    client: str
    system: str | None = None  # the operating system it names, if any
    source: str = USER_AGENTS_FILE  # which list recognised it


@dataclass(slots=True)  # built once per hit: a plain slotted class is cheapest
class Facts:
    hit: Hit
    user_agent: str
    agent: Agent
    network: NetEntry | None
    data: ClassifierData


Rule = Callable[[Facts], Verdict | None]

MACHINE_AGENTS = frozenset({"headless", "script", "bot"})
PERSON_AGENTS = frozenset({"client", "applemail"})
PREFETCH_HEADERS = ("sec-purpose", "purpose", "x-purpose", "x-moz")
# Networks whose one address and user agent stand for many people at once.
SHARED_NETWORKS = frozenset({"gateway", "mobile"})


def _machine(reason: str, client: str, source: str) -> Verdict:
    return Verdict("machine", reason, client, source)


def _human(reason: str, client: str, source: str) -> Verdict:
    return Verdict("human", reason, client, source)


def _net(f: Facts) -> str:
    return f"networks: {f.network.label}" if f.network is not None else "networks"


# --- the request itself ---------------------------------------------------------------

def own_viewer(f: Facts) -> Verdict | None:
    # The issue: "the team's own viewing in mailseen never counts"; the web app flags it.
    if f.hit.own_viewer:
        return _machine("your team viewing it in mailseen", "mailseen", "request")
    return None


def head_request(f: Facts) -> Verdict | None:
    # RFC 9110 §9.3.2: HEAD transfers no content, so nothing can be displayed; link checkers
    # (Safe Links, Office's existence discovery) use it to probe URLs.
    if f.hit.method.upper() == "HEAD":
        return _machine("HEAD request", f.agent.client, "request")
    return None


def prefetch_header(f: Facts) -> Verdict | None:
    # Fetch spec and Chrome speculation rules: "Sec-Purpose: prefetch"; older Chrome and
    # Safari: "Purpose: prefetch" / "X-Purpose: preview"; Firefox link prefetching FAQ:
    # "X-Moz: prefetch". A prefetched image has not been shown to anyone yet.
    for name in PREFETCH_HEADERS:
        value = f.hit.headers.get(name)
        if value and ("prefetch" in value.lower() or "preview" in value.lower()):
            return _machine(f"prefetch request ({name}: {value.lower()})", f.agent.client,
                            "request")
    return None


def no_user_agent(f: Facts) -> Verdict | None:
    # RFC 9110 §10.1.5: user agents SHOULD send User-Agent, and every mail client and browser
    # does; Microsoft's link checks were seen with a blank one
    # (edalzell/laravel-passwordless-login#79).
    if not f.user_agent:
        return _machine("no user agent", f.network.label if f.network else "unknown",
                        "request")
    return None


# --- machines that name themselves or their network -------------------------------------

def scanner_by_agent(f: Facts) -> Verdict | None:
    # user_agents.txt, kind "scanner": vendor tokens of security gateways and link checkers.
    if f.agent.kind == "scanner":
        return _machine("security scanner", f.agent.client, f.agent.source)
    return None


def scanner_by_network(f: Facts) -> Verdict | None:
    # networks.txt, kind "scanner": security vendors' networks (Microsoft 365's published
    # Exchange Online Protection ranges; the vendors' registered ASNs, sources.json). Their
    # sandboxes render mail with an ordinary browser user agent, so the network decides.
    if f.network is not None and f.network.kind == "scanner":
        return _machine(f"security scanner ({f.network.label} network)", f.network.label,
                        _net(f))
    return None


def link_preview(f: Facts) -> Verdict | None:
    # user_agents.txt, kind "preview": Slack, Discord, Telegram, Teams... fetch a URL pasted
    # into a chat to draw a preview card; nobody is reading the mail.
    if f.agent.kind == "preview":
        return _machine("link preview bot", f.agent.client, f.agent.source)
    return None


def script_or_headless(f: Facts) -> Verdict | None:
    # user_agents.txt, kinds "headless", "script", "bot": default user agents of headless
    # browsers and HTTP libraries, crawler conventions (".../bot/1.0", "+http://"); and the
    # crawler-user-agents list (MIT), consulted for agents user_agents.txt did not place.
    if f.agent.kind in MACHINE_AGENTS:
        reason = {"headless": "headless browser", "script": "script or HTTP library"}
        return _machine(reason.get(f.agent.kind or "", "crawler or bot"), f.agent.client,
                        f.agent.source)
    return None


def apple_privacy_protection(f: Facts) -> Verdict | None:
    # Mailgun and SocketLabs on Apple Mail Privacy Protection: it fetches every image at
    # delivery, opened or not, with a bare "Mozilla/5.0" from Apple's proxies (networks.txt,
    # kind "apple": 17.0.0.0/8 and the iCloud Private Relay egress list). A Safari user agent
    # from a Private Relay address is a person on webmail, so the network alone convicts only
    # Apple Mail's own user agent or one we do not recognise.
    if f.agent.kind == "mpp":
        return _machine("Apple Mail Privacy Protection prefetch", f.agent.client,
                        f.agent.source)
    if (f.network is not None and f.network.kind == "apple"
            and f.agent.kind in (None, "applemail")):
        return _machine("Apple Mail Privacy Protection prefetch",
                        "Apple Mail Privacy Protection", _net(f))
    return None


def known_prefetcher(f: Facts) -> Verdict | None:
    # user_agents.txt, kind "prefetch": Gmail fetches images for a signed-in session before
    # the message is shown, with a fixed user agent (MessageBird, 2022).
    if f.agent.kind == "prefetch":
        return _machine("prefetched before display", f.agent.client, f.agent.source)
    return None


# --- user agent and network together ------------------------------------------------------

def provider_network(f: Facts) -> Verdict | None:
    # networks.txt, kind "mailproxy": Google's own addresses (goog.json less cloud.json).
    # Gmail's image proxy fetches from there with its GoogleImageProxy agent when a person
    # opens the mail; anything else from there is Google's own machines (Safe Browsing and
    # attachment scanning render mail with an ordinary browser agent; Mautic #16263).
    net = f.network
    if net is not None and net.kind == "mailproxy" and f.agent.kind != "proxy":
        return _machine(f"{net.label}'s own network, not its image proxy", f.agent.client,
                        _net(f))
    return None


def cloud_without_mail_client(f: Facts) -> Verdict | None:
    # networks.txt, kind "cloud": the providers' own published lists (AWS ip-ranges.json,
    # Azure service tags, Google cloud.json, Oracle...). Sandboxes and scanners render mail
    # there with an ordinary browser agent (Mautic #16263; ESP field guides). A browser or an
    # unknown client with no mail-client sign is such a program; a mail client is a person on
    # a virtual desktop (Windows 365, WorkSpaces) and goes on; an image proxy's agent from a
    # cloud is an impostor (the proxies run on their owners' networks).
    net = f.network
    if net is None or net.kind != "cloud":
        return None
    kind = f.agent.kind
    if kind == "proxy":
        return _machine(f"claims to be {f.agent.client} from a cloud network ({net.label})",
                        f.agent.client, _net(f))
    if kind in ("browser", None):
        what = "browser" if kind == "browser" else "unrecognised client"
        return _machine(f"{what} from a cloud network ({net.label}), no mail client",
                        f.agent.client, _net(f))
    return None


# --- behaviour ---------------------------------------------------------------------------

def burst_across_messages(f: Facts) -> Verdict | None:
    # ESP guides (Act-On, Suped): scanners open every message of a mailing, for every
    # recipient they protect, at once. A person opens one message at a time; a conversation
    # view can show a few of ours together, hence a threshold above one. Shared image
    # proxies, secure web gateways and mobile carriers' NAT serve many people: exempt.
    others = f.hit.other_messages_from_client
    if others < f.data.burst_other_messages or f.agent.kind == "proxy":
        return None
    if f.network is not None and f.network.kind in SHARED_NETWORKS:
        return None
    return _machine(f"one client fetched {others + 1} recipients' or messages' pixels at once",
                    f.agent.client, "behaviour")


def at_delivery(f: Facts) -> Verdict | None:
    # ESP field guides: a fetch within seconds of sending is a gateway or a prefetch, "humans
    # are not that fast". Applies to the image proxies too; see the module docstring.
    seconds = f.hit.seconds_after_send
    if seconds is not None and seconds < f.data.fast_seconds:
        limit = f"{f.data.fast_seconds:g}"
        return _machine(f"fetched within {limit} s of sending", f.agent.client, "behaviour")
    return None


# --- people -------------------------------------------------------------------------------

def image_proxy(f: Facts) -> Verdict | None:
    # user_agents.txt, kind "proxy": Gmail's GoogleImageProxy, YahooMailProxy, Fastmail and HEY
    # fetch images when a person displays the message (their own documentation).
    if f.agent.kind == "proxy":
        return _human(f"opened in {f.agent.client}", f.agent.client, f.agent.source)
    return None


def mail_client(f: Facts) -> Verdict | None:
    # user_agents.txt, kinds "client" and "applemail": desktop and mobile mail apps load
    # remote images when the message is displayed.
    if f.agent.kind in PERSON_AGENTS:
        return _human(f"opened in {f.agent.client}", f.agent.client, f.agent.source)
    return None


def browser(f: Facts) -> Verdict | None:
    # user_agents.txt, kind "browser": webmail shows the message in an ordinary browser.
    if f.agent.kind == "browser":
        return _human("opened in a browser (webmail)", f.agent.client, f.agent.source)
    return None


def unknown_without_system(f: Facts) -> Verdict | None:
    # RFC 9110 §10.1.5: a user agent names its product and, for mail apps and browsers, the
    # platform in a comment ("Spark/3.12 (iPhone; iOS 17.1)"). One that no list recognises
    # and that names no operating system is a program (a monitor, a feed reader, a
    # scanner's own client), not a mail app showing the message to someone.
    if f.agent.kind is None and f.agent.system is None:
        return _machine("unrecognised client naming no system", f.agent.client, "request")
    return None


def anyone_else(f: Facts) -> Verdict:
    # No rule above saw a machine: the long tail of mail apps is people, so count it.
    return _human("opened (client not recognised)", f.agent.client, "request")


# The rules that look at what else happened (timing, other messages): evaluated for every hit.
# Every other rule is a function of the request alone (see HitClassifier._plan).
BEHAVIOUR: tuple[Rule, ...] = (burst_across_messages, at_delivery)

RULES: tuple[Rule, ...] = (
    own_viewer,
    head_request,
    prefetch_header,
    no_user_agent,
    scanner_by_agent,
    scanner_by_network,
    link_preview,
    script_or_headless,
    apple_privacy_protection,
    known_prefetcher,
    provider_network,
    cloud_without_mail_client,
    burst_across_messages,
    at_delivery,
    image_proxy,
    mail_client,
    browser,
    unknown_without_system,
    anyone_else,
)


PRODUCT_RE = re.compile(r"^([A-Za-z][\w.-]{0,40})/")
WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]*")
# What user_agents.txt settles for good: the crawler list is not asked about these (it calls
# Gmail's and Yahoo's image proxies crawlers).
SETTLED = frozenset({"mpp", "prefetch", "scanner", "preview", "headless", "script", "bot",
                     "proxy", "client", "applemail"})


def describe_agent(data: ClassifierData, ua: str) -> Agent:
    """The first matching pattern's kind and the client in words ("Outlook 16 on Windows");
    for a browser or an unknown agent, the crawler list may still call it a bot."""
    if not ua:
        return Agent(None, "unknown")
    for pattern in data.user_agents:
        match = pattern.pattern.search(ua)
        if match is not None:
            name = pattern.name(match)
            if pattern.kind in SETTLED and pattern.kind not in PERSON_AGENTS:
                return Agent(pattern.kind, name)  # a machine or proxy: no system to name
            system = _system(data, ua)
            if pattern.kind in SETTLED:
                return Agent(pattern.kind, _with_system(name, pattern.kind, system), system)
            bot = _bot(data, ua, system)
            return bot or Agent(pattern.kind, _with_system(name, pattern.kind, system), system)
    system = _system(data, ua)
    bot = _bot(data, ua, system)
    if bot is not None:
        return bot
    product = PRODUCT_RE.match(ua)
    if product and product.group(1) != "Mozilla":
        return Agent(None, product.group(1), system)
    return Agent(None, "unknown", system)


def _with_system(name: str, kind: str, system: str | None) -> str:
    if kind in ("client", "applemail", "browser") and system and system.split()[0] not in name:
        return f"{name} on {system}"
    return name


def _bot(data: ClassifierData, ua: str, system: str | None) -> Agent | None:
    if data.bots is None:
        return None
    pattern = data.bots.match(ua)
    if pattern is None:
        return None
    # The pattern's longest literal run names the crawler ("Chrome-Lighthouse", "PTST").
    name = max(WORD_RE.findall(pattern), key=len, default="").strip()[:40] or "unnamed"
    return Agent("bot", f"crawler ({name})", system, data.bots.source)


def _system(data: ClassifierData, ua: str) -> str | None:
    for pattern in data.systems:
        match = pattern.pattern.search(ua)
        if match is not None:
            return pattern.name(match)
    return None


class HitClassifier:
    """Classifies pixel hits with :data:`RULES`; one instance per process, shared by requests.

    ``ua_cache_size`` bounds the per-user-agent cache, the per-address cache of network
    lookups and the per-request cache of verdicts (0 turns them off, for the benchmark). The
    caches are thread-safe; the data is never changed, so a new :class:`ClassifierData` means
    a new classifier.
    """

    def __init__(self, data: ClassifierData | None = None, *, ua_cache_size: int = 4096) -> None:
        self.data = data if data is not None else load_data()
        describe = functools.partial(describe_agent, self.data)
        lookup = self.data.networks.lookup
        self._agent: Callable[[str], Agent] = describe
        self._network: Callable[[str | None], NetEntry | None] = lookup
        if ua_cache_size:
            self._agent = functools.lru_cache(maxsize=ua_cache_size)(describe)
            self._network = functools.lru_cache(maxsize=ua_cache_size)(lookup)
        self._plan_cache_size = ua_cache_size
        self._plans: dict[tuple[object, ...], _Plan] = {}
        # Each behaviour rule with its place in RULES.
        self._behaviour = tuple((RULES.index(rule), rule) for rule in BEHAVIOUR)

    def classify(self, hit: Hit) -> Verdict:
        return self.decide(hit)[1]

    def decide(self, hit: Hit) -> tuple[Rule, Verdict]:
        """The verdict and the rule that gave it (for tests and for explaining a verdict)."""
        headers = hit.headers
        ua = headers.get("user-agent", "").strip()
        # The rules see the address only as the listed network it falls in (or none): keyed
        # by that, one plan serves every address of a network and every unlisted address.
        network = self._network(hit.remote_addr)
        key = (hit.method, ua, id(network), hit.own_viewer,
               *[headers.get(name) for name in PREFETCH_HEADERS])
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(hit, ua, network)
            if self._plan_cache_size:
                if len(self._plans) >= self._plan_cache_size:
                    self._plans.clear()  # a flood of distinct clients: start afresh
                self._plans[key] = plan
        place, rule, verdict, agent, network = plan
        facts: Facts | None = None
        for behaviour_place, behaviour in self._behaviour:
            if behaviour_place > place:
                break
            if facts is None:
                facts = Facts(hit, ua, agent, network, self.data)
            answer = behaviour(facts)
            if answer is not None:
                return behaviour, answer
        return rule, verdict

    def _plan(self, hit: Hit, ua: str, network: NetEntry | None) -> _Plan:
        """The first rule other than the behaviour rules that answers, with its place in
        RULES: what this request gets unless a behaviour rule placed before it answers."""
        facts = Facts(hit, ua, self._agent(ua), network, self.data)
        for place, rule in enumerate(RULES):
            if rule in BEHAVIOUR:
                continue
            verdict = rule(facts)
            if verdict is not None:
                return place, rule, verdict, facts.agent, facts.network
        raise AssertionError("anyone_else always answers")  # pragma: no cover


# (place in RULES, rule, its verdict, the agent, the network) of one request's first answer.
_Plan = tuple[int, Rule, Verdict, Agent, NetEntry | None]
