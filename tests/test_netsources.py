"""Network sources: each owner's published format, `mailseen data update` and `data show`.

The fixtures (tests/netsources/) are excerpts of the owners' real files, or, where no copy
was within reach, files written in the owner's documented shape with prefixes of theirs; its
README says which.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import mailseen
from mailseen.core.netdata import collapse, load_data, parse_networks, shipped_text
from mailseen.core.netsources import (
    FORMATS,
    Manifest,
    Source,
    load_manifest,
    parse_source,
    update_source,
)
from mailseen.errors import InvalidInput
from mailseen.records import MailboxIn, ViewIn
from mailseen.services.instance import Instance

from .cli_runner import Cli, error, ok

FILES = Path(__file__).parent / "netsources"  # excerpts of the real lists, see its README


def fixture(name: str) -> str:
    return (FILES / name).read_text(encoding="utf-8")


AWS: dict[str, Any] = json.loads(fixture("ip-ranges.json"))
AZURE: dict[str, Any] = json.loads(fixture("ServiceTags_Public.json"))
GCP: dict[str, Any] = json.loads(fixture("cloud.json"))
GOOG: dict[str, Any] = json.loads(fixture("goog.json"))
M365: list[dict[str, Any]] = json.loads(fixture("endpoints-worldwide.json"))
CIDRS = fixture("as30031-ipv4-aggregated.txt")

CASES = [  # (format, file, an address inside, kind, the file's own date or serial)
    ("aws", "ip-ranges.json", "52.94.77.1", "cloud", "2020-10-08-23-41-17"),
    ("azure", "ServiceTags_Public.json", "4.145.1.1", "cloud", "change 375"),
    ("gcp", "cloud.json", "34.81.2.3", "cloud", "2024-04-25T07:05:03.68994"),
    ("goog", "goog.json", "66.249.84.12", "mailproxy", "2024-04-25T07:05:03.68994"),
    ("oracle", "public_ip_ranges.json", "129.146.1.1", "cloud", "2026-11-25T23:12:08.474134"),
    ("m365", "endpoints-worldwide.json", "40.107.22.60", "scanner", "endpoint set 10"),
    ("apple-csv", "egress-ip-ranges.csv", "172.224.226.33", "apple", ""),
    ("geofeed", "geofeed.csv", "64.225.3.4", "cloud", ""),
    ("cidr", "as30031-ipv4-aggregated.txt", "205.139.110.61", "scanner", ""),
]


@pytest.mark.parametrize(("fmt", "name", "inside", "kind", "published"), CASES,
                         ids=[c[0] for c in CASES])
def test_each_owners_format_is_read_with_its_date(fmt: str, name: str, inside: str, kind: str,
                                                  published: str) -> None:
    parsed = parse_source(fmt, fixture(name), kind, "Test source")
    assert parsed.published == published
    assert {(e.kind, e.label) for e in parsed.entries} == {(kind, "Test source")}
    assert any(e.network.overlaps(e.parse(inside, kind, "x").network) for e in parsed.entries)


def test_every_format_is_tested() -> None:
    assert {c[0] for c in CASES} == set(FORMATS)


def test_azure_takes_the_whole_public_cloud_tag() -> None:
    azure = parse_source("azure", json.dumps(AZURE), "cloud", "Azure")
    [cloud] = [v for v in AZURE["values"] if v["name"] == "AzureCloud"]
    assert [e.cidr for e in azure.entries] == cloud["properties"]["addressPrefixes"]
    assert any(e.version == 6 for e in azure.entries)
    # a regional extract without AzureCloud is taken whole
    extract = {**AZURE, "values": [v for v in AZURE["values"] if v["name"] != "AzureCloud"]}
    assert parse_source("azure", json.dumps(extract), "cloud", "Azure").entries


def test_m365_reads_only_the_exchange_online_protection_set() -> None:
    eop = parse_source("m365", json.dumps(M365), "scanner", "EOP")
    [mx] = [s for s in M365 if "*.mail.protection.outlook.com" in s.get("urls", [])]
    assert [e.cidr for e in eop.entries] == mx["ips"]
    cidrs = {e.cidr for e in eop.entries}
    assert "2a01:111:f403::/48" in cidrs  # IPv6 too
    assert "40.96.0.0/13" not in cidrs  # Outlook's own front ends: people reading mail
    assert "52.238.78.88/32" not in cidrs  # *.protection.outlook.com's web endpoints
    assert "13.107.136.0/22" not in cidrs  # SharePoint
    # Since 2024 the set is ID 9 and also names *.mx.microsoft; either name is enough
    today = [{**s, "id": 9, "urls": ["*.mail.protection.outlook.com", "*.mx.microsoft"]}
             if s is mx else s for s in M365 if s.get("id") != 9]
    assert parse_source("m365", json.dumps(today), "scanner", "EOP").published == (
        "endpoint set 9")
    only_new = [{**mx, "urls": ["*.mx.microsoft"]}]
    assert {e.cidr for e in parse_source("m365", json.dumps(only_new), "scanner",
                                         "EOP").entries} == cidrs


@pytest.mark.parametrize(("fmt", "data"), [("gcp", GCP), ("goog", GOOG)])
def test_google_lists_are_read_with_their_ipv6_prefixes(fmt: str, data: dict[str, Any]) -> None:
    parsed = parse_source(fmt, json.dumps(data), "cloud", "Google")
    v6 = [p["ipv6Prefix"] for p in data["prefixes"] if "ipv6Prefix" in p]
    assert v6 and [e.cidr for e in parsed.entries if e.version == 6] == v6
    assert len(parsed.entries) == len(data["prefixes"])


@pytest.mark.parametrize(("fmt", "text"), [
    ("aws", "<html>503</html>"), ("aws", json.dumps({"prefixes": "no"})),
    ("azure", json.dumps({"values": []})), ("gcp", json.dumps({"prefixes": [{}]})),
    ("oracle", json.dumps({"regions": [{"cidrs": [{"cidr": "not-a-net"}]}]})),
    ("m365", json.dumps([M365[0]])), ("m365", json.dumps({"id": 9})),
    ("cidr", "10.0.0.0/8\n192.0.2.0/24\n"),  # nothing public
])
def test_a_list_in_the_wrong_shape_is_refused_whole(fmt: str, text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_source(fmt, text, "cloud", "Test")


def test_updating_google_keeps_google_cloud_apart_whichever_comes_first(tmp_path: Path) -> None:
    manifest = load_manifest()
    gcp, goog = manifest.get("gcp"), manifest.get("google")
    assert gcp is not None and goog is not None
    now = datetime(2026, 12, 4, tzinfo=UTC)
    update_source(tmp_path, gcp, json.dumps(GCP), fetched_from="cloud.json", now=now)
    update_source(tmp_path, goog, json.dumps(GOOG), fetched_from="goog.json", now=now)
    update_source(tmp_path, gcp, json.dumps(GCP), fetched_from="cloud.json", now=now)
    data = load_data(tmp_path)
    proxy, cloud = data.networks.lookup("66.249.84.12"), data.networks.lookup("34.81.2.3")
    assert proxy is not None and (proxy.kind, proxy.label) == ("mailproxy", "Google")
    assert cloud is not None and (cloud.kind, cloud.label) == ("cloud", "Google Cloud")
    outside = data.networks.lookup("34.100.1.1")  # in goog.json's /10, not in cloud.json here
    assert outside is not None and outside.label == "Google"


def test_a_source_is_as_old_as_its_data() -> None:
    source = Source("aws", "Amazon Web Services", "cloud", "aws", retrieved="2026-08-22")
    assert source.age_days(date(2026, 12, 4)) == 104
    assert Source("x", "X", "cloud", "cidr").age_days(date(2026, 12, 4)) is None


UPDATES = [  # (source, its format's fixture, an address the fixture lists)
    ("aws", "ip-ranges.json", "52.94.77.1"),
    ("azure", "ServiceTags_Public.json", "2602:fd5e:1::9"),
    ("gcp", "cloud.json", "2600:1900:4000::7"),
    ("google", "goog.json", "2001:4860:4860::8888"),
    ("oracle", "public_ip_ranges.json", "129.146.1.1"),
    ("eop", "endpoints-worldwide.json", "2a01:111:f403::25"),
    ("icloud-relay", "egress-ip-ranges.csv", "172.224.226.33"),
    ("digitalocean", "geofeed.csv", "64.225.3.4"),
]
CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/120.0.0.0 Safari/537.36")
APPLE_MAIL_UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
                 "like Gecko)")


def explain(cli: Cli, address: str, agent: str = CHROME_UA) -> dict[str, Any]:
    line = json.dumps({"headers": {"user-agent": agent}, "remote_addr": address,
                       "seconds_after_send": 60})
    answer: dict[str, Any] = json.loads(ok(cli("classify", "hits", "--explain",
                                               input=line + "\n")))
    return answer


@pytest.mark.parametrize(("key", "name", "inside"), UPDATES, ids=[u[0] for u in UPDATES])
def test_data_update_reads_each_format_from_a_file(cli: Cli, key: str, name: str,
                                                   inside: str) -> None:
    source = load_manifest().get(key)
    assert source is not None
    [(fmt, published)] = [(c[0], c[4]) for c in CASES if c[1] == name]
    assert source.format == fmt  # every format of FORMATS but cidr has a source here
    out = ok(cli("data", "update", key, "--from", str(FILES / name)))
    count = len(collapse(parse_source(fmt, fixture(name), source.kind, source.label).entries))
    assert out.startswith(f"{count} network(s) labelled {source.label!r} written")
    shown = {s["key"]: s for s in map(json.loads, ok(cli("data", "show", "--json")).splitlines())}
    today = datetime.now(UTC).date().isoformat()
    assert (shown[key]["origin"], shown[key]["networks"], shown[key]["published"]) == (
        "updated", count, published)
    assert shown[key]["retrieved"] <= today and shown[key]["age_days"] in (0, 1)
    assert str(FILES / name) in shown[key]["via"]
    assert any(line.startswith(key) and "updated" in line and "days old" in line
               for line in ok(cli("data", "show")).splitlines())
    # the updated list is what the classifier now uses, whichever IP version (a browser
    # from a cloud, a scanner or Google's own network is judged by the network; from
    # Apple's relay, Apple Mail's own agent is)
    hit = explain(cli, inside, APPLE_MAIL_UA if source.kind == "apple" else CHROME_UA)
    assert hit["network"]["label"] == source.label and hit["data"]["source"] == key
    assert hit["data"]["origin"] == "updated"


class _Files(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(FILES), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test's output stays clean


@pytest.fixture
def list_server() -> Iterator[str]:
    """The fixtures served over HTTP, as an owner's site serves its list."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_data_update_reads_a_list_from_a_url(cli: Cli, list_server: str) -> None:
    url = f"{list_server}/ServiceTags_Public.json"
    assert "labelled 'Microsoft Azure'" in ok(cli("data", "update", "azure", "--from", url))
    [azure] = [s for s in map(json.loads, ok(cli("data", "show", "--json")).splitlines())
               if s["key"] == "azure"]
    assert azure["via"] == f"`mailseen data update` from {url}"
    assert azure["published"] == "change 375"
    assert explain(cli, "4.145.1.1")["data"]["origin"] == "updated"
    # a missing list is one line of error, and the update stays
    assert "cannot fetch" in error(cli("data", "update", "gcp", "--from",
                                       f"{list_server}/missing.json"))
    # a list in another format is refused whole
    assert "not in the Google" in error(cli("data", "update", "gcp", "--from", url), 2)
    assert explain(cli, "4.145.1.1")["network"]["label"] == "Microsoft Azure"


def test_a_new_source_needs_its_format_kind_label_and_list(cli: Cli, tmp_path: Path) -> None:
    assert "unknown source 'acme'" in error(cli("data", "update", "acme"), 2)
    path = tmp_path / "acme.txt"
    path.write_text(CIDRS)
    out = ok(cli("data", "update", "acme", "--format", "cidr", "--kind", "scanner",
                 "--label", "Acme Mail Shield", "--from", str(path)))
    assert out.startswith("5 network(s) labelled 'Acme Mail Shield'")
    assert "Acme Mail Shield" in ok(cli("data", "show"))
    assert "not in the AWS" in error(cli("data", "update", "aws", "--from", str(path)), 2)
    # the vendors' ASN lists have no address of their own to fetch from
    assert "no address of its own" in error(cli("data", "update", "mimecast"), 2)


def test_classify_hits_explains_rule_and_data(cli: Cli) -> None:
    hits = [
        {"headers": {"user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"
                                   " (KHTML, like Gecko) Chrome/72.0.3626.109 Safari/537.36"},
         "remote_addr": "205.139.110.61", "seconds_after_send": 9},
        {"headers": {"user-agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
                                   "(via ggpht.com GoogleImageProxy)"},
         "remote_addr": "66.249.84.12", "seconds_after_send": 3600},
        {"headers": {"user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1; "
                                   "+http://www.google.com/bot.html)"},
         "remote_addr": "66.249.66.1", "seconds_after_send": 3600},
    ]
    out = [json.loads(x) for x in ok(cli("classify", "hits", "--explain", input="".join(
        json.dumps(h) + "\n" for h in hits))).splitlines()]
    mimecast, gmail, googlebot = out
    assert (mimecast["verdict"], mimecast["rule"]) == ("machine", "scanner_by_network")
    assert mimecast["data"]["source"] == "mimecast" and "AS30031" in mimecast["data"]["via"]
    assert (gmail["verdict"], gmail["rule"], gmail["source"]) == (
        "human", "image_proxy", "user_agents.txt")
    assert gmail["network"] == {"label": "Google", "kind": "mailproxy",
                                "cidr": gmail["network"]["cidr"]}
    assert googlebot["verdict"] == "machine" and googlebot["rule"] == "script_or_headless"
    # without --explain the answer stays the three fields
    plain = json.loads(ok(cli("classify", "hits", input=json.dumps(hits[0]) + "\n")))
    assert set(plain) == {"verdict", "reason", "client"}


def test_reclassify_rejudges_stored_hits_with_the_updated_cloud_list(
        cli: Cli, tmp_path: Path, instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn("a@example.com", tracking="enabled"))
    msg = instance.sender.submit(box, b"From: a@example.com\r\nTo: b@example.org\r\n"
                                      b"Content-Type: text/html\r\n\r\n<p>hi</p>")
    at = datetime.now(UTC) + timedelta(hours=1)
    chrome = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
              " Chrome/120.0.0.0 Safari/537.36")
    instance.store.record_views([ViewIn(msg.id, 0, at, "GET", "81.2.69.9", chrome, {})])
    ok(cli("reclassify"))
    assert instance.store.get_message(msg.id).view_count == 1  # webmail from an ISP
    listed = {**AWS, "prefixes": [*AWS["prefixes"], {"ip_prefix": "81.2.69.0/24",  # type: ignore[list-item]
                                                      "region": "eu-west-2", "service": "EC2"}]}
    path = tmp_path / "ip-ranges.json"
    path.write_text(json.dumps(listed))
    ok(cli("data", "update", "aws", "--from", str(path)))
    assert "1 verdict(s) changed" in ok(cli("reclassify"))
    after = instance.store.get_message(msg.id)
    assert (after.view_count, after.machine_count) == (0, 1)
    [view] = instance.store.list_views(msg.id)
    assert view.reason == "browser from a cloud network (Amazon Web Services), no mail client"


SNAPSHOT = Path(__file__).parents[1] / "scripts" / "netdata-snapshot"


def snapshot(data: Path, *lists: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(mailseen.__file__).parents[1])}
    return subprocess.run([sys.executable, str(SNAPSHOT), "--data", str(data), *lists],
                          capture_output=True, text=True, env=env, check=False, timeout=120)


def test_the_snapshot_script_reads_each_list_in_its_owners_format(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("networks.txt", "sources.json"):
        (data / name).write_text(shipped_text(name), encoding="utf-8")
    plain = tmp_path / "googlecloud_v6.txt"  # a mirror that keeps cloud.json as CIDR lines
    plain.write_text("# Googlecloud IP Ranges\n2600:1901:81f0::/44\n", encoding="utf-8")
    run = snapshot(data, f"azure={FILES / 'ServiceTags_Public.json'}",
                   f"eop={FILES / 'endpoints-worldwide.json'}", f"gcp={FILES / 'cloud.json'}",
                   f"gcp:cidr={plain}")
    assert run.returncode == 0, run.stderr
    manifest = Manifest.parse((data / "sources.json").read_text(encoding="utf-8"))
    entries = parse_networks((data / "networks.txt").read_text(encoding="utf-8"))

    def blocks(label: str) -> set[str]:
        return {e.cidr for e in entries if e.label == label}

    def read(fmt: str, name: str) -> set[str]:
        return {e.cidr for e in collapse(parse_source(fmt, fixture(name), "cloud", "x").entries)}

    assert blocks("Microsoft Azure") == read("azure", "ServiceTags_Public.json")
    assert blocks("Microsoft Exchange Online Protection") == read("m365",
                                                                  "endpoints-worldwide.json")
    assert blocks("Google Cloud") == read("gcp", "cloud.json") | {"2600:1901:81f0::/44"}
    gcp, azure = manifest.get("gcp"), manifest.get("azure")
    assert gcp is not None and azure is not None
    assert (gcp.published, gcp.networks) == ("2024-04-25T07:05:03.68994",
                                             len(blocks("Google Cloud")))
    assert (azure.published, azure.networks) == ("change 375", len(blocks("Microsoft Azure")))
    # sources not named keep their lines, and every source its provenance and order
    shipped = load_manifest()
    assert manifest.get("aws") == shipped.get("aws")
    assert [s.key for s in manifest.sources] == [s.key for s in shipped.sources]
    assert manifest.get("eop").via == shipped.get("eop").via  # type: ignore[union-attr]
    assert blocks("Amazon Web Services") == {
        e.cidr for e in parse_networks(shipped_text("networks.txt"))
        if e.label == "Amazon Web Services"}
    # a list in another format is refused whole, and nothing is written
    before = (data / "networks.txt").read_text(encoding="utf-8")
    refused = snapshot(data, f"aws={FILES / 'cloud.json'}")
    assert refused.returncode != 0 and "not in the AWS" in refused.stderr
    assert (data / "networks.txt").read_text(encoding="utf-8") == before
