"""A labelled evaluation set for the pixel-hit classifier, built from documented traffic.

Each kind of traffic below is a pattern someone documented -- who fetches, with which user
agent, from which published network, how soon after delivery, alone or in a burst -- and its
label comes from that documentation, never from the rules' output. Addresses are drawn from
the networks the cited owner or registry names (not from mailseen's data files); people's
connections from large ISPs' and mobile carriers' registered blocks.

``MAIN`` is the set the rules were written against; ``HELD_OUT`` holds kinds of traffic the
rules and their tests never saw (other vendors, other clouds, other apps, on-premises
gateways, people on virtual desktops). ``python -m tests.evaluation`` prints the figures
quoted in docs/classification.md.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailseen.core.clicks import ClickClassifier
from mailseen.core.hits import Hit, HitClassifier

Truth = str  # "human" / "machine"


@dataclass(frozen=True)
class Kind:
    name: str
    truth: Truth
    weight: float  # share of hits in a realistic mix of a B2B/B2C sender's traffic
    agents: Sequence[str]
    networks: Sequence[str]  # CIDRs the cited source names
    seconds: Callable[[random.Random], float]
    cite: str
    others: Callable[[random.Random], int] = lambda r: 0
    method: str = "GET"


def person_delay(r: random.Random) -> float:
    # Opens spread from seconds (the mailbox is open) to days; median around an hour
    # (Litmus / Mailchimp open-time studies: most opens within hours of delivery).
    return min(max(3.0, r.lognormvariate(8.2, 1.8)), 7 * 86400)


def scan_delay(r: random.Random) -> float:
    # Gateways fetch while the message is in transit or just delivered (ESP field guides:
    # "within seconds of delivery"); a share comes later, on time-of-click rescans.
    return r.choice([r.uniform(0.3, 2.0), r.uniform(2.0, 90.0), r.uniform(90.0, 3600.0)])


def mpp_delay(r: random.Random) -> float:
    # Apple MPP fetches when the device syncs, from seconds to hours after delivery.
    return r.uniform(1.0, 6 * 3600)


def scanner_burst(r: random.Random) -> int:
    # A gateway protecting an organisation scans a mailing for every recipient it holds.
    return r.choice([0, 0, 1, 2, 4, 6, 9, 15])


def proxy_crowd(r: random.Random) -> int:
    # One Gmail/Yahoo proxy address serves many readers at the same moment.
    return r.choice([0, 0, 0, 1, 3, 8])


def conversation(r: random.Random) -> int:
    return r.choice([0, 0, 0, 0, 0, 0, 1, 2])


CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/{v}.0.0.0 Safari/537.36")
EDGE = CHROME + " Edg/{v}.0.0.0"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
SAFARI_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
              "like Gecko) Version/17.{v} Safari/605.1.15")
SAFARI_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.{v} Mobile/15E148 Safari/604.1")
APPLE_MAIL = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
              "like Gecko)")
IOS_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148")
OUTLOOK = ("Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; "
           ".NET4.0E; Microsoft Outlook 16.0.{v}; ms-office; MSOffice 16)")
NEW_OUTLOOK = EDGE + " OneOutlook/1.2024"  # the new Outlook for Windows is WebView2 (Edge)
ANDROID_WV = ("Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) "
              "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/{v}.0.0.0 Mobile "
              "Safari/537.36")
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.{v}.0"
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
               "GoogleImageProxy)")
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
FASTMAIL = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/{v}.0.0.0 Safari/537.36 FastmailUA/1.0")
OLD_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/72.0.3626.109 Safari/537.36")

# People's connections: large ISPs' and carriers' registered blocks (RIR records).
ISP = ["73.0.0.0/8",  # Comcast (ARIN)
       "79.192.0.0/10",  # Deutsche Telekom (RIPE)
       "90.0.0.0/9",  # Orange (RIPE)
       "86.128.0.0/10",  # BT (RIPE)
       "2003::/19"]  # Deutsche Telekom IPv6 (RIPE)
MOBILE = ["174.192.0.0/10",  # Verizon Wireless (ARIN)
          "172.56.0.0/14",  # T-Mobile USA (ARIN)
          "2600:380::/27"]  # AT&T Mobility (ARIN)
# Google's networks Gmail's image proxy fetches from (Google's goog.json blocks; ESP reports
# of "ggpht.com GoogleImageProxy" from 66.249.8x and 66.102.x).
GMAIL_PROXY_NETS = ["66.249.80.0/20", "66.102.0.0/20", "74.125.208.0/20"]
YAHOO = ["98.137.0.0/16", "98.136.0.0/16"]  # Yahoo (ARIN, AS36647)
FASTMAIL_NETS = ["103.168.172.0/22"]  # Fastmail (APNIC, AS"FASTMAIL-AS")
EOP = ["40.92.0.0/15", "40.107.0.0/16", "52.100.0.0/15", "104.47.0.0/17"]  # M365 set 9
AZURE = ["13.64.0.0/11", "20.36.0.0/14", "40.74.0.0/15"]  # Azure service tags, AzureCloud
AWS = ["3.80.0.0/12", "54.144.0.0/12", "18.204.0.0/14"]  # ip-ranges.json, us-east-1 EC2
GCP = ["35.184.0.0/13", "34.72.0.0/13"]  # cloud.json
GOOGLE_OWN = ["66.249.64.0/20", "74.125.0.0/17"]  # goog.json, not cloud.json
MIMECAST = ["205.139.110.0/24", "207.211.30.0/24", "170.10.128.0/22"]  # Mimecast docs
PROOFPOINT = ["148.163.128.0/19", "67.231.144.0/20"]  # Proofpoint docs (pphosted.com)
CISCO = ["68.232.128.0/19"]  # Cisco Secure Email Cloud Gateway (iphmx.com)
APPLE = ["17.0.0.0/8"]  # Apple (ARIN NET-17), MPP proxies
RELAY = ["172.224.226.0/27", "104.28.0.0/24"]  # iCloud Private Relay egress (Apple's CSV)
ZSCALER = ["165.225.0.0/17", "136.226.0.0/16", "147.161.128.0/17"]  # Zscaler hub list

V = range(110, 125)  # browser major versions seen in 2024-2025

MAIN: list[Kind] = [
    # --- people -----------------------------------------------------------------------
    Kind("Gmail image proxy", "human", 0.20, [GMAIL_PROXY], GMAIL_PROXY_NETS, person_delay,
         "Google: Gmail serves images through its proxy when the message is opened "
         "(Gmail help 'images in Gmail'); Mautic #16069 lost these opens", proxy_crowd),
    Kind("Yahoo Mail proxy", "human", 0.03, [YAHOO_PROXY], YAHOO, person_delay,
         "help.yahoo.com SLN28749", proxy_crowd),
    Kind("Outlook desktop", "human", 0.10, [OUTLOOK.format(v=b) for b in (17029, 17231, 5161)],
         ISP, person_delay, "Outlook fetches through WinINet with its own agent", conversation),
    Kind("Apple Mail, MPP off", "human", 0.03, [APPLE_MAIL], ISP, person_delay,
         "WebKit agent without Safari tokens (Apple Mail)", conversation),
    Kind("iOS Mail on mobile", "human", 0.04, [IOS_MAIL.format(v=v) for v in range(1, 6)],
         MOBILE, person_delay, "iOS Mail, MPP off"),
    Kind("Android mail app", "human", 0.04, [ANDROID_WV.format(v=v) for v in V], MOBILE,
         person_delay, "Android WebView ('; wv)'), e.g. Samsung Email, Gmail app for IMAP"),
    Kind("webmail in a browser", "human", 0.08,
         [*(CHROME.format(v=v) for v in V), *(EDGE.format(v=v) for v in V),
          *(FIREFOX.format(v=v) for v in V), SAFARI_MAC.format(v=2)], ISP, person_delay,
         "Outlook on the web, GMX, web.de... show mail in the browser"),
    Kind("people behind Zscaler", "human", 0.03,
         [*(EDGE.format(v=v) for v in V), OUTLOOK.format(v=17231)], ZSCALER, person_delay,
         "Zscaler Internet Access proxies employees' traffic (Zscaler hub list)",
         lambda r: r.choice([0, 0, 1, 3, 5])),
    Kind("Safari over Private Relay", "human", 0.01, [SAFARI_IOS.format(v=v) for v in range(6)],
         RELAY, person_delay, "Apple: Private Relay egress for Safari"),
    Kind("Thunderbird", "human", 0.01, [THUNDERBIRD.format(v=v) for v in range(1, 9)], ISP,
         person_delay, "Thunderbird's agent"),
    Kind("Fastmail proxy", "human", 0.005, [FASTMAIL.format(v=v) for v in V], FASTMAIL_NETS,
         person_delay, "fastmail.com/policies/bots"),
    # --- machines --------------------------------------------------------------------
    Kind("Apple Mail Privacy Protection", "machine", 0.22, ["Mozilla/5.0"], APPLE + RELAY,
         mpp_delay, "Mailgun, SocketLabs: MPP prefetches every image with 'Mozilla/5.0'"),
    Kind("Apple MPP with Apple Mail's agent", "machine", 0.02, [APPLE_MAIL], APPLE, mpp_delay,
         "MPP proxies from Apple's 17.0.0.0/8 (Apple's MPP support note)"),
    Kind("Exchange Online Protection / Safe Links", "machine", 0.06, [OLD_CHROME], EOP,
         scan_delay, "opencollective#3656, laravel-passwordless-login#79: old Chrome from "
         "Microsoft's mail-protection ranges", scanner_burst),
    Kind("Defender detonation in Azure", "machine", 0.02, [OLD_CHROME, CHROME.format(v=120)],
         AZURE, scan_delay, "Mautic #16263: Safe Links opens from Azure", scanner_burst),
    Kind("Mimecast sandbox", "machine", 0.02, [CHROME.format(v=v) for v in V], MIMECAST,
         scan_delay, "Mautic #16263; Mimecast's published data-centre ranges", scanner_burst),
    Kind("Proofpoint sandbox", "machine", 0.02, [CHROME.format(v=v) for v in V], PROOFPOINT,
         scan_delay, "Mautic #16263; Proofpoint's pphosted ranges", scanner_burst),
    Kind("Cisco Secure Email", "machine", 0.01, [FIREFOX.format(v=v) for v in V], CISCO,
         scan_delay, "Cisco Secure Email Cloud Gateway ranges", scanner_burst),
    Kind("scanner on AWS", "machine", 0.02, [CHROME.format(v=v) for v in V], AWS, scan_delay,
         "link/image scanners run on AWS (e.g. Trend Micro Email Security's published "
         "addresses are AWS)", scanner_burst),
    Kind("scanner on Google Cloud", "machine", 0.01, [CHROME.format(v=v) for v in V], GCP,
         scan_delay, "ESP field guides: data-centre fetches with browser agents"),
    Kind("Google's own scanners", "machine", 0.01, [CHROME.format(v=v) for v in V],
         GOOGLE_OWN, scan_delay, "Gmail scans links and attachments from Google's network "
         "with a browser agent, apart from its image proxy (Mautic #16069 discussion)"),
    Kind("Gmail prefetch", "machine", 0.01,
         ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/42.0.2311.135 Safari/537.36 Edge/12.246 Mozilla/5.0"], GOOGLE_OWN,
         scan_delay, "MessageBird 2022: Gmail app prefetch agent"),
    Kind("Office link probe (HEAD)", "machine", 0.01, ["Microsoft Office Existence Discovery"],
         ISP, scan_delay, "Office probes URLs with HEAD", method="HEAD"),
    Kind("chat link previews", "machine", 0.005,
         ["Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
          "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)"], AWS,
         person_delay, "Slack and Discord robot documentation"),
    Kind("scripts", "machine", 0.01, ["python-requests/2.31.0", "curl/8.5.0",
                                      "Go-http-client/1.1"], AWS + ISP, scan_delay,
         "HTTP libraries' default agents"),
    Kind("crawlers", "machine", 0.005,
         ["Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
          "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"],
         GOOGLE_OWN + AZURE, person_delay, "Google and Bing crawler documentation"),
    Kind("blank agent link checks", "machine", 0.01, [""], EOP, scan_delay,
         "laravel-passwordless-login#79: blank user agent from Microsoft"),
]

HELD_OUT: list[Kind] = [
    # --- people the rules were not written against ------------------------------------
    Kind("Gmail proxy (held out)", "human", 0.20, [GMAIL_PROXY], GMAIL_PROXY_NETS,
         person_delay, "as above", proxy_crowd),
    Kind("new Outlook for Windows", "human", 0.06, [NEW_OUTLOOK.format(v=v) for v in V],
         ISP, person_delay, "the new Outlook is WebView2 with an Edge agent", conversation),
    Kind("Spark and other apps", "human", 0.02,
         ["Spark/3.12.1 (iPhone; iOS 17.1; Scale/3.00)", "Airmail/5.6 (Macintosh; macOS 14)",
          "BlueMail/1.9 (Linux; Android 13)"], MOBILE + ISP, person_delay,
         "third-party mail apps name their platform"),
    Kind("eM Client / Postbox", "human", 0.01,
         ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) eM Client/9.2.2038",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:102.0) Gecko/20100101 Postbox/7.0"],
         ISP, person_delay, "desktop mail apps"),
    Kind("Outlook on AWS WorkSpaces / Windows 365", "human", 0.02,
         [OUTLOOK.format(v=17231)], AWS + AZURE, person_delay,
         "virtual desktops run in the cloud; the mail client is a person's"),
    Kind("webmail on a virtual desktop", "human", 0.005, [EDGE.format(v=v) for v in V], AZURE,
         person_delay, "Azure Virtual Desktop users reading webmail (a known cost)"),
    Kind("Firefox webmail on mobile networks", "human", 0.05,
         [*(FIREFOX.format(v=v) for v in V), *(SAFARI_IOS.format(v=v) for v in range(6))],
         MOBILE, person_delay, "webmail on phones"),
    Kind("Zscaler morning rush", "human", 0.03, [CHROME.format(v=v) for v in V], ZSCALER,
         lambda r: r.uniform(20, 600), "a company's staff opening the 9 am newsletter "
         "through one Zscaler egress", lambda r: r.choice([2, 4, 6, 10])),
    Kind("Yahoo proxy in a crowd", "human", 0.03, [YAHOO_PROXY], YAHOO, person_delay,
         "as above", lambda r: r.choice([5, 10, 20])),
    Kind("Apple Mail, MPP off (held out)", "human", 0.05, [APPLE_MAIL, IOS_MAIL.format(v=4)],
         ISP + MOBILE, person_delay, "as above"),
    # --- machines the rules were not written against ----------------------------------
    Kind("Apple MPP (held out)", "machine", 0.25, ["Mozilla/5.0"], APPLE + RELAY, mpp_delay,
         "as above"),
    Kind("Trend Micro sandbox", "machine", 0.02, [EDGE.format(v=v) for v in V],
         ["150.70.160.0/19"], scan_delay, "Trend Micro's registered network (AS16880)",
         scanner_burst),
    Kind("Kaspersky / Fortinet sandboxes", "machine", 0.02, [FIREFOX.format(v=v) for v in V],
         ["77.74.176.0/21", "96.45.40.0/21"], scan_delay,
         "registered networks (AS200107 KL-EXT, AS40934 FORTINET)", scanner_burst),
    Kind("scanners on Oracle, DigitalOcean, Linode", "machine", 0.03,
         [EDGE.format(v=v) for v in V],
         ["129.146.0.0/16", "159.65.0.0/16", "172.104.0.0/15"], scan_delay,
         "Oracle public_ip_ranges.json; DigitalOcean and Linode geofeeds"),
    Kind("Barracuda, documented range", "machine", 0.02, [CHROME.format(v=v) for v in V],
         ["209.222.80.0/21"], scan_delay, "Barracuda's 'IP Analysis - Inbound' example range",
         scanner_burst),
    Kind("on-premises gateway at the customer", "machine", 0.02,
         [CHROME.format(v=v) for v in V], ISP, scan_delay,
         "Cisco ESA / FortiMail appliances in the recipient's own network", scanner_burst),
    Kind("monitors and feed fetchers", "machine", 0.01,
         ["Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)", "okhttp/4.12.0",
          "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
          "Safari/537.36 Chrome-Lighthouse", "Feedbin feed-id:1 - 1 subscribers"],
         AWS + ISP, person_delay, "crawler-user-agents instances; vendor docs"),
    Kind("headless browsers", "machine", 0.01,
         ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "HeadlessChrome/120.0.6099.28 Safari/537.36"], AWS + GCP, scan_delay,
         "Puppeteer/Playwright defaults"),
    Kind("Mimecast over IPv6", "machine", 0.01, [CHROME.format(v=v) for v in V],
         ["2a02:5be0::/47"], scan_delay, "AS42427 MIMECAST-UK", scanner_burst),
    Kind("EOP with a Safari agent", "machine", 0.02, [SAFARI_MAC.format(v=1)], EOP, scan_delay,
         "Microsoft's detonation varies its agent", scanner_burst),
]


# -- clicks ------------------------------------------------------------------------------
# The same idea for the click redirect: who follows a tracked link, how soon after delivery,
# alone or across the message's links. ``others`` is, for a click, the number of other links
# the same client followed within two seconds.

def click_delay(r: random.Random) -> float:
    # A person clicks after opening and reading: the open-time spread (above), plus some
    # seconds to read; a few click within half a minute of delivery (the mailbox is open).
    return min(max(4.0, r.lognormvariate(8.4, 1.9) + r.uniform(3, 40)), 7 * 86400)


def detonation_delay(r: random.Random) -> float:
    # Safe Links, Mimecast, Proofpoint follow links as the message is delivered (their
    # documentation: URLs are checked on delivery; ESP guides on bot clicks: "within
    # seconds"); some rescan minutes later.
    return r.choice([r.uniform(0.3, 5.0), r.uniform(0.5, 12.0), r.uniform(30.0, 900.0)])


def all_links(r: random.Random) -> int:
    # A scanner follows every link of the message at once (ESP guides: Postmark, Mailgun,
    # SendGrid on "bot clicks"): newsletters hold 5-40 links, notes 1-3.
    return r.choice([0, 1, 2, 4, 8, 15, 30])


def person_links(r: random.Random) -> int:
    # Mostly one link; now and then two tabs opened quickly (ctrl+click).
    return r.choice([0] * 19 + [1])


CLICKS: list[Kind] = [
    # --- people ---------------------------------------------------------------------------
    Kind("browser from a desktop mail app", "human", 0.30,
         [*(CHROME.format(v=v) for v in V), *(EDGE.format(v=v) for v in V),
          *(FIREFOX.format(v=v) for v in V)], ISP, click_delay,
         "Outlook, Apple Mail, Thunderbird open links in the default browser", person_links),
    Kind("webmail in a browser", "human", 0.20,
         [*(CHROME.format(v=v) for v in V), SAFARI_MAC.format(v=2)], ISP, click_delay,
         "Gmail, Outlook on the web: the link opens in a new tab", person_links),
    Kind("phone browsers", "human", 0.20,
         [*(SAFARI_IOS.format(v=v) for v in range(6)), *(ANDROID_WV.format(v=v) for v in V)],
         MOBILE, click_delay, "iOS Mail opens Safari; Android apps a WebView"),
    Kind("Safari over Private Relay", "human", 0.03, [SAFARI_IOS.format(v=v) for v in range(6)],
         RELAY, click_delay, "Apple: Private Relay egress for Safari"),
    Kind("employees behind Zscaler", "human", 0.05, [EDGE.format(v=v) for v in V], ZSCALER,
         click_delay, "Zscaler Internet Access proxies employees' traffic",
         person_links),
    Kind("Outlook on a virtual desktop", "human", 0.01, [EDGE.format(v=v) for v in V], AZURE,
         click_delay, "Windows 365 / Azure Virtual Desktop: the browser runs in Azure "
         "(a known cost: taken for a sandbox)"),
    # --- machines -----------------------------------------------------------------------
    Kind("Safe Links detonation", "machine", 0.08, [OLD_CHROME, EDGE.format(v=120)],
         EOP + AZURE, detonation_delay, "Microsoft Defender for Office 365: Safe Links "
         "checks URLs at delivery from Microsoft's ranges (Mautic #16263)", all_links),
    Kind("Mimecast URL Protect", "machine", 0.03, [CHROME.format(v=v) for v in V], MIMECAST,
         detonation_delay, "Mimecast's data-centre ranges", all_links),
    Kind("Proofpoint URL Defense", "machine", 0.03, [CHROME.format(v=v) for v in V],
         PROOFPOINT, detonation_delay, "Proofpoint's pphosted ranges", all_links),
    Kind("on-premises gateway", "machine", 0.03, [CHROME.format(v=v) for v in V], ISP,
         detonation_delay, "Cisco ESA / FortiMail appliances in the recipient's own network "
         "follow links as mail arrives", all_links),
    Kind("sandbox in a cloud", "machine", 0.02, [CHROME.format(v=v) for v in V], AWS + GCP,
         detonation_delay, "link scanners on AWS and Google Cloud", all_links),
    Kind("Google's link scanning", "machine", 0.01, [CHROME.format(v=v) for v in V],
         GOOGLE_OWN, detonation_delay, "Gmail scans links from Google's own network"),
    Kind("Office link probe (HEAD)", "machine", 0.01, ["Microsoft Office Existence Discovery"],
         ISP, click_delay, "Office probes URLs with HEAD", method="HEAD"),
    Kind("chat link previews", "machine", 0.01,
         ["Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
          "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
          "SkypeUriPreview Preview/0.5"], AWS + AZURE, click_delay,
         "a forwarded link pasted in a chat: the robots' documentation"),
    Kind("scripts", "machine", 0.01, ["python-requests/2.31.0", "curl/8.5.0"], AWS + ISP,
         click_delay, "HTTP libraries' default agents"),
    Kind("late rescan by a gateway", "machine", 0.01, [CHROME.format(v=v) for v in V], ISP,
         lambda r: r.uniform(600, 86400), "gateways rescan on a schedule (Proofpoint's "
         "'URL Defense re-check'): every link at once", lambda r: r.choice([1, 3, 8, 20])),
]


@dataclass(frozen=True)
class Sample:
    kind: Kind
    hit: Hit


def address(r: random.Random, cidr: str) -> str:
    net = ipaddress.ip_network(cidr)
    span = min(net.num_addresses - 2, 2**32) if net.num_addresses > 2 else 1
    return str(net.network_address + 1 + r.randrange(max(span, 1)))


def draw(kinds: Sequence[Kind], n: int, seed: int) -> list[Sample]:
    r = random.Random(seed)
    out = []
    for kind in r.choices(kinds, [k.weight for k in kinds], k=n):
        ua = r.choice(kind.agents)
        headers = {"user-agent": ua, "accept": "image/*,*/*;q=0.8"} if ua else {"accept": "*/*"}
        hit = Hit(kind.method, headers, address(r, r.choice(kind.networks)), kind.seconds(r),
                  kind.others(r))
        out.append(Sample(kind, hit))
    return out


@dataclass
class Report:
    n: int
    correct: int
    confusion: Counter[tuple[Truth, Truth]]  # (truth, verdict) -> count
    by_kind: dict[str, tuple[int, int]]  # name -> (right, total)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    def precision(self, cls: Truth) -> float:
        said = sum(v for (t, p), v in self.confusion.items() if p == cls)
        return self.confusion[(cls, cls)] / said if said else 1.0

    def recall(self, cls: Truth) -> float:
        true = sum(v for (t, p), v in self.confusion.items() if t == cls)
        return self.confusion[(cls, cls)] / true if true else 1.0

    @property
    def humans_kept(self) -> float:
        return self.recall("human")


def evaluate(classifier: HitClassifier | ClickClassifier, samples: Sequence[Sample]) -> Report:
    confusion: Counter[tuple[Truth, Truth]] = Counter()
    by_kind: dict[str, list[int]] = {}
    for s in samples:
        verdict = classifier.classify(s.hit).verdict
        confusion[(s.kind.truth, verdict)] += 1
        tally = by_kind.setdefault(s.kind.name, [0, 0])
        tally[0] += verdict == s.kind.truth
        tally[1] += 1
    correct = confusion[("human", "human")] + confusion[("machine", "machine")]
    return Report(len(samples), correct, confusion,
                  {k: (v[0], v[1]) for k, v in by_kind.items()})


def markdown(name: str, report: Report, what: str = "opens") -> str:
    lines = [f"**{name}** ({report.n:,} hits): {report.accuracy:.1%} right, "
             f"{report.humans_kept:.1%} of human {what} kept.", "",
             "| class | precision | recall |", "|---|---|---|"]
    for cls in ("human", "machine"):
        lines.append(f"| {cls} | {report.precision(cls):.1%} | {report.recall(cls):.1%} |")
    lines += ["", "| traffic | right |", "|---|---|"]
    for kind, (right, total) in sorted(report.by_kind.items()):
        lines.append(f"| {kind} | {right / total:.1%} of {total:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    clf = HitClassifier()
    print(markdown("Main set", evaluate(clf, draw(MAIN, 20_000, seed=12))))
    print()
    print(markdown("Held-out mix", evaluate(clf, draw(HELD_OUT, 20_000, seed=1212))))
    print()
    print(markdown("Clicks", evaluate(ClickClassifier(), draw(CLICKS, 20_000, seed=16)),
                   "clicks"))
