"""VM boot test (issue 7): three real Debian 12 guests assemble a wgkube cluster.

Run: ``pytest -m vm tests/test_vm.py -p no:cacheprovider`` (root; see tests/vm/).

What is real
    The generator (``python -m generator render tests/specs/vm-cluster.yaml``) and
    everything it renders: each node boots from its own ``nodes/<node>/seed.iso``
    (NoCloud). cloud-init 22.4 (Debian 12's) consumes user-data, meta-data and
    network-config, systemd runs the rendered units, the rendered first-boot script
    runs every phase, nftables loads the rendered ``inet wgkube`` table, the kernel's
    WireGuard brings up the rendered ``wg0`` and the nodes talk over it for real:
    ``pub`` on the public segment and ``natted`` behind a masquerading NAT gateway
    (a network namespace this test creates; nothing touches the host's network).
    The workers' wait-for-API is the rendered script's own ``curl --cacert
    /etc/wgkube/ca.crt https://<hub>:6443/readyz`` over the VPN.

What is a stand-in
    kubeadm, kubelet, kubectl, crictl and CRI-O (crio) inside the guests are
    stand-ins (tests/vm/standins/, each headed "wgkube VM-test stand-in: NOT ..."),
    because Kubernetes packages cannot be downloaded where this test runs. They
    record their calls and config files and refuse what the real tools refuse where
    a first boot depends on it, each behaviour named with its upstream source in the
    stand-in's header: kubeadm's preflight (ports, manifests, kubelet.conf, swap,
    ip_forward, CRI socket), its reset (empties /etc/kubernetes/pki), its use of an
    existing CA; CRI-O's config (cgroup_manager systemd, kubeadm's pause image).
    ``kubeadm init`` serves a tiny HTTPS ``/readyz`` on the advertiseAddress:6443 with
    a certificate signed by the hub's CA. So this test proves the node assembly
    (order, waiting, failure and recovery, networking), not that Kubernetes runs.

Timeline (one boot of three guests serves every check): workers ``pub`` and
``natted`` boot first; the hub starts WGKUBE_VM_HUB_DELAY (default 45) s later.
Injected failures: the hub's first ``kubeadm init`` fails (after writing its
manifests, kubelet.conf and certificates), and ``natted`` waits only
LATE_API_TIMEOUT s for the API on its first boot, so both first boots fail, in
the kubeadm and api phases. The test reboots both: the failed phase runs again
(the hub resets and keeps its pre-made CA), finished phases are not repeated,
and every node finishes; ``pub`` simply waits. Then ``pub`` reboots and must come
back without repeating any phase. Every wait is on progress the guests report
(a sentinel, a unit state, a new boot), bounded generously, never a fixed sleep
except the hub's start delay. Guests run under TCG (no KVM here).

Skips (with the reason) when not root or a tool is missing; fails instead when
the environment variable CI is set.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "tests" / "specs" / "vm-cluster.yaml"
ADDONS_SCRIPT = "/usr/local/sbin/wgkube-addons"
ADDON_MANIFEST = "/etc/wgkube/addons/hello.yaml"  # the VM spec's one manifest add-on
CONTRACT = REPO / "docs" / "node-contract.md"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
HUB_DELAY = float(os.environ.get("WGKUBE_VM_HUB_DELAY", "45"))
CLOCK_SLACK = 2.0  # s: guests read the host's RTC at boot; allow for second granularity
# Failure injection (test image only): the hub's first `kubeadm init` fails like a real one timing
# out in wait-control-plane (standins/kubeadm), and the NAT'd worker's first boot waits only this
# long for the API (WGKUBE_API_TIMEOUT of the rendered script, set by the reporter on boot 1).
FAIL_INIT_ONCE = "wgkube.standin_fail=init-once"
LATE_API_TIMEOUT = 30
# Issue 17: the cluster boots one minor back (the stand-ins' packages at that minor) and is then
# upgraded with the scripts `wgkube upgrade` renders; the stand-in apt, apt-mark, curl and gpg of
# the package repositories sit first on those scripts' PATH only.
UPGRADE_TO = "1.37"
STANDIN_MINOR = "wgkube.standin_minor=1.36"
REPO_PATH = "/usr/lib/wgkube-test/repo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SCRIPT_CAP = 900  # s: one node's upgrade script under TCG (a dozen Python stand-in starts)


def _load_qemu_module():
    spec = importlib.util.spec_from_file_location("wgkube_vm_qemu", REPO / "tests" / "vm" / "qemu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


vmq = _load_qemu_module()


def _require_environment() -> None:
    reasons = []
    if os.geteuid() != 0:
        reasons.append("needs root (debootstrap, network namespaces, taps inside them)")
    missing = vmq.missing_tools()
    if missing:
        reasons.append("missing tools: " + ", ".join(missing)
                       + " (apt-get install qemu-system-x86 qemu-utils debootstrap vde2 xorriso"
                         " iproute2 nftables e2fsprogs)")
    if reasons:
        msg = "VM test: " + "; ".join(reasons)
        if IN_CI:
            pytest.fail("CI: " + msg)
        pytest.skip(msg)


def contract_phases(node: "Node | None" = None) -> list[str]:
    """Phase names in the order docs/node-contract.md lists them; a node that carries the add-on
    script (control plane of a spec with addons:) runs `addons` between `cni` and `done`, and a
    control plane with admin bindings runs `admins` before it."""
    phases = re.findall(r"^\d+\.\s+`([a-z-]+)`", CONTRACT.read_text(), flags=re.M)
    assert phases, f"no numbered phase list found in {CONTRACT}"
    if node is not None and "/etc/wgkube/admin-bindings.yaml" in node.files:
        # issue 17 item 2: a control plane with admins of the revocable form applies their bindings
        phases.insert(phases.index("done"), "admins")
    if node is not None and node.has_addons:
        phases.insert(phases.index("done"), "addons")
    return phases


# --------------------------------------------------------------------------- rendered facts


@dataclass
class Node:
    name: str
    role: str
    vpn_ip: str
    address: str  # underlay address/prefix
    gateway: str
    behind_nat: bool
    seed: Path
    user_data: bytes
    files: dict[str, str]  # write_files path -> content
    instance_id: str

    @property
    def is_hub(self) -> bool:
        return self.role == "control-plane"

    @property
    def has_addons(self) -> bool:
        return ADDONS_SCRIPT in self.files

    def wg_conf(self, key: str) -> str | None:
        m = re.search(rf"^\s*{key}\s*=\s*(.+?)\s*$", self.files["/etc/wireguard/wg0.conf"], flags=re.M)
        return m.group(1) if m else None


def render_cluster(workdir: Path, spec: Path = SPEC) -> tuple[Path, list[Node]]:
    # WGKUBE_VM_GENERATOR_REPO: render with another checkout's generator (e.g. to try a fix).
    gen_repo = Path(os.environ.get("WGKUBE_VM_GENERATOR_REPO", REPO))
    out = workdir / "out"
    proc = subprocess.run([sys.executable, "-m", "generator", "render", str(spec), "-o", str(out), "-q"],
                          cwd=gen_repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(gen_repo), "COLUMNS": "200"})
    assert proc.returncode == 0, f"render failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    cluster = out / yaml.safe_load(spec.read_text())["name"]
    plan = json.loads((cluster / "plan.json").read_text())
    nodes = []
    for m in plan["members"]:
        if m.get("kind", "node") != "node":
            continue
        d = cluster / "nodes" / m["name"]
        raw = (d / "user-data").read_bytes()
        text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
        assert text.startswith("#cloud-config"), f"{d}/user-data is not #cloud-config"
        ud = yaml.safe_load(text)
        files = {f["path"]: f.get("content", "") for f in ud.get("write_files", [])}
        meta = yaml.safe_load((d / "meta-data").read_text())
        sn = m.get("static_network") or {}
        nodes.append(Node(name=m["name"], role=m["role"], vpn_ip=m["vpn_ip"], address=sn["address"],
                          gateway=sn["gateway"], behind_nat=bool(m.get("behind_nat")), seed=d / "seed.iso",
                          user_data=raw, files=files, instance_id=str(meta["instance-id"])))
    return cluster, nodes


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    nodes: dict[str, Node]
    first: dict[str, "vmq.Report"] = field(default_factory=dict)  # end of first boot
    before_reboot: "vmq.Report | None" = None
    after_reboot: "vmq.Report | None" = None
    rebooted: str = ""
    reboot_how: str = ""
    started: dict[str, float] = field(default_factory=dict)  # host clock
    timings: dict[str, float] = field(default_factory=dict)
    waits_seen: dict[str, str] = field(default_factory=dict)  # worker -> seen waiting for the hub
    problems: list[str] = field(default_factory=list)  # soft waits that ran out
    log_dir: Path | None = None
    masqueraded: int = 0  # connections the NAT gateway translated
    failed: dict[str, "vmq.Report"] = field(default_factory=dict)  # first boot that failed, per node
    recovered: dict[str, "vmq.Report"] = field(default_factory=dict)  # boot after the recovery reboot
    cycles: dict[str, list[str]] = field(default_factory=dict)  # name -> ordering-cycle lines, all boots
    boots: dict[str, int] = field(default_factory=dict)  # name -> boots seen
    status_seen: dict[str, list[str]] = field(default_factory=dict)  # name -> its `status` sections, all reports
    hub_before_reboot: "vmq.Report | None" = None  # the hub, finished, before its last reboot
    hub_after_reboot: "vmq.Report | None" = None
    upgrade: "Upgrade | None" = None  # issue 17

    @property
    def hub(self) -> Node:
        return next(n for n in self.nodes.values() if n.is_hub)

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.is_hub]

    def report(self, name: str) -> "vmq.Report":
        r = self.first.get(name)
        assert r is not None, f"{name}: no report from the guest at all ({'; '.join(self.problems)})"
        return r


@dataclass
class Upgrade:
    """Issue 17: what `wgkube upgrade` printed and what running its commands in the guests did."""
    steps: list[tuple[str, str, int, str]] = field(default_factory=list)  # (node, what, exit code, output)
    printed: dict[str, str] = field(default_factory=dict)  # wgkube upgrade step -> its stdout
    calls: dict[str, list[dict]] = field(default_factory=dict)  # node -> stand-in records, afterwards
    packages: dict[str, dict] = field(default_factory=dict)  # node -> what the stand-in apt installed
    holds: dict[str, list] = field(default_factory=dict)
    nodes_state: dict = field(default_factory=dict)  # the API stand-in's cordon state (hub)
    error: str = ""

    def step(self, node: str, what: str) -> tuple[int, str]:
        found = [(rc, out) for n, w, rc, out in self.steps if n == node and w == what]
        assert found, f"{node}: no step {what!r} ran ({self.error or 'see the steps'}): {[(n, w) for n, w, _, _ in self.steps]}"
        return found[-1]


def _guest_shell(vm, argv: list[str], script: bytes | None = None) -> tuple[int, str]:
    """argv in the guest as root with the upgrade PATH (env(1) looks the command up in it: the
    agent itself would search its own PATH)."""
    env = ["PATH=" + REPO_PATH, "HOME=/root", "LANG=C.UTF-8"]
    return vm.guest_exec(["/usr/bin/env", *env, *argv], timeout=SCRIPT_CAP, input=script, env=env)


def upgrade_cluster(workdir: Path, vms: dict, nodes: dict[str, Node]) -> Upgrade:
    """Bump the spec one minor, `wgkube upgrade`, and run what it prints, in its order, in the
    guests: `ssh ops@IP sudo CMD` runs CMD in the guest with that VPN address through the agent
    (a script goes to `bash -s` on stdin, as over ssh). First a worker's script before the
    control plane's, which must refuse."""
    import shlex
    import shutil

    up = Upgrade()
    by_ip = {n.vpn_ip: name for name, n in nodes.items()}
    spec_dir = workdir / "upgrade"
    shutil.copytree(SPEC.parent / "addons", spec_dir / "addons")
    doc = yaml.safe_load(SPEC.read_text())
    doc["kubernetes"] = UPGRADE_TO
    spec = spec_dir / SPEC.name
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(SPEC.with_name(SPEC.stem + ".secrets.yaml"), spec_dir / (SPEC.stem + ".secrets.yaml"))
    out = spec_dir / "out"
    shutil.copytree(workdir / "out" / doc["name"], out / doc["name"], symlinks=True)

    def wgkube(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "generator", "upgrade", str(spec), "-o", str(out), *args],
                              cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250"})
        assert proc.returncode == 0, f"wgkube upgrade {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        up.printed[" ".join(args) or "start"] = proc.stdout
        return proc.stdout

    def run_printed(text: str) -> None:
        for line in text.splitlines():
            m = re.match(r"^\s+ssh \S+@(\S+) sudo (.+)$", line)
            if not m:
                continue
            name, rest = by_ip[m.group(1)], m.group(2)
            if rest.startswith("bash -s < "):
                script = Path(shlex.split(rest[len("bash -s < "):])[0])
                rc, output = _guest_shell(vms[name], ["/bin/bash", "-s"], script.read_bytes())
                up.steps.append((name, f"script {script.name}", rc, output))
            else:
                rc, output = _guest_shell(vms[name], shlex.split(rest))
                up.steps.append((name, rest.split(" --ignore-daemonsets")[0], rc, output))
            if rc != 0:
                raise AssertionError(f"{name}: {rest} exited {rc}:\n{output}")

    try:
        # The first boot's install_apt holds the kube packages (apt-mark hold); these guests had them baked in.
        for name, vm in vms.items():
            rc, output = _guest_shell(vm, ["apt-mark", "hold", "kubelet", "kubeadm", "kubectl"])
            up.steps.append((name, "hold", rc, output))
        wgkube()
        worker = next(n for n in nodes.values() if not n.is_hub)
        rc, output = _guest_shell(vms[worker.name], ["/bin/bash", "-s"], (out / doc["name"] / "upgrade" / f"{worker.name}.sh").read_bytes())
        up.steps.append((worker.name, "early script", rc, output))
        run_printed(up.printed["start"])
        run_printed(wgkube("--control-plane-done"))
        hub = next(n for n in nodes.values() if n.is_hub)
        rc, output = _guest_shell(vms[hub.name], ["/bin/bash", "-s"], (out / doc["name"] / "upgrade" / f"{hub.name}.sh").read_bytes())
        up.steps.append((hub.name, "script again", rc, output))
        wgkube("--workers-done")
    except (AssertionError, vmq.VMTestError) as exc:
        up.error = str(exc)
    for name, vm in vms.items():
        try:
            rc, text = vm.guest_exec(["/bin/cat", "/var/lib/wgkube-standin/calls.jsonl"], timeout=60)
            up.calls[name] = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
            for attr, f in (("packages", "packages.json"), ("holds", "apt-holds.json")):
                rc, text = vm.guest_exec(["/bin/cat", f"/var/lib/wgkube-standin/{f}"], timeout=60)
                getattr(up, attr)[name] = json.loads(text) if rc == 0 else None
            if nodes[name].is_hub:
                rc, text = vm.guest_exec(["/bin/cat", "/var/lib/wgkube-standin/nodes.json"], timeout=60)
                up.nodes_state = json.loads(text) if rc == 0 else {}
        except (vmq.VMTestError, ValueError) as exc:
            up.error += f"; reading {name}'s stand-in records: {exc}"
    return up


def _finished(r) -> bool:
    """The first-boot service is over: every phase done, or it failed. Only a full report counts:
    the light one sent while cloud-init still runs (on a reboot the first-boot unit can finish
    before cloud-final) has no units and no first-boot log to check."""
    if "wgkube-firstboot.service" not in r.units:
        return False
    return "done" in r.phases or r.unit_failed("wgkube-firstboot.service")


def _pings_ok(r, node: Node, nodes: dict[str, Node]) -> bool:
    return all(r.ping.get(n.vpn_ip) == "ok" for n in nodes.values() if n.name != node.name)


def _reads_everyone_done(r, node: Node, nodes: dict[str, Node]) -> bool:
    """The report's `status` section (asked once per reporter cycle, so it may predate another
    member's recovery) shows every other member with its `done` phase."""
    replies = _status_replies(r.text("status") or "")
    for other in nodes.values():
        if other.name == node.name:
            continue
        try:
            doc = json.loads(replies.get(other.vpn_ip, ""))
        except ValueError:
            return False
        if not isinstance(doc, dict) or "done" not in (doc.get("phases") or {}):
            return False
    return True


def _soft_wait(res: Run, vm, pred, stall: float, what: str, boot_id: str | None = None,
               not_boot_id: str | None = None):
    """Wait for a report of this guest satisfying pred while the guest makes progress (no guest
    progress for `stall` s ends the wait); records a timeout as a problem and returns the latest
    report instead."""
    def probe():
        r = vm.latest(boot_id)
        if r is None or (not_boot_id is not None and r.boot_id == not_boot_id):
            return None
        return r if pred(r) else None

    kw = {"boot_id": boot_id}
    try:
        return vmq.wait_progressing(probe, f"{vm.name}: {what}", [vm], stall=stall, check=vm.check_alive)
    except vmq.VMTestError as exc:
        if vm.proc is not None and vm.proc.poll() is not None:
            raise  # qemu died: nothing sensible to assert on
        res.problems.append(str(exc).splitlines()[0])
        return vm.latest(kw.get("boot_id"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """Boot the rendered cluster once; the tests below assert on what the guests reported."""
    _require_environment()
    t_start = time.monotonic()
    load_start = os.getloadavg()[0]
    workdir = tmp_path_factory.mktemp("vm")

    image = vmq.build_image()
    _cluster, nodes = render_cluster(workdir)
    by_name = {n.name: n for n in nodes}
    res = Run(nodes=by_name, log_dir=workdir / "logs")
    res.timings["image build (cached)" if image.cached else "image build (cold)"] = image.build_seconds

    ping = "wgkube.ping=" + ",".join(n.vpn_ip for n in nodes)
    hub_node = next(n for n in nodes if n.role == "control-plane")
    late = next(n for n in nodes if n.behind_nat)  # the worker whose first boot fails
    extra = {hub_node.name: FAIL_INIT_ONCE, late.name: f"wgkube.firstboot_env=WGKUBE_API_TIMEOUT={LATE_API_TIMEOUT}"}
    with vmq.Lab(log_dir=res.log_dir) as lab:
        # Segments from the rendered underlay: the NAT'd nodes' network sits behind the gateway.
        net_of = {n.name: ipaddress.ip_interface(n.address).network for n in nodes}
        inside = {net_of[n.name] for n in nodes if n.behind_nat}
        outside = {net_of[n.name] for n in nodes if not n.behind_nat}
        assert len(outside) == 1 and len(inside) == 1, f"the lab has one public and one NAT'd segment: {net_of}"
        (out_net,), (in_net,) = outside, inside
        switches = {out_net: lab.switch("public"), in_net: lab.switch("private")}
        out_gw = next(n.gateway for n in nodes if not n.behind_nat)
        in_gw = next(n.gateway for n in nodes if n.behind_nat)
        gw = lab.nat_gateway("gw", switches[out_net], f"{out_gw}/{out_net.prefixlen}",
                             switches[in_net], f"{in_gw}/{in_net.prefixlen}")
        vms = {n.name: lab.vm(n.name, image, n.seed, [(switches[net_of[n.name]], f"52:54:00:77:00:{i:02x}")],
                              append=(ping + " " + STANDIN_MINOR + " " + extra.get(n.name, "")).strip())
               for i, n in enumerate(nodes, start=1)}
        hub = res.hub

        def check_all():
            for v in vms.values():
                v.check_alive()

        # Workers first; the hub WGKUBE_VM_HUB_DELAY s later, so the workers have to wait for it.
        t_boot = time.monotonic()
        for w in res.workers:
            vms[w.name].start()
            res.started[w.name] = time.time()
        while time.monotonic() < t_boot + HUB_DELAY:
            check_all()
            time.sleep(2)
        vms[hub.name].start()
        res.started[hub.name] = time.time()

        def note_waits():
            h = vms[hub.name].latest()
            if h is not None and h.standin_events("apiserver-ready"):
                return
            for w in res.workers:
                r = vms[w.name].latest()
                if r and "wireguard" in r.phases and "kubeadm" not in r.phases and not r.standin_calls("kubeadm", "join"):
                    res.waits_seen.setdefault(
                        w.name, f"at uptime {r.uptime:.0f}s: phases {list(r.phases)}, no kubeadm join, hub API not up")

        # 1. The hub's first `kubeadm init` fails (injected), so its API never answers and the late
        #    worker's shortened wait for it runs out: both first boots fail, in different phases.
        def both_failed():
            note_waits()
            for n in (hub_node, late):
                r = vms[n.name].latest()
                if r is None or not r.unit_failed("wgkube-firstboot.service"):
                    return False
            return True

        try:
            vmq.wait_progressing(both_failed, "the hub's and the late worker's first boots to fail", vms.values(),
                                 check=check_all)
        except vmq.VMTestError as exc:
            res.problems.append(str(exc))
        res.timings["boot until the injected failures"] = time.monotonic() - t_boot

        # 1b. Before the reboots clear them, the healthy worker must have had the chance to read
        #     both failures over the VPN (its reporter asks every member's status once per cycle):
        #     wait until it did, or until it sent REPORTS_TO_SEE_FAILURES more reports (progress,
        #     not a wall; test_a_guest_reads_the_injected_failures_over_the_vpn judges what it saw).
        reader = next((w for w in res.workers if w.name != late.name), None)
        if reader is not None:
            t_read = time.monotonic()
            start = len(vms[reader.name].reports())

            def reader_saw_failures():
                reps = vms[reader.name].reports()
                seen = {node for r in reps for node in _failed_nodes_in(r.text("status") or "")}
                return {hub_node.name, late.name} <= seen or len(reps) - start >= REPORTS_TO_SEE_FAILURES

            try:
                vmq.wait_progressing(reader_saw_failures, f"{reader.name} to read the failures over the VPN",
                                     vms.values(), check=check_all)
            except vmq.VMTestError as exc:
                res.problems.append(str(exc))
            res.timings[f"{reader.name} reading the failures"] = time.monotonic() - t_read

        # 2. Reboot both: the failed phase must run again (kubeadm: reset, pre-made PKI kept).
        t_rec = time.monotonic()
        for n in (hub_node, late):
            r = vms[n.name].latest()
            if r is not None and r.unit_failed("wgkube-firstboot.service"):
                res.failed[n.name] = r
                vms[n.name].reboot()

        def recovered(name):
            f = res.failed.get(name)
            r = vms[name].latest()
            if f is None:
                return r is not None and _finished(r)
            return r is not None and r.boot_id != f.boot_id and _finished(r)

        def all_finished():
            note_waits()
            return all(recovered(n.name) for n in nodes)

        try:
            vmq.wait_progressing(all_finished, "every node to finish its first boot (after the recovery reboots)",
                                 vms.values(), check=check_all)
        except vmq.VMTestError as exc:
            res.problems.append(str(exc))
        for name in res.failed:
            res.recovered[name] = vms[name].latest()
        res.timings["recovery reboots until every node finished"] = time.monotonic() - t_rec
        res.timings["boot until every node finished first boot"] = time.monotonic() - t_boot

        # The spokes reach each other through the hub: give the pings a moment, then move on.
        t_ping = time.monotonic()

        def all_ping():
            reps = {n.name: vms[n.name].latest() for n in nodes}
            return all(r is not None and _finished(r) and _pings_ok(r, by_name[name], by_name)
                       and _reads_everyone_done(r, by_name[name], by_name) for name, r in reps.items())

        try:
            vmq.wait_progressing(all_ping, "VPN pings and status reads between every pair of members",
                                 vms.values(), stall=240,
                                 check=check_all)
        except vmq.VMTestError as exc:
            res.problems.append(str(exc))
        for n in nodes:
            res.first[n.name] = vms[n.name].latest()
        res.timings["VPN pings after first boot"] = time.monotonic() - t_ping

        # 3. Reboot the worker that finished on its first try: the tunnel must come back, and no
        #    phase may run again.
        victim = next((w for w in res.workers if w.name != late.name), res.workers[0])
        before = res.first.get(victim.name)
        if before is not None and "done" in before.phases:
            res.rebooted = victim.name
            vm = vms[victim.name]
            res.before_reboot = vm.latest()
            t_reboot = time.monotonic()
            res.reboot_how = vm.reboot()

            def back(r):
                peers = r.wg.get("wg0", {}).get("peers", {})
                fresh = any(p["latest_handshake"] > r.boot_time for p in peers.values())
                return fresh and r.ping.get(hub.vpn_ip) == "ok" and r.units.get(
                    "wgkube-firstboot.service", {}).get("ActiveState") not in (None, "activating")

            after = _soft_wait(res, vm, back, 300, "tunnel to the hub back after the reboot",
                               not_boot_id=res.before_reboot.boot_id)
            res.timings[f"reboot of {victim.name} until the tunnel is back"] = time.monotonic() - t_reboot
            if after is not None and after.boot_id != res.before_reboot.boot_id:
                # Progress, not a wall: one more report after cloud-init's result, so a late (wrong)
                # first-boot run or an ordering cycle of this boot would show.
                after = _soft_wait(res, vm, lambda r, s=after.seq: r.seq > s and r.cloud_init_finished, 120,
                                   "one more report after cloud-init finished", boot_id=after.boot_id)
            res.after_reboot = after
        else:
            res.problems.append(f"{victim.name} never finished its first boot: reboot step skipped")

        # 3b. Issue 17: upgrade the running cluster by one minor with the scripts wgkube renders.
        t_upgrade = time.monotonic()
        res.upgrade = upgrade_cluster(workdir, vms, by_name)
        res.timings["upgrade by one minor (all nodes)"] = time.monotonic() - t_upgrade

        # 4. Reboot the hub once it has finished (its add-on applied): nothing may be applied again.
        hub_vm = vms[hub.name]
        hub_done = hub_vm.latest()
        if hub_done is not None and _finished(hub_done) and "done" in hub_done.phases:
            res.hub_before_reboot = hub_done
            t_reboot = time.monotonic()
            hub_vm.reboot()
            res.hub_after_reboot = _soft_wait(
                res, hub_vm, lambda r: r.cloud_init_finished and "wgkube-firstboot.service" in r.units, 300,
                "the hub's full report after its last reboot", not_boot_id=hub_done.boot_id)
            res.timings["reboot of the hub until its full report"] = time.monotonic() - t_reboot
        else:
            res.problems.append("the hub never finished its first boot: its reboot step skipped")
        res.masqueraded = gw.masqueraded()
        for n in nodes:
            reps = vms[n.name].reports()
            res.boots[n.name] = len({r.boot_id for r in reps})
            res.cycles[n.name] = sorted({line for r in reps for line in r.ordering_cycles})
            res.status_seen[n.name] = [r.text("status") for r in reps if r.text("status")]

    res.timings["total (image + render + VMs)"] = time.monotonic() - t_start
    res.timings["load average at start (1 min)"] = load_start
    return res


# --------------------------------------------------------------------------- assertions


def test_timings(run: Run, capsys):
    """Prints the measured times (no assertion: CPU contention on the host varies)."""
    lines = ["", "wgkube VM test timings (TCG, 2 cores):"]
    for k, v in run.timings.items():
        lines.append(f"  {k:55s} {v:7.1f}{'' if 'load' in k else ' s'}")
    for name, r in run.first.items():
        if r is None:
            continue
        lines.append(f"  {name}: phase sentinels, seconds after kernel start (cloud-init done at "
                     f"{r.boot_finished.split()[0] if r.boot_finished else '?'})")
        lines.append("    " + "  ".join(f"{p}={t - r.boot_time:.0f}" for p, t in r.phases.items()))
    for w, seen in run.waits_seen.items():
        lines.append(f"  {w} seen waiting for the hub {seen}")
    for p in run.problems:
        lines.append(f"  PROBLEM: {p}")
    lines.append(f"  logs: {run.log_dir}")
    with capsys.disabled():
        print("\n".join(lines))
    run.log_dir.mkdir(parents=True, exist_ok=True)
    (run.log_dir / "timings.txt").write_text("\n".join(lines) + "\n")


def test_cloud_init_finished_cleanly(run: Run):
    for name, node in run.nodes.items():
        r = run.report(name)
        assert r.cloud_init_finished, f"{name}: cloud-init never finished"
        result = r.cloud_init_result["v1"]
        assert result["errors"] == [], f"{name}: cloud-init errors: {result['errors']}"
        assert "DataSourceNoCloud" in result["datasource"], f"{name}: datasource {result['datasource']}"
        assert r.boot_finished, f"{name}: no /var/lib/cloud/instance/boot-finished"
        # `status: done` proves nothing (22.4 reports it for unparsable user-data): the guest must hold
        # exactly the rendered user-data and have logged no warning or traceback.
        assert r.user_data_sha256 == hashlib.sha256(node.user_data).hexdigest(), (
            f"{name}: the guest's user-data is not the rendered one")
        assert r.instance_id == node.instance_id
        assert r.cloud_init_problems == [], f"{name}: cloud-init.log:\n" + "\n".join(r.cloud_init_problems)
        assert r.failed_units == [], f"{name}: failed units {r.failed_units}\n{r.text('firstboot-log')}"
        assert r.host == name, f"hostname is {r.host!r}, expected {name!r}"


def test_every_phase_once_in_contract_order(run: Run):
    for name in run.nodes:
        r = run.report(name)
        got = list(r.phases)  # ordered by sentinel mtime
        order = contract_phases(run.nodes[name])
        assert got == order, (f"{name}: phases by mtime {got}, contract order {order}\n"
                              f"first-boot log:\n{r.text('firstboot-log')}")
        unit = r.units.get("wgkube-firstboot.service", {})
        assert unit.get("Result") == "success", f"{name}: wgkube-firstboot.service {unit}"


def test_firewall_table_loaded(run: Run):
    for name in run.nodes:
        r = run.report(name)
        text = r.text("nft")
        assert text.startswith("table inet wgkube"), f"{name}: nft list table inet wgkube:\n{text}"
        assert "hook input" in text, f"{name}: no input chain in inet wgkube:\n{text}"
        assert r.units.get("wgkube-firewall.service", {}).get("ActiveState") == "active"


def test_rendered_sysctls_and_modules_in_effect(run: Run):
    """/etc/sysctl.d and /etc/modules-load.d files written by cloud-init must act on the first boot."""
    for name in run.nodes:
        r = run.report(name)
        assert r.sysctls, f"{name}: no wgkube sysctl.d file found"
        wrong = {k: v for k, v in r.sysctls.items() if v[0] != v[1]}
        assert not wrong, f"{name}: sysctls (wanted, in effect) not applied on first boot: {wrong}"
        missing = [m for m, loaded in r.modules.items() if not loaded]
        assert not missing, f"{name}: modules from modules-load.d not loaded on first boot: {missing}"


def test_wireguard_up_as_rendered(run: Run):
    for name, node in run.nodes.items():
        r = run.report(name)
        want_addr = node.wg_conf("Address")
        assert want_addr in r.addresses.get("wg0", []), f"{name}: wg0 has {r.addresses.get('wg0')}, rendered {want_addr}"
        link = r.links.get("wg0", {})
        assert "UP" in link.get("flags", "").split(","), f"{name}: wg0 not up: {link}"
        want_mtu = node.wg_conf("MTU")
        if want_mtu:
            assert link.get("mtu") == want_mtu, f"{name}: wg0 MTU {link.get('mtu')}, rendered {want_mtu}"
        assert r.units.get("wg-quick@wg0.service", {}).get("ActiveState") == "active"


def test_workers_handshake_with_hub(run: Run):
    hub_host = run.hub.address.split("/")[0]
    for w in run.workers:
        r = run.report(w.name)
        peers = r.wg["wg0"]["peers"]
        hub_peers = [p for p in peers.values() if p["endpoint"].startswith(hub_host + ":")]
        assert hub_peers, f"{w.name}: no peer with the hub's endpoint {hub_host}: {peers}"
        age = r.time - hub_peers[0]["latest_handshake"]
        assert hub_peers[0]["latest_handshake"] > 0 and age < 180, f"{w.name}: handshake with the hub {age:.0f}s old"
        assert r.ping.get(run.hub.vpn_ip) == "ok", f"{w.name} cannot ping the hub over the VPN"
    hub = run.report(run.hub.name)
    # The hub learnt the NAT'd worker's endpoint from its packets: the NAT gateway's public
    # address (the hub's default gateway in this lab), not the worker's private one.
    eps = [p["endpoint"] for p in hub.wg["wg0"]["peers"].values()]
    for w in run.workers:
        host = w.address.split("/")[0]
        if w.behind_nat:
            assert any(e.startswith(run.hub.gateway + ":") for e in eps), f"hub's peer endpoints: {eps}"
            assert not any(e.startswith(host + ":") for e in eps), eps
        else:
            assert any(e.startswith(host + ":") for e in eps), f"hub's peer endpoints: {eps}"
        assert hub.ping.get(w.vpn_ip) == "ok", f"the hub cannot ping {w.name} over the VPN"
    assert run.masqueraded > 0, "nothing went through the NAT gateway's masquerade rule"


def test_workers_reach_each_other_through_the_hub(run: Run):
    for w in run.workers:
        r = run.report(w.name)
        for other in run.workers:
            if other.name != w.name:
                assert r.ping.get(other.vpn_ip) == "ok", (
                    f"{w.name} cannot ping {other.name} ({other.vpn_ip}) over the VPN (relayed by the hub); "
                    f"hub sysctls {run.report(run.hub.name).sysctls}")


def test_kubelet_ordered_after_wireguard(run: Run):
    for name in run.nodes:
        unit = run.report(name).units.get("kubelet.service", {})
        assert "wg-quick@wg0.service" in unit.get("After", "").split(), f"{name}: kubelet After={unit.get('After')}"
        assert "wg-quick@wg0.service" in unit.get("Requires", "").split(), (
            f"{name}: kubelet Requires={unit.get('Requires')}")


def _standin_config(r, call) -> str:
    """Content of the config copy recorded for one stand-in call (reporter section standin-files)."""
    files = call.get("files") or {}
    assert files, f"call {call} recorded no --config copy"
    copy = next(iter(files.values()))["copy"]
    m = re.search(rf"^==> {re.escape(copy)}\n(.*?)(?=^==> |\Z)", r.text("standin-files") + "\n", flags=re.S | re.M)
    assert m, f"copy {copy} not in the report"
    return m.group(1)


def test_kubeadm_init_on_hub_join_on_workers(run: Run):
    hub = run.report(run.hub.name)
    inits = hub.standin_calls("kubeadm", "init")
    # Two inits: the injected failure on the first boot, the retry after the reboot.
    assert len(inits) == 2, f"hub: kubeadm init calls {inits}"
    assert all(c["argv"] == ["init", "--config", "/etc/wgkube/kubeadm.yaml"] for c in inits), inits
    assert not hub.standin_calls("kubeadm", "join")
    got = list(yaml.safe_load_all(_standin_config(hub, inits[-1])))
    want = list(yaml.safe_load_all(run.hub.files["/etc/wgkube/kubeadm.yaml"]))
    # The first-boot script pins kubernetesVersion to the installed kubeadm's: all else as rendered.
    for docs in (got, want):
        for d in docs:
            if isinstance(d, dict):
                d.pop("kubernetesVersion", None)
    assert got == want, "hub: kubeadm init ran with a config other than the rendered one"
    assert hub.standin_events("apiserver-ready"), "hub: the API stand-in never became ready"
    applies = [c for c in hub.standin_calls("kubectl") if "apply" in c["argv"] and ADDON_MANIFEST not in c["argv"]]
    assert len(applies) == 1 and "/etc/wgkube/flannel.yaml" in applies[0]["argv"], hub.standin_calls("kubectl")

    for w in run.workers:
        r = run.report(w.name)
        joins = r.standin_calls("kubeadm", "join")
        assert len(joins) == 1, f"{w.name}: kubeadm join calls {joins}"
        assert not r.standin_calls("kubeadm", "init")
        assert _standin_config(r, joins[0]) == w.files["/etc/wgkube/kubeadm.yaml"], (
            f"{w.name}: kubeadm join ran with a config other than the rendered one")
        probes = r.standin_events("join-probe")
        assert probes and probes[-1]["ok"], f"{w.name}: the join config's API endpoint did not answer: {probes}"


def test_the_addon_is_applied_once_and_not_again_after_a_reboot(run: Run):
    """Issue 18: the hub applies the spec's manifest add-on once, after the CNI, with the rendered
    file (the stand-in kubectl records every call and a copy of every -f file, on disk across
    boots); after the hub's last reboot no step ran again and its sentinel kept its time."""
    hub = run.hub
    assert hub.has_addons and ADDON_MANIFEST in hub.files and not any(w.has_addons for w in run.workers)
    before, after = run.hub_before_reboot, run.hub_after_reboot
    assert before is not None and after is not None and after.boot_id != before.boot_id, (
        f"the hub's last reboot was not seen ({'; '.join(run.problems)})")
    applies = [c for c in after.standin_calls("kubectl") if "apply" in c["argv"] and ADDON_MANIFEST in c["argv"]]
    assert len(applies) == 1, f"hub: add-on applies {applies}"
    copied = (applies[0].get("files") or {}).get(ADDON_MANIFEST, {})
    assert copied.get("sha256") == hashlib.sha256(hub.files[ADDON_MANIFEST].encode()).hexdigest(), (
        f"hub: the applied file is not the rendered add-on: {applies[0]}")
    flannel = [c for c in after.standin_calls("kubectl") if "/etc/wgkube/flannel.yaml" in c["argv"]]
    assert flannel and flannel[-1]["time"] <= applies[0]["time"], "hub: add-on applied before the CNI"
    assert after.phases == before.phases and "addons" in after.phases, (
        f"hub: phase sentinels changed across the reboot: {before.phases} -> {after.phases}")
    assert not [c for c in after.standin_calls("kubectl") if c["boot_id"] == after.boot_id and "apply" in c["argv"]]


def test_each_worker_joins_with_its_own_token(run: Run):
    """Join window (issue 11 item 12): the hub's kubeadm init creates one bootstrap token per
    worker (expires, description naming it), and each worker's join, accepted by the stand-in
    kubeadm (which refuses a token not of kubeadm's form), used its own token and no other."""
    hub_docs = list(yaml.safe_load_all(run.hub.files["/etc/wgkube/kubeadm.yaml"]))
    init = next(d for d in hub_docs if d.get("kind") == "InitConfiguration")
    listed = {t["token"]: t for t in init["bootstrapTokens"]}
    used = set()
    for w in run.workers:
        docs = list(yaml.safe_load_all(w.files["/etc/wgkube/kubeadm.yaml"]))
        join = next(d for d in docs if d.get("kind") == "JoinConfiguration")
        token = join["discovery"]["bootstrapToken"]["token"]
        assert join["discovery"]["tlsBootstrapToken"] == token
        assert token in listed and w.name in listed[token]["description"] and "expires" in listed[token], listed
        assert token not in used, f"{w.name} shares its join token"
        used.add(token)
        r = run.report(w.name)
        assert r.standin_calls("kubeadm", "join") and not r.standin_events("token-refused"), (
            f"{w.name}: the stand-in kubeadm refused its token: {r.standin_events('token-refused')}")


def _premade_pki(node: Node) -> dict[str, str]:
    """sha256 of the pre-made PKI files as rendered into the hub's user-data."""
    out = {}
    for path, content in node.files.items():
        if path.startswith("/etc/kubernetes/pki/"):
            out[path.removeprefix("/etc/kubernetes/pki/")] = hashlib.sha256(content.encode()).hexdigest()
    return out


def test_failed_kubeadm_init_is_retried_to_success_keeping_the_ca(run: Run):
    """Injected: the hub's first init fails after writing manifests, kubelet.conf and certificates
    (as one timing out in wait-control-plane does). The reboot runs the kubeadm phase again: the
    script resets (the stand-in's reset empties /etc/kubernetes/pki like the real one) and puts the
    pre-made CAs and SA keys back, so init passes the stand-in's preflight and the CA is unchanged."""
    name = run.hub.name
    failed, after = run.failed.get(name), run.recovered.get(name)
    assert failed is not None, f"{name}: its first boot did not fail as injected ({'; '.join(run.problems)})"
    assert failed.standin_events("init-failed-injected"), failed.standin_records
    assert "kubeadm" not in failed.phases and "api" in failed.phases, failed.phases
    assert after is not None and after.boot_id != failed.boot_id and "done" in after.phases, (
        f"{name}: no finished boot after the recovery reboot: {after and after.phases}")
    calls = [c for c in after.standin_calls("kubeadm") if c["sub"] in ("init", "reset")]
    assert [c["sub"] for c in calls] == ["init", "reset", "init"], [c["argv"] for c in calls]
    assert "--force" in calls[1]["argv"] and calls[1]["boot_id"] == after.boot_id
    assert not after.standin_events("preflight-refused"), after.standin_events("preflight-refused")
    # Finished phases are not repeated: their sentinels are the first boot's.
    for phase, t in failed.phases.items():
        assert after.phases.get(phase) == t, f"{name}: phase {phase} ran again ({t} -> {after.phases.get(phase)})"
    want = _premade_pki(run.hub)
    assert len(want) == 8, want
    got = after.pki
    assert {k: got.get(k) for k in want} == want, f"{name}: the pre-made PKI changed across reset + retry: {got}"
    assert "apiserver.crt" in got, f"{name}: no apiserver certificate after the retried init: {got}"


def test_failed_worker_first_boot_recovers_by_reboot(run: Run):
    """The NAT'd worker waits only LATE_API_TIMEOUT s for the API on its first boot; the hub's API
    is not up (its init failed), so the api phase fails. After a reboot the api phase runs again
    and the node joins; the phases it had finished keep their first-boot sentinels."""
    late = next(w for w in run.workers if w.behind_nat)
    failed, after = run.failed.get(late.name), run.recovered.get(late.name)
    assert failed is not None, f"{late.name}: its first boot did not fail ({'; '.join(run.problems)})"
    assert "api" not in failed.phases and "handshake" in failed.phases, failed.phases
    assert f"FAILED in phase api on {late.name}" in failed.text("firstboot-log"), failed.text("firstboot-log")
    assert not failed.standin_calls("kubeadm", "join")
    assert after is not None and after.boot_id != failed.boot_id and list(after.phases) == contract_phases(), (
        f"{late.name}: after the reboot: {after and after.phases}")
    for phase, t in failed.phases.items():
        assert after.phases[phase] == t, f"{late.name}: phase {phase} ran again"
    assert "phase handshake: already done, skipped" in after.text("firstboot-log")
    assert after.units["wgkube-firstboot.service"]["Result"] == "success"


def test_no_ordering_cycle_in_any_guest_boot(run: Run):
    """systemd logs 'Found ordering cycle' and deletes a job to break it (the old first-boot unit
    did so on every boot after the first): no boot of any guest may show one."""
    for name in run.nodes:
        assert run.boots.get(name, 0) >= 2, f"{name}: only {run.boots.get(name)} boot(s) seen"
        assert run.cycles.get(name) == [], f"{name}: ordering cycles:\n" + "\n".join(run.cycles[name])


def test_runtime_configured_as_kubeadm_expects(run: Run):
    """The stand-in CRI-O refuses to start without cgroup_manager systemd or with another pause
    image than kubeadm lists: it must be running, with the first boot's drop-in."""
    for name in run.nodes:
        r = run.report(name)
        assert r.units.get("crio.service", {}).get("ActiveState") == "active", f"{name}: {r.units.get('crio.service')}"
        starts = r.standin_calls("crio")
        assert starts and starts[-1].get("refused") == [], f"{name}: crio stand-in: {starts}"


def test_kubeadm_preflight_would_pass(run: Run):
    """Real kubeadm init/join stop with [ERROR FileContent--proc-sys-net-ipv4-ip_forward] or on swap."""
    for name in run.nodes:
        for call in run.report(name).standin_calls("kubeadm"):
            if call["sub"] not in ("init", "join"):
                continue
            pf = call["preflight"]
            assert pf["ip_forward"] == "1", (
                f"{name}: kubeadm {call['sub']} ran with net.ipv4.ip_forward={pf['ip_forward']}: real kubeadm's "
                "preflight fails ([ERROR FileContent--proc-sys-net-ipv4-ip_forward])")
            assert pf["swap_devices"] == 0, f"{name}: swap on during kubeadm {call['sub']}"
            assert pf["bridge_nf_call_iptables"] == "1" and pf["modules"]["br_netfilter"], (
                f"{name}: br_netfilter/bridge-nf-call-iptables not in effect at kubeadm {call['sub']}: {pf}")


def test_workers_joined_only_after_the_api_answered(run: Run):
    hub = run.report(run.hub.name)
    ready = hub.standin_events("apiserver-ready")
    assert ready, "the hub's API stand-in never became ready"
    ready_at = ready[0]["time"]
    assert run.started[run.hub.name] - min(run.started[w.name] for w in run.workers) >= HUB_DELAY - 1
    for w in run.workers:
        r = run.report(w.name)
        joins = r.standin_calls("kubeadm", "join")
        assert joins, f"{w.name}: never joined"
        assert joins[0]["time"] >= ready_at - CLOCK_SLACK, (
            f"{w.name} ran kubeadm join at {joins[0]['time']:.1f}, before the hub's API was ready at {ready_at:.1f}")
        assert r.phases["api"] >= ready_at - CLOCK_SLACK, f"{w.name}: api phase done before the API was up"
        # It really waited: WireGuard was up well before the hub could answer.
        assert r.phases["api"] - r.phases["wireguard"] > 10, (
            f"{w.name}: no visible wait between the wireguard and api phases: {r.phases}")


def test_reboot_repeats_nothing(run: Run):
    assert run.rebooted, "; ".join(run.problems)
    assert run.after_reboot is not None and run.after_reboot.ordering_cycles == [], run.after_reboot
    name, before, after = run.rebooted, run.before_reboot, run.after_reboot
    assert after is not None and after.boot_id != before.boot_id and after.bootcount == before.bootcount + 1, (
        f"{name}: no report from a second boot ({'; '.join(run.problems)})")
    assert after.phases == before.phases, f"{name}: phase sentinels changed across the reboot"
    assert len(after.standin_calls("kubeadm", "join")) == 1, f"{name}: kubeadm ran again: {after.standin_calls('kubeadm')}"
    assert not [c for c in after.standin_calls("kubeadm") if c["boot_id"] == after.boot_id]
    unit = after.units.get("wgkube-firstboot.service", {})
    assert unit.get("ActiveState") != "failed", f"{name}: wgkube-firstboot after reboot: {unit}"
    assert after.units.get("wg-quick@wg0.service", {}).get("ActiveState") == "active"
    assert after.text("nft").startswith("table inet wgkube"), f"{name}: firewall not loaded after reboot"
    peers = after.wg.get("wg0", {}).get("peers", {})
    assert any(p["latest_handshake"] > after.boot_time for p in peers.values()), f"{name}: no handshake since boot"
    assert after.ping.get(run.hub.vpn_ip) == "ok", f"{name}: cannot ping the hub after the reboot"
    kubelet = after.units.get("kubelet.service", {})
    assert kubelet.get("ActiveState") == "active", f"{name}: kubelet after reboot {kubelet}"


# --------------------------------------------------------------------------- status (issue 15)


def _status_replies(text: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


REPORTS_TO_SEE_FAILURES = 4


def _failed_nodes_in(text: str) -> dict[str, dict]:
    """node -> its firstboot state, for each status reply in a report's `status` section that
    says a phase failed."""
    found: dict[str, dict] = {}
    for reply in _status_replies(text).values():
        try:
            doc = json.loads(reply)
        except ValueError:
            continue
        if isinstance(doc, dict) and (doc.get("firstboot") or {}).get("failed"):
            found.setdefault(doc.get("node"), doc["firstboot"])
    return found


def test_members_read_each_others_status_over_the_vpn(run: Run):
    """Each guest asks every other member's rendered wgkube-status.socket over the VPN (the
    reporter's `status` section). After the recovery every reply is that member's JSON with every
    phase done; the socket listens on the VPN address only, and no reply leaks a private key."""
    for name, node in run.nodes.items():
        r = run.report(name)
        assert r.units.get("wgkube-status.socket", {}).get("ActiveState") == "active", (
            f"{name}: wgkube-status.socket {r.units.get('wgkube-status.socket')}")
        replies = _status_replies(r.text("status"))
        for other in run.nodes.values():
            if other.name == name:
                continue
            assert other.vpn_ip in replies, f"{name} did not ask {other.name}: {r.text('status')!r}"
            text = replies[other.vpn_ip]
            reply = json.loads(text)
            assert reply["node"] == other.name and reply["vpn_ip"] == other.vpn_ip, reply
            assert list(reply["phases"]) == contract_phases(other), f"{name} reading {other.name}: {reply['phases']}"
            assert reply["firstboot"] == {"running": None, "failed": None, "message": None}, reply["firstboot"]
            assert reply["units"]["wg-quick@wg0"] == "active" and reply["units"]["kubelet"] == "active", reply["units"]
            assert len(reply["peers"]) == (len(run.nodes) - 1 if other.is_hub else 1), reply["peers"]
            assert "PrivateKey" not in text and other.wg_conf("PrivateKey") not in text
        listening = [line.split()[3] for line in r.text("listen").splitlines()
                     if len(line.split()) > 3 and line.split()[3].endswith(":10280")]
        assert listening == [f"{node.vpn_ip}:10280"], f"{name}: status port listeners {listening}"


def test_a_guest_reads_the_injected_failures_over_the_vpn(run: Run):
    """While the hub's kubeadm init (injected) and the late worker's API wait had failed, the worker
    that finished on its first try read both over the VPN: the failed phase and its message."""
    reader = next(w for w in run.workers if w.name not in run.failed)
    seen: dict[str, dict] = {}
    for text in run.status_seen.get(reader.name, []):
        for node, firstboot in _failed_nodes_in(text).items():
            seen.setdefault(node, firstboot)
    assert run.failed and set(run.failed) <= set(seen), (
        f"{reader.name} saw failures of {sorted(seen)}; failed: {sorted(run.failed)}")
    hub = run.hub.name
    if hub in run.failed:
        assert seen[hub]["failed"] == "kubeadm" and seen[hub]["message"], seen[hub]
    for name in run.failed:
        if name != hub:
            assert seen[name]["failed"] == "api" and "did not answer" in seen[name]["message"], seen[name]


# --------------------------------------------------------------------------- issue 17: upgrade


def _upgrade(run: Run) -> Upgrade:
    assert run.upgrade is not None, "the upgrade step did not run"
    assert not run.upgrade.error, run.upgrade.error
    return run.upgrade


def test_a_worker_upgraded_before_the_control_plane_refuses(run: Run):
    """Its script stops at the API's version (a kubelet never newer than the API server) before it
    touches a package: no apt-get call between the early run's /version and the real run's."""
    up = run.upgrade
    assert up is not None, "the upgrade step did not run"
    worker = run.workers[0]
    rc, output = up.step(worker.name, "early script")
    assert rc == 1 and "upgrade the control plane first" in output, output
    calls = up.calls[worker.name]
    asks = [i for i, c in enumerate(calls) if c.get("tool") == "kubectl" and "/version" in c.get("argv", [])]
    assert len(asks) >= 2, f"{worker.name}: expected the early and the real run to ask the API's version: {asks}"
    between = [c for c in calls[asks[0]:asks[1]] if c.get("tool") in ("apt-get", "apt-mark", "kubeadm")]
    assert not between, f"the early run changed something: {between}"


def test_the_control_plane_upgrades_in_kubeadms_order(run: Run):
    """kubeadm of the new minor from the switched repository, `upgrade plan`, `upgrade apply`, then
    kubelet and kubectl, a kubelet restart at the new version (the stand-in kubeadm refuses an
    apply before kubeadm itself is upgraded, as policy.go does)."""
    up = _upgrade(run)
    calls = up.calls[run.hub.name]
    seq = [(c.get("tool"), " ".join(c.get("argv", [])), c.get("event")) for c in calls]
    idx = {}
    for i, (tool, argv, event) in enumerate(seq):
        key = (f"{tool} {argv}" if event is None else f"{tool} event {event}")
        idx.setdefault(key, i)

    def first(fragment: str) -> int:
        hits = [i for i, (tool, argv, event) in enumerate(seq) if fragment in f"{tool} {argv} {event or ''}"]
        assert hits, f"{run.hub.name}: no {fragment!r} in its stand-in records"
        return hits[0]

    assert first("apt-get -o DPkg::Lock::Timeout=900 -q update") < first("apt-get -o DPkg::Lock::Timeout=900 -q install -y kubeadm")
    assert first("install -y kubeadm") < first("kubeadm upgrade plan") < first("kubeadm upgrade apply -y v1.37")
    assert first("upgrade-applied") < first("install -y kubelet kubectl")
    assert first("kubectl drain hub") < first("install -y kubelet kubectl") < first("kubectl uncordon hub")
    restarted = [c for c in calls if c.get("tool") == "kubelet" and c.get("version", "").startswith("v1.37.")]
    assert restarted, "kubelet never restarted at the new minor"
    assert up.packages[run.hub.name]["kubeadm"].startswith("v1.37.") and up.packages[run.hub.name]["kubelet"].startswith("v1.37.")


def test_workers_upgrade_after_the_control_plane_drained_and_uncordoned(run: Run):
    up = _upgrade(run)
    for w in run.workers:
        rc, output = up.step(w.name, f"script {w.name}.sh")
        assert rc == 0 and "kubeadm upgrade node" in output, output
        node_steps = [c for c in up.calls[w.name] if c.get("event") == "upgrade-node"]
        assert node_steps and node_steps[-1]["cluster"].startswith("v1.37."), \
            f"{w.name}: `kubeadm upgrade node` must run against an API already at 1.37: {node_steps}"
        assert up.packages[w.name]["kubelet"].startswith("v1.37.") and up.packages[w.name]["kubeadm"].startswith("v1.37.")
        assert sorted(up.holds[w.name]) == ["kubeadm", "kubectl", "kubelet"], "the packages are held again"
        hub_steps = [what for n, what, _, _ in up.steps if n == run.hub.name]
        assert f"kubectl --kubeconfig /etc/kubernetes/admin.conf drain {w.name}" in hub_steps
        assert f"kubectl --kubeconfig /etc/kubernetes/admin.conf uncordon {w.name}" in hub_steps
        assert not up.nodes_state.get(w.name, {}).get("unschedulable"), f"{w.name} is still cordoned"


def test_running_the_control_plane_script_again_changes_nothing(run: Run):
    up = _upgrade(run)
    rc, output = up.step(run.hub.name, "script again")
    assert rc == 0 and "already runs 1.37" in output and "kubelet already runs 1.37" in output, output
    applies = [c for c in up.calls[run.hub.name] if c.get("event") == "upgrade-applied"]
    assert len(applies) == 1, applies
    assert "finished" in up.printed["--workers-done"]
