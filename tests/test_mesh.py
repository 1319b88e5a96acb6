"""Issue 13: no single point of failure in the VPN. The mesh topology, its relays and failover.

Unit level (no root): the spec fields and their errors, the topology model, who peers with whom
and with which AllowedIPs/keepalives/ports, the firewall's relay rules, the failover files, what
`wgkube check` and `wgkube verify` say (relayed pairs, each relay down, fewer than two relays),
files broken on purpose, and day two (which members change when a public or a NAT'ed member is
added or removed, spare slots, the per-member live updates, the rekey order).
Marker `tools`: the failover loop through shellcheck and `sh -n`, its unit through
systemd-analyze, the live update scripts through shellcheck. The real packets are in test_lab.py.
"""
from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLE, need, wgkube
from generator.artifacts.cloudinit import extract_files
from generator.pipeline import prepare
from generator.proof.read import cluster as rendered
from generator.proof.read.wgconf import parse_wg_quick
from generator.proof.verify import verify

BASE = {
    "name": "m",
    "vpn": {"cidr": "10.66.0.0/24", "topology": "mesh"},
    "nodes": [
        {"name": "cp", "role": "control-plane", "endpoint": "203.0.113.10"},
        {"name": "pub-1", "endpoint": "198.51.100.21"},
        {"name": "pub-2", "endpoint": "198.51.100.22:51900"},
        {"name": "nat-1"},
        {"name": "nat-2"},
    ],
    "admins": [{"name": "laptop"}],
}
FAILOVER_FILES = ("/etc/wgkube/failover.conf", "/usr/local/sbin/wgkube-failover",
                  "/etc/systemd/system/wgkube-failover.service",
                  "/etc/systemd/system/wg-quick@wg0.service.d/20-wgkube-failover.conf")


def doc(**vpn) -> dict:
    d = copy.deepcopy(BASE)
    d["vpn"].update(vpn)
    return d


def write(tmp: Path, data: dict | str, name: str = "cluster.yaml") -> Path:
    path = tmp / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def plan_of(tmp: Path, data: dict):
    return prepare(write(tmp, data)).plan


def render(tmp: Path, data: dict) -> Path:
    wgkube("render", str(write(tmp, data)), "-o", str(tmp / "out"), "-q", "--no-iso", "--no-packer")
    return tmp / "out" / data["name"]


def node_files(out: Path, node: str) -> dict[str, str]:
    return {k: v[0].decode() for k, v in extract_files((out / "nodes" / node / "user-data").read_bytes()).items()}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- spec and model


def test_init_writes_a_mesh_with_two_relays(tmp_path):
    wgkube("init", str(tmp_path / "c.yaml"))
    text = (tmp_path / "c.yaml").read_text()
    assert re.search(r"^  topology: mesh\b", text, re.M)
    plan = prepare(tmp_path / "c.yaml").plan
    assert plan.topology == "mesh" and plan.mesh.relays == ("hub", "worker-1")
    assert plan.mesh.relayed_pairs() == [("homelab-1", "laptop")]
    assert (tmp_path / "c.yaml").read_bytes() == EXAMPLE.read_bytes()


def test_default_relays_are_public_control_planes_then_public_workers_until_two(tmp_path):
    assert plan_of(tmp_path, doc()).mesh.relays == ("cp", "pub-1")
    d = doc()
    d["nodes"][0]["role"] = "control-plane"
    d["nodes"] = [d["nodes"][3], d["nodes"][2], d["nodes"][1], d["nodes"][0], d["nodes"][4]]  # spec order decides
    assert plan_of(tmp_path, d).mesh.relays == ("cp", "pub-2")
    assert plan_of(tmp_path, doc(relays=["pub-2", "cp", "pub-1"])).mesh.relays == ("pub-2", "cp", "pub-1")


def test_a_spec_without_topology_is_a_hub(tmp_path):
    d = doc()
    del d["vpn"]["topology"]
    plan = plan_of(tmp_path, d)
    assert plan.topology == "hub" and plan.mesh is None


@pytest.mark.parametrize("vpn, message", [
    ({"relays": ["nat-1"]}, "relay 'nat-1' has no endpoint"),
    ({"relays": ["ghost"]}, "relay 'ghost' is not a node of the spec"),
    ({"relays": ["cp", "cp"]}, "relay 'cp' is listed twice"),
    ({"relays": []}, "no relay: the 3 members behind NAT could never reach each other"),
    ({"topology": "hub", "relays": ["cp"]}, "relays only apply to `topology: mesh`"),
    ({"topology": "star"}, "vpn.topology"),
    ({"failover": {"interval": 0}}, "vpn.failover.interval"),
    ({"failover": {"retries": 3}}, "unknown field 'retries'"),
])
def test_bad_mesh_fields_are_named_with_their_line(tmp_path, vpn, message):
    proc = wgkube("check", str(write(tmp_path, doc(**vpn))), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and re.search(r"cluster\.yaml:\d+: vpn\.", proc.stderr), proc.stderr


def test_one_relay_is_allowed_with_a_warning_from_check_and_verify(tmp_path):
    spec = write(tmp_path, doc(relays=["cp"]))
    check = wgkube("check", str(spec))
    assert "warning: only one relay (cp): if it is lost, the 3 members behind NAT" in " ".join((check.stdout + check.stderr).split())
    ver = wgkube("verify", str(spec))
    flat = " ".join((ver.stdout + ver.stderr).split())
    assert "warning: only 1 relay(s): if cp is lost, the 3 members behind NAT cannot reach each other (3 pairs)" in flat
    assert "relay cp down: 0 of 6 pairs among the members behind NAT" in flat      # every NAT <-> NAT pair is cut
    assert "every relay can fail" not in flat


# --------------------------------------------------------------------------- what each member gets


def test_mesh_peers_allowed_ips_keepalives_and_ports(tmp_path):
    out = render(tmp_path, doc())
    conf = {n: parse_wg_quick(node_files(out, n)["/etc/wireguard/wg0.conf"]) for n in ("cp", "pub-1", "pub-2", "nat-1", "nat-2")}
    conf["laptop"] = parse_wg_quick((out / "admins/laptop/wg0.conf").read_text())
    peers = {n: {p.label: p for p in c.peers} for n, c in conf.items()}
    public, nat = ["cp", "pub-1", "pub-2"], ["nat-1", "nat-2", "laptop"]
    for n in public:
        assert sorted(peers[n]) == sorted(m for m in public + nat if m != n)
        for m, p in peers[n].items():
            assert [str(a) for a in p.allowed_ips] == [f"{conf[m].address4.ip}/32"]
            assert (p.keepalive == 25) == (m in nat)
            assert (p.endpoint is not None) == (m in public)
    assert conf["cp"].listen_port == 51820 and conf["pub-2"].listen_port == 51900
    for n in nat:
        assert conf[n].listen_port is None          # listens on nothing the firewall lets in
        assert sorted(peers[n]) == sorted(public)    # never another member behind NAT
        for m, p in peers[n].items():
            want = [f"{conf[m].address4.ip}/32"] + (["10.66.0.0/24"] if m == "cp" else [])
            assert [str(a) for a in p.allowed_ips] == want and p.keepalive == 25 and p.endpoint


def test_relays_forward_between_vpn_peers_and_nobody_else_does(tmp_path):
    out = render(tmp_path, doc())
    accept = 'iifname "wg0" oifname "wg0" ip saddr 10.66.0.0/24 ip daddr 10.66.0.0/24 counter accept'
    drop = 'iifname "wg0" oifname "wg0" counter drop'
    for n in ("cp", "pub-1"):
        fw = node_files(out, n)["/etc/wgkube/firewall.nft"]
        assert accept in fw and fw.index(accept) < fw.index(drop)
    for n in ("pub-2", "nat-1", "nat-2"):
        fw = node_files(out, n)["/etc/wgkube/firewall.nft"]
        assert accept not in fw and drop in fw
    # Public members open the one WireGuard port; members behind NAT open nothing.
    assert "udp dport 51900 counter accept" in node_files(out, "pub-2")["/etc/wgkube/firewall.nft"]
    assert not re.search(r"udp dport \d+ counter accept", node_files(out, "nat-1")["/etc/wgkube/firewall.nft"])


def test_failover_files_only_behind_nat_and_the_same_everywhere(tmp_path):
    out = render(tmp_path, doc(failover={"interval": 3, "misses": 2}))
    files = {n: node_files(out, n) for n in ("cp", "pub-1", "pub-2", "nat-1", "nat-2")}
    for n in ("cp", "pub-1", "pub-2"):
        assert not set(FAILOVER_FILES) & set(files[n])
    for path in FAILOVER_FILES:
        assert files["nat-1"][path] == files["nat-2"][path]
    conf = files["nat-1"]["/etc/wgkube/failover.conf"]
    assert "INTERVAL=3\n" in conf and "MISSES=2\n" in conf and "TIMEOUT=1\n" in conf and "RETURN_AFTER=10\n" in conf
    assert re.search(r'^RELAYS="cp,10\.66\.0\.1,\S+= pub-1,10\.66\.0\.2,\S+="$', conf, re.M), conf
    assert (out / "admins/laptop/failover.conf").read_text() == conf
    assert (out / "admins/laptop/wgkube-failover").read_text() == files["nat-1"]["/usr/local/sbin/wgkube-failover"]
    assert "Wants=wgkube-failover.service" in files["nat-1"]["/etc/systemd/system/wg-quick@wg0.service.d/20-wgkube-failover.conf"]


# --------------------------------------------------------------------------- verify


def test_verify_the_mesh_direct_relayed_and_each_relay_down(tmp_path):
    cluster = rendered.from_prepared(prepare(write(tmp_path, doc())))
    report = verify(cluster)
    assert report.ok, report.findings
    n = len(cluster.members)
    assert report.reachable == report.pairs == n * (n - 1)
    mesh = report.mesh
    assert mesh.relayed == {"cp": 6} and mesh.direct_pairs == n * (n - 1) - 6
    assert [(d.relay, d.reachable, d.pairs, dict(d.moved)) for d in mesh.down] == [
        ("cp", 12, 12, {"pub-1": 3}), ("pub-1", 12, 12, {})]
    for (s, d), cell in report.matrix.items():
        both_nat = {report.names[s], report.names[d]} <= {"nat-1", "nat-2", "laptop"}
        assert cell == ("via cp" if both_nat else "direct"), (report.names[s], report.names[d], cell)
    cli = wgkube("verify", str(tmp_path / "cluster.yaml"))
    flat = " ".join(cli.stdout.split())
    assert "6 relayed (both behind NAT): 6 via cp" in flat and "relay cp down: 12 of 12 pairs among the members behind NAT and the other relays reach (3 catch-alls to pub-1)" in flat


def _drop_peer(conf: str, label: str) -> str:
    blocks = conf.split("\n[Peer]\n")
    return "\n[Peer]\n".join(b for b in blocks if not b.startswith(f"# {label}\n"))


def test_verify_finds_what_breaks_the_mesh(tmp_path):
    c = rendered.from_prepared(prepare(write(tmp_path, doc())))
    # A public pair that lost its direct peer: pub-2 -> pub-1 has no /32 and nothing else covers it.
    broken = c.with_member("pub-2", wg_conf=_drop_peer(c.member("pub-2").wg_conf, "pub-1"))
    assert {"unreachable", "peering"} <= {f.kind for f in verify(broken).findings}
    # nat-1 sends pub-1's traffic to the relay instead of directly.
    conf = c.member("nat-1").wg_conf
    indirect = c.with_member("nat-1", wg_conf=_drop_peer(conf, "pub-1"))
    assert "indirect" in {f.kind for f in verify(indirect).findings}
    # The second relay does not forward: fine until the first relay dies.
    fw = c.member("pub-1").firewall.replace("ip daddr 10.66.0.0/24 counter accept", "ip daddr 10.66.0.0/24 counter drop")
    r = verify(c.with_member("pub-1", firewall=fw))
    assert {f.kind for f in r.findings} == {"relay-down"} and all(f.where.startswith("cp down") for f in r.findings)
    # A member behind NAT without the failover, or with another relay order.
    r = verify(c.with_member("nat-2", failover=None))
    assert {f.kind for f in r.findings} >= {"failover", "relay-down"}
    swapped = re.sub(r'RELAYS="(\S+) (\S+)"', r'RELAYS="\2 \1"', c.member("nat-2").failover)
    r = verify(c.with_member("nat-2", failover=swapped))
    assert any(f.kind == "failover" and "different relay orders" in f.detail for f in r.findings)
    # A non-relay that forwards nothing is right; a public member that forwards is not checked by
    # reachability (nobody routes through it) but the relay rule must not be on it: rendered test above.


# --------------------------------------------------------------------------- day two


def test_adding_a_member_behind_nat_changes_only_the_public_members(tmp_path):
    base = render(tmp_path, doc())
    before = tree(base.resolve())
    d = doc()
    d["nodes"].append({"name": "nat-3"})
    plan = wgkube("plan", str(write(tmp_path, d)), "-o", str(tmp_path / "out")).stdout
    after = tree(render(tmp_path, d).resolve())
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    owners = {k.split("/")[1] for k in changed if k.startswith(("nodes/", "wireguard/", "admins/", "peer-update/"))}
    owners = {o.removesuffix(".sh") for o in owners}
    assert owners == {"cp", "pub-1", "pub-2", "nat-3"}, sorted(changed)
    for n in ("cp", "pub-1", "pub-2"):
        assert re.search(rf"- {n}: its WireGuard peer list changes; apply it over the VPN .*\n\s+ssh ops@10\.66\.0\.\d+ sudo bash -s < \S+/peer-update/{n}\.sh", plan), plan
    assert "nat-1: its WireGuard" not in plan and "laptop: its WireGuard" not in plan


def test_with_spare_slots_in_every_public_member_a_new_nat_member_changes_nobody(tmp_path):
    base = render(tmp_path, doc(spares=2))
    before = tree(base.resolve())
    d = doc(spares=2)
    d["nodes"].append({"name": "nat-3"})
    plan = wgkube("plan", str(write(tmp_path, d)), "-o", str(tmp_path / "out")).stdout
    assert "by hand: nothing; no running member needs a change" in plan, plan
    after = tree(render(tmp_path, d).resolve())
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert {k for k in changed if not k.startswith(("nodes/nat-3/", "wireguard/nat-3/", "peer-update/nat-3"))} <= {"plan.json", "manifest.json"}


def test_adding_or_removing_a_public_member_changes_every_member(tmp_path):
    render(tmp_path, doc())
    d = doc()
    d["nodes"].append({"name": "pub-3", "endpoint": "198.51.100.23"})
    plan = wgkube("plan", str(write(tmp_path, d)), "-o", str(tmp_path / "out")).stdout
    for n in ("cp", "pub-1", "pub-2", "nat-1", "nat-2"):
        assert f"- {n}: its WireGuard peer list changes" in plan, plan
    assert "laptop: its WireGuard config changes; install" in plan
    render(tmp_path, d)
    d["nodes"] = [n for n in d["nodes"] if n["name"] != "pub-1"]
    plan = wgkube("plan", str(write(tmp_path, d)), "-o", str(tmp_path / "out")).stdout
    for n in ("cp", "pub-2", "pub-3", "nat-1", "nat-2"):
        assert f"- {n}: its WireGuard peer list changes" in plan, plan
    assert "dropped from every peer list" in plan and "kubectl delete node pub-1" in plan


def test_rekey_rollout_covers_the_mesh(tmp_path):
    render(tmp_path, doc())
    spec = str(tmp_path / "cluster.yaml")
    out = wgkube("plan", spec, "-o", str(tmp_path / "out"), "--rekey", "nat-1").stdout
    steps = re.findall(r"^\s+(\d+)\. (\S+?):? ", out, re.M)
    assert [s[1] for s in steps] == ["nat-1", "cp", "pub-1", "pub-2"], out   # behind NAT: the public members list it
    out = wgkube("plan", spec, "-o", str(tmp_path / "out"), "--rekey", "pub-1").stdout
    assert "moves to the next relay (failover)" in out
    steps = [s[1] for s in re.findall(r"^\s+(\d+)\. (admin [^\s:]+|\S+?):? ", out, re.M)]
    assert steps == ["pub-1", "cp", "pub-2", "nat-1", "nat-2", "admin laptop"], out
    out = wgkube("plan", spec, "-o", str(tmp_path / "out"), "--rekey", "laptop").stdout
    assert re.search(r"1\. cp: ssh .*\(from laptop while its old key still works\)", out) and "4. then locally on laptop" in out
    assert "peer-update/" in out and "peer list changes" not in out


# --------------------------------------------------------------------------- real validators


@pytest.mark.tools
def test_failover_loop_is_shellcheck_clean_posix_sh(tmp_path):
    shellcheck = need("shellcheck")
    out = render(tmp_path, doc())
    script = tmp_path / "wgkube-failover"
    script.write_text(node_files(out, "nat-1")["/usr/local/sbin/wgkube-failover"])
    proc = subprocess.run([shellcheck, "-s", "sh", "-S", "style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert script.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    for update in sorted((out / "peer-update").iterdir()):
        proc = subprocess.run([shellcheck, "-S", "style", str(update)], capture_output=True, text=True)
        assert proc.returncode == 0, (update.name, proc.stdout)


@pytest.mark.tools
def test_failover_unit_and_drop_in_pass_systemd_analyze(tmp_path):
    need("systemd-analyze")
    out = render(tmp_path, doc())
    files = node_files(out, "nat-1")
    script = tmp_path / "wgkube-failover"
    script.write_text(files["/usr/local/sbin/wgkube-failover"])
    script.chmod(0o755)
    unit = tmp_path / "wgkube-failover.service"
    unit.write_text(files["/etc/systemd/system/wgkube-failover.service"].replace("/usr/local/sbin/wgkube-failover", str(script)))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    # The drop-in, merged into wg-quick@wg0 the way systemd merges it (when wg-quick is installed).
    base = Path("/lib/systemd/system/wg-quick@.service")
    if base.is_file():
        merged = tmp_path / "wg-quick@wg0.service"
        merged.write_text(base.read_text() + "\n" + files["/etc/systemd/system/wg-quick@wg0.service.d/20-wgkube-failover.conf"])
        proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(merged)], capture_output=True, text=True)
        errors = [line for line in proc.stderr.splitlines() if "Unknown" in line or "Invalid" in line or "bad" in line.lower()]
        assert not errors, proc.stderr


# --------------------------------------------------------------------------- roles in a mesh (issue 11 x 13)


def test_mesh_rulesets_carry_the_admin_rules_on_every_node_and_verify_checks_them(tmp_path):
    """No hub in the path: every node holds the admin rules (input: API on the control plane and
    SSH; output: nothing opens a connection to an admin), relays also in their forward chain."""
    for status in (False, True):
        (tmp_path / str(status)).mkdir()
        out = render(tmp_path / str(status), {**doc(), "status_endpoint": status})
        for n in ("cp", "pub-1", "pub-2", "nat-1", "nat-2"):
            fw = node_files(out, n)["/etc/wgkube/firewall.nft"]
            # The API runs on the control plane only; 10280 (wgkube status) only when the spec serves it.
            ports = ("22, 6443" if n == "cp" else "22") + (", 10280" if status else "")
            laptop = parse_wg_quick((out / "admins/laptop/wg0.conf").read_text()).address4.ip
            assert f'ip saddr {{ {laptop} }} tcp dport {{ {ports} }} accept' in fw
        assert "role-port" not in {f.kind for f in verify(rendered.from_out_dir(out)).findings}
    laptop = parse_wg_quick((out / "admins/laptop/wg0.conf").read_text()).address4.ip
    for n in ("cp", "pub-1", "pub-2", "nat-1", "nat-2"):
        fw = node_files(out, n)["/etc/wgkube/firewall.nft"]
        assert f'oifname "wg0" ip daddr {{ {laptop} }} ct state new counter drop' in fw
    c = rendered.from_out_dir(out)
    assert "role-port" not in {f.kind for f in verify(c).findings}
    # A public worker whose output chain lets it open SSH to the laptop (directly, no hub between).
    fw = c.member("pub-2").firewall.replace("ct state new counter drop comment \"mesh: nothing opens", "ct state new counter accept comment \"mesh: nothing opens")
    found = [f for f in verify(c.with_member("pub-2", firewall=fw)).findings if f.kind == "role-port"]
    assert any("opens a connection to the admin laptop" in f.detail for f in found), found


@pytest.mark.tools
def test_peer_update_script_installs_the_config_and_the_failover_settings(tmp_path):
    """The live update of a member behind NAT, run for real (bash, wg pubkey) against a copy of
    /etc in a private network namespace without wg0: it keeps the member's private key, writes
    the rendered config and failover settings, says the tunnel applies them on its next start,
    refuses a machine with another key, and a second run changes nothing."""
    need("wg")
    need("unshare")
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root for a private network namespace (unshare -n)")
    out = render(tmp_path, doc())
    etc = tmp_path / "etc"
    etc.mkdir()
    conf = (out / "wireguard/nat-1/wg0.conf").read_text()
    (etc / "wg0.conf").write_text(conf.replace("\n[Peer]", "\n#old\n[Peer]", 1))   # an older file, same key
    env = {**os.environ, "WGKUBE_WG_DIR": str(etc), "WGKUBE_FAILOVER_CONF": str(etc / "failover.conf")}
    script = out / "peer-update/nat-1.sh"

    def run():
        return subprocess.run(["unshare", "-n", "bash", str(script)], capture_output=True, text=True, env=env)

    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert (etc / "wg0.conf").read_text() == conf
    assert (etc / "failover.conf").read_text() == node_files(out, "nat-1")["/etc/wgkube/failover.conf"]
    assert "wg0 is not up" in proc.stderr and "wrote" in proc.stderr
    again = run()
    assert again.returncode == 0 and "already up to date" in again.stderr and "wrote" not in again.stderr
    (etc / "wg0.conf").write_text((out / "wireguard/nat-2/wg0.conf").read_text())
    refused = run()
    assert refused.returncode == 1 and "is not the one of member nat-1" in refused.stderr


def test_every_member_of_the_mesh_example_fits_aws_after_the_best_encoding(tmp_path):
    """Mesh nodes carry more than hub spokes (peers, relay and admin rules, the failover loop):
    members behind NAT no longer fit 16 KB plain, but every one fits AWS's 16 KB gzip'd."""
    shutil_copy = (tmp_path / "cluster.yaml")
    shutil_copy.write_text(EXAMPLE.read_text())
    wgkube("render", str(shutil_copy), "-o", str(tmp_path / "out"), "-q", "--no-iso", "--no-packer", "--provider", "aws")
    for n in ("hub", "worker-1", "homelab-1"):
        data = (tmp_path / "out/demo/nodes" / n / "user-data").read_bytes()
        assert len(data) <= 16 * 1024, (n, len(data))


def test_mesh_configs_built_from_cached_blocks_equal_the_template(tmp_path):
    """wireguard._mesh_conf assembles [Peer] blocks made once per plan; wg.conf.j2 must give the
    very same text for every member (public, behind NAT, admin, spare slots included)."""
    from generator.artifacts import wireguard
    from generator.artifacts.templates import render as tpl
    prepared = prepare(write(tmp_path, doc(spares=2)))
    plan, bundle = prepared.plan, prepared.bundle
    for m in plan.members:
        want = tpl("wg.conf.j2", plan=plan, member=m, private_key=bundle.private_key(m.name),
                   listen_port=plan.listen_port(m), peers=wireguard.peers_with_keys(plan, bundle, m))
        assert wireguard.wg_conf(plan, bundle, m) == want, m.name
