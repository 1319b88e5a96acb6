"""Issue 11, item 11: the VPN side by role, in the rendered rulesets and in `wgkube verify`.

Nodes reach each other's cluster ports; an admin reaches the API on the hub and SSH, nothing else;
nothing opens a connection to an admin; forwarding only between the VPN and the pod interfaces;
SYNs forwarded into the tunnel get their MSS clamped. `tests/test_lab.py` checks the same promises
with real packets (an admin's etcd/kubelet probes time out, a node's answer)."""
from __future__ import annotations

import ipaddress
import re

from conftest import HUB_EXAMPLE as EXAMPLE, render_spec
from generator.artifacts.cloudinit import extract_files
from generator.facts import POD_INTERFACES
from generator.proof.read import cluster as cluster_read
from generator.proof.read.nftables import Packet, parse_ruleset
from generator.proof.verify import verify

FW = "/etc/wgkube/firewall.nft"


def fw(out, node) -> str:
    return extract_files((out / "nodes" / node / "user-data").read_bytes())[FW][0].decode()


def ip(a: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(a)


def addresses(out) -> dict[str, str]:
    import json
    return {m["name"]: m["vpn_ip"] for m in json.loads((out / "plan.json").read_text())["members"]}


def test_hub_enforces_roles_on_input_and_relay(hub_example_out):
    rs = parse_ruleset(fw(hub_example_out, "hub"))
    a = addresses(hub_example_out)
    laptop, hub, w1, w2 = ip(a["laptop"]), ip(a["hub"]), ip(a["worker-1"]), ip(a["homelab-1"])

    def inp(src, port, proto="tcp"):
        return rs.verdict("input", Packet("wg0", None, src, hub, proto, port, 40000))

    def fwd(src, dst, port, proto="tcp", oif="wg0"):
        return rs.verdict("forward", Packet("wg0", oif, src, dst, proto, port, 40000))

    assert inp(laptop, 6443) and inp(laptop, 22) and inp(laptop, None, "icmp")
    for port in (2379, 2380, 10250, 10257, 10259, 30080):
        assert not inp(laptop, port), f"admin reaches the hub's {port}"
        assert inp(w1, port), f"a node cannot reach the hub's {port}"
    assert fwd(laptop, w1, 22) and fwd(laptop, w1, None, "icmp")
    for port in (10250, 6443, 30080):
        assert not fwd(laptop, w1, port), f"the hub relays admin traffic to a worker's {port}"
        assert fwd(w1, w2, port), f"the hub does not relay node traffic on {port}"
    # Nothing (a node, or a pod masqueraded behind it) opens a connection to an admin; pings may.
    assert not fwd(w1, laptop, 22) and not fwd(w1, laptop, 8080) and fwd(w1, laptop, None, "icmp")
    pod = ip("10.244.0.7")
    assert not rs.verdict("forward", Packet(POD_INTERFACES[0], "wg0", pod, laptop, "tcp", 22, 40000))
    assert rs.verdict("forward", Packet(POD_INTERFACES[0], "wg0", pod, w1, "tcp", 10250, 40000))


def test_forwarding_only_between_vpn_and_pods(hub_example_out):
    for node in ("hub", "worker-1"):
        rs = parse_ruleset(fw(hub_example_out, node))
        a = addresses(hub_example_out)
        w = ip(a["worker-1"])
        # The VPN is no way out to the internet or the node's LAN.
        assert not rs.verdict("forward", Packet("wg0", "eth0", w, ip("198.51.100.99"), "tcp", 443, 40000)), node
        assert rs.verdict("forward", Packet("wg0", POD_INTERFACES[0], w, ip("10.244.1.5"), "tcp", 8080, 40000)), node
        # Pods still reach the internet (egress).
        assert rs.verdict("forward", Packet(POD_INTERFACES[0], "eth0", ip("10.244.1.5"), ip("198.51.100.99"), "tcp", 443, 40000))


def test_workers_rulesets_do_not_name_admins(hub_example_out):
    """Admin traffic always passes the hub: workers' files stay the same when admins change."""
    a = addresses(hub_example_out)
    for node in ("worker-1", "homelab-1"):
        assert a["laptop"] not in fw(hub_example_out, node)
    assert a["laptop"] in fw(hub_example_out, "hub")


def test_mss_is_clamped_on_syns_into_the_tunnel_before_any_verdict(hub_example_out):
    for node in ("hub", "worker-1"):
        text = fw(hub_example_out, node)
        forward = text.split("chain forward {")[1]
        rules = [line.strip() for line in forward.splitlines() if line.strip() and not line.strip().startswith("type ")]
        assert rules[0].startswith('oifname "wg0" tcp flags syn tcp option maxseg size set rt mtu'), rules[0]


def test_verify_finds_an_admin_that_reaches_etcd_and_a_node_that_cannot_reach_a_kubelet(hub_example_out):
    c = cluster_read.from_out_dir(hub_example_out)
    assert "role-port" not in verify(c).kinds()
    hub_fw = c.member("hub").firewall
    # The rules before issue 11: everything from wg0 accepted, everything from wg0 relayed.
    old = re.sub(r'^.*ip saddr \{ [0-9. ,]+ \}.*\n', "", hub_fw, flags=re.M)
    old = re.sub(r'^.*ip daddr \{ [0-9. ,]+ \}.*\n', "", old, flags=re.M)
    report = verify(c.with_member("hub", firewall=old))
    details = [f.detail for f in report.findings if f.kind == "role-port"]
    assert any("reaches hub on tcp 2379, 2380, 10250" in d for d in details), details
    assert any("opens a connection to the admin laptop" in d for d in details), details
    worker_fw = c.member("worker-1").firewall
    closed = worker_fw.replace('iifname "wg0" accept comment "nodes', 'iifname "wg0" tcp dport 10250 drop\n        iifname "wg0" accept comment "nodes')
    report = verify(c.with_member("worker-1", firewall=closed))
    details = [f.detail for f in report.findings if f.kind == "role-port"]
    assert any("cannot reach worker-1 on tcp 10250" in d for d in details), details


def test_verify_stays_fast_with_admin_rules(tmp_path):
    """The hub's admin rules split addresses into classes; pings still take the fast path."""
    text = EXAMPLE.read_text()
    out = render_spec(text, tmp_path, "--no-iso", "--no-packer")
    report = verify(cluster_read.from_out_dir(out))
    assert report.ok and report.reachable == report.pairs
