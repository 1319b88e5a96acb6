"""`wgkube lab OUTDIR`: the rendered cluster, for real, in network namespaces on this machine.

One namespace per member, an "internet" router, NAT gateways in front of members without an
endpoint, and a pod namespace behind a cni0 bridge on every node. Each member gets its
rendered nftables ruleset, sysctl file and WireGuard config exactly as rendered (decoded from
its user-data; admins from admins/<name>/<wg file>, with the interface named after that file as
wg-quick names it: wg-<cluster> with vpn.admin_conf: cluster), brought up the way wg-quick would:
wireguard-go (the kernel here may lack WireGuard), `wg setconf` on `wg-quick strip` output,
then addresses, MTU and routes. Then real packets prove the promises (checks.py).

wireguard-go keeps its control socket in /run/wireguard/<iface>.sock, one directory for every
namespace. Each wireguard-go therefore runs in its own mount namespace (`unshare --mount`, inside
the member's network namespace) with a private directory bind-mounted over /run/wireguard, and
`wg` runs inside that same mount namespace (nsenter -t PID -m -n). Endpoint host names are mapped to lab addresses in a
private /etc/hosts bind-mounted the same way; nothing outside the lab resolves or is reached.

Everything the lab creates (namespaces, processes, their mounts, its temp folder) is removed
in `finally`, also on Ctrl-C, SIGTERM or SIGHUP. Names carry the PID: two labs can run at once.

This module is the test bed (namespaces, processes, WireGuard, cleanup); checks.py holds the
probes and run.py the whole run.
"""
from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import Problem, UserError
from ...facts import WIREGUARD_OVERHEAD
from ..read.cluster import Cluster
from ..read.wgconf import parse_wg_quick
from . import net as lab_net
from .net import Site, Topology

TOOLS = {"ip": "iproute2", "nft": "nftables", "wg": "wireguard-tools", "wg-quick": "wireguard-tools",
         "wireguard-go": "wireguard-go", "nsenter": "util-linux", "unshare": "util-linux", "sysctl": "procps"}
PROBE = Path(__file__).with_name("probe.py")
PYTHON = sys.executable


class SetupFailed(Exception):
    """A rendered file did not apply (a finding about the files, not about this machine)."""


@dataclass
class Check:
    group: str
    subject: str
    expected: str
    got: str
    ok: bool


@dataclass
class LabResult:
    topology: Topology
    checks: list[Check] = field(default_factory=list)
    setup_seconds: float = 0.0
    check_seconds: float = 0.0
    total_seconds: float = 0.0
    failover_seconds: float | None = None   # mesh: relay down -> every other pair reaches again
    api_switches: list = field(default_factory=list)   # issue 14: apiproxy.Switch, one per control plane taken down and client

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def preflight() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append(Problem("", "the lab needs root (network namespaces, nftables, TUN devices)", "run it with sudo"))
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            problems.append(Problem("", f"{tool} is not installed", f"install the {package} package"))
    if not os.path.exists("/dev/net/tun"):
        problems.append(Problem("", "/dev/net/tun is missing: wireguard-go needs TUN", "load the tun module (modprobe tun)"))
    if problems:
        raise UserError(problems)


class Interrupted(BaseException):
    pass


def raise_interrupted(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


class Lab:
    def __init__(self, cluster: Cluster, nat_gateways: int = 2):
        self.cluster = cluster
        self.prefix = f"wgkl{os.getpid()}"
        self.topo = lab_net.plan_topology(cluster, self.prefix, nat_gateways)
        self.iface = cluster.interface
        # issue 17: an admin's interface is named after its file (wg-<cluster>.conf -> wg-<cluster>)
        self.admin_iface = cluster.admin_wg_file.removesuffix(".conf") if cluster.admin_wg_file else cluster.interface
        self.dir = Path(tempfile.mkdtemp(prefix=f"wgkube-lab-{os.getpid()}-"))
        self.created: list[str] = []              # namespaces, in creation order
        self.procs: list[subprocess.Popen] = []   # every process we started, by PID
        self.wg_pid: dict[str, int] = {}
        self.listeners: dict[str, subprocess.Popen] = {}   # node -> its TCP listeners on the VPN-only ports (checks.py)
        self.vpn_ip: dict[str, str] = {}
        self.result = LabResult(self.topo)

    # ---------------------------------------------------------------- running things
    def ns_argv(self, ns: str, *argv: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{ns}", *argv]

    def run(self, argv: list[str], what: str) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SetupFailed(f"{what}: {proc.stderr.strip() or proc.stdout.strip() or 'exit ' + str(proc.returncode)}")
        return proc.stdout

    def parallel(self, scripts: dict[str, str], what: str) -> None:
        """One shell script per namespace, all at once."""
        self._parallel({ns: self.ns_argv(ns, "sh", "-ec", script) for ns, script in scripts.items()}, what)

    def parallel_host(self, scripts: dict[str, str], what: str) -> None:
        self._parallel({key: ["sh", "-ec", script] for key, script in scripts.items()}, what)

    def _parallel(self, argvs: dict[str, list[str]], what: str) -> None:
        running = {ns: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for ns, argv in argvs.items()}
        errors = []
        for ns, proc in running.items():
            out, _ = proc.communicate()
            if proc.returncode != 0:
                errors.append(f"{ns}: {out.strip()}")
        if errors:
            raise RuntimeError(f"lab {what} failed: " + "; ".join(errors))

    def spawn(self, argv: list[str], log_name: str, **kw) -> subprocess.Popen:
        log = open(self.dir / log_name, "wb")
        # Own session: a Ctrl-C in the terminal reaches us only, and we stop them in order.
        proc = subprocess.Popen(argv, stdout=kw.pop("stdout", log), stderr=log, start_new_session=True, **kw)
        log.close()
        self.procs.append(proc)
        return proc

    # ---------------------------------------------------------------- building
    def build(self) -> None:
        topo = self.topo
        # Namespaces are created in parallel; each name carries our PID, so cleanup removes
        # exactly those of ours that exist, whatever step failed.
        self.created = topo.namespaces()
        self.parallel_host({ns: f"ip netns add {ns}\nnsenter --net=/run/netns/{ns} sh -ec '{script}'"
                            for ns, script in lab_net.base_scripts(topo).items()}, "namespaces")
        self.parallel(lab_net.link_scripts(topo), "links")
        self.parallel(lab_net.address_scripts(topo, self.cluster.pod_cidr, lab_net.cluster_ip(self.cluster)), "addresses")
        (self.dir / "hosts").write_text(lab_net.hosts_file(topo))
        for site in topo.sites:
            self.apply_node_files(site)
        for site in topo.sites:
            self.start_wireguard(site)
        # The hub first, then the other public members, then those behind NAT: a keepalive sent
        # before its peer listens would wait 5 s (REKEY_TIMEOUT) for the next try.
        order = sorted(topo.sites, key=lambda s: (s.member.role != "control-plane", not s.public))
        for site in order:
            self.configure_wireguard(site)

    def apply_node_files(self, site: Site) -> None:
        m = site.member
        d = self.dir / m.name
        d.mkdir(mode=0o700)
        if m.sysctl is not None:
            (d / "90-wgkube.conf").write_text(m.sysctl)
            self.run(self.ns_argv(site.ns, "sysctl", "-q", "-p", str(d / "90-wgkube.conf")), f"{m.name}: sysctl -p 90-wgkube.conf")
        if m.firewall is not None:
            (d / "firewall.nft").write_text(m.firewall)
            self.run(self.ns_argv(site.ns, "nft", "-f", str(d / "firewall.nft")), f"{m.name}: nft -f firewall.nft")

    def iface_of(self, site_or_name) -> str:
        name = site_or_name if isinstance(site_or_name, str) else site_or_name.name
        return self.admin_iface if self.topo.site(name).member.kind == "admin" else self.iface

    def start_wireguard(self, site: Site) -> None:
        d = self.dir / site.name
        iface = self.iface_of(site)
        # The file under the name it is delivered as: `wg-quick strip` refuses a name that is not a
        # valid interface name (wg-quick/linux.bash: [a-zA-Z0-9_=+.-]{1,15}), so this proves it too.
        conf = d / f"{iface}.conf"
        conf.write_text(site.member.wg_conf)
        conf.chmod(0o600)
        (d / "stripped.conf").write_text(self.run(["wg-quick", "strip", str(conf)], f"{site.name}: wg-quick strip"))
        (d / "run").mkdir()
        os.makedirs("/run/wireguard", exist_ok=True)   # the mount point; wg-quick would create it too
        script = (f"mount --bind {d / 'run'} /run/wireguard && mount --bind {self.dir / 'hosts'} /etc/hosts "
                  f"&& exec wireguard-go -f {iface}")
        env = {**os.environ, "LOG_LEVEL": "error", "WG_PROCESS_FOREGROUND": "1"}
        # unshare -m: a private mount namespace (propagation private: the bind mounts stay in it).
        proc = self.spawn(self.ns_argv(site.ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script),
                          f"{site.name}.wireguard-go.log", env=env)
        self.wg_pid[site.name] = proc.pid

    def configure_wireguard(self, site: Site) -> None:
        d = self.dir / site.name
        iface = self.iface_of(site)
        sock = d / "run" / f"{iface}.sock"
        deadline = time.monotonic() + 10
        proc = next(p for p in self.procs if p.pid == self.wg_pid[site.name])
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / f"{site.name}.wireguard-go.log").read_text(errors="replace")[-400:]
                raise RuntimeError(f"wireguard-go for {site.name} did not start: {log}")
            time.sleep(0.01)
        pid = str(self.wg_pid[site.name])
        self.run(["nsenter", "-t", pid, "-m", "-n", "wg", "setconf", iface, str(d / "stripped.conf")],
                 f"{site.name}: wg setconf")
        cfg = parse_wg_quick(site.member.wg_conf)
        if cfg.problems:
            raise SetupFailed(f"{site.name}: {iface}.conf: {'; '.join(cfg.problems)}")
        if cfg.address4 is not None:
            self.vpn_ip[site.name] = str(cfg.address4.ip)
        mtu = cfg.mtu or self.cluster.underlay_mtu - WIREGUARD_OVERHEAD   # wg-quick: the route's MTU minus 80
        lines = [f"ip address add {a} dev {iface}" for a in cfg.addresses if a.version == 4]
        lines.append(f"ip link set mtu {mtu} up dev {iface}")
        lines += [f"ip route add {net} dev {iface}" for net in wg_quick_routes(cfg)]
        self.run(self.ns_argv(site.ns, "sh", "-ec", "\n".join(lines)), f"{site.name}: addresses, MTU and routes of {iface}")

    # ---------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        """Processes by PID, then namespaces, then the temp folder. Signals wait until done."""
        blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            for proc in reversed(self.procs):
                if proc.poll() is None:
                    proc.terminate()
            for proc in reversed(self.procs):
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for ns in reversed(self.created):
                if os.path.exists(f"/run/netns/{ns}"):
                    # Anything still inside one of our namespaces was started by this run (a
                    # signal may have landed between a spawn and its bookkeeping): stop it by PID.
                    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError, ValueError):
                            os.kill(int(pid), signal.SIGKILL)
                    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self.created.clear()
            shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)


def wg_quick_routes(cfg) -> list:
    """The routes wg-quick adds: each AllowedIPs range (longest first) not already routed to the interface."""
    routed = [a.network for a in cfg.addresses if a.version == 4]
    out = []
    nets = sorted({n for p in cfg.peers for n in p.allowed_ips if n.version == 4}, key=lambda n: -n.prefixlen)
    for net in nets:
        if net.prefixlen == 0:
            raise SetupFailed("AllowedIPs 0.0.0.0/0 needs wg-quick's policy routing, which the lab does not do")
        if not any(net.subnet_of(r) for r in routed):
            out.append(net)
            routed.append(net)
    return out


def wait_ready(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for a listener's 'ready' line."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if r:
            return proc.stdout.readline().strip() == "ready"
        if proc.poll() is not None:
            return False
    return False

