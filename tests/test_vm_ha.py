"""VM test of several control planes (issue 14): three control planes and a worker, real Debian 12
guests booted from their rendered seed ISOs (the harness of tests/test_vm.py: read its docstring).

Run: ``pytest -m vm tests/test_vm_ha.py -p no:cacheprovider`` (root).

What is real: everything wgkube renders, cloud-init, systemd, nftables, the kernel's WireGuard (hub
topology: cp-1 is the hub; cp-3 and w-1 sit behind a masquerading NAT gateway) and the local API
endpoint: Debian's haproxy runs the rendered /etc/wgkube/haproxy.cfg in every guest through the
rendered wgkube-apiproxy.service, and every node's wait for the API and its `kubeadm join` go
through it (127.0.0.1:7445).

What is a stand-in (tests/vm/standins/, each headed NOT ...): kubeadm, whose `join` with a
controlPlane section behaves as kubeadm's join --control-plane where this boot depends on it
(reads the kubeadm-config through the discovery endpoint, refuses a cluster without a
controlPlaneEndpoint and a machine without the shared CAs and SA keys; its header names the
sources), and the API server stand-in each control plane starts, which names its machine at
/wgkube-standin/node, so the test sees which control plane a node's local endpoint reached.

Timeline: all four guests boot at once; cp-2, cp-3 and w-1 wait for an API through their local
endpoint, which only cp-1's `kubeadm init` can bring. Once every node finished, cp-2 is powered
off (qemu quits: a machine dying) and the worker and cp-3 must keep getting answers from the
others. Every wait is on progress the guests report, bounded generously.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from test_vm import REPO, Node, _finished, _require_environment, render_cluster, vmq

pytestmark = pytest.mark.vm

SPEC = REPO / "tests" / "specs" / "vm-ha.yaml"
SHARED = {"ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key"}
DOWN = "cp-2"  # the control plane taken down (not the hub: in hub topology the hub is the VPN relay)
ANSWERS = 6    # requests per report through 127.0.0.1:7445 (the reporter's apiproxy section)


def answers(r) -> list[str]:
    """What each request through the local endpoint got: a machine name, or curl's error."""
    return [m.group(1) for m in re.finditer(r"^answer \d+ (.+)$", r.text("apiproxy") or "", flags=re.M)]


@dataclass
class HARun:
    nodes: dict[str, Node]
    hub: str
    first: dict[str, "vmq.Report"] = field(default_factory=dict)   # every node finished, all up
    after: dict[str, "vmq.Report"] = field(default_factory=dict)   # after DOWN was powered off
    seen_after: dict[str, list[list[str]]] = field(default_factory=dict)  # answers of every report since
    timings: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    log_dir: Path | None = None


@pytest.fixture(scope="module")
def ha(tmp_path_factory) -> HARun:
    _require_environment()
    t_start = time.monotonic()
    workdir = tmp_path_factory.mktemp("vm-ha")
    image = vmq.build_image()
    spec = workdir / SPEC.name  # rendered from a copy: the bundle is made beside it, not in the repository
    shutil.copy(SPEC, spec)
    _cluster, nodes = render_cluster(workdir, spec)
    by_name = {n.name: n for n in nodes}
    hub = json.loads((_cluster / "plan.json").read_text())["hub"]
    res = HARun(nodes=by_name, hub=hub, log_dir=workdir / "logs")
    res.timings["image build (cached)" if image.cached else "image build (cold)"] = image.build_seconds
    ping = "wgkube.ping=" + ",".join(n.vpn_ip for n in nodes)
    with vmq.Lab(log_dir=res.log_dir) as lab:
        net_of = {n.name: ipaddress.ip_interface(n.address).network for n in nodes}
        (out_net,) = {net_of[n.name] for n in nodes if not n.behind_nat}
        (in_net,) = {net_of[n.name] for n in nodes if n.behind_nat}
        switches = {out_net: lab.switch("public"), in_net: lab.switch("private")}
        out_gw = next(n.gateway for n in nodes if not n.behind_nat)
        in_gw = next(n.gateway for n in nodes if n.behind_nat)
        lab.nat_gateway("gw", switches[out_net], f"{out_gw}/{out_net.prefixlen}",
                        switches[in_net], f"{in_gw}/{in_net.prefixlen}")
        vms = {n.name: lab.vm(n.name, image, n.seed, [(switches[net_of[n.name]], f"52:54:00:78:00:{i:02x}")],
                              append=ping) for i, n in enumerate(nodes, start=1)}

        def check_all():
            for v in vms.values():
                if v.running:
                    v.check_alive()

        t_boot = time.monotonic()
        for v in vms.values():
            v.start()

        control_planes = {n.name for n in nodes if n.role == "control-plane"}

        def settled(name: str, r) -> bool:
            """Finished, and its endpoint answers as it should once every control plane is up (the
            tests below say it again, with the report this wait ends on)."""
            if r is None or not _finished(r) or len(answers(r)) != ANSWERS:
                return False
            if name in control_planes:
                return answers(r) == [name] * ANSWERS
            return set(answers(r)) == control_planes

        def all_answer():
            return all(settled(name, vms[name].latest()) for name in by_name)

        try:
            vmq.wait_progressing(all_answer, "every node finished and its local API endpoint answering",
                                 vms.values(), check=check_all)
        except vmq.VMTestError as exc:
            res.problems.append(str(exc))
        res.first = {name: vms[name].latest() for name in by_name}
        res.timings["boot until every node finished and answers through 127.0.0.1:7445"] = time.monotonic() - t_boot

        # A control plane dies: qemu quits (no shutdown in the guest, as a machine losing power).
        t_down = time.monotonic()
        vms[DOWN].quit()
        watch = [name for name in by_name if name != DOWN]
        since = {name: len(vms[name].reports()) for name in watch}

        def clean_after():
            ok = True
            for name in watch:
                fresh = vms[name].reports()[since[name]:]
                res.seen_after[name] = [answers(r) for r in fresh]
                good = [r for r in fresh if len(answers(r)) == ANSWERS and all(a in by_name and a != DOWN for a in answers(r))]
                if good:
                    res.after.setdefault(name, good[0])
                ok = ok and bool(good)
            return ok

        try:
            vmq.wait_progressing(clean_after, f"every other node answered without {DOWN}",
                                 [vms[n] for n in watch], stall=300, check=check_all)
        except vmq.VMTestError as exc:
            res.problems.append(str(exc))
        res.timings[f"{DOWN} off until a report of every other node with every answer from a live one"] = time.monotonic() - t_down
    res.timings["total (image + render + VMs)"] = time.monotonic() - t_start
    return res


def test_timings(ha: HARun, capsys):
    """Prints the measured times (no assertion: CPU contention on the host varies)."""
    lines = ["", "wgkube VM test of several control planes (TCG, 2 cores):"]
    lines += [f"  {k:75s} {v:7.1f} s" for k, v in ha.timings.items()]
    lines += [f"  PROBLEM: {p}" for p in ha.problems]
    lines.append(f"  logs: {ha.log_dir}")
    with capsys.disabled():
        print("\n".join(lines))


def _report(ha: HARun, name: str):
    r = ha.first.get(name)
    assert r is not None, f"{name}: no report ({'; '.join(ha.problems)})"
    return r


@pytest.mark.parametrize("name", ["cp-1", "cp-2", "cp-3", "w-1"])
def test_every_node_finished_its_first_boot(ha: HARun, name):
    r = _report(ha, name)
    assert "done" in r.phases and not r.unit_failed("wgkube-firstboot.service"), (name, r.phases, r.text("firstboot-log"))


def test_only_the_first_control_plane_inits(ha: HARun):
    for name in ha.nodes:
        calls = _report(ha, name).standin_calls("kubeadm", "init")
        assert bool(calls) == (name == ha.hub), (name, calls)


@pytest.mark.parametrize("name", ["cp-2", "cp-3"])
def test_other_control_planes_join_as_control_planes_after_an_api_answered(ha: HARun, name):
    r = _report(ha, name)
    joined = r.standin_events("join-control-plane")
    assert len(joined) == 1, (name, r.standin_records)
    event = joined[0]
    # discovery went through the node's own local endpoint, and a control plane that was up answered
    assert event["endpoint"] == "127.0.0.1:7445" and event["control_plane_endpoint"] == "127.0.0.1:7445", event
    assert event["answered_by"] in ha.nodes and event["answered_by"] != name, event
    probes = r.standin_events("join-probe")
    assert probes and probes[-1]["ok"], probes
    # the shared CAs and SA keys were there before the join (from the user-data, not uploaded)
    assert set(event["shared"]) == SHARED, event
    files = ha.nodes[name].files
    assert {p.removeprefix("/etc/kubernetes/pki/") for p in files if p.startswith("/etc/kubernetes/pki/")} == SHARED
    for line in (r.text("pki") or "").splitlines():
        digest, path = line.split()
        if path in SHARED:
            assert digest == hashlib.sha256(files["/etc/kubernetes/pki/" + path].encode()).hexdigest(), path
    # no refusal on the way: kubeadm's conditions for another control plane held
    assert not r.standin_events("join-control-plane-refused"), r.standin_events("join-control-plane-refused")


def test_the_worker_joins_through_its_local_endpoint(ha: HARun):
    r = _report(ha, "w-1")
    probes = r.standin_events("join-probe")
    assert probes and probes[-1]["ok"] and probes[-1]["url"] == "https://127.0.0.1:7445/readyz", probes
    assert not r.standin_events("join-control-plane"), "a worker joins as a worker"


@pytest.mark.parametrize("name", ["cp-1", "cp-2", "cp-3", "w-1"])
def test_the_local_endpoint_is_the_real_haproxy_on_loopback_only(ha: HARun, name):
    r = _report(ha, name)
    assert r.units.get("wgkube-apiproxy.service", {}).get("ActiveState") == "active", r.units.get("wgkube-apiproxy.service")
    processes = [line for line in (r.text("apiproxy") or "").splitlines() if line.startswith("process ")]
    assert processes and all("/etc/wgkube/haproxy.cfg" in p for p in processes), processes
    listeners = [line.split()[3] for line in (r.text("listen") or "").splitlines()
                 if len(line.split()) > 3 and line.split()[3].endswith(":7445")]
    assert listeners == ["127.0.0.1:7445"], listeners


@pytest.mark.parametrize("name", ["cp-1", "cp-2", "cp-3"])
def test_a_control_plane_reaches_its_own_api_first(ha: HARun, name):
    got = answers(_report(ha, name))
    assert got == [name] * ANSWERS, got


def test_the_worker_spreads_over_the_control_planes(ha: HARun):
    got = answers(_report(ha, "w-1"))
    assert len(got) == ANSWERS and set(got) <= set(ha.nodes) and len(set(got)) >= 2, got


@pytest.mark.parametrize("name", ["cp-1", "cp-3", "w-1"])
def test_losing_a_control_plane_leaves_every_node_an_api(ha: HARun, name):
    r = ha.after.get(name)
    assert r is not None, f"{name}: no report with every answer from a live control plane: {ha.seen_after.get(name)}"
    got = answers(r)
    assert DOWN not in got and len(got) == ANSWERS, got
    if name != "w-1":
        assert got == [name] * ANSWERS, got  # a control plane keeps using its own
    else:
        assert set(got) == {"cp-1", "cp-3"}, got  # the worker uses both that are left
