"""Pixel hits: people displaying the message count as views, machines are named and kept.

The table holds realistic requests — the header sets real clients send — written for these
tests. Addresses are documentation ranges (RFC 5737/3849) unless the network is the point.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import pytest

from mailseen.core import hits
from mailseen.core.hits import RULES, Hit, HitClassifier, Verdict
from mailseen.core.netdata import ClassifierData, load_data, parse_user_agents

OUTLOOK_WIN = ("Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; "
               ".NET4.0C; .NET4.0E; .NET CLR 2.0.50727; .NET CLR 3.0.30729; .NET CLR 3.5.30729; "
               "Microsoft Outlook 16.0.17029; ms-office; MSOffice 16)")
OUTLOOK_SHORT = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"
APPLE_MAIL_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                  "(KHTML, like Gecko)")
IOS_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148")
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1")
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0"
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
               "(via ggpht.com GoogleImageProxy)")
GMAIL_PREFETCH = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/42.0.2311.135 Safari/537.36 Edge/12.246 Mozilla/5.0")
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
FASTMAIL = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/118.0.5993.117 Safari/537.36 FastmailUA/1.0")
HEY = ("hey.com/imageproxy Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
       "Gecko) Chrome/134.0.0.0 Safari/537.36")
ANDROID_WEBVIEW = ("Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240305.019; wv) "
                   "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/122.0.6261.119 "
                   "Mobile Safari/537.36")
WINDOWS_MAIL = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; WebView/3.0) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19045")
CHROME_WIN = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/120.0.0.0 Safari/537.36")
EDGE_WIN = CHROME_WIN + " Edg/120.0.2210.91"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
# What Defender's sandbox sent in the reports cited in networks.txt: an old desktop Chrome.
DEFENDER_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                   "Gecko) Chrome/72.0.3626.109 Safari/537.36")
HEADLESS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/120.0.6099.28 Safari/537.36")

IMG_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
OUTLOOK_ACCEPT = "image/png, image/svg+xml, image/*;q=0.8, */*;q=0.5"
WEBKIT_ACCEPT = "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"  # noqa: E501

HOME = "203.0.113.40"  # a recipient's own connection
OFFICE = "198.51.100.23"  # a company's NAT address
GOOGLE = "66.249.84.12"  # Google's proxy network (not listed: Gmail opens are people)
YAHOO = "98.137.27.103"
PRIVATE_RELAY = "172.224.226.33"  # a line of Apple's published egress list
EOP = "40.107.22.60"  # Exchange Online Protection (Microsoft 365 endpoint set 9)
AZURE = "13.70.1.1"  # AzureCloud (service tags); Defender's detonation sandbox runs in Azure
AWS = "52.1.2.3"
GOOGLE_CLOUD = "34.120.1.1"
ZSCALER = "136.226.1.1"
APPLE = "17.58.63.10"


@dataclass(frozen=True)
class Row:
    name: str
    headers: dict[str, str]
    remote: str | None = HOME
    seconds: float | None = 3600.0
    method: str = "GET"
    others: int = 0
    own: bool = False
    expect: tuple[str, str, str] = ("", "", "")  # verdict, reason, client
    rule: str = field(default="")

    def hit(self) -> Hit:
        return Hit(self.method, self.headers, self.remote, self.seconds, self.others, self.own)


def ua(agent: str, accept: str = IMG_ACCEPT, **more: str) -> dict[str, str]:
    headers = {"user-agent": agent, "accept": accept, "accept-encoding": "gzip, deflate, br",
               "accept-language": "en-GB,en;q=0.9"}
    headers.update({k.replace("_", "-"): v for k, v in more.items()})
    return headers


HUMAN, MACHINE = "human", "machine"
ROWS = [
    # --- people: mail clients ---------------------------------------------------------
    Row("Outlook desktop on Windows", ua(OUTLOOK_WIN, OUTLOOK_ACCEPT), OFFICE,
        expect=(HUMAN, "opened in Outlook 16 on Windows", "Outlook 16 on Windows"),
        rule="mail_client"),
    Row("Outlook desktop, short agent", {"user-agent": OUTLOOK_SHORT, "accept": "*/*"}, OFFICE,
        expect=(HUMAN, "opened in Outlook 16", "Outlook 16"), rule="mail_client"),
    Row("Apple Mail, privacy protection off", ua(APPLE_MAIL_MAC, WEBKIT_ACCEPT),
        expect=(HUMAN, "opened in Apple Mail on macOS", "Apple Mail on macOS"),
        rule="mail_client"),
    Row("iOS Mail, privacy protection off", ua(IOS_MAIL, WEBKIT_ACCEPT), "2001:db8::7",
        expect=(HUMAN, "opened in Apple Mail on iPhone", "Apple Mail on iPhone"),
        rule="mail_client"),
    Row("Thunderbird on Linux", ua(THUNDERBIRD, "image/avif,image/webp,*/*"),
        expect=(HUMAN, "opened in Thunderbird 115 on Linux", "Thunderbird 115 on Linux"),
        rule="mail_client"),
    Row("Windows Mail", ua(WINDOWS_MAIL),
        expect=(HUMAN, "opened in Windows Mail", "Windows Mail"), rule="mail_client"),
    Row("Android Gmail app showing an IMAP account", ua(ANDROID_WEBVIEW, x_requested_with=
        "com.google.android.gm"),
        expect=(HUMAN, "opened in Android mail app", "Android mail app"), rule="mail_client"),
    # --- people: image proxies that fetch when the message is displayed ----------------
    Row("Gmail image proxy (web and Android/iOS Gmail app)",
        {"user-agent": GMAIL_PROXY, "accept-encoding": "gzip,deflate,br"}, GOOGLE,
        expect=(HUMAN, "opened in Gmail (image proxy)", "Gmail (image proxy)"),
        rule="image_proxy"),
    Row("Yahoo Mail image proxy", {"user-agent": YAHOO_PROXY}, YAHOO,
        expect=(HUMAN, "opened in Yahoo Mail (image proxy)", "Yahoo Mail (image proxy)"),
        rule="image_proxy"),
    Row("Fastmail image proxy", ua(FASTMAIL), "103.168.172.45",
        expect=(HUMAN, "opened in Fastmail (image proxy)", "Fastmail (image proxy)"),
        rule="image_proxy"),
    Row("HEY image proxy", ua(HEY, "*/*"), OFFICE,
        expect=(HUMAN, "opened in HEY (image proxy)", "HEY (image proxy)"),
        rule="image_proxy"),
    Row("Gmail proxy serving many people at once is not a burst",
        {"user-agent": GMAIL_PROXY}, GOOGLE, others=12,
        expect=(HUMAN, "opened in Gmail (image proxy)", "Gmail (image proxy)"),
        rule="image_proxy"),
    # --- people: webmail in a browser ------------------------------------------------
    Row("Chrome webmail", ua(CHROME_WIN, referer="https://mail.example.org/"),
        expect=(HUMAN, "opened in a browser (webmail)", "Chrome 120 on Windows"),
        rule="browser"),
    Row("Edge webmail (Outlook on the web)", ua(EDGE_WIN, referer="https://outlook.office.com/"),
        OFFICE, expect=(HUMAN, "opened in a browser (webmail)", "Edge 120 on Windows"),
        rule="browser"),
    Row("Firefox webmail", ua(FIREFOX_LINUX),
        expect=(HUMAN, "opened in a browser (webmail)", "Firefox 121 on Linux"), rule="browser"),
    Row("Safari webmail through iCloud Private Relay", ua(SAFARI_IPHONE, WEBKIT_ACCEPT),
        PRIVATE_RELAY, expect=(HUMAN, "opened in a browser (webmail)", "Safari 17 on iPhone"),
        rule="browser"),
    Row("an app we do not know", {"user-agent": "Spark/3.12.1 (iPhone; iOS 17.1)"},
        expect=(HUMAN, "opened (client not recognised)", "Spark"), rule="anyone_else"),
    Row("unknown timing is not held against anyone", ua(OUTLOOK_WIN), seconds=None,
        expect=(HUMAN, "opened in Outlook 16 on Windows", "Outlook 16 on Windows"),
        rule="mail_client"),
    Row("two seconds exactly is a person", ua(OUTLOOK_WIN), seconds=2.0,
        expect=(HUMAN, "opened in Outlook 16 on Windows", "Outlook 16 on Windows"),
        rule="mail_client"),
    Row("a conversation view showing three of our messages", ua(APPLE_MAIL_MAC), others=2,
        expect=(HUMAN, "opened in Apple Mail on macOS", "Apple Mail on macOS"),
        rule="mail_client"),
    # --- the request itself --------------------------------------------------------------
    Row("the team viewing its sent mail in mailseen", ua(CHROME_WIN), own=True,
        expect=(MACHINE, "your team viewing it in mailseen", "mailseen"), rule="own_viewer"),
    Row("HEAD request", {"user-agent": OUTLOOK_SHORT}, OFFICE, method="HEAD",
        expect=(MACHINE, "HEAD request", "Outlook 16"), rule="head_request"),
    Row("Chrome speculative prefetch", ua(CHROME_WIN, sec_purpose="prefetch;prerender"),
        expect=(MACHINE, "prefetch request (sec-purpose: prefetch;prerender)",
                "Chrome 120 on Windows"), rule="prefetch_header"),
    Row("Purpose: prefetch", ua(CHROME_WIN, purpose="prefetch"),
        expect=(MACHINE, "prefetch request (purpose: prefetch)", "Chrome 120 on Windows"),
        rule="prefetch_header"),
    Row("Firefox link prefetch", ua(FIREFOX_LINUX, x_moz="prefetch"),
        expect=(MACHINE, "prefetch request (x-moz: prefetch)", "Firefox 121 on Linux"),
        rule="prefetch_header"),
    Row("empty user agent from Microsoft's link checker", {"user-agent": "", "accept": "*/*"},
        "104.47.1.254", expect=(MACHINE, "no user agent", "Microsoft Exchange Online Protection"),
        rule="no_user_agent"),
    Row("no user-agent header at all", {"accept": "*/*"},
        expect=(MACHINE, "no user agent", "unknown"), rule="no_user_agent"),
    # --- security gateways and link checkers ----------------------------------------
    Row("Exchange Online Protection detonating the mail", ua(DEFENDER_CHROME), EOP, seconds=14.0,
        expect=(MACHINE, "security scanner (Microsoft Exchange Online Protection network)",
                "Microsoft Exchange Online Protection"), rule="scanner_by_network"),
    Row("Exchange Online Protection over IPv6", ua(DEFENDER_CHROME), "2a01:111:f400:fe1f::1",
        expect=(MACHINE, "security scanner (Microsoft Exchange Online Protection network)",
                "Microsoft Exchange Online Protection"), rule="scanner_by_network"),
    Row("Mimecast sandbox", ua(CHROME_WIN), "205.139.110.61", seconds=8.0,
        expect=(MACHINE, "security scanner (Mimecast network)", "Mimecast"),
        rule="scanner_by_network"),
    Row("Proofpoint sandbox", ua(CHROME_WIN), "148.163.150.20",
        expect=(MACHINE, "security scanner (Proofpoint network)", "Proofpoint"),
        rule="scanner_by_network"),
    Row("Barracuda by network", ua(FIREFOX_LINUX), "64.235.150.250",
        expect=(MACHINE, "security scanner (Barracuda network)", "Barracuda"),
        rule="scanner_by_network"),
    Row("Outlook desktop on the Mimecast network is still the gateway", ua(OUTLOOK_WIN),
        "91.220.42.7", expect=(MACHINE, "security scanner (Mimecast network)", "Mimecast"),
        rule="scanner_by_network"),
    # --- user agent and network together ---------------------------------------------
    Row("Defender's Safe Links sandbox in Azure: old Chrome, no mail client", ua(DEFENDER_CHROME),
        AZURE, seconds=14.0,
        expect=(MACHINE, "browser from a cloud network (Microsoft Azure), no mail client",
                "Chrome 72 on Windows"), rule="cloud_without_mail_client"),
    Row("a sandbox on AWS with current Chrome", ua(CHROME_WIN), AWS, seconds=40.0,
        expect=(MACHINE, "browser from a cloud network (Amazon Web Services), no mail client",
                "Chrome 120 on Windows"), rule="cloud_without_mail_client"),
    Row("an unknown client on Google Cloud", {"user-agent": "Spark/3.12.1 (iPhone; iOS 17.1)"},
        GOOGLE_CLOUD, expect=(MACHINE, "unrecognised client from a cloud network (Google Cloud),"
                              " no mail client", "Spark"), rule="cloud_without_mail_client"),
    Row("Gmail's proxy agent from AWS is an impostor", {"user-agent": GMAIL_PROXY}, AWS,
        expect=(MACHINE, "claims to be Gmail (image proxy) from a cloud network (Amazon Web "
                         "Services)", "Gmail (image proxy)"), rule="cloud_without_mail_client"),
    Row("Outlook on a Windows 365 Cloud PC in Azure is a person", ua(OUTLOOK_WIN), AZURE,
        expect=(HUMAN, "opened in Outlook 16 on Windows", "Outlook 16 on Windows"),
        rule="mail_client"),
    Row("Chrome from Google's own network is Google's scanner, not its proxy", ua(CHROME_WIN),
        GOOGLE, expect=(MACHINE, "Google's own network, not its image proxy",
                        "Chrome 120 on Windows"), rule="provider_network"),
    Row("Edge behind Zscaler is a person", ua(EDGE_WIN), ZSCALER,
        expect=(HUMAN, "opened in a browser (webmail)", "Edge 120 on Windows"), rule="browser"),
    Row("colleagues behind one Zscaler address opening at once are people", ua(OUTLOOK_WIN),
        ZSCALER, others=6,
        expect=(HUMAN, "opened in Outlook 16 on Windows", "Outlook 16 on Windows"),
        rule="mail_client"),
    Row("a client naming no system is a program", {"user-agent": "FeedFetcher-Plus 2.1"},
        expect=(MACHINE, "unrecognised client naming no system", "unknown"),
        rule="unknown_without_system"),
    Row("a crawler only crawler-user-agents knows", ua(CHROME_WIN + " PTST/240201.150611"),
        expect=(MACHINE, "crawler or bot", "crawler (PTST)"), rule="script_or_headless"),
    Row("Barracuda by user agent", {"user-agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"},
        expect=(MACHINE, "security scanner", "Barracuda"), rule="scanner_by_agent"),
    Row("Office probing a link", {"user-agent": "Microsoft Office Existence Discovery"},
        OFFICE, expect=(MACHINE, "security scanner", "Microsoft Office link check"),
        rule="scanner_by_agent"),
    # --- link previews -------------------------------------------------------------------
    Row("Slack unfurl", {"user-agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"},
        "3.90.12.7", expect=(MACHINE, "link preview bot", "Slack link preview"),
        rule="link_preview"),
    Row("Slack image proxy", {"user-agent": "Slack-ImgProxy (+https://api.slack.com/robots)"},
        expect=(MACHINE, "link preview bot", "Slack link preview"), rule="link_preview"),
    Row("Discord", {"user-agent": "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)"},
        expect=(MACHINE, "link preview bot", "Discord link preview"), rule="link_preview"),
    Row("Telegram", {"user-agent": "TelegramBot (like TwitterBot)"},
        expect=(MACHINE, "link preview bot", "Telegram link preview"), rule="link_preview"),
    Row("Teams", {"user-agent": "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview "
                                "Preview/0.5 skype-url-preview@microsoft.com"},
        expect=(MACHINE, "link preview bot", "Microsoft Teams link preview"),
        rule="link_preview"),
    Row("iMessage", {"user-agent": "facebookexternalhit/1.1 Facebot Twitterbot/1.0"},
        expect=(MACHINE, "link preview bot", "Facebook or iMessage link preview"),
        rule="link_preview"),
    # --- scripts and headless browsers --------------------------------------------
    Row("curl", {"user-agent": "curl/8.5.0", "accept": "*/*"},
        expect=(MACHINE, "script or HTTP library", "curl"), rule="script_or_headless"),
    Row("python-requests", {"user-agent": "python-requests/2.31.0", "accept": "*/*",
                            "accept-encoding": "gzip, deflate"},
        expect=(MACHINE, "script or HTTP library", "Python requests"),
        rule="script_or_headless"),
    Row("Go", {"user-agent": "Go-http-client/1.1"},
        expect=(MACHINE, "script or HTTP library", "Go HTTP client"), rule="script_or_headless"),
    Row("headless Chrome", ua(HEADLESS),
        expect=(MACHINE, "headless browser", "Headless Chrome"), rule="script_or_headless"),
    Row("a crawler", {"user-agent": "Mozilla/5.0 (compatible; AhrefsBot/7.0; "
                                    "+http://ahrefs.com/robot/)"},
        expect=(MACHINE, "crawler or bot", "crawler"), rule="script_or_headless"),
    # --- Apple Mail Privacy Protection --------------------------------------------------
    Row("Apple MPP: bare Mozilla/5.0 from Private Relay",
        {"user-agent": "Mozilla/5.0", "accept": WEBKIT_ACCEPT, "accept-language": "en-GB,en;q=0.9",
         "accept-encoding": "gzip, deflate, br"}, PRIVATE_RELAY, seconds=45.0,
        expect=(MACHINE, "Apple Mail Privacy Protection prefetch", "Apple Mail Privacy Protection"),
        rule="apple_privacy_protection"),
    Row("Apple MPP: bare Mozilla/5.0 from a range we do not list",
        {"user-agent": "Mozilla/5.0", "accept": WEBKIT_ACCEPT}, "104.28.37.12",
        expect=(MACHINE, "Apple Mail Privacy Protection prefetch", "Apple Mail Privacy Protection"),
        rule="apple_privacy_protection"),
    Row("Apple MPP: Apple Mail's agent from Apple's network", ua(APPLE_MAIL_MAC, WEBKIT_ACCEPT),
        APPLE, expect=(MACHINE, "Apple Mail Privacy Protection prefetch",
                       "Apple Mail Privacy Protection"), rule="apple_privacy_protection"),
    Row("Apple MPP: iOS Mail's agent from Private Relay", ua(IOS_MAIL, WEBKIT_ACCEPT),
        PRIVATE_RELAY, expect=(MACHINE, "Apple Mail Privacy Protection prefetch",
                               "Apple Mail Privacy Protection"), rule="apple_privacy_protection"),
    # --- other prefetchers and behaviour --------------------------------------------------
    Row("Gmail prefetch for an open session", {"user-agent": GMAIL_PREFETCH}, GOOGLE, seconds=30.0,
        expect=(MACHINE, "prefetched before display", "Gmail prefetch"), rule="known_prefetcher"),
    Row("one client fetching many recipients' pixels", ua(OUTLOOK_WIN), OFFICE, others=5,
        seconds=600.0,
        expect=(MACHINE, "one client fetched 6 recipients' or messages' pixels at once",
                "Outlook 16 on Windows"),
        rule="burst_across_messages"),
    Row("one second after sending", ua(OUTLOOK_WIN), OFFICE, seconds=1.0,
        expect=(MACHINE, "fetched within 2 s of sending", "Outlook 16 on Windows"),
        rule="at_delivery"),
    Row("Gmail's proxy one second after sending", {"user-agent": GMAIL_PROXY}, GOOGLE, seconds=1.2,
        expect=(MACHINE, "fetched within 2 s of sending", "Gmail (image proxy)"),
        rule="at_delivery"),
]


@pytest.fixture(scope="module")
def classifier() -> HitClassifier:
    return HitClassifier()


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_each_request_gets_its_verdict_reason_and_client(row: Row,
                                                         classifier: HitClassifier) -> None:
    rule, verdict = classifier.decide(row.hit())
    assert (verdict.verdict, verdict.reason, verdict.client) == row.expect
    assert rule.__name__ == row.rule
    assert verdict.counts is (row.expect[0] == HUMAN)


def test_classify_is_decide_without_the_rule(classifier: HitClassifier) -> None:
    for row in ROWS:
        assert classifier.classify(row.hit()) == classifier.decide(row.hit())[1]


def test_every_rule_decides_some_row_of_the_table(classifier: HitClassifier) -> None:
    assert {classifier.decide(r.hit())[0] for r in ROWS} == set(RULES)


def test_every_rule_cites_the_source_of_its_facts() -> None:
    for rule in RULES:
        body = inspect.getsource(rule).splitlines()[1].strip()
        assert body.startswith("# "), f"{rule.__name__} has no source comment"


def test_without_the_cache_every_verdict_is_the_same() -> None:
    # The cache keeps each request's verdict apart from timing and other messages: the same
    # request seen again at other times, alone or in a burst, must still get its own verdict.
    cached, uncached = HitClassifier(), HitClassifier(ua_cache_size=0)
    for row in ROWS:
        for seconds, others in [(row.seconds, row.others), (None, 0), (0.5, 0), (600.0, 0),
                                (600.0, 4), (0.5, 4), (row.seconds, row.others)]:
            hit = Hit(row.method, row.headers, row.remote, seconds, others, row.own)
            assert cached.decide(hit) == uncached.decide(hit), (row, seconds, others)


def test_repeated_user_agents_are_described_once() -> None:
    classifier = HitClassifier(ua_cache_size=16)
    row = ROWS[0]
    for n in range(100):  # each request is new (another header), its user agent is not
        classifier.classify(Hit(row.method, {**row.headers, "x-moz": f"v{n}"}, row.remote,
                                row.seconds))
    info = classifier._agent.cache_info()  # type: ignore[attr-defined]
    assert (info.misses, info.hits) == (1, 99)


def test_repeated_requests_are_judged_by_the_rules_once() -> None:
    classifier = HitClassifier(ua_cache_size=16)
    for _ in range(100):
        classifier.classify(ROWS[0].hit())
    assert len(classifier._plans) == 1
    assert classifier._agent.cache_info().misses == 1  # type: ignore[attr-defined]


def test_the_cache_stays_bounded() -> None:
    classifier = HitClassifier(ua_cache_size=8)
    for n in range(50):
        classifier.classify(Hit("GET", {"user-agent": f"App{n}/1.0"}, HOME, 60.0))
    assert classifier._agent.cache_info().currsize == 8  # type: ignore[attr-defined]
    assert len(classifier._plans) <= 8


@pytest.mark.parametrize("agent", [GMAIL_PROXY, YAHOO_PROXY, FASTMAIL, HEY, OUTLOOK_WIN,
                                   OUTLOOK_SHORT])
def test_clients_that_bot_lists_flag_are_people_here(agent: str,
                                                     classifier: HitClassifier) -> None:
    # Crawler lists call the image proxies bots, and some flag Outlook desktop: not us.
    assert classifier.classify(Hit("GET", {"user-agent": agent}, HOME, 300.0)).counts


@pytest.mark.parametrize(("token", "client"), [
    ("Cisco Secure Email", "Cisco Secure Email"), ("IronPort", "Cisco Secure Email"),
    ("Trend Micro", "Trend Micro"), ("Sophos", "Sophos"), ("Forcepoint", "Forcepoint"),
    ("FortiMail", "Fortinet"), ("Proofpoint", "Proofpoint"), ("Mimecast", "Mimecast"),
])
def test_gateways_that_name_themselves_are_scanners_wherever_they_come_from(
        token: str, client: str, classifier: HitClassifier) -> None:
    # Vendor tokens, not captured user agents: the gateways are mostly caught by network.
    agent = f"Mozilla/5.0 (compatible; {token} link scanner)"
    verdict = classifier.classify(Hit("GET", {"user-agent": agent}, HOME, 30.0))
    assert verdict == Verdict("machine", "security scanner", client)


def test_the_two_second_limit_and_burst_size_are_data() -> None:
    base = load_data()
    strict = ClassifierData(base.networks, base.user_agents, base.systems,
                            fast_seconds=10.0, burst_other_messages=1)
    classifier = HitClassifier(strict)
    slow = classifier.classify(Hit("GET", ua(OUTLOOK_WIN), OFFICE, 5.0))
    assert (slow.verdict, slow.reason) == (MACHINE, "fetched within 10 s of sending")
    pair = classifier.classify(Hit("GET", ua(OUTLOOK_WIN), OFFICE, 60.0, 1))
    assert (pair.verdict, pair.reason) == (
        MACHINE, "one client fetched 2 recipients' or messages' pixels at once")


def test_an_operators_pattern_takes_effect_before_the_shipped_ones() -> None:
    base = load_data()
    extra = parse_user_agents("^Spark/\tproxy\tSpark (image proxy)\n")
    data = ClassifierData.build([], [*extra, *base.user_agents, *base.systems])
    verdict = HitClassifier(data).classify(Hit("GET", {"user-agent": "Spark/3.12.1"}, HOME, 60))
    assert verdict == Verdict("human", "opened in Spark (image proxy)", "Spark (image proxy)")


def test_garbled_addresses_and_header_case_do_not_break_anything(
        classifier: HitClassifier) -> None:
    for remote in (None, "", "not-an-ip", "999.1.1.1", "[2001:db8::1]", "fe80::1%eth0"):
        verdict = classifier.classify(Hit("get", ua(CHROME_WIN), remote, 60.0))
        assert verdict.verdict == HUMAN
    assert classifier.classify(Hit("head", ua(CHROME_WIN), HOME)).reason == "HEAD request"


def test_ipv4_mapped_ipv6_addresses_are_looked_up_as_ipv4(classifier: HitClassifier) -> None:
    verdict = classifier.classify(Hit("GET", ua(CHROME_WIN), "::ffff:205.139.110.61", 60.0))
    assert verdict.client == "Mimecast"


def test_the_rules_are_plain_functions_of_the_core() -> None:
    assert all(inspect.isfunction(r) and r.__module__ == hits.__name__ for r in RULES)


def test_one_client_on_apples_network_and_off_it_keeps_both_verdicts() -> None:
    # Verdicts are kept per listed network, not per address: the same request from Apple's
    # network and from an unlisted address must not share one, in either order.
    for first, second in ((APPLE, HOME), (HOME, APPLE)):
        classifier = HitClassifier()
        verdicts = {remote: classifier.classify(Hit("GET", ua(APPLE_MAIL_MAC), remote, 600.0))
                    for remote in (first, second, first, "17.1.2.3")}
        assert verdicts[APPLE].reason == "Apple Mail Privacy Protection prefetch"
        assert verdicts["17.1.2.3"] == verdicts[APPLE]  # another address of the same network
        assert verdicts[HOME].counts
