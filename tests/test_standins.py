"""The VM test's stand-ins refuse what the real tools refuse (issue 11). Run on the host against a
fake root (WGKUBE_STANDIN_ROOT prefixes every path they read or write), so each refusal is
checked on its own; tests/test_vm.py then relies on them inside the guests."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need

STANDINS = Path(__file__).resolve().parent / "vm" / "standins"
sys.path.insert(0, str(STANDINS))
from standin_record import PAUSE_IMAGE  # noqa: E402

CRI = "unix:///var/run/crio/crio.sock"
INIT = f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: "10.9.0.1", bindPort: 6443}}
nodeRegistration: {{name: hub, criSocket: "{CRI}"}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
encryptionAlgorithm: ECDSA-P256
"""
JOIN = f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  file: {{kubeConfigPath: /etc/wgkube/join.kubeconfig}}
nodeRegistration: {{name: w, criSocket: "{CRI}"}}
"""
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


class Root:
    """A fake machine: /proc facts of a host kubeadm would accept, a listening CRI socket."""

    def __init__(self, path: Path):
        self.path = path
        self.put("/proc/sys/net/ipv4/ip_forward", "1\n")
        self.put("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n")
        self.put("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n")
        self.put("/proc/net/tcp", HEADER)
        self.put("/proc/net/tcp6", HEADER)
        self.put("/proc/cmdline", "root=/dev/vda\n")
        self.put("/etc/wgkube/kubeadm.yaml", INIT)
        self.put("/etc/wgkube/join.yaml", JOIN)
        (path / "var/lib/wgkube-standin").mkdir(parents=True, exist_ok=True)
        sock = path / "var/run/crio/crio.sock"
        sock.parent.mkdir(parents=True, exist_ok=True)
        self.cri = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.cri.bind(str(sock))
        self.cri.listen(8)

    def put(self, rel: str, text: str) -> Path:
        p = self.path / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def listen(self, port: int) -> None:
        line = f"   0: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
        self.put("/proc/net/tcp", HEADER + line)

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "WGKUBE_STANDIN_ROOT": str(self.path), "WGKUBE_STANDIN_LIB": str(STANDINS)}
        return subprocess.run([sys.executable, str(STANDINS / tool), *args], capture_output=True, text=True,
                              env=env, timeout=60)

    def kubeadm(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("kubeadm", *args)


@pytest.fixture
def root(tmp_path):
    need("openssl")
    r = Root(tmp_path / "r")
    yield r
    r.cri.close()


def init(root: Root) -> subprocess.CompletedProcess:
    return root.kubeadm("init", "--config", str(root.path / "etc/wgkube/kubeadm.yaml"))


def test_init_passes_preflight_on_a_clean_machine_and_makes_a_ca(root):
    proc = init(root)
    assert proc.returncode == 0, proc.stderr
    assert "Generating \"ca\"" in proc.stdout
    for f in ("etc/kubernetes/pki/ca.crt", "etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/manifests/etcd.yaml",
              "etc/kubernetes/kubelet.conf", "etc/kubernetes/admin.conf"):
        assert (root.path / f).exists(), f
    key = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(root.path / "etc/kubernetes/pki/apiserver.crt")],
                         capture_output=True, text=True).stdout
    assert "id-ecPublicKey" in key, "encryptionAlgorithm ECDSA-P256 gives ECDSA leaf keys"


@pytest.mark.parametrize("breakage, error", [
    (lambda r: r.listen(6443), "[ERROR Port-6443]: Port 6443 is in use"),
    (lambda r: r.listen(10250), "[ERROR Port-10250]: Port 10250 is in use"),
    (lambda r: r.put("/etc/kubernetes/manifests/kube-apiserver.yaml", "x"),
     "[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]"),
    (lambda r: r.put("/var/lib/etcd/member/x", "x"), "[ERROR DirAvailable--var-lib-etcd]"),
    (lambda r: r.put("/proc/swaps", "Filename\tType\n/swapfile file 1 0 -2\n"), "[ERROR Swap]"),
    (lambda r: r.put("/proc/sys/net/ipv4/ip_forward", "0\n"), "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]"),
    (lambda r: r.cri.close(), "[ERROR CRI]: container runtime is not running"),
])
def test_init_refuses_where_real_preflight_does(root, breakage, error):
    breakage(root)
    proc = init(root)
    assert proc.returncode == 1 and error in proc.stderr, proc.stderr
    assert not (root.path / "etc/kubernetes/admin.conf").exists(), "preflight refusals touch nothing"


@pytest.mark.parametrize("breakage, error", [
    (lambda r: r.put("/etc/kubernetes/kubelet.conf", "x"), "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]"),
    (lambda r: r.put("/etc/kubernetes/pki/ca.crt", "x"), "[ERROR FileAvailable--etc-kubernetes-pki-ca.crt]"),
    (lambda r: r.listen(10250), "[ERROR Port-10250]"),
    (lambda r: r.put("/proc/sys/net/ipv4/ip_forward", "0\n"), "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]"),
])
def test_join_refuses_where_real_preflight_does(root, breakage, error):
    ok = root.kubeadm("join", "--config", str(root.path / "etc/wgkube/join.yaml"))
    assert ok.returncode == 0, ok.stderr
    (root.path / "etc/kubernetes/kubelet.conf").unlink()
    breakage(root)
    proc = root.kubeadm("join", "--config", str(root.path / "etc/wgkube/join.yaml"))
    assert proc.returncode == 1 and error in proc.stderr, proc.stderr


def test_missing_br_netfilter_is_not_a_preflight_error(root):
    """kubeadm dropped the bridge-nf-call-iptables check (kubernetes/kubernetes#123464, v1.30)."""
    (root.path / "proc/sys/net/bridge/bridge-nf-call-iptables").unlink()
    assert init(root).returncode == 0


def test_a_failed_init_blocks_the_retry_until_reset_which_empties_pki(root):
    pki = root.path / "etc/kubernetes/pki"
    pki.mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"), "-days", "2", "-subj", "/CN=pre-made"],
                   check=True, capture_output=True)
    premade = (pki / "ca.crt").read_bytes()
    root.put("/proc/cmdline", "root=/dev/vda wgkube.standin_fail=init-once\n")
    first = init(root)
    assert first.returncode == 1 and "wait-control-plane" in first.stderr, first.stderr
    assert "Using existing ca" in first.stdout and (pki / "ca.crt").read_bytes() == premade
    again = init(root)
    assert again.returncode == 1 and "FileAvailable--etc-kubernetes-manifests" in again.stderr, again.stderr
    assert root.kubeadm("reset").returncode == 1, "reset asks for confirmation without --force"
    assert root.kubeadm("reset", "--force").returncode == 0
    assert not list(pki.iterdir()), "kubeadm reset empties the certificates directory"
    assert not (root.path / "etc/kubernetes/kubelet.conf").exists()
    third = init(root)
    assert third.returncode == 0, third.stderr
    assert "Generating \"ca\"" in third.stdout, "without the pre-made CA put back, init makes a new one"
    assert (pki / "ca.crt").read_bytes() != premade


def test_config_images_list_names_the_pause_image_the_runtime_wants(root):
    proc = root.kubeadm("config", "images", "list", "--kubernetes-version", "v1.37.0")
    assert PAUSE_IMAGE in proc.stdout.split()


@pytest.mark.parametrize("conf, ok, why", [
    (f'[crio.runtime]\ncgroup_manager = "systemd"\n[crio.image]\npause_image = "{PAUSE_IMAGE}"\n', True, ""),
    (f'[crio.image]\npause_image = "{PAUSE_IMAGE}"\n', False, "cgroup_manager"),
    (f'[crio.runtime]\ncgroup_manager = "cgroupfs"\n[crio.image]\npause_image = "{PAUSE_IMAGE}"\n', False, "cgroup_manager"),
    ('[crio.runtime]\ncgroup_manager = "systemd"\n[crio.image]\npause_image = "registry.k8s.io/pause:3.9"\n', False,
     "pause_image"),
    ("[crio.runtime\n", False, "not TOML"),
])
def test_runtime_refuses_without_systemd_cgroups_or_with_another_pause_image(root, conf, ok, why):
    root.put("/etc/crio/crio.conf.d/20-wgkube.conf", conf)
    proc = root.run("crio", "--check")
    assert (proc.returncode == 0) == ok, proc.stderr
    assert why in proc.stderr


def test_runtime_drop_ins_override_in_lexical_order(root):
    root.put("/etc/crio/crio.conf", '[crio.runtime]\ncgroup_manager = "cgroupfs"\n')
    root.put("/etc/crio/crio.conf.d/10-a.conf", '[crio.image]\npause_image = "x"\n')
    root.put("/etc/crio/crio.conf.d/20-wgkube.conf",
             f'[crio.runtime]\ncgroup_manager = "systemd"\n[crio.image]\npause_image = "{PAUSE_IMAGE}"\n')
    assert root.run("crio", "--check").returncode == 0


def _token_join(token: str, tls: str | None = None) -> str:
    return JOIN.replace("  file: {kubeConfigPath: /etc/wgkube/join.kubeconfig}\n",
                        f"  bootstrapToken: {{apiServerEndpoint: '10.9.0.1:6443', token: '{token}'}}\n"
                        f"  tlsBootstrapToken: '{tls or token}'\n")


def _init_with_tokens(root: Root, tokens: str) -> None:
    root.put("/etc/wgkube/kubeadm.yaml", INIT.replace("localAPIEndpoint:", "bootstrapTokens:\n" + tokens + "localAPIEndpoint:", 1))
    assert init(root).returncode == 0


@pytest.mark.parametrize("token, tls", [("ABCDEF.0123456789abcdef", None), ("abcdef.0123456789", None),
                                        ("abcdef.0123456789abcdef", "nope")])
def test_join_refuses_a_token_not_of_kubeadms_form(root, token, tls):
    """ValidateToken (cmd/kubeadm/app/apis/kubeadm/validation) with BootstrapTokenPattern."""
    root.put("/etc/wgkube/join.yaml", _token_join(token, tls))
    proc = root.kubeadm("join", "--config", str(root.path / "etc/wgkube/join.yaml"))
    assert proc.returncode == 1 and "the bootstrap token is invalid" in proc.stderr, proc.stderr
    assert not (root.path / "etc/kubernetes/kubelet.conf").exists()


def test_join_refuses_a_token_the_control_plane_does_not_hold_or_that_expired(root):
    _init_with_tokens(root, "  - {token: 'aaaaaa.0123456789abcdef', expires: '2099-01-01T00:00:00Z'}\n"
                            "  - {token: 'bbbbbb.0123456789abcdef', expires: '2001-01-01T00:00:00Z'}\n"
                            "  - {token: 'cccccc.0123456789abcdef', ttl: '24h'}\n")
    (root.path / "etc/kubernetes/kubelet.conf").unlink()   # init's; this fake root now plays a worker
    (root.path / "etc/kubernetes/pki/ca.crt").unlink(missing_ok=True)
    def join(token):
        root.put("/etc/wgkube/join.yaml", _token_join(token))
        return root.kubeadm("join", "--config", str(root.path / "etc/wgkube/join.yaml"))
    for bad in ("dddddd.0123456789abcdef", "bbbbbb.0123456789abcdef"):   # unknown, expired
        proc = join(bad)
        assert proc.returncode == 1 and "is invalid for this cluster or it has expired" in proc.stderr, proc.stderr
    # `kubeadm token create` on the control plane makes an unknown one good; delete revokes it.
    assert root.kubeadm("token", "create", "dddddd.0123456789abcdef", "--ttl", "3600s").returncode == 0
    assert "dddddd.0123456789abcdef" in root.kubeadm("token", "list").stdout
    assert root.kubeadm("token", "delete", "aaaaaa").returncode == 0
    assert join("aaaaaa.0123456789abcdef").returncode == 1
    ok = join("dddddd.0123456789abcdef")
    assert ok.returncode == 0, ok.stderr
    (root.path / "etc/kubernetes/kubelet.conf").unlink()
    (root.path / "etc/kubernetes/pki/ca.crt").unlink(missing_ok=True)
    assert join("cccccc.0123456789abcdef").returncode == 0, "a ttl token counts from init"


# ----------------------------------------------------------------------------- issue 17: upgrade


def _installed_kubeadm(root: Root, version: str) -> None:
    root.put("/var/lib/wgkube-standin/packages.json", json.dumps({"kubeadm": version}))


def test_upgrade_apply_refuses_what_kubeadms_version_policy_refuses(root):
    """policy.go EnforceVersionPolicies: no downgrade, one minor at a time, never past kubeadm itself."""
    root.put("/var/lib/wgkube-standin/cluster-version", "v1.36.4\n")
    _installed_kubeadm(root, "v1.36.4")
    too_new = root.kubeadm("upgrade", "apply", "-y", "v1.37.1")
    assert too_new.returncode == 1 and "Upgrade kubeadm first" in too_new.stderr
    _installed_kubeadm(root, "v1.38.0")
    skip = root.kubeadm("upgrade", "apply", "-y", "v1.38.0")
    assert skip.returncode == 1 and "can upgrade only 1 minor version at a time" in skip.stderr
    down = root.kubeadm("upgrade", "apply", "-y", "v1.35.2")
    assert down.returncode == 1 and "Downgrades are not supported" in down.stderr
    for refused in (too_new, skip, down):  # kubeadm's own message, not a crash of the stand-in
        assert "Traceback" not in refused.stderr and "FATAL: the version argument is invalid" in refused.stderr, refused.stderr
    unasked = root.kubeadm("upgrade", "apply", "v1.37.1")
    assert unasked.returncode == 1 and "confirmation" in unasked.stderr
    assert (root.path / "var/lib/wgkube-standin/cluster-version").read_text() == "v1.36.4\n"
    _installed_kubeadm(root, "v1.37.1")
    ok = root.kubeadm("upgrade", "apply", "-y", "v1.37.1")
    assert ok.returncode == 0, ok.stderr
    assert (root.path / "var/lib/wgkube-standin/cluster-version").read_text() == "v1.37.1\n"
    again = root.kubeadm("upgrade", "apply", "-y", "v1.37.1")
    assert again.returncode == 1 and "equal to or lower" in again.stderr


def test_upgrade_apply_needs_an_initialised_cluster(root):
    r = root.kubeadm("upgrade", "apply", "-y", "v1.37.0")
    assert r.returncode == 1 and "not been initialized" in r.stderr


# --------------------------------------------------------------------------- issue 14: join --control-plane

INIT_HA = INIT + """controlPlaneEndpoint: "127.0.0.1:7445"
apiServer:
  certSANs: ["10.9.0.1", "hub", "127.0.0.1"]
"""
JOIN_CP = f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken: {{apiServerEndpoint: "127.0.0.1:7445", token: "abcdef.0123456789abcdef", caCertHashes: ["sha256:{'0' * 64}"]}}
controlPlane:
  localAPIEndpoint: {{advertiseAddress: "10.9.0.2", bindPort: 6443}}
nodeRegistration: {{name: cp2, criSocket: "{CRI}"}}
"""
SHARED = ("ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key")


def sans(cert: Path) -> str:
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
                          capture_output=True, text=True).stdout
    return " ".join(text.split())


@pytest.fixture
def second(tmp_path, root):
    """A second machine that joins as a control plane: the first's kubeadm-config (what the API
    serves; host-side, the stand-in reads it from its own fake root) and the shared PKI copied in."""
    root.put("/etc/wgkube/kubeadm.yaml", INIT_HA)
    assert init(root).returncode == 0
    r = Root(tmp_path / "r2")
    r.put("/var/lib/wgkube-standin/kubeadm-config.yaml", (root.path / "var/lib/wgkube-standin/kubeadm-config.yaml").read_text())
    r.put("/var/lib/wgkube-standin/bootstrap-tokens.json", json.dumps({"abcdef.0123456789abcdef": 4102444800}))
    for f in SHARED:
        src = root.path / "etc/kubernetes/pki" / f
        r.put("/etc/kubernetes/pki/" + f, src.read_text() if src.exists() else f"premade {f}\n")
    r.put("/etc/wgkube/join.yaml", JOIN_CP)
    yield r
    r.cri.close()


def join_cp(r: Root) -> subprocess.CompletedProcess:
    return r.kubeadm("join", "--config", str(r.path / "etc/wgkube/join.yaml"))


def test_init_signs_the_apiserver_for_its_sans_and_the_control_plane_endpoint(root):
    root.put("/etc/wgkube/kubeadm.yaml", INIT_HA)
    assert init(root).returncode == 0
    names = sans(root.path / "etc/kubernetes/pki/apiserver.crt")
    assert "IP Address:10.9.0.1" in names and "IP Address:127.0.0.1" in names and "DNS:hub" in names, names


def test_join_control_plane_with_the_premade_pki_makes_a_control_plane(second):
    proc = join_cp(second)
    assert proc.returncode == 0, proc.stderr
    assert "Reading configuration from the cluster" in proc.stdout
    names = sans(second.path / "etc/kubernetes/pki/apiserver.crt")
    assert "IP Address:10.9.0.2" in names and "IP Address:127.0.0.1" in names, names
    for f in ("etc/kubernetes/manifests/etcd.yaml", "etc/kubernetes/admin.conf", "etc/kubernetes/kubelet.conf"):
        assert (second.path / f).exists(), f
    rec = [json.loads(line) for line in (second.path / "var/lib/wgkube-standin/calls.jsonl").read_text().splitlines()]
    done = [r for r in rec if r.get("event") == "join-control-plane"]
    assert done and sorted(done[-1]["shared"]) == sorted(SHARED), done


@pytest.mark.parametrize("missing", SHARED)
def test_join_control_plane_refuses_without_each_shared_certificate(second, missing):
    (second.path / "etc/kubernetes/pki" / missing).unlink()
    proc = join_cp(second)
    assert proc.returncode == 1, proc.stdout
    assert "One or more conditions for hosting a new control plane instance is not satisfied" in proc.stderr
    assert f"/etc/kubernetes/pki/{missing}" in proc.stderr, proc.stderr
    assert not (second.path / "etc/kubernetes/manifests").exists(), "a refusal touches nothing"


def test_join_control_plane_refuses_a_cluster_without_a_control_plane_endpoint(second):
    cfg = second.path / "var/lib/wgkube-standin/kubeadm-config.yaml"
    cfg.write_text("\n".join(line for line in cfg.read_text().splitlines() if "controlPlaneEndpoint" not in line) + "\n")
    proc = join_cp(second)
    assert proc.returncode == 1
    assert "doesn't have a stable controlPlaneEndpoint address" in proc.stderr, proc.stderr


@pytest.mark.parametrize("port", [6443, 2379, 2380, 10250])
def test_join_control_plane_runs_the_control_plane_preflight(second, port):
    second.listen(port)
    proc = join_cp(second)
    assert proc.returncode == 1 and f"[ERROR Port-{port}]" in proc.stderr, proc.stderr


def test_a_worker_join_still_refuses_an_existing_ca_a_control_plane_join_needs_it(second):
    """RunJoinNodeChecks adds the CA-file check only without controlPlane: the shared CA a control
    plane brings is required there, and refused on a worker."""
    worker = second.path / "etc/wgkube/worker.yaml"
    worker.write_text(JOIN_CP.replace('controlPlane:\n  localAPIEndpoint: {advertiseAddress: "10.9.0.2", bindPort: 6443}\n', ""))
    proc = second.kubeadm("join", "--config", str(worker))
    assert proc.returncode == 1 and "[ERROR FileAvailable--etc-kubernetes-pki-ca.crt]" in proc.stderr, proc.stderr
    assert join_cp(second).returncode == 0
