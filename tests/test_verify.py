"""`wgkube verify`: the routing/firewall simulation on rendered files (no root, fast).

Valid specs must verify clean (property-based over generated specs); files broken on purpose
must produce the finding that names the break; the fast pair loop must agree with the slow
general walk; 1,000 members must verify in under 5 s.
"""
from __future__ import annotations

import ipaddress
import itertools
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import EXAMPLE, HUB_EXAMPLE, SPECS, wgkube
from generator import secrets
from generator.proof.lab import net as lab_net
from generator.proof.read import cluster as rendered
from generator.errors import UserError
from generator.proof.lab.bed import wg_quick_routes
from generator.proof.read.nftables import Packet, parse_ruleset
from generator.proof.read.wgconf import parse_wg_quick
from generator.pipeline import prepare
from generator.proof.verify import verify

WG = "/etc/wireguard/wg0.conf"
FW = "/etc/wgkube/firewall.nft"
PUBLIC_POOL = [f"203.0.113.{i}" for i in range(1, 255)] + [f"198.51.100.{i}" for i in range(1, 255)]


def cluster_of(spec_text: str, workdir: Path, bundle: Path | None = None, name: str = "cluster.yaml") -> rendered.Cluster:
    spec = workdir / name
    spec.write_text(spec_text)
    return rendered.from_prepared(prepare(spec, bundle))


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> rendered.Cluster:
    # Hub and spoke: these tests are about the hub's relaying (the mesh has tests/test_mesh.py).
    return cluster_of(HUB_EXAMPLE.read_text(), tmp_path_factory.mktemp("verify-example"))


def kinds(report) -> set[str]:
    return {f.kind for f in report.findings}


def details(report) -> str:
    return "\n".join(f"{f.kind} {f.where}: {f.detail}" for f in report.findings)


# --------------------------------------------------------------------------- the example verifies clean


def test_example_every_pair_reaches_through_the_hub(example):
    report = verify(example)
    assert report.ok, details(report)
    n = len(example.members)
    assert report.pairs == report.reachable == n * (n - 1)
    names = report.names
    hub = names.index("hub")
    for (s, d), cell in report.matrix.items():
        assert cell == ("direct" if hub in (s, d) else "via hub"), (names[s], names[d], cell)


def test_rendered_out_dir_verifies_like_the_spec(example_out):
    """Reading user-data back (any encoding) gives the same texts the in-memory render gives."""
    from_dir = rendered.from_out_dir(example_out)
    report = verify(from_dir)
    assert report.ok, details(report)
    assert report.reachable == report.pairs == 12
    hub = from_dir.member("hub")
    assert "ListenPort = 51820" in hub.wg_conf and "counter drop" in hub.firewall and "ip_forward = 1" in hub.sysctl


# --------------------------------------------------------------------------- files broken on purpose


def hub_conf(c):
    return c.member("hub").wg_conf


def insert_before_final_drop(ruleset: str, rule: str) -> str:
    marker = '        counter drop comment "public side'
    assert marker in ruleset
    return ruleset.replace(marker, f"        {rule}\n{marker}", 1)


def test_wrong_allowed_ips_makes_pairs_unreachable(example):
    broken = example.with_member("hub", wg_conf=hub_conf(example).replace("AllowedIPs = 10.88.0.2/32", "AllowedIPs = 10.88.0.99/32"))
    report = verify(broken)
    assert kinds(report) == {"unreachable"}
    text = details(report)
    assert "hub: no peer's AllowedIPs cover the destination" in text
    assert "hub drops what worker-1 sends from outside worker-1's AllowedIPs there (source check)" in text
    # worker-1 is cut off both ways: 3 pairs from it and 3 to it.
    assert report.reachable == 12 - 6


def test_firewall_opening_6443_publicly_is_found(example):
    hub = example.member("hub")
    report = verify(example.with_member("hub", firewall=insert_before_final_drop(hub.firewall, "tcp dport 6443 accept")))
    assert kinds(report) == {"public-port"}
    assert report.findings[0].where == "hub"
    assert "tcp 6443 (Kubernetes API): not exposed by the spec" in report.findings[0].detail


def test_missing_keepalive_behind_nat_is_found(example):
    home = example.member("homelab-1")
    report = verify(example.with_member("homelab-1", wg_conf=home.wg_conf.replace("PersistentKeepalive = 25\n", "")))
    assert kinds(report) == {"nat-keepalive"}
    assert report.findings[0].where == "homelab-1"
    assert "no PersistentKeepalive for hub" in report.findings[0].detail


def test_keepalive_longer_than_nat_mappings_is_found(example):
    home = example.member("homelab-1")
    report = verify(example.with_member("homelab-1", wg_conf=home.wg_conf.replace("PersistentKeepalive = 25", "PersistentKeepalive = 300")))
    assert kinds(report) == {"nat-keepalive"} and "PersistentKeepalive 300 s for hub outlives NAT mappings" in details(report)


def test_same_range_on_two_peers_is_an_overlap(example):
    conf = hub_conf(example).replace("AllowedIPs = 10.88.0.3/32", "AllowedIPs = 10.88.0.2/32")
    report = verify(example.with_member("hub", wg_conf=conf))
    assert "overlap" in kinds(report)
    overlap = next(f for f in report.findings if f.kind == "overlap")
    assert "10.88.0.2/32 is on peers worker-1 and homelab-1" in overlap.detail and "(homelab-1)" in overlap.detail


def test_hub_without_ip_forward_relays_nothing(example):
    report = verify(example.with_member("hub", sysctl="net.ipv4.ip_forward = 0\n"))
    assert kinds(report) == {"unreachable"}
    assert report.findings[0].count == 6 and "does not forward (ip_forward is off)" in report.findings[0].detail


def test_hub_forward_chain_without_wg_accept_relays_nothing(example):
    hub = example.member("hub")
    fw = hub.firewall.replace('        iifname "wg0" oifname { "wg0", "cni0", "flannel.1" } accept comment "VPN to VPN (the hub relays) and to pods"\n', "")
    assert fw != hub.firewall
    report = verify(example.with_member("hub", firewall=fw))
    assert kinds(report) == {"unreachable"}
    assert "its forward chain drops wg0 -> wg0" in details(report)


def test_mtu_that_does_not_fit(example):
    report = verify(example.with_member("hub", wg_conf=hub_conf(example).replace("MTU = 1420", "MTU = 1480")))
    assert kinds(report) == {"mtu"}
    assert "wg MTU 1480 + 80 B WireGuard overhead exceeds the underlay MTU 1500" in details(report)
    report = verify(example.with_member("hub", wg_conf=hub_conf(example).replace("MTU = 1420", "MTU = 1400")))
    assert "relays traffic with wg MTU 1400, smaller than the sender's" in details(report)
    assert "flannel MTU 1370 + 50 B VXLAN overhead exceeds this member's wg MTU 1400" in details(report)


def test_wrong_listen_port_leaves_nat_members_without_initiator(example):
    report = verify(example.with_member("hub", wg_conf=hub_conf(example).replace("ListenPort = 51820", "ListenPort = 51821")))
    assert {"no-initiator", "unreachable", "public-port"} <= kinds(report)
    assert "homelab-1 dials hub on port 51820, but hub listens on 51821" in details(report)


def test_routing_loop_is_found(example):
    # The hub sends the laptop's address to worker-1 (whose /24 points back at the hub).
    conf = hub_conf(example).replace("AllowedIPs = 10.88.0.2/32", "AllowedIPs = 10.88.0.0/24").replace(
        "AllowedIPs = 10.88.0.4/32", "AllowedIPs = 10.88.0.200/32")
    report = verify(example.with_member("hub", wg_conf=conf))
    assert "loop" in kinds(report)
    assert "packets circle: worker-1 -> hub -> worker-1" in details(report)


def test_pods_reaching_metadata_and_dnat_leaks_are_found(example):
    hub = example.member("hub")
    fw = hub.firewall.replace("ip daddr 169.254.169.254 counter drop", "ip daddr 169.254.169.253 counter drop")
    assert kinds(verify(example.with_member("hub", firewall=fw))) == {"metadata"}
    fw = hub.firewall.replace('counter drop comment "public traffic DNAT', 'accept comment "public traffic DNAT')
    report = verify(example.with_member("hub", firewall=fw))
    assert kinds(report) == {"public-port"} and "DNAT'ed to pods passes the forward chain" in details(report)


def test_stray_and_one_sided_peers(example):
    conf = hub_conf(example).replace(re.search(r"PublicKey = (\S+)", hub_conf(example).split("# worker-1")[1]).group(1),
                                     "x" * 43 + "=")
    report = verify(example.with_member("hub", wg_conf=conf))
    assert "peering" in kinds(report) and "belongs to no member" in details(report)
    assert "worker-1 lists hub as a peer, but hub does not list worker-1" in details(report)


def test_unreadable_files_are_findings_not_crashes(example):
    report = verify(example.with_member("hub", wg_conf=hub_conf(example) + "\nFrobnicate = 1\n",
                                        firewall=example.member("hub").firewall + "\nfrobnicate everything\n"))
    assert "config" in kinds(report)
    assert "unknown key" in details(report) and "not understood" in details(report)


# --------------------------------------------------------------------------- CLI


def test_cli_exit_codes(example_out, tmp_path):
    ok = wgkube("verify", str(example_out))
    assert "12 ordered pairs, 12 reach" in ok.stdout and "ok" in ok.stdout
    out = tmp_path / "demo"
    shutil.copytree(example_out, out)
    c = rendered.from_out_dir(out)
    rendered.replace_node_file(out, "hub", FW, insert_before_final_drop(c.member("hub").firewall, "tcp dport 6443 accept"))
    bad = wgkube("verify", str(out), check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "public-port" in bad.stdout and "6443" in bad.stdout
    missing = wgkube("verify", str(tmp_path / "nope.yaml"), check=False)
    assert missing.returncode == 2 and "cannot read the spec" in missing.stderr and "Traceback" not in missing.stderr
    not_out = wgkube("verify", str(tmp_path), check=False)
    assert not_out.returncode == 2 and "plan.json" in not_out.stderr


def test_cli_on_spec_writes_nothing(tmp_path):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(EXAMPLE.read_text())
    proc = wgkube("verify", str(spec))
    assert "nothing written" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml"]


def big_spec(members: int) -> str:
    nodes = [{"name": "hub", "role": "control-plane", "endpoint": "203.0.113.254"}]
    public = iter(PUBLIC_POOL[:253] + PUBLIC_POOL[254:])
    for i in range(members - 1 - 20):
        nodes.append({"name": f"w{i}", "endpoint": next(public)} if i < 400 else {"name": f"n{i}"})
    return yaml.safe_dump({"name": "big", "vpn": {"cidr": "10.80.0.0/21"}, "nodes": nodes,
                           "admins": [{"name": f"laptop{i}"} for i in range(20)]})


def test_thousand_members_verify_through_the_cli(tmp_path):
    """Correctness at scale; the speed figure is the benchmark's (python -m bench), not a timed test."""
    spec = tmp_path / "big.yaml"
    spec.write_text(big_spec(1000))
    t0 = time.monotonic()
    proc = wgkube("verify", str(spec))
    elapsed = time.monotonic() - t0
    assert "1000 members, 999000 ordered pairs, 999000 reach" in proc.stdout, proc.stdout
    print(f"\nverify, 1,000 members (999,000 pairs), whole CLI: {elapsed:.2f} s (not asserted: see bench)")


# --------------------------------------------------------------------------- generated specs


@pytest.fixture(scope="module")
def base_bundle(tmp_path_factory) -> Path:
    """A bundle with the cluster PKI made once; each generated spec only adds WireGuard keys."""
    work = tmp_path_factory.mktemp("bundle")
    spec = work / "prop.yaml"
    spec.write_text(yaml.safe_dump({"name": "prop", "nodes": [{"name": "hub", "role": "control-plane", "endpoint": "203.0.113.1"}]}))
    prepared = prepare(spec)
    path = work / "prop.secrets.yaml"
    secrets.save(prepared.bundle, path)
    return path


@st.composite
def cluster_specs(draw, keepalive_zero: bool = False):
    n_nodes = draw(st.integers(1, 24))
    n_admins = draw(st.integers(0, 3))
    hub_at = draw(st.integers(0, n_nodes - 1))
    public = [i == hub_at or draw(st.booleans()) for i in range(n_nodes)]
    addresses = iter(draw(st.permutations(PUBLIC_POOL)))
    spares = draw(st.integers(0, 3))
    total = n_nodes + n_admins + spares
    prefix = draw(st.integers(16, min(28, 32 - (total + 2).bit_length())))
    second = draw(st.integers(1, 90))
    net = ipaddress.ip_network(f"10.{second}.0.0/{prefix}")
    hosts = list(itertools.islice(net.hosts(), 4 * total))
    fixed = iter(draw(st.permutations(hosts)))
    wg_port = draw(st.sampled_from([51820, 443, 4500, 51999]))
    nodes = []
    for i in range(n_nodes):
        node = {"name": f"node-{i}", "role": "control-plane" if i == hub_at else "worker",
                "os": draw(st.sampled_from(["debian-12", "ubuntu-24.04", "rocky-9"]))}
        if public[i]:
            port = draw(st.sampled_from([None, None, 51820, 51900, 8443]))
            node["endpoint"] = next(addresses) + (f":{port}" if port else "")
            if draw(st.booleans()):
                node["expose"] = draw(st.lists(st.sampled_from(["443/tcp", "80/tcp", "30000-30100/tcp", "3478/udp", "25565/tcp"]),
                                               unique=True, max_size=3))
        if draw(st.integers(0, 3)) == 0:
            node["vpn_ip"] = str(next(fixed))
        nodes.append(node)
    admins = [{"name": f"laptop-{i}"} | ({"vpn_ip": str(next(fixed))} if draw(st.booleans()) else {}) for i in range(n_admins)]
    behind_nat = n_admins + sum(not p for p in public)
    keepalive = 0 if keepalive_zero else draw(st.integers(1, 120))
    spec = {"name": "prop", "vpn": {"cidr": str(net), "port": wg_port, "underlay_mtu": draw(st.integers(1280, 9000)),
                                    "keepalive": keepalive, "spares": spares},
            "nodes": nodes, "admins": admins}
    return yaml.safe_dump(spec), behind_nat


_counter = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cluster_specs())
def test_every_valid_generated_spec_verifies_clean(case, base_bundle):
    text, _ = case
    workdir = base_bundle.parent
    cluster = cluster_of(text, workdir, base_bundle, f"gen-{next(_counter)}.yaml")
    report = verify(cluster)
    assert report.ok, text + "\n" + details(report)
    n = len(cluster.members)
    assert report.reachable == report.pairs == n * (n - 1)
    assert set(report.hops) <= {1, 2}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cluster_specs(keepalive_zero=True))
def test_keepalive_zero_is_found_for_every_member_behind_nat(case, base_bundle):
    text, behind_nat = case
    cluster = cluster_of(text, base_bundle.parent, base_bundle, f"gen-{next(_counter)}.yaml")
    report = verify(cluster)
    nat = {m.name for m in cluster.members if m.behind_nat}
    assert len(nat) == behind_nat
    assert {f.where for f in report.findings if f.kind == "nat-keepalive"} == nat
    assert kinds(report) <= {"nat-keepalive"}


def _mutations(cluster, draw):
    """One random break in one random member's files."""
    victim = draw(st.sampled_from(cluster.members))
    conf = victim.wg_conf
    choice = draw(st.sampled_from(["drop-peer", "allowed", "forward", "keepalive", "mtu", "open-port", "endpoint"]))
    if choice == "drop-peer":
        parts = conf.split("\n[Peer]")
        if len(parts) > 1:
            k = draw(st.integers(1, len(parts) - 1))
            conf = "\n[Peer]".join(parts[:k] + parts[k + 1:])
        return cluster.with_member(victim.name, wg_conf=conf)
    if choice == "allowed":
        lines = [i for i, line in enumerate(conf.splitlines()) if line.startswith("AllowedIPs")]
        if lines:
            rows = conf.splitlines()
            net = ipaddress.ip_network(cluster.vpn_cidr)
            rows[draw(st.sampled_from(lines))] = f"AllowedIPs = {net.network_address + draw(st.integers(1, 20))}/{draw(st.sampled_from([32, 30, net.prefixlen]))}"
            conf = "\n".join(rows) + "\n"
        return cluster.with_member(victim.name, wg_conf=conf)
    if choice == "forward":
        return cluster.with_member(victim.name, sysctl="net.ipv4.ip_forward = 0\n")
    if choice == "keepalive":
        return cluster.with_member(victim.name, wg_conf=re.sub(r"PersistentKeepalive = \d+\n", "", conf))
    if choice == "mtu":
        return cluster.with_member(victim.name, wg_conf=re.sub(r"MTU = \d+", f"MTU = {draw(st.integers(1200, 1500))}", conf))
    if choice == "endpoint":
        return cluster.with_member(victim.name, wg_conf=re.sub(r"Endpoint = [^\n]+", "Endpoint = 203.0.113.250:51820", conf))
    if victim.firewall is None:
        return cluster
    port = draw(st.sampled_from([22, 6443, 10250, 30080]))
    return cluster.with_member(victim.name, firewall=insert_before_final_drop(victim.firewall, f"tcp dport {port} accept"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cluster_specs(), data=st.data())
def test_fast_pair_loop_agrees_with_the_general_walk(case, data, base_bundle):
    text, _ = case
    cluster = cluster_of(text, base_bundle.parent, base_bundle, f"gen-{next(_counter)}.yaml")
    broken = _mutations(cluster, data.draw)
    fast, slow = verify(broken, keep_matrix=True), verify(broken, keep_matrix=True, fast=False)
    assert [(f.kind, f.where, f.detail, f.count) for f in fast.findings] == \
           [(f.kind, f.where, f.detail, f.count) for f in slow.findings]
    assert fast.matrix == slow.matrix and fast.hops == slow.hops and fast.reachable == slow.reachable


# --------------------------------------------------------------------------- the parsers underneath


def test_nft_model_reads_the_rendered_ruleset(example):
    rs = parse_ruleset(example.member("hub").firewall)
    assert not rs.problems
    public = ipaddress.IPv4Address("192.0.2.9")
    me = ipaddress.IPv4Address("203.0.113.10")
    assert rs.verdict("input", Packet("eth0", None, public, me, "udp", 51820))
    for port in (22, 6443, 2379, 10250, 30080):
        assert not rs.verdict("input", Packet("eth0", None, public, me, "tcp", port))
        assert rs.verdict("input", Packet("wg0", None, ipaddress.IPv4Address("10.88.0.2"), me, "tcp", port))
    assert rs.verdict("input", Packet("eth0", None, public, me, "tcp", 22, ct_state="established"))
    pod = ipaddress.IPv4Address("10.244.1.5")
    assert not rs.verdict("forward", Packet("cni0", "eth0", pod, ipaddress.IPv4Address("169.254.169.254"), "tcp", 80))
    assert rs.verdict("forward", Packet("cni0", "eth0", pod, public, "tcp", 80))
    assert not rs.verdict("forward", Packet("eth0", "cni0", public, pod, "tcp", 8080, ct_status=frozenset({"dnat"}), orig_dport=30080))
    # add/insert rule commands after the table, as a hand edit would write them
    edited = parse_ruleset(example.member("hub").firewall + "\ninsert rule inet wgkube input tcp dport { 22, 6443 } accept\n")
    assert not edited.problems
    assert edited.verdict("input", Packet("eth0", None, public, me, "tcp", 6443))
    assert parse_ruleset("table inet t {\n chain c {\n  frobnicate\n }\n}\n").problems


def test_wg_quick_parser_and_routes(example):
    cfg = parse_wg_quick(example.member("worker-1").wg_conf)
    assert not cfg.problems
    assert str(cfg.address4) == "10.88.0.2/24" and cfg.listen_port == 51820 and cfg.mtu == 1420
    assert [p.label for p in cfg.peers] == ["hub"] and cfg.peers[0].endpoint_host_port == ("203.0.113.10", 51820)
    assert wg_quick_routes(cfg) == []          # the /24 is the interface's own prefix
    extra = parse_wg_quick(example.member("worker-1").wg_conf.replace("AllowedIPs = 10.88.0.0/24", "AllowedIPs = 10.88.0.0/24, 10.99.0.0/16"))
    assert [str(n) for n in wg_quick_routes(extra)] == ["10.99.0.0/16"]


# --------------------------------------------------------------------------- lab layout (pure)


def test_lab_spreads_nat_members_over_two_gateways(tmp_path):
    cluster = cluster_of((SPECS / "lab6.yaml").read_text(), tmp_path)
    topo = lab_net.plan_topology(cluster, "wgkl1")
    assert [n.members for n in topo.nats] == [["home-1", "office-1"], ["home-2", "laptop"]]
    assert {s.name: str(s.address) for s in topo.sites if s.public} == {
        "hub": "203.0.113.10", "worker-1": "198.51.100.21", "worker-2": "198.51.100.22"}
    assert len({n.wan for n in topo.nats}) == 2 and all(n.wan not in {s.address for s in topo.sites} for n in topo.nats)
    assert [s.name for s in topo.sites if s.pod_ns] == ["hub", "worker-1", "worker-2", "home-1", "home-2", "office-1"]
    assert len(set(topo.namespaces())) == len(topo.namespaces()) == 1 + 2 + 7 + 6
    assert all(ns.startswith("wgkl1-") for ns in topo.namespaces())


def test_lab_maps_endpoint_host_names_and_refuses_ipv6(tmp_path):
    text = EXAMPLE.read_text().replace("endpoint: 198.51.100.20", "endpoint: worker-1-public")
    cluster = cluster_of(text, tmp_path)
    topo = lab_net.plan_topology(cluster, "wgkl2")
    addr = topo.hosts["worker-1-public"]
    assert topo.site("worker-1").address == addr and addr in ipaddress.ip_network("198.51.100.0/24")
    assert f"{addr} worker-1-public" in lab_net.hosts_file(topo)
    text6 = EXAMPLE.read_text().replace("endpoint: 198.51.100.20", "endpoint: '[2001:db8::20]:51820'")
    with pytest.raises(UserError, match="IPv4 underlays only"):
        lab_net.plan_topology(cluster_of(text6, tmp_path, name="v6.yaml"), "wgkl3")
