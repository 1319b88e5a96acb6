"""Issue 11, static half: what the rendered first boot installs and configures, on every package
family, checked against generator/versions.py and the pinned upstream sources. RHEL-likes cannot
boot here, so for dnf nodes this file is the whole proof (docs/node-contract.md says which checks
a real boot backs); the VM test (tests/test_vm.py) boots the apt variant."""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLE, need, render_spec
from generator import versions
from generator.artifacts import kubeadm as kubeadm_art
from generator.artifacts.cloudinit import extract_files
from generator.proof.read.nftables import Packet, parse_ruleset

FIRSTBOOT = "/usr/local/sbin/wgkube-firstboot"
UNIT = "/etc/systemd/system/wgkube-firstboot.service"


@pytest.fixture(scope="module", params=["apt", "dnf"])
def family_out(request, tmp_path_factory) -> tuple[str, Path]:
    text = EXAMPLE.read_text()
    if request.param == "dnf":
        text = re.sub(r"os: (debian-12|ubuntu-2[24]\.04)", "os: rocky-9", text)
    out = render_spec(text, tmp_path_factory.mktemp(request.param), "--no-iso", "--no-packer")
    return request.param, out


def files(out: Path, node: str) -> dict[str, str]:
    return {p: c.decode() for p, (c, _m) in extract_files((out / "nodes" / node / "user-data").read_bytes()).items()}


def script(out: Path, node: str) -> str:
    return files(out, node)[FIRSTBOOT]


def minor(out: Path) -> str:
    return yaml.safe_load((out / "plan.json").read_text())["kubernetes"]


# ------------------------------------------------------------------ items 1, 2, 6, 7, 9: packages


def test_every_url_in_the_first_boot_comes_from_versions(family_out):
    fam, out = family_out
    m = minor(out)
    allowed = {u.format(minor=m) for u in (versions.PKGS_K8S_DEB, versions.PKGS_K8S_RPM, versions.CRIO_DEB, versions.CRIO_RPM)}
    for node in ("hub", "worker-1"):
        text = script(out, node)
        urls = set(re.findall(r"https?://[^\s\"'$]+", text))
        assert urls <= allowed, f"{fam} {node}: URLs not from versions.py: {urls - allowed}"
        assert "addons:/cri-o" not in text, "CRI-O left pkgs.k8s.io/addons:/cri-o (cri-o/packaging README)"
        repos = {(versions.CRIO_DEB if fam == "apt" else versions.CRIO_RPM).format(minor=m),
                 (versions.PKGS_K8S_DEB if fam == "apt" else versions.PKGS_K8S_RPM).format(minor=m)}
        for repo in repos:
            assert f'"{repo}"' in text, f"{fam} {node}: repository {repo} not configured"
        assert "isv:/cri-o:/stable:/v" + m in text


def _installed(text: str, fam: str) -> set[str]:
    """Package names of every install command (variables expanded from the script's own header)."""
    env = dict(re.findall(r'^([A-Z0-9_]+)="([^"]*)"$', text, flags=re.M))
    env.update({k: v for k, v in re.findall(r"^([A-Z0-9_]+)=\(([^)]*)\)$", text, flags=re.M)})
    cmd = r"apt_get install -y" if fam == "apt" else r"dnf install -y(?: --disableexcludes=kubernetes)?"
    names: set[str] = set()
    for args in re.findall(rf"^\s*{cmd} (.+)$", text, flags=re.M):
        for word in args.split():
            word = word.strip('"')
            var = re.fullmatch(r"\$\{?([A-Z0-9_]+)(?:\[@\])?\}?", word)
            names.update(env[var.group(1)].split() if var else [word])
    return names


def test_every_package_name_comes_from_versions(family_out):
    fam, out = family_out
    for node in ("hub", "worker-1"):
        got = _installed(script(out, node), fam)
        distro = versions.APT_PACKAGES if fam == "apt" else versions.DNF_PACKAGES
        want = set(distro) | set(versions.K8S_PACKAGES) | {versions.CRIO_PACKAGE}
        assert got == want, f"{fam} {node}: installs {sorted(got)}, versions.py says {sorted(want)}"
        # cri-tools: kubeadm packages no longer depend on it since 1.32; --bake pulls with crictl.
        assert "cri-tools" in got and "crictl --runtime-endpoint" in script(out, node)
        assert "containerd" not in script(out, node)


def test_dnf_never_installs_curl_over_curl_minimal(family_out):
    fam, out = family_out
    if fam != "dnf":
        pytest.skip("dnf only")
    text = script(out, "worker-1")
    assert "curl" not in _installed(text, fam), "EL9 ships curl-minimal; dnf install curl conflicts with it"
    assert "command -v \"$c\"" in text and " curl;" in text, "curl (from curl-minimal) is still required on PATH"


def test_kube_packages_are_held_on_both_families(family_out):
    fam, out = family_out
    text = script(out, "worker-1")
    assert "KUBE_HOLD=(kubelet kubeadm kubectl)" in text
    if fam == "apt":
        assert 'apt-mark hold "${KUBE_HOLD[@]}"' in text
        # Every apt-get run waits for the dpkg lock (unattended-upgrades on a fresh machine).
        calls = re.findall(r"^\s*(apt-get|apt_get)\b.*$", text, flags=re.M)
        assert calls and all(c == "apt_get" for c in calls), calls
        assert f"DPkg::Lock::Timeout={versions.APT_LOCK_TIMEOUT}" in text
    else:
        assert "exclude=${KUBE_HOLD[*]}" in text and "--disableexcludes=kubernetes" in text
        assert "selinux_permissive\n" in text.split("phase_packages() {")[1].split("}")[0] + "\n"
        assert "SELINUX=permissive" in text


def test_runtime_is_cri_o_with_systemd_cgroups_and_kubeadms_pause_image(family_out):
    fam, out = family_out
    for node in ("hub", "worker-1"):
        text = script(out, node)
        assert f'CRI_SOCKET="{versions.CRIO_SOCKET}"' in text
        body = text.split("configure_runtime() {")[1].split("\n}\n")[0]
        assert 'cgroup_manager = "systemd"' in body and 'pause_image = "$pause"' in body
        assert "kubeadm config images list" in body and "/pause:" in body
        assert f'CRIO_DROPIN="{versions.CRIO_DROPIN}"' in text
        # Runs on a baked image too (the packages phase calls it whatever installed the packages).
        assert "    configure_runtime\n" in text.split("phase_packages() {")[1]
        kcfg = files(out, node)["/etc/wgkube/kubeadm.yaml"]
        assert f'criSocket: "{versions.CRIO_SOCKET}"' in kcfg
    assert set(kubeadm_art.RUNTIME_FOR.values()) == {"crio"}


def test_dnf_first_boot_for_the_hub_is_shellcheck_clean(family_out, tmp_path):
    fam, out = family_out
    shellcheck = need("shellcheck")
    for node in ("hub", "worker-1"):
        path = tmp_path / f"{node}.sh"
        path.write_text(script(out, node))
        proc = subprocess.run([shellcheck, "-S", "style", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{fam} {node}:\n{proc.stdout}"


# ------------------------------------------------------------------ item 3: no ordering cycle


CLOUD_UNITS = ("cloud-init-local.service", "cloud-init.service", "cloud-config.service", "cloud-final.service",
               "cloud-config.target", "cloud-init.target")


def _cloud_init_units(tmp_path: Path) -> Path:
    """cloud-init's units as the VM test's guest has them: read out of the newest cached guest image
    (debugfs, no mount) when there is one, else this Debian's own (the same cloud-init 22.4
    package the guest image installs from the same mirror)."""
    debugfs = shutil.which("debugfs")
    images = sorted(Path("/var/cache/wgkube-vm").glob("*/DONE"), key=lambda p: p.stat().st_mtime, reverse=True)
    for done in images if debugfs else []:
        out = tmp_path / "guest-units"
        out.mkdir(exist_ok=True)
        for unit in CLOUD_UNITS:
            proc = subprocess.run([debugfs, "-R", f"cat /lib/systemd/system/{unit}", str(done.parent / "rootfs.img")],
                                  capture_output=True, text=True)
            (out / unit).write_text(proc.stdout)
        if all("[Unit]" in (out / u).read_text() for u in CLOUD_UNITS):
            return out
    d = Path("/lib/systemd/system")
    if not (d / "cloud-final.service").exists():
        pytest.skip("no cloud-init systemd units on this machine (apt-get install cloud-init)")
    return d


def test_systemd_analyze_finds_no_ordering_cycle_with_cloud_inits_units(example_out, tmp_path):
    """Enabled as a node has it (runcmd: systemctl enable), next to cloud-init's real units enabled
    as its package does: `systemd-analyze verify` builds the boot transaction and reports any cycle."""
    need("systemd-analyze")
    src = _cloud_init_units(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    for name in CLOUD_UNITS:
        shutil.copy(src / name, units / name)
    fb = files(example_out, "hub")
    for path in (UNIT, "/etc/systemd/system/wgkube-firewall.service"):
        (units / Path(path).name).write_text(fb[path])
    assert "After=multi-user.target" in (units / "cloud-final.service").read_text(), "cloud-final's ordering changed"
    wants = {"multi-user.target.wants": ["wgkube-firstboot.service", "wgkube-firewall.service", "cloud-init.target"],
             "cloud-init.target.wants": ["cloud-init-local.service", "cloud-init.service", "cloud-config.service",
                                         "cloud-final.service"]}
    for d, names in wants.items():
        (units / d).mkdir()
        for n in names:
            (units / d / n).symlink_to(units / n)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "default.target", "multi-user.target",
                           "wgkube-firstboot.service"], capture_output=True, text=True,
                          env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    cycles = [line for line in proc.stderr.splitlines() if "ordering cycle" in line or "to break ordering" in line]
    assert not cycles, "\n".join(cycles)
    unit = fb[UNIT]
    assert "cloud-final" not in re.sub(r"#.*", "", unit) and "DefaultDependencies=no" in unit


def test_the_old_unit_had_the_cycle(tmp_path):
    """Guard: the check above does see the cycle of the unit before issue 11."""
    need("systemd-analyze")
    src = _cloud_init_units(tmp_path)
    units = tmp_path / "units"
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / "cloud-init.target.wants").mkdir()
    for name in CLOUD_UNITS:
        shutil.copy(src / name, units / name)
    (units / "old.service").write_text("[Unit]\nAfter=network-online.target cloud-final.service\n[Service]\n"
                                       "Type=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    (units / "multi-user.target.wants" / "old.service").symlink_to(units / "old.service")
    (units / "multi-user.target.wants" / "cloud-init.target").symlink_to(units / "cloud-init.target")
    (units / "cloud-init.target.wants" / "cloud-final.service").symlink_to(units / "cloud-final.service")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "multi-user.target"], capture_output=True,
                          text=True, env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    assert "ordering cycle" in proc.stderr, proc.stderr


# ------------------------------------------------------------------ item 4: kubeadm retry


def test_kubeadm_phase_resets_a_failed_run_and_keeps_the_premade_pki(example_out):
    hub, worker = script(example_out, "hub"), script(example_out, "worker-1")
    phase = hub.split("phase_kubeadm() {")[1].split("\n}\n")[0]
    # Copy taken before the first run, reset on a retry, copy put back, then init.
    order = [phase.index(s) for s in ("keep_pki", 'if [ -e "$attempted" ]', "kubeadm reset --force",
                                       "restore_pki", '>"$attempted"', "kubeadm init --config")]
    assert order == sorted(order), phase
    premade = re.search(r'^PREMADE="([^"]+)"', hub, flags=re.M).group(1).split()
    rendered = {p.removeprefix("/etc/kubernetes/pki/") for p in files(example_out, "hub") if p.startswith("/etc/kubernetes/pki/")}
    assert set(premade) == rendered, (premade, rendered)
    wphase = worker.split("phase_kubeadm() {")[1].split("\n}\n")[0]
    assert "kubeadm reset --force" in wphase and "kubeadm join --config" in wphase and "restore_pki" not in worker


# ------------------------------------------------------------------ item 5: metadata vs DNS


def test_pods_reach_the_metadata_servers_dns_but_not_its_http(example_out):
    from generator.facts import METADATA_ADDRESS, POD_INTERFACES
    import ipaddress
    rs = parse_ruleset(files(example_out, "hub")["/etc/wgkube/firewall.nft"])
    md, pod = ipaddress.IPv4Address(METADATA_ADDRESS), ipaddress.IPv4Address("10.244.1.5")

    def verdict(proto, port):
        return rs.verdict("forward", Packet(POD_INTERFACES[0], "eth0", pod, md, proto, port, 40000))

    assert verdict("udp", 53) and verdict("tcp", 53), "GCP: the metadata server is the VM's resolver"
    assert not verdict("tcp", 80) and not verdict("tcp", 8080) and not verdict("udp", 123)
    assert not verdict("icmp", None)


# ------------------------------------------------------------------ item 8: flannel


# Documentation/kube-flannel.yml of flannel-io/flannel at tag v0.28.9
# (commit 5cd0d52648e891d73a6dcb9bb2c67d7c365cf7aa), the parts that must match.
UPSTREAM_V0289 = {
    ("Namespace", "kube-flannel"): {"labels": {"k8s-app": "flannel", "pod-security.kubernetes.io/enforce": "privileged"}},
    ("ClusterRole", "flannel"): {"labels": {"k8s-app": "flannel"}},
    ("ClusterRoleBinding", "flannel"): {"labels": {"k8s-app": "flannel"}},
    ("ServiceAccount", "flannel"): {"labels": {"k8s-app": "flannel"}, "namespace": "kube-flannel"},
    ("ConfigMap", "kube-flannel-cfg"): {"labels": {"tier": "node", "k8s-app": "flannel", "app": "flannel"},
                                        "namespace": "kube-flannel"},
    ("DaemonSet", "kube-flannel-ds"): {"labels": {"tier": "node", "app": "flannel", "k8s-app": "flannel"},
                                       "namespace": "kube-flannel"},
}


def test_flannel_manifest_matches_the_pinned_upstream_release(example_out):
    assert versions.FLANNEL_VERSION == "v0.28.9", "bump UPSTREAM_V0289 with the pin (read the release's kube-flannel.yml)"
    docs = [d for d in yaml.safe_load_all(files(example_out, "hub")["/etc/wgkube/flannel.yaml"]) if d]
    got = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert set(got) == set(UPSTREAM_V0289)
    for key, want in UPSTREAM_V0289.items():
        meta = got[key]["metadata"]
        assert meta.get("labels") == want["labels"], key
        assert meta.get("namespace") == want.get("namespace"), key
    ds = got[("DaemonSet", "kube-flannel-ds")]["spec"]
    assert ds["selector"] == {"matchLabels": {"app": "flannel"}}, "DaemonSet selectors are immutable: upstream's"
    assert ds["template"]["metadata"]["labels"] == {"tier": "node", "app": "flannel"}
    pod = ds["template"]["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == [{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]
    images = [c["image"] for c in pod["initContainers"] + pod["containers"]]
    assert images == ["ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3", "ghcr.io/flannel-io/flannel:v0.28.9",
                      "ghcr.io/flannel-io/flannel:v0.28.9"]
    assert [c["command"] for c in pod["initContainers"]] == [["cp"], ["/opt/bin/install-conf"]]
    main = pod["containers"][0]
    assert {e["name"]: e.get("value") for e in main["env"]} == {
        "POD_NAME": None, "POD_NAMESPACE": None, "EVENT_QUEUE_DEPTH": "5000", "CONT_WHEN_CACHE_NOT_READY": "false"}
    assert main["args"][:3] == ["--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"] and "--iface=wg0" in main["args"]
    net = yaml.safe_load(got[("ConfigMap", "kube-flannel-cfg")]["data"]["net-conf.json"])
    # One packet-filter story: kube-proxy in its default iptables mode, flannel in iptables too.
    assert net["EnableNFTables"] is False
    kcfg = "\n".join(files(example_out, "hub")["/etc/wgkube/kubeadm.yaml"].splitlines())
    assert "KubeProxyConfiguration" not in kcfg, "kube-proxy's mode is its default (iptables)"


# ------------------------------------------------------------------ item 10: ECDSA leaves


def test_kubeadm_issues_ecdsa_leaf_certificates(example_out):
    text = files(example_out, "hub")["/etc/wgkube/kubeadm.yaml"]
    docs = kubeadm_art.validate_documents(text)
    cc = next(d for d in docs if type(d).__name__ == "ClusterConfiguration")
    assert cc.encryptionAlgorithm == versions.KUBEADM_ENCRYPTION_ALGORITHM == "ECDSA-P256"
    # ... like the pre-made CA (ECDSA P-256).
    from cryptography import x509
    ca = x509.load_pem_x509_certificate(files(example_out, "hub")["/etc/kubernetes/pki/ca.crt"].encode())
    assert ca.public_key().curve.name == "secp256r1"
    assert hashlib.sha256(text.encode()).hexdigest()  # rendered deterministically elsewhere
