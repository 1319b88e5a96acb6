"""Issue 14: several control planes. Spec rules, what each node gets, the local API endpoint
(through the real haproxy, shellcheck, systemd-analyze and cloud-init where marked `tools`), and
what `wgkube plan` says when control planes come and go."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLE, need, render_spec, wgkube
from generator.artifacts.cloudinit import extract_files

HA3 = Path(__file__).resolve().parent / "specs" / "ha3.yaml"
CPS = ("cp-fra", "cp-ams", "cp-home")
WORKERS = ("worker-fra", "worker-home")
PREMADE = {"/etc/kubernetes/pki/" + f for f in ("ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key",
                                                  "etcd/ca.crt", "etcd/ca.key", "sa.key", "sa.pub")}


@pytest.fixture(scope="module")
def ha_out(tmp_path_factory) -> Path:
    return render_spec(HA3, tmp_path_factory.mktemp("ha3"))


def files_of(out: Path, node: str) -> dict[str, tuple[bytes, int]]:
    return extract_files((out / "nodes" / node / "user-data").read_bytes())


def text_of(out: Path, node: str, path: str) -> str:
    return files_of(out, node)[path][0].decode()


def kubeadm_docs(out: Path, node: str) -> list[dict]:
    return list(yaml.safe_load_all(text_of(out, node, "/etc/wgkube/kubeadm.yaml")))


# --------------------------------------------------------------------------- spec


def _with_control_planes(n: int) -> str:
    """The example with n control planes in all (the extra ones public, before the workers)."""
    text = EXAMPLE.read_text()
    extra = "".join(f"  - name: cp-{i}\n    role: control-plane\n    endpoint: 192.0.2.{i}\n" for i in range(2, n + 1))
    return text.replace("  - name: worker-1 ", extra + "  - name: worker-1 ", 1)


@pytest.mark.parametrize("count", [2, 4, 6, 7])
def test_control_plane_counts_etcd_cannot_use_are_refused(tmp_path, count):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(_with_control_planes(count))
    proc = wgkube("check", str(spec), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{count} control-plane nodes" in proc.stderr and "use 1, 3 or 5 control planes" in proc.stderr
    # the field and its line: the control plane that makes the count wrong
    assert "nodes[" in proc.stderr and "].role" in proc.stderr and "cluster.yaml:" in proc.stderr
    proc = wgkube("render", str(spec), "-q", check=False)
    assert proc.returncode == 2 and not (tmp_path / "out").exists() and not (tmp_path / "cluster.secrets.yaml").exists()


@pytest.mark.parametrize("count", [3, 5])
def test_three_and_five_control_planes_are_accepted(tmp_path, count):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(_with_control_planes(count))
    wgkube("check", str(spec))


@pytest.mark.parametrize("etcd, fragment", [
    ("{heartbeat_ms: 200, election_ms: 999}", "under 5x the heartbeat"),
    ("{heartbeat_ms: 100, election_ms: 60000}", "etcd.election_ms"),
    ("{heartbeat_ms: 0, election_ms: 1000}", "etcd.heartbeat_ms"),
    ("{heartbeat: 100}", "etcd.heartbeat"),
])
def test_etcd_tuning_out_of_etcds_limits_is_refused(tmp_path, etcd, fragment):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(EXAMPLE.read_text() + f"etcd: {etcd}\n")
    proc = wgkube("check", str(spec), check=False)
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_single_control_plane_with_etcd_tuning_gets_the_extra_args_only(tmp_path):
    """etcd tuning is the one thing of issue 14 a single control plane may use; nothing else moves."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = render_spec(EXAMPLE, tmp_path / "a", "--no-iso", "--no-packer")
    tuned = render_spec(EXAMPLE.read_text() + "etcd: {heartbeat_ms: 50, election_ms: 500}\n", tmp_path / "b",
                        "--no-iso", "--no-packer")
    a = files_of(plain, "hub")["/etc/wgkube/kubeadm.yaml"][0].decode()
    b = files_of(tuned, "hub")["/etc/wgkube/kubeadm.yaml"][0].decode()
    cluster_a = kubeadm_docs(plain, "hub")[1]
    cluster_b = kubeadm_docs(tuned, "hub")[1]
    assert "etcd" not in cluster_a
    assert cluster_b["etcd"]["local"]["extraArgs"] == [{"name": "heartbeat-interval", "value": "50"},
                                                       {"name": "election-timeout", "value": "500"}]
    assert cluster_b["controlPlaneEndpoint"] == cluster_a["controlPlaneEndpoint"]
    assert a != b and "/etc/wgkube/haproxy.cfg" not in files_of(tuned, "hub")


# --------------------------------------------------------------------------- what each node gets


def test_the_first_control_plane_inits_with_the_local_endpoint(ha_out):
    init, cluster = kubeadm_docs(ha_out, "cp-fra")
    assert init["kind"] == "InitConfiguration" and init["localAPIEndpoint"]["advertiseAddress"] == "10.77.0.1"
    assert cluster["controlPlaneEndpoint"] == "127.0.0.1:7445"
    assert "127.0.0.1" in cluster["apiServer"]["certSANs"]
    assert cluster["etcd"]["local"]["extraArgs"] == [{"name": "heartbeat-interval", "value": "150"},
                                                     {"name": "election-timeout", "value": "1500"}]
    # it creates the join tokens of every node that joins: the other control planes included
    described = {t.get("description", "") for t in init["bootstrapTokens"]}
    for node in CPS[1:] + WORKERS:
        assert any(f"node {node} " in d for d in described), (node, described)


@pytest.mark.parametrize("node", CPS[1:])
def test_other_control_planes_join_as_control_planes_with_the_premade_pki(ha_out, node):
    (join,) = kubeadm_docs(ha_out, node)
    plan = json.loads((ha_out / "plan.json").read_text())
    ip = next(m["vpn_ip"] for m in plan["members"] if m["name"] == node)
    assert join["kind"] == "JoinConfiguration"
    assert join["controlPlane"] == {"localAPIEndpoint": {"advertiseAddress": ip, "bindPort": 6443}}
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "127.0.0.1:7445"
    assert "certificateKey" not in json.dumps(join)
    files = files_of(ha_out, node)
    assert PREMADE <= set(files)
    for path in PREMADE:
        assert files[path][1] == (0o600 if path.endswith(".key") else 0o644), path
        assert files[path][0] == files_of(ha_out, "cp-fra")[path][0], f"{path} differs from the first control plane's"
    # only the first control plane applies the CNI and the admin bindings
    assert "/etc/wgkube/flannel.yaml" not in files and "/etc/wgkube/admin-bindings.yaml" not in files
    script = files["/usr/local/sbin/wgkube-firstboot"][0].decode()
    assert "kubeadm join --config" in script and "kubeadm init" not in script
    assert "API='127.0.0.1:7445'" in script or 'API="127.0.0.1:7445"' in script
    assert "keep_pki" in script and "restore_pki" in script  # a failed join's reset keeps the CAs


@pytest.mark.parametrize("node", WORKERS)
def test_workers_get_no_key_material(ha_out, node):
    files = files_of(ha_out, node)
    assert not any(p.startswith("/etc/kubernetes/pki/") for p in files)
    (join,) = kubeadm_docs(ha_out, node)
    assert "controlPlane" not in join and join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "127.0.0.1:7445"


@pytest.mark.parametrize("node", CPS + WORKERS)
def test_every_node_runs_the_local_endpoint_before_kubelet(ha_out, node):
    files = files_of(ha_out, node)
    cfg = files["/etc/wgkube/haproxy.cfg"][0].decode()
    assert "bind 127.0.0.1:7445" in cfg
    servers = [line.split() for line in cfg.splitlines() if line.strip().startswith("server ")]
    assert sorted(s[2] for s in servers) == ["10.77.0.1:6443", "10.77.0.2:6443", "10.77.0.3:6443"]
    if node in CPS:  # its own API server first, the others only as backups
        assert servers[0][1] == node and "backup" not in servers[0] and all("backup" in s for s in servers[1:])
    else:
        assert not any("backup" in s for s in servers) and "balance roundrobin" in cfg
    unit = files["/etc/systemd/system/wgkube-apiproxy.service"][0].decode()
    assert "Before=kubelet.service" in unit and "After=network-online.target wg-quick@wg0.service" in unit
    dropin = files["/etc/systemd/system/kubelet.service.d/21-wgkube-apiproxy.conf"][0].decode()
    assert "After=wgkube-apiproxy.service" in dropin
    script = files["/usr/local/sbin/wgkube-firstboot"][0].decode()
    assert "systemctl restart wgkube-apiproxy.service" in script and " haproxy" in script


def test_the_admin_kubeconfig_has_a_context_per_control_plane(ha_out):
    kc = yaml.safe_load((ha_out / "admins" / "laptop" / "kubeconfig").read_text())
    servers = {c["name"]: c["cluster"]["server"] for c in kc["clusters"]}
    assert servers == {"trio": "https://10.77.0.1:6443", "trio-cp-ams": "https://10.77.0.2:6443",
                       "trio-cp-home": "https://10.77.0.3:6443"}
    assert kc["current-context"] == "laptop@trio" and len(kc["contexts"]) == 3


def test_admins_reach_the_api_of_every_control_plane_and_no_more(ha_out):
    for node in CPS:
        rules = text_of(ha_out, node, "/etc/wgkube/firewall.nft")
        admin_in = next(line for line in rules.splitlines() if 'comment "admins: the API' in line)
        assert "6443" in admin_in, admin_in
    worker = text_of(ha_out, "worker-fra", "/etc/wgkube/firewall.nft")
    admin_in = next(line for line in worker.splitlines() if "tcp dport {" in line and "admins:" in line)
    assert "6443" not in admin_in, admin_in
    # a relay forwards admin traffic to the other control planes' API only
    relay = next(line for line in text_of(ha_out, "cp-fra", "/etc/wgkube/firewall.nft").splitlines()
                 if "the API of the other control planes" in line)
    assert "ip daddr { 10.77.0.2, 10.77.0.3 } tcp dport 6443 accept" in relay


def test_plan_json_names_the_control_planes(ha_out):
    plan = json.loads((ha_out / "plan.json").read_text())
    assert plan["control_planes"] == {"names": list(CPS), "api_endpoint": "127.0.0.1:7445",
                                      "etcd": {"heartbeat_ms": 150, "election_ms": 1500}}


# --------------------------------------------------------------------------- real validators


@pytest.mark.tools
@pytest.mark.parametrize("node", ["cp-fra", "cp-ams", "worker-home"])
def test_haproxy_accepts_each_rendered_config(ha_out, node, tmp_path):
    haproxy = need("haproxy", "checks the local API endpoint's config")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_bytes(files_of(ha_out, node)["/etc/wgkube/haproxy.cfg"][0])
    proc = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 0 and "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    cfg.write_text(cfg.read_text().replace("balance ", "balanse "))  # the check can fail
    assert subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True).returncode != 0


@pytest.mark.tools
@pytest.mark.parametrize("node", ["cp-fra", "cp-ams", "worker-home"])
def test_scripts_are_shellcheck_clean(ha_out, node, tmp_path):
    shellcheck = need("shellcheck")
    script = tmp_path / "firstboot"
    script.write_bytes(files_of(ha_out, node)["/usr/local/sbin/wgkube-firstboot"][0])
    for path in (script, ha_out / "apiproxy-update" / f"{node}.sh"):
        proc = subprocess.run([shellcheck, "-S", "style", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


@pytest.mark.tools
@pytest.mark.parametrize("node", ["cp-ams", "worker-home"])
def test_units_verify_and_user_data_passes_the_schema(ha_out, node, tmp_path):
    need("systemd-analyze")
    need("cloud-init")
    files = files_of(ha_out, node)
    unit = tmp_path / "wgkube-apiproxy.service"
    unit.write_bytes(files["/etc/systemd/system/wgkube-apiproxy.service"][0])
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    errors = [line for line in proc.stderr.splitlines() if "Unknown" in line or "Invalid" in line or "bad" in line.lower()]
    assert not errors, proc.stderr
    proc = subprocess.run(["cloud-init", "schema", "-c", str(ha_out / "nodes" / node / "user-data")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- day two


def _spec_with_five(text: str) -> str:
    return text.replace("  - name: worker-fra", "  - name: cp-par\n    role: control-plane\n    endpoint: 192.0.2.40\n"
                        "  - name: cp-lon\n    role: control-plane\n    endpoint: 192.0.2.50\n  - name: worker-fra", 1)


def test_plan_lists_the_steps_when_control_planes_come_and_go(tmp_path):
    out = render_spec(HA3, tmp_path, "--no-iso", "--no-packer")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(_spec_with_five(HA3.read_text()))
    proc = wgkube("plan", str(spec), "-o", str(tmp_path / "out"))
    text = " ".join(proc.stdout.split())
    assert "control plane cp-par added" in text and "control plane cp-lon added" in text
    for node in CPS + WORKERS:
        assert f"apiproxy-update/{node}.sh" in text, node
    # control planes first
    assert text.index("apiproxy-update/cp-home.sh") < text.index("apiproxy-update/worker-fra.sh")
    wgkube("render", str(spec), "-o", str(tmp_path / "out"), "-q", "--no-iso", "--no-packer")
    spec.write_text(HA3.read_text())
    text = " ".join(wgkube("plan", str(spec), "-o", str(tmp_path / "out")).stdout.split())
    for gone in ("cp-par", "cp-lon"):
        assert f"control plane {gone} removed: take it out of etcd before switching it off" in text
        assert "needs 3 of them up" in text and f"kubectl delete node {gone}" in text
    assert "cp-par" in files_of(out, "worker-fra")["/etc/wgkube/haproxy.cfg"][0].decode()  # plan wrote nothing


@pytest.mark.parametrize("direction", ["one to three", "three to one"])
def test_a_rendered_cluster_keeps_one_or_several_control_planes(tmp_path, direction):
    if direction == "one to three":
        first, then = EXAMPLE.read_text(), _with_control_planes(3)
    else:
        first = HA3.read_text()
        then = first.replace("  - name: cp-ams\n    role: control-plane\n", "  - name: cp-ams\n    role: worker\n") \
                    .replace("  - name: cp-home\n    role: control-plane\n", "  - name: cp-home\n    role: worker\n")
    out = render_spec(first, tmp_path, "--no-iso", "--no-packer")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    spec = tmp_path / "cluster.yaml"
    spec.write_text(then)
    for command in ("render", "check"):
        args = [command, str(spec)] + (["-o", str(tmp_path / "out"), "-q"] if command == "render" else [])
        proc = wgkube(*args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "was rendered with" in proc.stderr and "cluster.yaml:" in proc.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing written


def test_upgrade_asks_each_control_plane_by_its_own_address(tmp_path):
    """With several control planes the local endpoint may answer from any of them: another control
    plane waits for the first's API (upgrade apply done), a worker for every one's."""
    out = render_spec(HA3.read_text().replace('kubernetes: "1.37"', 'kubernetes: "1.36"'), tmp_path, "--no-iso", "--no-packer")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(HA3.read_text())
    printed = wgkube("upgrade", str(spec), "-o", str(tmp_path / "out")).stdout
    lines = [line.split("<")[-1].strip() for line in printed.splitlines() if "bash -s <" in line]
    assert [Path(p).stem for p in lines] == list(CPS), printed  # the first, then the other control planes
    other = (out / "upgrade" / "cp-ams.sh").read_text()
    assert 'first=${CONTROL_PLANES[0]}' in other and '"cp-fra=https://10.77.0.1:6443"' in other
    assert "\n    kubeadm upgrade node\n" in other and "\n    kubeadm upgrade apply" not in other
    worker = (out / "upgrade" / "worker-fra.sh").read_text()
    assert 'for cp in "${CONTROL_PLANES[@]}"' in worker and "still runs $v" in worker
    first = (out / "upgrade" / "cp-fra.sh").read_text()
    assert "CONTROL_PLANES" not in first  # the one that runs upgrade apply asks its own API


def test_rekey_join_reissues_another_control_planes_token_not_the_firsts(tmp_path):
    out = render_spec(HA3, tmp_path, "--no-iso", "--no-packer")
    spec = tmp_path / "cluster.yaml"
    before = kubeadm_docs(out, "cp-ams")[0]["discovery"]["bootstrapToken"]["token"]
    proc = wgkube("rekey", "--yes", "cp-fra", str(spec), "-o", str(tmp_path / "out"), "--join", check=False)
    assert proc.returncode == 2 and "first control plane" in proc.stderr and "does not join" in proc.stderr, proc.stderr
    wgkube("rekey", "--yes", "cp-ams", str(spec), "-o", str(tmp_path / "out"), "--join")
    after = kubeadm_docs(out, "cp-ams")[0]["discovery"]["bootstrapToken"]["token"]
    assert after != before
    init = kubeadm_docs(out, "cp-fra")[0]
    assert after in [t["token"] for t in init["bootstrapTokens"]]  # the first control plane creates it
