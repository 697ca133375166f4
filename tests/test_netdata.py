"""The classifier's data: shipped snapshot, published lists, overrides, fast network lookup."""

from __future__ import annotations

import ipaddress
import itertools
from datetime import date
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailseen.core.netdata import (
    NetEntry,
    NetworkTable,
    collapse,
    format_networks,
    load_data,
    parse_networks,
    parse_published_list,
    parse_user_agents,
    shipped_text,
    write_override,
)
from mailseen.core.netsources import load_manifest
from mailseen.errors import InvalidInput

# The first lines of Apple's egress-ip-ranges.csv, in Apple's format.
APPLE_CSV = """\
172.224.224.0/27,GB,GB-EN,London,
172.224.224.32/31,GB,GB-SC,Aberdeen,
172.224.224.34/31,GB,GB-EN,Oxford,
2a02:26f7:b3c0:4000::/64,US,US-CA,Los Angeles,
"""


def entry(cidr: str, label: str, kind: str = "scanner") -> NetEntry:
    return NetEntry.parse(cidr, kind, label)


def test_the_snapshot_ships_inside_the_package() -> None:
    folder = resources.files("mailseen.data")
    for name in ("networks.txt", "user_agents.txt", "autoreply_subjects.txt"):
        assert folder.joinpath(name).is_file()
        assert "Snapshot" in shipped_text(name) or "snapshot" in shipped_text(name)


def test_the_shipped_snapshot_parses_and_knows_the_main_networks() -> None:
    data = load_data()
    expected = {
        "17.58.63.10": ("apple", "Apple"),
        "172.224.226.33": ("apple", "iCloud Private Relay"),
        "40.107.22.60": ("scanner", "Microsoft Exchange Online Protection"),
        "104.47.1.254": ("scanner", "Microsoft Exchange Online Protection"),
        "2a01:111:f400:fe1f::1": ("scanner", "Microsoft Exchange Online Protection"),
        "205.139.110.61": ("scanner", "Mimecast"),
        "91.220.42.7": ("scanner", "Mimecast"),
        "67.231.150.3": ("scanner", "Proofpoint"),
        "148.163.150.20": ("scanner", "Proofpoint"),
        "64.235.150.250": ("scanner", "Barracuda"),
        "68.232.140.10": ("scanner", "Cisco Secure Email"),
        "150.70.170.1": ("scanner", "Trend Micro"),
        "96.45.33.1": ("scanner", "Fortinet"),
        "77.74.177.1": ("scanner", "Kaspersky"),
        "136.226.1.1": ("gateway", "Zscaler"),
        "52.1.2.3": ("cloud", "Amazon Web Services"),
        "13.70.1.1": ("cloud", "Microsoft Azure"),  # the AzureCloud service tag
        "2603:1000::1": ("cloud", "Microsoft Azure"),
        "34.120.1.1": ("cloud", "Google Cloud"),  # cloud.json takes precedence over goog.json
        "2600:1900:4000::1": ("cloud", "Google Cloud"),  # cloud.json's IPv6 too
        "66.249.84.12": ("mailproxy", "Google"),  # Gmail's image proxy
        "2001:4860:4860::8888": ("mailproxy", "Google"),
        "129.146.1.1": ("cloud", "Oracle Cloud"),
    }
    for address, (kind, label) in expected.items():
        found = data.networks.lookup(address)
        assert found is not None and (found.kind, found.label) == (kind, label), address
    # Yahoo's proxy and people's own connections are not listed; nor are the special-purpose
    # ranges a published list may carry by mistake (a geofeed listed 203.0.113.0/24).
    for address in ("98.137.27.103", "203.0.113.40", "198.51.100.23", "192.0.2.1",
                    "10.1.2.3", "100.64.1.1", "2001:db8::1"):
        assert data.networks.lookup(address) is None, address


def test_every_shipped_network_belongs_to_a_source_with_provenance() -> None:
    manifest = load_manifest()
    labels = {e.label for e in parse_networks(shipped_text("networks.txt"))}
    assert labels == {s.label for s in manifest.sources}
    entries = parse_networks(shipped_text("networks.txt"))
    for source in manifest.sources:
        assert source.via and source.licence and source.retrieved and source.owner, source.key
        assert source.networks > 0 and source.origin == "shipped"
        assert date.fromisoformat(source.retrieved) <= date.fromisoformat(manifest.snapshot)
        assert source.networks == sum(1 for e in entries if e.label == source.label), source.key
        if source.format == "cidr":  # registered networks: the registry record is named
            assert "ARIN" in source.via or "RIPE" in source.via, source.key
            assert source.key == "apple" or "ipverse/asn-ip" in source.via, source.key
        else:  # a list its owner publishes, fetched by `mailseen data update KEY`
            assert source.url.startswith("https://"), source.key
            assert "github:" in source.via and "@" in source.via, source.key
    # compact: a few MB at most
    assert len(shipped_text("networks.txt").encode()) < 3_000_000


def test_every_shipped_user_agent_line_is_valid_and_humans_come_before_crawlers() -> None:
    patterns = parse_user_agents(shipped_text("user_agents.txt"))
    kinds = [p.kind for p in patterns]
    assert kinds.index("mpp") < kinds.index("proxy") < kinds.index("bot") < kinds.index("client")
    assert max(i for i, k in enumerate(kinds) if k == "proxy") < kinds.index("bot")


def test_the_most_specific_network_wins() -> None:
    table = NetworkTable([
        entry("10.0.0.0/8", "outer"),
        entry("10.1.0.0/16", "middle"),
        entry("10.1.2.0/24", "inner"),
        entry("10.1.9.0/24", "sibling"),
        entry("10.200.0.0/16", "far"),
        entry("2001:db8::/32", "v6 outer"),
        entry("2001:db8:1::/48", "v6 inner"),
    ])
    cases = {
        "10.1.2.3": "inner", "10.1.9.255": "sibling", "10.1.5.1": "middle",
        "10.1.255.255": "middle", "10.2.0.0": "outer", "10.199.0.1": "outer",
        "10.200.3.4": "far", "10.255.255.255": "outer", "11.0.0.0": None, "9.255.255.255": None,
        "2001:db8:1::5": "v6 inner", "2001:db8:2::5": "v6 outer", "2001:db9::": None,
    }
    for address, label in cases.items():
        found = table.lookup(address)
        assert (found.label if found else None) == label, address


def test_an_earlier_entry_wins_over_the_same_network_later() -> None:
    table = NetworkTable([entry("192.0.2.0/24", "override"), entry("192.0.2.0/24", "shipped")])
    assert table.size == 1
    found = table.lookup("192.0.2.9")
    assert found is not None and found.label == "override"


networks_v4 = st.builds(
    lambda addr, prefix: ipaddress.ip_network(f"{ipaddress.IPv4Address(addr)}/{prefix}",
                                              strict=False),
    st.integers(0, 2**32 - 1), st.integers(8, 32))


@settings(max_examples=100, deadline=None)
@given(nets=st.lists(networks_v4, max_size=40),
       probes=st.lists(st.integers(0, 2**32 - 1), max_size=30))
def test_lookup_agrees_with_checking_every_network(nets: list[ipaddress.IPv4Network],
                                                   probes: list[int]) -> None:
    entries = [entry(str(n), str(n)) for n in nets]
    table = NetworkTable(entries)
    # probe the edges of every network too, where an off-by-one would hide
    edges = [int(n.network_address) for n in nets] + [int(n.broadcast_address) for n in nets]
    for value in [*probes, *edges, *(e + 1 for e in edges if e < 2**32 - 1)]:
        address = ipaddress.IPv4Address(value)
        holding = [n for n in nets if address in n]
        expected = max(holding, key=lambda n: n.prefixlen) if holding else None
        found = table.lookup(str(address))
        assert (found.network if found else None) == expected


def test_apples_egress_list_is_read_in_its_published_format() -> None:
    entries = parse_published_list(APPLE_CSV, "iCloud Private Relay")
    assert [e.cidr for e in entries] == [
        "172.224.224.0/27", "172.224.224.32/31", "172.224.224.34/31", "2a02:26f7:b3c0:4000::/64"]
    assert {(e.kind, e.label) for e in entries} == {("apple", "iCloud Private Relay")}


def test_a_header_row_comments_and_plain_cidr_lists_are_read_too() -> None:
    text = "prefix,country,region,city\n" + APPLE_CSV
    assert len(parse_published_list(text, "relay")) == 4
    plain = "# Mimecast UK\n195.130.217.0/24\n\n91.220.42.0/24\r\n207.82.80.7\n"
    entries = parse_published_list(plain, "Mimecast", kind="scanner")
    assert [e.cidr for e in entries] == ["195.130.217.0/24", "91.220.42.0/24",
                                                 "207.82.80.7/32"]


@pytest.mark.parametrize("text", [
    "", "# nothing but a comment\n",
    "<!DOCTYPE html>\n<html><body>Service unavailable</body></html>\n",
    "172.224.224.0/27,GB,GB-EN,London,\nnot a network,GB,,,\n",
])
def test_a_list_that_is_not_a_list_of_networks_is_refused_whole(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_published_list(text, "iCloud Private Relay")


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidInput):
        parse_published_list(APPLE_CSV, "x", kind="friendly")


@pytest.mark.parametrize("text", [
    "192.0.2.0/24\tscanner\n",
    "192.0.2.0/24\tfriend\tSomebody\n",
    "192.0.2.0/33\tscanner\tSomebody\n",
    "192.0.2.0/24 scanner Somebody\n",
])
def test_a_bad_networks_line_names_its_file_and_line(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"networks\.txt line 2"):
        parse_networks("# header\n" + text)


def test_a_bad_user_agent_line_names_its_line() -> None:
    with pytest.raises(InvalidInput, match="line 1: bad regex"):
        parse_user_agents("Foo(\tscript\tFoo\n")
    with pytest.raises(InvalidInput, match="line 1"):
        parse_user_agents("Foo\tnonsense\tFoo\n")


def test_formatted_networks_read_back_the_same() -> None:
    entries = parse_networks(shipped_text("networks.txt"))
    assert parse_networks(format_networks(entries)) == entries


def test_neighbouring_prefixes_of_one_label_collapse_into_few_blocks() -> None:
    relay = parse_published_list("\n".join(
        ["172.224.224.0/27"] + [f"172.224.224.{n}/31" for n in range(32, 48, 2)]), "relay")
    assert len(relay) == 9
    assert [e.cidr for e in collapse(relay)] == ["172.224.224.0/27", "172.224.224.32/28"]
    mixed = [entry("192.0.2.0/25", "a"), entry("192.0.2.128/25", "b"), entry("192.0.2.0/26", "a")]
    assert sorted((e.cidr, e.label) for e in collapse(mixed)) == [
        ("192.0.2.0/25", "a"), ("192.0.2.128/25", "b")]
    assert [e.cidr for e in collapse([entry("0.0.0.0/1", "x"), entry("128.0.0.0/1", "x")])] == [
        "0.0.0.0/0"]


@settings(max_examples=100, deadline=None)
@given(nets=st.lists(networks_v4, max_size=20), probes=st.lists(st.integers(0, 2**32 - 1)))
def test_collapsing_covers_exactly_the_same_addresses(nets: list[ipaddress.IPv4Network],
                                                      probes: list[int]) -> None:
    collapsed = collapse(entry(str(n), "x") for n in nets)
    assert len(collapsed) <= max(len(nets), 1) * 32
    blocks = [e.network for e in collapsed]
    edges = [int(n.network_address) for n in nets] + [int(n.broadcast_address) for n in nets]
    for value in [*probes, *edges, *(e + 1 for e in edges if e < 2**32 - 1)]:
        address = ipaddress.IPv4Address(value)
        assert any(address in n for n in nets) == any(address in b for b in blocks)
    # and no two blocks overlap
    spans = sorted((e.start, e.end) for e in collapsed)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))


def test_an_override_label_replaces_the_shipped_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    fresh = parse_published_list("192.0.2.0/25,GB,GB-EN,London,\n", "iCloud Private Relay")
    write_override(tmp_path, "iCloud Private Relay", fresh)
    data = load_data(tmp_path)
    relay = data.networks.lookup("192.0.2.10")
    assert relay is not None and relay.label == "iCloud Private Relay"
    assert data.networks.lookup("172.224.224.33") is None  # the shipped sample was replaced
    mimecast = data.networks.lookup("205.139.110.61")
    assert mimecast is not None and mimecast.label == "Mimecast"  # other labels kept


def test_writing_one_label_keeps_the_other_labels_of_the_override(tmp_path: Path) -> None:
    write_override(tmp_path, "Relay", [entry("192.0.2.0/25", "Relay", "apple")])
    write_override(tmp_path, "Gateway", [entry("198.51.100.0/24", "Gateway")])
    write_override(tmp_path, "Relay", [entry("203.0.113.0/24", "Relay", "apple")])
    written = parse_networks((tmp_path / "networks.txt").read_text())
    assert {(e.cidr, e.label) for e in written} == {
        ("198.51.100.0/24", "Gateway"), ("203.0.113.0/24", "Relay")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["networks.txt"]  # no temp files


def test_entries_written_for_a_label_must_carry_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        write_override(tmp_path, "Relay", [entry("192.0.2.0/25", "Other")])
    assert not (tmp_path / "networks.txt").exists()


def test_override_user_agents_are_tried_first(tmp_path: Path) -> None:
    (tmp_path / "user_agents.txt").write_text("# ours\n^curl/\tproxy\tour monitoring\n")
    data = load_data(tmp_path)
    assert data.user_agents[0].label == "our monitoring"
    assert len(data.user_agents) == len(load_data().user_agents) + 1


def test_an_empty_or_missing_override_folder_means_the_snapshot(tmp_path: Path) -> None:
    shipped = load_data()
    for folder in (tmp_path, tmp_path / "missing", None):
        data = load_data(folder)
        assert data.networks.size == shipped.networks.size
        assert data.user_agents == shipped.user_agents


def test_host_bits_are_cleared_and_addresses_become_single_host_networks() -> None:
    assert entry("192.0.2.77/24", "x").cidr == "192.0.2.0/24"
    assert entry("192.0.2.77", "x").cidr == "192.0.2.77/32"
    assert entry("2001:DB8:0:0::1/32", "x").cidr == "2001:db8::/32"
    assert entry("192.0.2.0/24", "x").network == ipaddress.ip_network("192.0.2.0/24")
    for bad in ("192.0.2.0/33", "192.0.2/24", "2001:db8::/129", "10.0.0.0/-1", "10.0.0.0/ 8"):
        with pytest.raises(ValueError):
            entry(bad, "x")


def test_a_full_size_relay_list_loads_in_reasonable_time() -> None:
    # Apple's real list has a few hundred thousand lines; 20,000 keep this test quick.
    lines = [f"172.{16 + i // 65536 % 16}.{i // 256 % 256}.{i % 256}/32,US,US-CA,Los Angeles,"
             for i in range(20_000)]
    entries = parse_published_list("\n".join(lines), "iCloud Private Relay")
    table = NetworkTable(entries)
    assert table.size == 20_000
    found = table.lookup("172.16.70.200")
    assert found is not None and found.label == "iCloud Private Relay"
