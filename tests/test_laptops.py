"""Issue 17 item 3, laptops that fit in (docs/laptops.md): per-cluster file names
(`vpn.admin_conf: cluster` -> admins/<name>/wg-<cluster>.conf) and `admins[].routes: services`
(the service range through the control plane, whose firewall forwards DNAT'ed Service
connections from that admin only). Both opt-in: a spec without them renders as before
(tests/test_hub_unchanged.py holds the bytes). tests/test_lab.py proves the routes with packets."""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import SPECS, need, need_root, render_spec, wgkube
from generator.artifacts.cloudinit import extract_files
from generator.plan import laptop_interface
from generator.proof.read import cluster as rendered
from generator.proof.read.nftables import Packet, parse_ruleset
from generator.proof.verify import verify

FW = "/etc/wgkube/firewall.nft"
WG_QUICK_NAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")   # wg-quick/linux.bash


def spec_with(src: Path, *, admin_conf: str | None = None, routes: dict[str, str] | None = None,
              name: str | None = None, extra_admins: tuple[str, ...] = ()) -> str:
    doc = yaml.safe_load(src.read_text())
    if admin_conf is not None:
        doc.setdefault("vpn", {})["admin_conf"] = admin_conf
    if name is not None:
        doc["name"] = name
    doc["admins"] = doc.get("admins", []) + [{"name": a} for a in extra_admins]
    for a in doc["admins"]:
        if routes and a["name"] in routes:
            a["routes"] = routes[a["name"]]
    return yaml.safe_dump(doc, sort_keys=False)


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def rerender(workdir: Path, text: str, out_name: str) -> Path:
    """Render text with the bundle already in workdir (same keys), into workdir/<out_name>."""
    (workdir / "cluster.yaml").write_text(text)
    wgkube("render", str(workdir / "cluster.yaml"), "-o", str(workdir / out_name), "-q", "--no-packer", "--no-iso")
    return workdir / out_name / yaml.safe_load(text)["name"]


def node_files(out: Path, node: str) -> dict[str, bytes]:
    return {k: v[0] for k, v in extract_files((out / "nodes" / node / "user-data").read_bytes()).items()}


# --------------------------------------------------------------------------- file names

@pytest.mark.parametrize("cluster", ["a", "prod", "staging-eu-1", "x" * 12])
def test_short_cluster_names_are_used_as_they_are(cluster):
    assert laptop_interface(cluster) == f"wg-{cluster}"
    assert WG_QUICK_NAME.fullmatch(laptop_interface(cluster))


def test_long_cluster_names_are_shortened_deterministically_and_stay_apart():
    long1, long2 = "production-europe-west-1", "production-europe-west-2"
    n1, n2 = laptop_interface(long1), laptop_interface(long2)
    assert n1 == laptop_interface(long1)                                # deterministic
    assert n1 != n2 and n1.startswith("wg-produc") and "." in n1      # the hash keeps them apart
    for name in (n1, n2, laptop_interface("a" * 63), laptop_interface("x" * 13)):
        assert len(name) == 15 and WG_QUICK_NAME.fullmatch(name), name
    # A cluster name (a DNS label) never holds '.', so a shortened name never equals a short one's.
    assert all("." not in laptop_interface(c) for c in ("abcdef-12345", "x" * 12))


def test_opt_in_names_the_file_after_the_cluster(tmp_path):
    out = render_spec(spec_with(SPECS / "lab6.yaml", admin_conf="cluster"), tmp_path, "--no-packer", "--no-iso")
    assert sorted(p.name for p in (out / "admins" / "laptop").iterdir()) == ["kubeconfig", "wg-lab6.conf"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["admins"]["wg_file"] == "wg-lab6.conf"
    # nodes keep their interface (wg0): only the laptop's tunnel is named after the cluster
    assert "wireguard/hub/wg0.conf" in tree(out)
    report = verify(rendered.from_out_dir(out))
    assert report.ok, report.findings


def test_without_the_opt_in_nothing_changes(tmp_path):
    """Writing the defaults out (admin_conf: interface, routes: vpn) renders the same bytes as leaving them out."""
    base = render_spec(SPECS / "lab6.yaml", tmp_path, "--no-packer", "--no-iso")
    same = rerender(tmp_path, spec_with(SPECS / "lab6.yaml", admin_conf="interface", routes={"laptop": "vpn"}), "out2")
    assert tree(base) == tree(same)
    assert "admins" not in json.loads((base / "plan.json").read_text())


def test_two_clusters_coexist_on_one_laptop(tmp_path):
    """Both clusters' files side by side in one WireGuard client (/etc/wireguard, or the app), and
    both kubeconfigs merged with KUBECONFIG=a:b: no file, cluster, user or context name is shared."""
    outs = []
    for cluster in ("alpha", "beta"):
        d = tmp_path / cluster
        d.mkdir()
        outs.append(render_spec(spec_with(SPECS / "lab6.yaml", admin_conf="cluster", name=cluster), d, "--no-packer", "--no-iso"))
    files = [{p.name for p in (o / "admins" / "laptop").glob("*.conf")} for o in outs]
    assert files == [{"wg-alpha.conf"}, {"wg-beta.conf"}]
    names = []
    for o in outs:
        kc = yaml.safe_load((o / "admins" / "laptop" / "kubeconfig").read_text())
        names.append({(kind, e["name"]) for kind in ("clusters", "users", "contexts") for e in kc[kind]})
    assert names[0].isdisjoint(names[1]), names
    assert ("contexts", "laptop@alpha") in names[0] and ("contexts", "laptop@beta") in names[1]
    # Their VPN ranges are the same here (same spec): a laptop needs distinct vpn.cidr per cluster
    # to route both at once (docs/laptops.md); the names never clash either way.


def test_qr_reads_the_per_cluster_file(tmp_path):
    out = render_spec(spec_with(SPECS / "lab6.yaml", admin_conf="cluster"), tmp_path, "--no-packer", "--no-iso")
    png = tmp_path / "laptop.png"
    proc = wgkube("qr", "laptop", str(out), "--png", str(png), "--no-terminal")
    assert "wg-lab6.conf" in proc.stderr and png.is_file()


def test_rekey_order_names_the_per_cluster_file(tmp_path):
    from generator.daytwo.rollout import rollout
    from generator.pipeline import prepare
    (tmp_path / "cluster.yaml").write_text(spec_with(SPECS / "lab6.yaml", admin_conf="cluster"))
    plan = prepare(tmp_path / "cluster.yaml").plan
    steps = "\n".join(rollout(plan, "laptop", "out/lab6"))
    assert "out/lab6/admins/laptop/wg-lab6.conf" in steps and "wg-quick up wg-lab6" in steps and "wg0.conf" not in steps
    hub_steps = "\n".join(rollout(plan, "hub", "out/lab6"))
    assert "admins/<name>/wg-lab6.conf" in hub_steps


def test_switching_the_file_name_is_an_action_in_plan(tmp_path):
    render_spec(SPECS / "lab6.yaml", tmp_path, "--no-packer", "--no-iso")
    (tmp_path / "cluster.yaml").write_text(spec_with(SPECS / "lab6.yaml", admin_conf="cluster"))
    proc = wgkube("plan", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"))
    assert re.search(r"laptop: its WireGuard config is now \S+/admins/laptop/wg-lab6\.conf \(was wg0\.conf.*"
                     r"wg-quick down wg0, install the new file, wg-quick up wg-lab6", proc.stdout), proc.stdout


# --------------------------------------------------------------------------- routes: services

def test_routes_services_changes_only_that_admin_and_the_hub_firewall(tmp_path):
    base = render_spec(spec_with(SPECS / "lab6.yaml", extra_admins=("phone",)), tmp_path, "--no-packer", "--no-iso")
    routed = rerender(tmp_path, spec_with(SPECS / "lab6.yaml", extra_admins=("phone",), routes={"laptop": "services"}), "out2")
    a, b = tree(base), tree(routed)
    assert a.keys() == b.keys()
    changed = sorted(k for k in a if a[k] != b[k])
    assert changed == ["admins/laptop/wg0.conf", "manifest.json", "nodes/hub/user-data", "plan.json"], changed
    old_hub, new_hub = node_files(base, "hub"), node_files(routed, "hub")
    assert [k for k in old_hub if old_hub[k] != new_hub[k]] == [FW]
    conf = b["admins/laptop/wg0.conf"].decode()
    assert "AllowedIPs = 10.77.0.0/24, 10.96.0.0/12" in conf
    assert conf.replace(", 10.96.0.0/12", "") == a["admins/laptop/wg0.conf"].decode()
    assert "10.96.0.0/12" not in b["admins/phone/wg0.conf"].decode()
    # the hub's AllowedIPs for the laptop stay its /32: replies to the laptop go to its VPN address
    assert "10.96.0.0/12" not in b["wireguard/hub/wg0.conf"].decode()
    plan = json.loads(b["plan.json"])
    assert plan["admins"] == {"wg_file": "wg0.conf", "services_via": "hub", "routes_services": ["laptop"]}


def test_hub_forwards_dnated_service_traffic_from_that_admin_only(tmp_path):
    out = render_spec(spec_with(SPECS / "lab6.yaml", extra_admins=("phone",), routes={"laptop": "services"}),
                      tmp_path, "--no-packer", "--no-iso")
    ips = {m["name"]: ipaddress.ip_address(m["vpn_ip"]) for m in json.loads((out / "plan.json").read_text())["members"]}
    rs = parse_ruleset(node_files(out, "hub")[FW].decode())
    cluster_ip, pod = ipaddress.ip_address("10.96.0.10"), ipaddress.ip_address("10.244.3.7")

    def fwd(src, dnat=True, orig=cluster_ip, oif="flannel.1"):
        return rs.verdict("forward", Packet("wg0", oif, ips[src], pod, "tcp", 53, 40000,
                                            ct_status=frozenset({"dnat"}) if dnat else frozenset(), orig_daddr=orig))

    assert fwd("laptop") and fwd("laptop", oif="cni0")
    assert not fwd("laptop", dnat=False, orig=pod), "a pod IP dialled directly"
    assert not fwd("laptop", dnat=False, orig=cluster_ip), "a ClusterIP nobody DNAT'ed"
    assert not fwd("phone"), "an admin without routes: services"
    # a hostNetwork backend on the hub itself (DNAT to its own address) passes input
    assert rs.verdict("input", Packet("wg0", None, ips["laptop"], ips["hub"], "tcp", 9100, 40000,
                                      ct_status=frozenset({"dnat"}), orig_daddr=cluster_ip))
    assert not rs.verdict("input", Packet("wg0", None, ips["phone"], ips["hub"], "tcp", 9100, 40000,
                                          ct_status=frozenset({"dnat"}), orig_daddr=cluster_ip))
    # workers' rulesets do not change (a hub cluster keeps the admin rules on the hub)
    report = verify(rendered.from_out_dir(out))
    assert report.ok, report.findings
    assert report.services == ["laptop -> 10.96.0.0/12 via hub: ClusterIP connections kube-proxy DNATs are forwarded, "
                               "pod IPs dialled directly are dropped"]


def test_mesh_routes_services_through_the_control_plane(tmp_path):
    base = render_spec(spec_with(SPECS / "mesh-lab.yaml", extra_admins=("phone",)), tmp_path, "--no-packer", "--no-iso")
    routed = rerender(tmp_path, spec_with(SPECS / "mesh-lab.yaml", extra_admins=("phone",), routes={"laptop": "services"}), "out2")
    a, b = tree(base), tree(routed)
    changed = sorted(k for k in a if a[k] != b[k])
    assert changed == ["admins/laptop/failover.conf", "admins/laptop/wg0.conf", "admins/laptop/wgkube-failover",
                       "manifest.json", "nodes/hub/user-data", "plan.json"], changed
    conf = b["admins/laptop/wg0.conf"].decode()
    hub_block = conf.split("# hub\n")[1].split("\n\n")[0]
    assert "10.96.0.0/12" in hub_block and conf.count("10.96.0.0/12") == 1
    # the failover loop keeps the service range on the hub when it moves the catch-all
    assert "SERVICE_CIDR=" in b["admins/laptop/failover.conf"].decode()
    assert b["admins/phone/wgkube-failover"] == a["admins/phone/wgkube-failover"]
    report = verify(rendered.from_out_dir(routed))
    assert report.ok, report.findings
    assert report.services and "via hub" in report.services[0]


def test_failover_keeps_the_service_range_on_its_peer(tmp_path):
    """The admin's failover loop with routes: services: `keep` adds the service range for the
    control plane's key only (wg set ... allowed-ips replaces the whole list, wg(8))."""
    out = render_spec(spec_with(SPECS / "mesh-lab.yaml", routes={"laptop": "services"}), tmp_path, "--no-packer", "--no-iso")
    script = (out / "admins" / "laptop" / "wgkube-failover").read_text()
    keep = next(line for line in script.splitlines() if line.startswith("keep()"))
    sh = f"SERVICE_CIDR=10.96.0.0/12 SERVICE_KEY=K\n{keep}\necho \"[$(keep K)] [$(keep X)]\""
    assert subprocess.run(["sh", "-c", sh], capture_output=True, text=True).stdout.strip() == "[,10.96.0.0/12] []"


# --------------------------------------------------------------------------- verify catches breaks

@pytest.fixture
def routed_cluster(tmp_path):
    out = render_spec(spec_with(SPECS / "lab6.yaml", extra_admins=("phone",), routes={"laptop": "services"}),
                      tmp_path, "--no-packer", "--no-iso")
    return rendered.from_out_dir(out)


def details(report) -> str:
    return "\n".join(f"{f.kind} {f.where}: {f.detail}" for f in report.findings)


def test_verify_finds_a_missing_service_route(routed_cluster):
    laptop = routed_cluster.member("laptop")
    report = verify(routed_cluster.with_member("laptop", wg_conf=laptop.wg_conf.replace(", 10.96.0.0/12", "")))
    assert {f.kind for f in report.findings} == {"services"}
    assert "has `routes: services` but no [Peer] routes the whole service range" in details(report)


def test_verify_finds_a_service_route_nobody_asked_for(routed_cluster):
    phone = routed_cluster.member("phone")
    report = verify(routed_cluster.with_member("phone", wg_conf=phone.wg_conf.replace("10.77.0.0/24", "10.77.0.0/24, 10.96.0.0/12")))
    assert {f.kind for f in report.findings} == {"services"}
    assert "phone: [Peer] hub routes the service range" in details(report)


def test_verify_finds_a_hub_that_forwards_too_much(routed_cluster):
    hub = routed_cluster.member("hub")
    opened = re.sub(r"ip saddr \{ [0-9.]+ \} ct status dnat ct original ip daddr 10\.96\.0\.0/12",
                    "ip saddr { 10.77.0.0/24 }", hub.firewall)
    assert opened != hub.firewall
    report = verify(routed_cluster.with_member("hub", firewall=opened))
    text = details(report)
    assert "forwards a connection from laptop straight to a pod IP" in text
    assert "hub: forwards Service traffic from the admin phone" in text


def test_verify_finds_a_hub_that_forwards_nothing(routed_cluster):
    hub = routed_cluster.member("hub")
    closed = "\n".join(line for line in hub.firewall.splitlines() if "routes services" not in line) + "\n"
    report = verify(routed_cluster.with_member("hub", firewall=closed))
    assert "hub's forward chain drops a Service connection DNAT'ed to a pod" in details(report)


# --------------------------------------------------------------------------- spec errors

@pytest.mark.parametrize("field, value, path", [
    ("routes", "everything", "admins[0].routes"),
    ("admin_conf", "laptop", "vpn.admin_conf"),
])
def test_bad_values_are_spec_errors(tmp_path, field, value, path):
    doc = yaml.safe_load((SPECS / "lab6.yaml").read_text())
    if field == "routes":
        doc["admins"][0]["routes"] = value
    else:
        doc["vpn"]["admin_conf"] = value
    spec = tmp_path / "cluster.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = wgkube("check", str(spec), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert path in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- real validators

@pytest.mark.tools
def test_changed_ruleset_passes_nft_check(tmp_path):
    need("nft", "checks nftables rulesets")
    need_root("nft -c needs CAP_NET_ADMIN")
    for spec in ("lab6.yaml", "mesh-lab.yaml"):
        d = tmp_path / spec
        d.mkdir()
        out = render_spec(spec_with(SPECS / spec, routes={"laptop": "services"}), d, "--no-packer", "--no-iso")
        rules = d / "fw.nft"
        rules.write_bytes(node_files(out, "hub")[FW])
        assert "ct original ip daddr 10.96.0.0/12" in rules.read_text()
        proc = subprocess.run(["nft", "-c", "-f", str(rules)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.tools
def test_per_cluster_file_passes_wg_quick_strip_and_failover_script_shellcheck(tmp_path):
    need("wg-quick")
    shellcheck = need("shellcheck")
    long = "production-europe-west-1"
    out = render_spec(spec_with(SPECS / "mesh-lab.yaml", admin_conf="cluster", name=long, routes={"laptop": "services"}),
                      tmp_path, "--no-packer", "--no-iso")
    conf = out / "admins" / "laptop" / f"{laptop_interface(long)}.conf"
    assert conf.is_file()
    proc = subprocess.run(["wg-quick", "strip", str(conf)], capture_output=True, text=True)
    assert proc.returncode == 0 and "AllowedIPs" in proc.stdout, proc.stderr
    script = out / "admins" / "laptop" / "wgkube-failover"
    proc = subprocess.run([shellcheck, "-S", "style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert f'IFACE="{laptop_interface(long)}"' in (out / "admins" / "laptop" / "failover.conf").read_text()


def test_verify_finds_a_mesh_laptop_whose_failover_would_drop_the_route(tmp_path):
    """The control plane is the first relay in mesh-lab: the laptop's failover loop rewrites its
    AllowedIPs; with the settings or the loop of a laptop without the route, verify says so."""
    out = render_spec(spec_with(SPECS / "mesh-lab.yaml", extra_admins=("phone",), routes={"laptop": "services"}),
                      tmp_path, "--no-packer", "--no-iso")
    c = rendered.from_out_dir(out)
    assert verify(c).ok
    laptop, phone = c.member("laptop"), c.member("phone")
    for change in ({"failover": phone.failover}, {"failover_script": phone.failover_script}):
        report = verify(c.with_member("laptop", **change))
        assert {f.kind for f in report.findings} == {"services"}, change.keys()
        assert "failover" in details(report)
    assert laptop.failover != phone.failover


def test_verify_in_memory_reads_the_admins_own_failover_loop(tmp_path):
    """`wgkube verify SPEC` (nothing written) sees the same files as the rendered folder."""
    (tmp_path / "cluster.yaml").write_text(spec_with(SPECS / "mesh-lab.yaml", routes={"laptop": "services"}))
    proc = wgkube("verify", str(tmp_path / "cluster.yaml"))
    assert "nothing written" in proc.stdout and "services: laptop -> 10.96.0.0/12 via hub" in proc.stdout
