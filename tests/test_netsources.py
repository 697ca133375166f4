"""Network sources: each owner's published format, `mailseen data update` and `data show`.

The fixtures are small files written in each owner's real format (field names, nesting and
date fields as the owners publish them), with real prefixes of theirs.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from mailseen.core.netdata import load_data
from mailseen.core.netsources import FORMATS, Source, load_manifest, parse_source, update_source
from mailseen.errors import InvalidInput
from mailseen.records import MailboxIn, ViewIn
from mailseen.services.instance import Instance

from .cli_runner import Cli, error, ok

AWS = {
    "syncToken": "1733333333",
    "createDate": "2026-11-30-21-13-06",
    "prefixes": [
        {"ip_prefix": "3.4.12.4/32", "region": "eu-west-1", "service": "AMAZON",
         "network_border_group": "eu-west-1"},
        {"ip_prefix": "52.94.76.0/22", "region": "us-west-2", "service": "EC2",
         "network_border_group": "us-west-2"},
    ],
    "ipv6_prefixes": [
        {"ipv6_prefix": "2600:1f14::/35", "region": "us-west-2", "service": "EC2",
         "network_border_group": "us-west-2"},
    ],
}
AZURE = {
    "changeNumber": 342,
    "cloud": "Public",
    "values": [
        {"name": "ActionGroup", "id": "ActionGroup",
         "properties": {"changeNumber": 47, "region": "", "regionId": 0, "platform": "Azure",
                        "systemService": "ActionGroup",
                        "addressPrefixes": ["4.145.74.52/30"], "networkFeatures": ["API"]}},
        {"name": "AzureCloud", "id": "AzureCloud",
         "properties": {"changeNumber": 300, "region": "", "regionId": 0, "platform": "Azure",
                        "systemService": "",
                        "addressPrefixes": ["13.64.0.0/11", "2603:1000::/24"],
                        "networkFeatures": ["API", "NSG"]}},
    ],
}
GCP = {
    "syncToken": "1733340000000",
    "creationTime": "2026-12-01T10:00:00.000000",
    "prefixes": [
        {"ipv4Prefix": "34.80.0.0/15", "service": "Google Cloud", "scope": "asia-east1"},
        {"ipv6Prefix": "2600:1900:4010::/44", "service": "Google Cloud", "scope": "us-east1"},
    ],
}
GOOG = {
    "syncToken": "1733340000001",
    "creationTime": "2026-12-01T10:00:01.000000",
    "prefixes": [{"ipv4Prefix": "34.64.0.0/10"}, {"ipv4Prefix": "66.249.64.0/19"},
                 {"ipv6Prefix": "2001:4860::/32"}],
}
ORACLE = {
    "last_updated_timestamp": "2026-11-25T23:12:08.474134",
    "regions": [
        {"region": "us-phoenix-1", "cidrs": [
            {"cidr": "129.146.0.0/21", "tags": ["OCI"]},
            {"cidr": "134.70.24.0/21", "tags": ["OSN", "OBJECT_STORAGE"]}]},
    ],
}
M365 = [
    {"id": 1, "serviceArea": "Exchange", "serviceAreaDisplayName": "Exchange Online",
     "urls": ["outlook.cloud.microsoft", "outlook.office.com"],
     "ips": ["13.107.6.152/31", "40.96.0.0/13"], "tcpPorts": "80,443",
     "expressRoute": True, "category": "Optimize", "required": True},
    {"id": 9, "serviceArea": "Exchange", "serviceAreaDisplayName": "Exchange Online",
     "urls": ["*.mail.protection.outlook.com"],
     "ips": ["40.92.0.0/15", "40.107.0.0/16", "104.47.0.0/17", "2a01:111:f403::/48"],
     "tcpPorts": "25", "expressRoute": True, "category": "Allow", "required": True},
]
APPLE_CSV = ("172.224.226.0/27,GB,GB-EN,London,\n172.224.226.32/31,GB,GB-SC,Aberdeen,\n"
             "2a02:26f7:b3c0:4000::/64,US,US-CA,Los Angeles,\n")
GEOFEED = "# DigitalOcean geofeed\n64.225.0.0/20,NL,NL-NH,Amsterdam,\n"
CIDRS = "# Example vendor\n91.220.42.0/24\n2a02:5be0::/47\n"

CASES = [  # (format, text, an address inside, kind, the file's own date or serial)
    ("aws", json.dumps(AWS), "52.94.77.1", "cloud", "2026-11-30-21-13-06"),
    ("azure", json.dumps(AZURE), "13.70.1.1", "cloud", "change 342"),
    ("gcp", json.dumps(GCP), "34.81.2.3", "cloud", "2026-12-01T10:00:00.000000"),
    ("goog", json.dumps(GOOG), "66.249.84.12", "mailproxy", "2026-12-01T10:00:01.000000"),
    ("oracle", json.dumps(ORACLE), "129.146.1.1", "cloud", "2026-11-25T23:12:08.474134"),
    ("m365", json.dumps(M365), "40.107.22.60", "scanner", "endpoint set 9"),
    ("apple-csv", APPLE_CSV, "172.224.226.33", "apple", ""),
    ("geofeed", GEOFEED, "64.225.3.4", "cloud", ""),
    ("cidr", CIDRS, "91.220.42.7", "scanner", ""),
]


@pytest.mark.parametrize(("fmt", "text", "inside", "kind", "published"), CASES,
                         ids=[c[0] for c in CASES])
def test_each_owners_format_is_read_with_its_date(fmt: str, text: str, inside: str, kind: str,
                                                  published: str) -> None:
    parsed = parse_source(fmt, text, kind, "Test source")
    assert parsed.published == published
    assert {(e.kind, e.label) for e in parsed.entries} == {(kind, "Test source")}
    assert any(e.network.overlaps(e.parse(inside, kind, "x").network) for e in parsed.entries)


def test_every_format_is_tested() -> None:
    assert {c[0] for c in CASES} == set(FORMATS)


def test_azure_takes_the_whole_cloud_and_m365_only_exchange_online_protection() -> None:
    azure = parse_source("azure", json.dumps(AZURE), "cloud", "Azure")
    assert [e.cidr for e in azure.entries] == ["13.64.0.0/11", "2603:1000::/24"]
    eop = parse_source("m365", json.dumps(M365), "scanner", "EOP")
    assert "40.96.0.0/13" not in {e.cidr for e in eop.entries}  # Outlook's own front ends


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


def test_data_update_reads_each_source_from_a_file_and_data_show_dates_it(
        cli: Cli, tmp_path: Path) -> None:
    for key, fmt, text in [("aws", "aws", json.dumps(AWS)), ("eop", "m365", json.dumps(M365)),
                           ("oracle", "oracle", json.dumps(ORACLE))]:
        path = tmp_path / f"{key}.{fmt}"
        path.write_text(text)
        assert "labelled" in ok(cli("data", "update", key, "--from", str(path)))
    before = datetime.now(UTC).date()
    shown = [json.loads(line) for line in ok(cli("data", "show", "--json")).splitlines()]
    after = datetime.now(UTC).date()
    by_key = {s["key"]: s for s in shown}
    aws = by_key["aws"]
    assert (aws["origin"], aws["networks"], aws["published"]) == ("updated", 3,
                                                                  "2026-11-30-21-13-06")
    assert aws["retrieved"] in (before.isoformat(), after.isoformat()) and aws["age_days"] == 0
    assert by_key["gcp"]["origin"] == "shipped" and by_key["gcp"]["age_days"] >= 0
    text = ok(cli("data", "show"))
    assert any(line.startswith("aws") and "updated" in line and "days old" in line
               for line in text.splitlines())
    # the updated lists are what the classifier now uses
    out = json.loads(ok(cli("classify", "hits", "--explain", input=json.dumps({
        "headers": {"user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"
                                  " (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"},
        "remote_addr": "129.146.1.1", "seconds_after_send": 60}) + "\n")))
    assert out["verdict"] == "machine" and out["rule"] == "cloud_without_mail_client"
    assert out["source"] == "networks: Oracle Cloud"
    assert out["data"]["origin"] == "updated" and out["network"]["kind"] == "cloud"


def test_a_new_source_needs_its_format_kind_label_and_list(cli: Cli, tmp_path: Path) -> None:
    assert "unknown source 'acme'" in error(cli("data", "update", "acme"), 2)
    path = tmp_path / "acme.txt"
    path.write_text(CIDRS)
    out = ok(cli("data", "update", "acme", "--format", "cidr", "--kind", "scanner",
                 "--label", "Acme Mail Shield", "--from", str(path)))
    assert out.startswith("2 network(s) labelled 'Acme Mail Shield'")
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
