"""The lab's checks: real packets between the namespaces, and what the rulesets counted.

1. cold ping: the hub pings every member behind NAT before that member has sent any traffic
   of its own: only its PersistentKeepalive can have opened the NAT and told the hub where it is.
2. every ordered pair of members pings over the VPN (NAT <-> NAT through the hub, the laptop):
   first one direction of each pair, then the other (see 2a below).
3. public UDP, from the internet namespace to each member with a public address: the
   WireGuard port's accept counter moves; other ports stay silent (no ICMP port-unreachable,
   which an accepted packet without a listener would draw) and the final drop counter moves.
4. public TCP to every VPN-only port (facts.VPN_ONLY_PORTS) and NodePort 30080 time out (listeners
   are running on them), unless the spec exposes the port; the same listeners answer a node over
   the VPN, and an admin only on the API (hub; every control plane when there are several) and SSH: its etcd, kubelet and NodePort probes time out.
5. DNAT: public TCP to the stand-in NodePort (DNAT'ed to the node's pod, like kube-proxy) is
   dropped by the forward chain unless exposed; over the VPN it reaches the pod.
6. pods: the pod namespace reaches an internet address (control) but not 169.254.169.254.
7. services (issue 17, only when an admin has `routes: services`): with a stand-in for kube-proxy's
   ClusterIP DNAT on the nodes (net.stand_in_ruleset), that admin's TCP connect to the ClusterIP
   succeeds through the control plane; an admin without the route does not connect; and after
   widening their own AllowedIPs by hand (the routed admin to a pod IP, the others to the
   service range) both are dropped by the control plane's forward chain: only DNAT'ed Service
   connections from the admins it names pass.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess

from ...facts import API_PORT, VPN_ONLY_PORTS
from ..read.wgconf import parse_wg_quick
from .bed import PROBE, PYTHON, Check, Lab, wait_ready
from .net import DNAT_PORT, METADATA, POD_PORT, ROUTER, SERVICE_PORT, cluster_ip

# Every TCP port that must stay inside the VPN, plus a sample NodePort (30080).
NODE_PORTS = sorted(port for proto, port in VPN_ONLY_PORTS if proto == "tcp") + [30080]
OTHER_UDP = [53, 123] + [port for proto, port in VPN_ONLY_PORTS if proto == "udp"]
PUBLIC_TIMEOUT = 1.5
# A ping must outlast one lost handshake initiation: WireGuard sends it again only after
# REKEY_TIMEOUT (5 s) plus up to 333 ms of jitter (WireGuard whitepaper section 6.1; wireguard-go
# device/timers.go). A reply ends a probe at once: this only lengthens probes that fail or must.
PING_TIMEOUT = 12.0


def _exposed(member, proto: str, port: int) -> bool:
    return any(p == proto and lo <= port <= hi for p, lo, hi in member.expose)


def _listen_ports(member) -> list[int]:
    ports = list(NODE_PORTS)
    for proto, lo, _hi in member.expose:
        if proto == "tcp" and lo not in ports and lo != DNAT_PORT:
            ports.append(lo)
    return ports


class _Probes:
    """Start probe processes in several namespaces at once, collect their results later."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.batches: list[tuple[subprocess.Popen, list[dict], list]] = []

    def add(self, ns: str, targets: list[tuple[dict, object]]) -> None:
        if not targets:
            return
        proc = subprocess.Popen(self.lab.ns_argv(ns, PYTHON, str(PROBE), "probe"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lab.procs.append(proc)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps([t for t, _ in targets]))
        proc.stdin.close()
        self.batches.append((proc, [t for t, _ in targets], [k for _, k in targets]))

    def collect(self) -> list[tuple[object, str]]:
        out = []
        for proc, targets, keys in self.batches:
            stdout = proc.stdout.read() if proc.stdout else ""
            proc.wait()
            try:
                results = json.loads(stdout)
            except ValueError:
                err = proc.stderr.read() if proc.stderr else ""
                results = [f"probe failed: {err.strip()[-200:]}"] * len(targets)
            out += list(zip(keys, results))
        self.batches.clear()
        return out


def counters(lab: Lab, ns: str, listen_port: int | None) -> dict[str, int | None]:
    """Packet counters of the rendered table: input's final drop, forward's final drop, the WireGuard accept."""
    found: dict[str, int | None] = {"input_drop": None, "forward_drop": None, "wg_accept": None}
    proc = subprocess.run(lab.ns_argv(ns, "nft", "-j", "list", "table", "inet", "wgkube"), capture_output=True, text=True)
    if proc.returncode != 0:
        return found
    for item in json.loads(proc.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        expr = rule.get("expr", [])
        packets = next((e["counter"]["packets"] for e in expr if "counter" in e), None)
        if packets is None:
            continue
        matches = [e["match"] for e in expr if "match" in e]
        verdict = "drop" if any("drop" in e for e in expr) else "accept" if any("accept" in e for e in expr) else None
        if not matches and verdict == "drop" and rule.get("chain") in ("input", "forward"):
            found[f"{rule['chain']}_drop"] = packets
        elif verdict == "accept" and rule.get("chain") == "input" and listen_port:
            for m in matches:
                if m.get("left") == {"payload": {"protocol": "udp", "field": "dport"}} and m.get("right") == listen_port:
                    found["wg_accept"] = packets
    return found


def _delta(before: dict, after: dict, key: str) -> int | None:
    if before.get(key) is None or after.get(key) is None:
        return None
    return after[key] - before[key]


def run_checks(lab: Lab) -> None:
    topo, checks = lab.topo, lab.result.checks
    sites = topo.sites
    nodes = [s for s in sites if s.pod_ns]
    public = [s for s in nodes if s.public]
    hub = next((s for s in sites if s.member.role == "control-plane" and s.public), sites[0])
    vpn = lab.vpn_ip

    _start_listeners(lab, nodes)

    # 1. cold ping: the hub reaches members behind NAT that have sent nothing but keepalives.
    probes = _Probes(lab)
    cold = [s for s in sites if not s.public and s.name in vpn]
    probes.add(hub.ns, [({"kind": "ping", "host": vpn[s.name], "timeout": PING_TIMEOUT}, s.name) for s in cold])
    for name, got in probes.collect():
        checks.append(Check("ping before it sends", f"{hub.name} -> {name}", "reply", got, got == "reply"))

    # 3. public UDP, counted by the ruleset (nothing else runs now, so the counters are ours).
    before = {s.name: counters(lab, s.ns, lab_listen_port(lab, s)) for s in public}
    udp_targets = []
    for s in public:
        lp = lab_listen_port(lab, s)
        ports = [p for p in OTHER_UDP + ([lp + 1] if lp and lp < 65535 else []) if p != lp]
        if lp:
            udp_targets.append(({"kind": "udp", "host": str(s.address), "port": lp, "timeout": 1.0}, (s.name, lp)))
        udp_targets += [({"kind": "udp", "host": str(s.address), "port": p, "timeout": 1.0}, (s.name, p)) for p in ports]
    probes.add(topo.internet, udp_targets)
    udp_results = probes.collect()
    after = {s.name: counters(lab, s.ns, lab_listen_port(lab, s)) for s in public}
    _udp_checks(lab, public, udp_results, before, after)

    # 2a. first contact: of each pair of members, one side pings first, as on a cluster where one
    # side opens a connection. When two peers with no session ping each other at the same moment,
    # their handshake initiations cross: each consumes the other's, which overwrites its own
    # handshake state, so the response to its own initiation is dropped (wireguard-go
    # device/noise-protocol.go, ConsumeMessageResponse: state != handshakeInitiationCreated);
    # both retry after REKEY_TIMEOUT and, on a busy machine, can cross again. Seen in CI.
    before = after
    members = [s for s in sites if s.name in vpn]

    def pings(s, targets):
        return [({"kind": "ping", "host": vpn[d.name], "timeout": PING_TIMEOUT}, ("ping", s.name, d.name)) for d in targets]

    for i, s in enumerate(members):
        probes.add(s.ns, pings(s, members[i + 1:]))
    first_contact = probes.collect()
    # 2b, 4, 5, 6 in parallel: the other direction of every pair, public TCP, VPN TCP, DNAT, pods.
    for i, s in enumerate(members):
        probes.add(s.ns, pings(s, members[:i]))
    internet = []
    for s in public:
        for port in _listen_ports(s.member) + [DNAT_PORT]:
            internet.append(({"kind": "tcp", "host": str(s.address), "port": port, "timeout": PUBLIC_TIMEOUT},
                             ("public", s.name, port)))
    probes.add(topo.internet, internet)
    by_source: dict[str, list] = {}
    admin = next((a for a in sites if a.member.kind == "admin" and a.name in vpn), None)
    for s in nodes:
        if s.name not in vpn:
            continue
        src = _vpn_source(sites, hub, s)
        for port in _listen_ports(s.member) + [DNAT_PORT]:
            if src is not None:
                by_source.setdefault(src.ns, []).append(
                    ({"kind": "tcp", "host": vpn[s.name], "port": port, "timeout": PING_TIMEOUT},
                     ("vpn", s.name, port, src.name, True)))
            if admin is not None:
                # An admin reaches the API on the hub, SSH and wgkube status (if served), nothing else (etcd, kubelet, NodePorts).
                # Issue 14: with several control planes, the API on every control plane (a kubeconfig context each).
                api_here = s is hub or (lab.cluster.several_control_planes and s.member.role == "control-plane")
                want = port in lab.cluster.admin_ports or (api_here and port == API_PORT)
                by_source.setdefault(admin.ns, []).append(
                    ({"kind": "tcp", "host": vpn[s.name], "port": port, "timeout": PING_TIMEOUT if want else PUBLIC_TIMEOUT},
                     ("vpn", s.name, port, admin.name, want)))
    for ns, targets in by_source.items():
        probes.add(ns, targets)
    for s in nodes:
        probes.add(s.pod_ns, [({"kind": "tcp", "host": str(METADATA), "port": 80, "timeout": PUBLIC_TIMEOUT}, ("metadata", s.name)),
                              ({"kind": "tcp", "host": str(ROUTER), "port": 80, "timeout": PING_TIMEOUT}, ("egress", s.name))])
    results = first_contact + probes.collect()
    after = {s.name: counters(lab, s.ns, lab_listen_port(lab, s)) for s in public}
    _main_checks(lab, results, before, after)
    _service_checks(lab)


def _service_checks(lab: Lab) -> None:
    """7. Issue 17: ClusterIPs from admins with `routes: services`, and nothing more."""
    ip = cluster_ip(lab.cluster)
    if ip is None:
        return
    checks, topo = lab.result.checks, lab.topo
    via = topo.site(lab.cluster.services_via)
    admins = [s for s in topo.sites if s.member.kind == "admin" and s.name in lab.vpn_ip]
    probes = _Probes(lab)
    for a in admins:
        want = a.member.routes_services
        probes.add(a.ns, [({"kind": "tcp", "host": str(ip), "port": SERVICE_PORT,
                            "timeout": PING_TIMEOUT if want else PUBLIC_TIMEOUT}, (a.name, want))])
    for (name, want), got in probes.collect():
        checks.append(Check("service", f"{name} -> ClusterIP {ip}:{SERVICE_PORT} (kube-proxy stand-in, via {via.name})",
                            "connected" if want else "no connection", got, (got == "connected") == want))
    # Each admin then widens its own AllowedIPs by hand (what the firewall must hold against): the
    # routed one to a pod IP, the others to the service range. The packets reach the control
    # plane, whose forward chain must drop them: only DNAT'ed Service connections from the
    # admins named in its rule pass.
    pod = via.pod_address
    svc = ipaddress.ip_network(lab.cluster.service_cidr)
    for a in admins:
        cfg = parse_wg_quick(a.member.wg_conf)
        via_ip = lab.vpn_ip.get(via.name)
        peer = next((p for p in cfg.peers if any(n.version == 4 and via_ip and ipaddress.ip_address(via_ip) in n
                                                  for n in p.allowed_ips)), None)
        if peer is None or pod is None:
            continue
        extra, route, target, port, what = ((f"{pod}/32", f"{pod}/32", str(pod), POD_PORT, f"pod {pod}:{POD_PORT} directly")
                                            if a.member.routes_services else
                                            (str(svc), str(svc), str(ip), SERVICE_PORT, f"ClusterIP {ip}:{SERVICE_PORT}"))
        iface = lab.iface_of(a)
        allowed = ",".join(dict.fromkeys([str(n) for n in peer.allowed_ips] + [extra]))
        lab.run(["nsenter", "-t", str(lab.wg_pid[a.name]), "-m", "-n", "wg", "set", iface, "peer", peer.public_key,
                 "allowed-ips", allowed], f"{a.name}: widen AllowedIPs (on purpose)")
        lab.run(lab.ns_argv(a.ns, "ip", "route", "replace", route, "dev", iface), f"{a.name}: route it (on purpose)")
        probes.add(a.ns, [({"kind": "tcp", "host": target, "port": port, "timeout": PUBLIC_TIMEOUT}, (a.name, what))])
    for (name, what), got in probes.collect():
        checks.append(Check("service", f"{name} -> {what} (AllowedIPs widened by hand; {via.name} drops it)",
                            "timeout", got, got == "timeout"))


def lab_listen_port(lab: Lab, site) -> int | None:
    return parse_wg_quick(site.member.wg_conf).listen_port


def _vpn_source(sites, hub, target):
    """Which node proves the listeners answer over the VPN: the hub, or another node for the hub
    (through the hub's relay when it is behind NAT)."""
    if target is not hub:
        return hub
    return next((s for s in sites if s is not hub and s.member.kind == "node"), None)


def _start_listeners(lab: Lab, nodes) -> None:
    procs = []
    for s in nodes:
        lab.listeners[s.name] = lab.spawn(lab.ns_argv(s.ns, PYTHON, str(PROBE), "listen", *map(str, _listen_ports(s.member))),
                                          f"{s.name}.listen.log", stdout=subprocess.PIPE, text=True)
        procs.append((s.name, lab.listeners[s.name]))
        procs.append((f"{s.name} pod", lab.spawn(lab.ns_argv(s.pod_ns, PYTHON, str(PROBE), "listen", str(POD_PORT)),
                                                 f"{s.name}.pod.log", stdout=subprocess.PIPE, text=True)))
    procs.append(("internet :80", lab.spawn(lab.ns_argv(lab.topo.internet, PYTHON, str(PROBE), "listen", "80"),
                                            "internet.listen.log", stdout=subprocess.PIPE, text=True)))
    for name, proc in procs:
        if not wait_ready(proc, 10):
            raise RuntimeError(f"the lab's listener in {name} did not start (see its log)")


def _udp_checks(lab: Lab, public, results, before, after) -> None:
    checks = lab.result.checks
    got: dict[str, dict[int, str]] = {}
    for (name, port), result in results:
        got.setdefault(name, {})[port] = result
    for s in public:
        lp = lab_listen_port(lab, s)
        mine = got.get(s.name, {})
        wg = _delta(before[s.name], after[s.name], "wg_accept")
        if lp:
            checks.append(Check("public udp", f"{s.name} :{lp} (WireGuard)", "accept counter +1",
                                "no counter on that rule" if wg is None else f"accept counter +{wg}", bool(wg)))
        others = {p: r for p, r in mine.items() if p != lp}
        closed = [p for p in others if not _exposed(s.member, "udp", p)]
        for p, r in sorted(others.items()):
            want = "refused" if _exposed(s.member, "udp", p) else "silent"
            checks.append(Check("public udp", f"{s.name} :{p}", want, r, r == want))
        drop = _delta(before[s.name], after[s.name], "input_drop")
        checks.append(Check("public udp", f"{s.name} other ports {','.join(map(str, sorted(closed)))}",
                            f"drop counter +{len(closed)} or more",
                            "no final counter drop rule" if drop is None else f"drop counter +{drop}",
                            drop is not None and drop >= len(closed)))


def _main_checks(lab: Lab, results, before, after) -> None:
    checks = lab.result.checks
    topo = lab.topo
    for key, got in results:
        kind = key[0]
        if kind == "ping":
            checks.append(Check("ping", f"{key[1]} -> {key[2]}", "reply", got, got == "reply"))
        elif kind == "public":
            _, name, port = key
            member = topo.site(name).member
            want = "connected" if _exposed(member, "tcp", port) else "timeout"
            label = f"{name} :{port}" + (" (DNAT to pod)" if port == DNAT_PORT else "")
            checks.append(Check("public tcp", label, want, got, got == want))
        elif kind == "vpn":
            _, name, port, src, reach = key
            label = f"{src} -> {name} :{port}" + (" (DNAT to pod)" if port == DNAT_PORT else "")
            want = "connected" if reach else "timeout"
            checks.append(Check("vpn tcp" if reach else "vpn tcp (admin)", label, want, got, got == want))
        elif kind == "metadata":
            checks.append(Check("pod", f"pod on {key[1]} -> {METADATA}:80", "timeout", got, got == "timeout"))
        elif kind == "egress":
            checks.append(Check("pod", f"pod on {key[1]} -> {ROUTER}:80 (control)", "connected", got, got == "connected"))
    for s in topo.sites:
        if s.pod_ns and s.public and not _exposed(s.member, "tcp", DNAT_PORT):
            drop = _delta(before[s.name], after[s.name], "forward_drop")
            checks.append(Check("public tcp", f"{s.name} forward chain (DNAT'ed public traffic)", "drop counter moves",
                                "no final counter drop rule" if drop is None else f"drop counter +{drop}", bool(drop)))
