"""`wgkube verify` with several control planes (issue 14 item 5, docs/verify-ha.md).

Each control plane declared down in turn (its WireGuard peer gone everywhere, catch-alls moved
the way the failover loop moves them): every surviving control plane keeps etcd (tcp 2379 and
2380 both ways) with a majority of all control planes, every node and admin reaches a live API
(tcp 6443). Rendered ha3 (mesh) and ha3-hub (hub and spoke) verify clean; files broken on
purpose are caught; members whose loss splits the control planes are warned about.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import HUB_EXAMPLE, SPECS, render_spec, wgkube
from generator.pipeline import prepare
from generator.proof.read import cluster as rendered
from generator.proof.verify import verify

WG = "/etc/wireguard/wg0.conf"
FW = "/etc/wgkube/firewall.nft"
KIND = "control-plane-down"
API_RULE = re.compile(r'^.*"admins: the API of the other control planes"\n', re.M)


def details(report) -> str:
    return "\n".join(f"{f.kind} {f.where}: {f.detail}" for f in report.findings)


def kinds(report) -> set[str]:
    return {f.kind for f in report.findings}


def cluster_of(tmp: Path, spec: dict | str, name: str = "cluster.yaml") -> rendered.Cluster:
    path = tmp / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return rendered.from_prepared(prepare(path))


def drop_peer(conf: str, label: str) -> str:
    blocks = conf.split("\n[Peer]\n")
    kept = [b for b in blocks if not b.startswith(f"# {label}\n")]
    assert len(kept) == len(blocks) - 1, label
    return "\n[Peer]\n".join(kept)


def in_chain(ruleset: str, chain: str, rule: str) -> str:
    """Put rule first in a chain (right after its `type ... hook ...` line)."""
    m = re.search(rf"chain {chain} {{\n\s*type [^\n]+\n", ruleset)
    assert m, chain
    return ruleset[:m.end()] + f"        {rule}\n" + ruleset[m.end():]


@pytest.fixture(scope="module")
def ha3(tmp_path_factory) -> rendered.Cluster:
    return cluster_of(tmp_path_factory.mktemp("ha3"), (SPECS / "ha3.yaml").read_text())


@pytest.fixture(scope="module")
def ha3_hub(tmp_path_factory) -> rendered.Cluster:
    return cluster_of(tmp_path_factory.mktemp("ha3-hub"), (SPECS / "ha3-hub.yaml").read_text())


def nat_cps(relays: list[str]) -> dict:
    """Two control planes behind NAT that reach each other only through a relay."""
    return {"name": "nat-cps", "vpn": {"cidr": "10.79.0.0/24", "topology": "mesh", "relays": relays},
            "nodes": [{"name": "cp-pub", "role": "control-plane", "endpoint": "203.0.113.10"},
                      {"name": "cp-nat-1", "role": "control-plane"},
                      {"name": "cp-nat-2", "role": "control-plane"},
                      {"name": "w-pub", "endpoint": "203.0.113.30"},
                      {"name": "w-nat"}],
            "admins": [{"name": "laptop"}]}


# --------------------------------------------------------------------------- the rendered specs verify clean


def test_ha3_mesh_survives_any_one_control_plane(ha3):
    report = verify(ha3)
    assert report.ok, details(report)
    cps = report.control_planes
    assert cps.names == ["cp-fra", "cp-ams", "cp-home"] and cps.quorum == 2 and cps.warnings == []
    assert [(d.member, d.majority, d.api, d.api_total, d.problems) for d in cps.down] == [
        (name, True, 5, 5, []) for name in ("cp-fra", "cp-ams", "cp-home")]
    assert all(set(d.etcd.values()) == {2} for d in cps.down)
    # cp-fra is the first relay: the three members behind NAT move their catch-all to cp-ams.
    assert dict(cps.down[0].moved) == {"cp-ams": 3}


def test_ha3_hub_verifies_clean_and_says_the_hub_is_still_the_relay(ha3_hub):
    report = verify(ha3_hub)
    assert report.ok, details(report)
    cps = report.control_planes
    hub = next(d for d in cps.down if d.member == "cp-fra")
    assert hub.known and not hub.majority and hub.api == 2       # only the other control planes keep their own API
    assert all(d.majority and not d.problems for d in cps.down if d.member != "cp-fra")
    (warning,) = cps.warnings
    assert "cp-fra is still the VPN relay: losing it cuts every member off from every other, whatever the control planes" in warning
    assert "etcd loses its majority" in warning


def test_rendered_folders_verify_clean_through_the_cli(tmp_path):
    for spec, name in (("ha3.yaml", "trio"), ("ha3-hub.yaml", "trio-hub")):
        (tmp_path / name).mkdir()
        out = render_spec(SPECS / spec, tmp_path / name, "--no-iso", "--no-packer")
        proc = wgkube("verify", str(out))
        flat = " ".join(proc.stdout.split())
        assert "control planes: cp-fra, cp-ams, cp-home; etcd needs a majority (2 of 3)" in flat
        assert "control plane cp-ams down: etcd keeps its majority (cp-fra 2/3, cp-home 2/3); 5 of 5 nodes and admins reach a live API" in flat
        data = json.loads(wgkube("verify", str(out), "--json").stdout)
        assert data["ok"] is True and data["control_planes"]["quorum"] == 2
        if name == "trio":
            assert "any one control plane can fail" in flat and "warning" not in flat
        else:
            assert "warning: hub and spoke: cp-fra is still the VPN relay" in flat and "any one control plane can fail" not in flat


def test_one_control_plane_is_named_a_single_point_of_failure_and_json_is_unchanged(tmp_path):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(HUB_EXAMPLE.read_text())
    proc = wgkube("verify", str(spec))
    assert "warning: hub is the only control plane" in " ".join(proc.stdout.split())
    data = json.loads(wgkube("verify", str(spec), "--json").stdout)
    assert data["ok"] is True and "control_planes" not in data


# --------------------------------------------------------------------------- admins reach every control plane's API


def test_admin_reaches_the_api_on_every_control_plane_and_nothing_more(ha3, ha3_hub):
    for c, relay in ((ha3, "cp-fra"), (ha3_hub, "cp-fra")):
        fw = c.member(relay).firewall
        broken = API_RULE.sub("", fw)
        assert broken != fw
        report = verify(c.with_member(relay, firewall=broken))
        found = [f.detail for f in report.findings if f.kind == "role-port" and f.where == "laptop"]
        assert any("the admin cannot reach cp-home on tcp 6443" in d for d in found), details(report)
    # An admin reaching etcd on a control plane other than the hub is still found.
    hub_fw = ha3_hub.member("cp-fra").firewall
    wide = hub_fw.replace("tcp dport 6443 accept comment \"admins: the API of the other control planes\"",
                          "tcp dport { 2379, 6443 } accept comment \"admins: the API of the other control planes\"")
    assert wide != hub_fw
    report = verify(ha3_hub.with_member("cp-fra", firewall=wide))
    assert any("the admin reaches cp-ams on tcp 2379" in f.detail for f in report.findings if f.kind == "role-port"), details(report)


# --------------------------------------------------------------------------- renders broken on purpose


def test_a_dropped_control_plane_peer_is_caught(ha3):
    # cp-home (behind NAT) forgets cp-ams: with cp-fra down it keeps etcd with itself only.
    broken = ha3.with_member("cp-home", wg_conf=drop_peer(ha3.member("cp-home").wg_conf, "cp-ams"))
    report = verify(broken)
    assert KIND in kinds(report), details(report)
    f = next(f for f in report.findings if f.kind == KIND and f.where == "cp-fra down: cp-home")
    assert "keeps etcd (tcp 2379, 2380 both ways) with 1 of 3 control planes" in f.detail and "a majority is 2" in f.detail


def test_etcd_blocked_between_control_planes_is_caught(ha3):
    home = ha3.member("cp-home")
    broken = ha3.with_member("cp-home", firewall=in_chain(home.firewall, "input", "tcp dport 2380 drop"))
    report = verify(broken)
    text = details(report)
    assert "control-plane-down cp-fra down: cp-home: keeps etcd" in text and "cp-home's input chain drops it" in text
    assert "control-plane-down cp-fra down: cp-ams: keeps etcd" in text


def test_only_the_failover_path_is_broken_and_only_this_check_sees_it(tmp_path):
    """Two control planes behind NAT go through cp-pub; the second relay w-pub drops etcd peer
    traffic. Pings (pair walk, relay down) pass; with cp-pub down etcd goes through w-pub."""
    c = cluster_of(tmp_path, nat_cps(["cp-pub", "w-pub"]))
    assert verify(c).ok, details(verify(c))
    w = c.member("w-pub")
    broken = c.with_member("w-pub", firewall=in_chain(w.firewall, "forward", "tcp dport 2380 drop"))
    report = verify(broken)
    assert kinds(report) == {KIND}, details(report)
    assert {f.where for f in report.findings} == {"cp-pub down: cp-nat-1", "cp-pub down: cp-nat-2"}
    assert "w-pub's forward chain drops it" in details(report)


def test_cli_exit_code_on_a_broken_rendered_folder(tmp_path):
    out = render_spec(SPECS / "ha3.yaml", tmp_path, "--no-iso", "--no-packer")
    c = rendered.from_out_dir(out)
    rendered.replace_node_file(out, "cp-home", WG, drop_peer(c.member("cp-home").wg_conf, "cp-ams"))
    proc = wgkube("verify", str(out), check=False)
    assert proc.returncode == 1 and KIND in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- who could split the control planes


def test_the_only_relay_of_control_planes_behind_nat_is_a_warning(tmp_path):
    report = verify(cluster_of(tmp_path, nat_cps(["cp-pub"])))
    assert report.ok, details(report)
    warnings = report.control_planes.warnings
    assert any(w.startswith("losing cp-pub (a control plane, the only relay) leaves no majority of the control planes "
                            "(2 of 3) able to reach each other") for w in warnings), warnings


def test_a_worker_relay_between_control_planes(tmp_path):
    # w-pub first: the NAT control planes reach each other through it; failover to cp-pub keeps etcd.
    report = verify(cluster_of(tmp_path, nat_cps(["w-pub", "cp-pub"])))
    assert report.ok, details(report)
    down = {d.member: d for d in report.control_planes.down}
    assert set(down) == {"cp-pub", "cp-nat-1", "cp-nat-2", "w-pub"} and not down["w-pub"].control_plane
    assert down["w-pub"].majority and report.control_planes.warnings == []
    # w-pub alone: losing it leaves cp-pub linked with each, a majority (2 of 3) all the same.
    report = verify(cluster_of(tmp_path, nat_cps(["w-pub"]), "one.yaml"))
    assert report.ok and report.control_planes.warnings == [], details(report)
    # Five control planes, four behind NAT, one worker relay: losing it leaves pairs only (2 of 5).
    spec = nat_cps(["w-pub"])
    spec["nodes"][3:3] = [{"name": "cp-nat-3", "role": "control-plane"}, {"name": "cp-nat-4", "role": "control-plane"}]
    report = verify(cluster_of(tmp_path, spec, "five.yaml"))
    assert report.ok, details(report)
    assert any(w.startswith("losing w-pub (a relay, the only relay) leaves no majority of the control planes (3 of 5)")
               for w in report.control_planes.warnings), report.control_planes.warnings


# --------------------------------------------------------------------------- the lazy model agrees with a rebuilt one


@pytest.mark.parametrize("which", ["ha3", "ha3-hub", "nat-cps", "worker-relay"])
def test_lazy_member_down_agrees_with_the_rebuilt_simulation(which, tmp_path):
    """controlplanes.Gone patches the base tables entry by entry; relays.without rebuilds every
    table without the member (what relay down uses). Every path must come out the same."""
    from collections import Counter
    from generator.proof.read.failover import parse_failover
    from generator.proof.verify.controlplanes import Gone, path
    from generator.proof.verify.relays import without
    from generator.proof.verify.simulate import Simulation
    spec = {"ha3": (SPECS / "ha3.yaml").read_text(), "ha3-hub": (SPECS / "ha3-hub.yaml").read_text(),
            "nat-cps": nat_cps(["cp-pub", "w-pub"]), "worker-relay": nat_cps(["w-pub", "cp-pub"])}[which]
    c = cluster_of(tmp_path, spec)
    base = Simulation(c)
    confs = {i: parse_failover(m.failover) for i, m in enumerate(base.m) if m.failover}
    for x in range(base.n):
        keep = [i for i in range(base.n) if i != x]
        moved_full, moved_lazy = Counter(), Counter()
        full = Gone(c, without(c, base, x, keep, confs, moved_full), None, {})
        lazy = Gone(c, base, x, confs, moved_lazy)
        assert moved_full == moved_lazy
        for a, s in enumerate(keep):
            for b, d in enumerate(keep):
                if s != d:
                    hops_full, _ = path(full, a, b)
                    hops_lazy, _ = path(lazy, s, d)
                    assert (None if hops_full is None else [keep[h] for h in hops_full]) == hops_lazy, (
                        base.names[x], base.names[s], base.names[d])
