"""`wgkube verify`: prove the network promises from the rendered files, before any machine exists.

Reads each member's WireGuard config, nftables ruleset and sysctl file exactly as rendered,
then simulates, for every ordered pair of members, what the kernel and WireGuard would do with
a ping: the route to the WireGuard interface, cryptokey routing (longest prefix over the
AllowedIPs of that interface), the receiver's source check, whether a relaying member forwards
(ip_forward and its forward chain) and whether the destination's input chain accepts it.
It also checks, per member, what the public side can reach, that every link has someone able
to start the handshake, NAT keepalives, and the MTU chain underlay -> WireGuard -> VXLAN.

Speed: members with the same table share one precomputed row (destination -> peer), so 1,000
members (~1M pairs) stay well under the 5 s budget while every pair is still walked hop by hop.
"""
from __future__ import annotations

import bisect
import ipaddress
import time
from collections import Counter
from dataclasses import dataclass, field

from . import pki, versions
from .artifacts.firewall import POD_INTERFACES
from .lab_files import Cluster, MemberFiles
from .lab_nft import Packet, Ruleset, parse_ruleset
from .lab_wgconf import WgConfig, WgPeer, parse_wg_quick

# Ports that must never answer on the public side (unless the spec exposes them), for messages.
SENSITIVE = {("tcp", 22): "SSH", ("tcp", 6443): "Kubernetes API", ("tcp", 2379): "etcd", ("tcp", 2380): "etcd peers",
             ("tcp", 10250): "kubelet", ("tcp", 10256): "kube-proxy health", ("tcp", 10257): "controller-manager",
             ("tcp", 10259): "scheduler", ("udp", versions.FLANNEL_VXLAN_PORT): "flannel VXLAN"}
NODEPORTS = (30000, 32767)
PUBLIC_IFACE = "(public)"      # stands for the node's uplink, whatever its name
GENERIC_PUBLIC = ipaddress.IPv4Address("192.0.2.77")
NAT_UDP_TIMEOUT = 120         # s: Linux conntrack's timeout for a UDP flow that has seen replies
MATRIX_LIMIT = 12              # print the full pair matrix up to this many members

KINDS = {
    "config": "a rendered file cannot be read as its tool would read it",
    "peering": "a [Peer] that is not a member, or a member that does not list its peer back",
    "overlap": "the same AllowedIPs range on two peers of one interface (WireGuard keeps only the last)",
    "no-initiator": "two peers neither of which can start a handshake",
    "nat-keepalive": "a member behind NAT without a PersistentKeepalive shorter than NAT mappings last: unreachable once its mapping expires",
    "unreachable": "a ping from one member does not reach another",
    "loop": "a packet circles between members",
    "public-port": "the public side can reach a port the spec does not expose (or cannot reach one it does)",
    "metadata": "pod addresses can reach the cloud metadata service",
    "mtu": "the MTU chain underlay -> WireGuard (-80) -> VXLAN (-50) does not fit",
}

NO_PEER, UNKNOWN_PEER = -2, -3   # cryptokey table entries that are not a member index


@dataclass
class Finding:
    kind: str
    where: str
    detail: str
    count: int = 1


@dataclass
class Report:
    cluster: str
    names: list[str]
    pairs: int = 0
    reachable: int = 0
    hops: Counter = field(default_factory=Counter)
    matrix: dict[tuple[int, int], str] | None = None
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}


def sysctl_values(text: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip().lstrip("-").replace("/", ".")] = value.strip()
    return values


def forwarding_enabled(text: str | None) -> bool:
    v = sysctl_values(text)
    return v.get("net.ipv4.ip_forward") == "1" or v.get("net.ipv4.conf.all.forwarding") == "1"


# --------------------------------------------------------------------------- port range sets


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _subtract(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in _merge(a):
        for blo, bhi in _merge(b):
            if bhi < lo or blo > hi:
                continue
            if blo > lo:
                out.append((lo, blo - 1))
            lo = bhi + 1
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return out


def describe_ports(proto: str, ranges: list[tuple[int, int]]) -> str:
    parts = []
    for lo, hi in ranges:
        names = [name for (p, port), name in sorted(SENSITIVE.items(), key=lambda kv: kv[0][1]) if p == proto and lo <= port <= hi]
        if lo <= NODEPORTS[1] and hi >= NODEPORTS[0]:
            names.append("NodePorts")
        text = f"{lo}" if lo == hi else f"{lo}-{hi}"
        parts.append(f"{text} ({', '.join(names)})" if names else text)
    return f"{proto} " + ", ".join(parts)


# --------------------------------------------------------------------------- firewall views


def _normalized(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


class _Verdicts:
    """Does one hook of one member's ruleset let VPN traffic s -> d through?

    Rules can only tell addresses apart by the networks they mention, so addresses are grouped
    by which of those networks contain them; one evaluation per group pair, usually just one.
    """

    def __init__(self, rs: Ruleset | None, hook: str, iif: str, oif: str | None, addrs: list):
        self.rs, self.hook, self.iif, self.oif, self.addrs = rs, hook, iif, oif, addrs
        self.const: bool | None = True
        if rs is None or not rs.base_chains(hook):
            return
        spans = [(int(n.network_address), int(n.broadcast_address)) for n in rs.networks(hook)]
        self.cls = [None if a is None else tuple(lo <= int(a) <= hi for lo, hi in spans) for a in addrs]
        groups = {c for c in self.cls if c is not None}
        self.cache: dict = {}
        self.const = None
        if len(groups) <= 1:
            rep = next((a for a in addrs if a is not None), GENERIC_PUBLIC)
            self.const = self._eval(rep, rep)

    def _eval(self, s, d) -> bool:
        return self.rs.verdict(self.hook, Packet(self.iif, self.oif, s, d, "icmp"))

    def ok(self, s: int, d: int) -> bool:
        if self.const is not None:
            return self.const
        key = (self.cls[s], self.cls[d])
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = self._eval(self.addrs[s], self.addrs[d])
        return hit


# --------------------------------------------------------------------------- the simulation


class _Sim:
    def __init__(self, cluster: Cluster):
        self.c = cluster
        self.m: list[MemberFiles] = cluster.members
        self.n = len(self.m)
        self.names = [m.name for m in self.m]
        self.iface = cluster.interface
        self.findings: list[Finding] = []
        self.cfg: list[WgConfig] = [parse_wg_quick(m.wg_conf) for m in self.m]
        self._rulesets: dict[str, Ruleset] = {}
        self.fw: list[Ruleset | None] = [self._ruleset(m) for m in self.m]
        self.fwd_on = [forwarding_enabled(m.sysctl) for m in self.m]
        for m, cfg in zip(self.m, self.cfg):
            for p in cfg.problems:
                self.add("config", m.name, f"{self.iface}.conf {p}")
        self._identities()
        self._tables()
        self._edges()

    def add(self, kind: str, where: str, detail: str, count: int = 1) -> None:
        self.findings.append(Finding(kind, where, detail, count))

    def _ruleset(self, m: MemberFiles) -> Ruleset | None:
        if m.firewall is None:
            return None
        key = _normalized(m.firewall)
        rs = self._rulesets.get(key)
        if rs is None:
            rs = self._rulesets[key] = parse_ruleset(m.firewall)
        for p in rs.problems:
            self.add("config", m.name, f"firewall.nft {p}")
        return rs

    # -- who is who: keys and addresses, from the configs themselves
    def _identities(self) -> None:
        self.pub: list[str | None] = []
        for m, cfg in zip(self.m, self.cfg):
            try:
                self.pub.append(pki.wg_public_from_private(cfg.private_key or ""))
            except (ValueError, TypeError):
                self.pub.append(None)
                self.add("config", m.name, f"{self.iface}.conf has no valid PrivateKey")
        self.by_key: dict[str, int] = {}
        for i, key in enumerate(self.pub):
            if key is not None:
                if key in self.by_key:
                    self.add("config", self.names[i], f"same private key as {self.names[self.by_key[key]]}")
                self.by_key.setdefault(key, i)
        vpn = ipaddress.ip_network(self.c.vpn_cidr)
        self.addr: list[ipaddress.IPv4Address | None] = []
        seen: dict = {}
        for m, cfg in zip(self.m, self.cfg):
            a = cfg.address4
            if a is None:
                self.add("config", m.name, f"{self.iface}.conf has no IPv4 Address")
                self.addr.append(None)
                continue
            if a.ip not in vpn:
                self.add("config", m.name, f"Address {a} is outside the VPN range {vpn}")
            if a.ip in seen:
                self.add("config", m.name, f"Address {a.ip} is also {seen[a.ip]}'s")
            seen.setdefault(a.ip, m.name)
            self.addr.append(a.ip)
        order = sorted((int(a), i) for i, a in enumerate(self.addr) if a is not None)
        self._sorted_ints = [a for a, _ in order]
        self._sorted_idx = [i for _, i in order]

    def _is_spare(self, p: WgPeer) -> bool:
        return (len(p.allowed_ips) == 1 and p.allowed_ips[0].prefixlen == 32
                and str(p.allowed_ips[0].network_address) in self.c.spares)

    def _members_in(self, net) -> list[int]:
        if net.version != 4:
            return []
        lo = bisect.bisect_left(self._sorted_ints, int(net.network_address))
        hi = bisect.bisect_right(self._sorted_ints, int(net.broadcast_address))
        return self._sorted_idx[lo:hi]

    # -- per member: destination -> "routed to wg0?" and destination -> peer (cryptokey routing)
    def _tables(self) -> None:
        self.peer_of: list[dict[int, WgPeer]] = []
        self.route_ok: list[bytearray] = []
        self.ck: list[list[int]] = []
        cache: dict = {}
        for i, cfg in enumerate(self.cfg):
            entries: dict = {}
            holders: dict = {}
            peers: dict[int, WgPeer] = {}
            for p in cfg.peers:
                j = self.by_key.get(p.public_key, UNKNOWN_PEER)
                if j == UNKNOWN_PEER and self._is_spare(p):
                    pass  # a day-two spare slot: a key made up front for a member still to come
                elif j == UNKNOWN_PEER:
                    self.add("peering", self.names[i], f"[Peer] {p.label or p.public_key[:12]} (line {p.line}): "
                             f"public key {p.public_key[:12]}... belongs to no member")
                elif j == i:
                    self.add("peering", self.names[i], "lists itself as a peer")
                else:
                    peers[j] = p
                for net in p.allowed_ips:
                    if net in entries and holders[net] is not p:
                        self.add("overlap", self.names[i], f"AllowedIPs {net} is on peers {holders[net].label or '?'} and "
                                 f"{p.label or '?'}; WireGuard keeps it only for the last one ({p.label or '?'})")
                    entries[net], holders[net] = j, p
            self.peer_of.append(peers)
            # wg-quick routes the interface's own prefix and every AllowedIPs range to the interface.
            routes = {a.network for a in cfg.addresses} | set(entries)
            key = (tuple(sorted(routes, key=str)), tuple(sorted(entries.items(), key=lambda kv: str(kv[0]))))
            if key not in cache:
                cache[key] = self._rows(routes, entries)
            r, ck = cache[key]
            self.route_ok.append(r)
            self.ck.append(ck)

    def _rows(self, routes, entries) -> tuple[bytearray, list[int]]:
        route_ok = bytearray(self.n)
        for net in routes:
            for k in self._members_in(net):
                route_ok[k] = 1
        ck = [NO_PEER] * self.n
        for net, j in sorted(entries.items(), key=lambda kv: kv[0].prefixlen):
            for k in self._members_in(net):
                ck[k] = j
        return route_ok, ck

    # -- links: both sides list each other, and someone can start the handshake
    def _edges(self) -> None:
        self.edge: dict[tuple[int, int], str | None] = {}   # None = up, else why not
        self._public_view()
        for i in range(self.n):
            for j, p in self.peer_of[i].items():
                if (i, j) in self.edge:
                    continue
                self.edge[(i, j)] = self.edge[(j, i)] = self._edge(i, j)

    def _edge(self, i: int, j: int) -> str | None:
        a, b = self.names[i], self.names[j]
        back = self.peer_of[j].get(i)
        if back is None:
            why = f"{b} has no [Peer] with {a}'s public key, so it drops everything {a} sends"
            self.add("peering", b, f"{a} lists {b} as a peer, but {b} does not list {a}")
            return why
        ij, why_ij = self._can_initiate(i, j)
        ji, why_ji = self._can_initiate(j, i)
        if not ij and not ji:
            self.add("no-initiator", f"{a} <-> {b}", f"neither side can start a handshake: {why_ij}; {why_ji}")
            return f"no handshake possible between {a} and {b}"
        for x, y, can in ((i, j, ij), (j, i, ji)):
            # x cannot reach y unprompted: y must keep its NAT mapping (and x's view of it) alive.
            if can or not self.m[y].behind_nat:
                continue
            every = self.peer_of[y][x].keepalive
            if not every:
                self.add("nat-keepalive", self.names[y], f"behind NAT with no PersistentKeepalive for {self.names[x]}: "
                         f"{self.names[x]} can reach {self.names[y]} only for ~30-120 s after {self.names[y]} last sent something")
            elif every > NAT_UDP_TIMEOUT:
                self.add("nat-keepalive", self.names[y], f"PersistentKeepalive {every} s for {self.names[x]} outlives NAT "
                         f"mappings (Linux keeps an idle UDP flow {NAT_UDP_TIMEOUT} s, many home routers 30-60 s): use 25")
        return None

    def _can_initiate(self, i: int, j: int) -> tuple[bool, str]:
        a, b = self.names[i], self.names[j]
        p = self.peer_of[i][j]
        hp = p.endpoint_host_port
        if hp is None:
            return False, f"{a} has no Endpoint for {b}"
        host, port = hp
        mj = self.m[j]
        if mj.behind_nat:
            return False, f"{a}'s Endpoint for {b} cannot work: {b} is behind NAT"
        if host not in {mj.endpoint_host, mj.public_address} - {None}:
            return False, f"{a}'s Endpoint for {b} is {host}, but {b} is at {mj.endpoint_host or mj.public_address}"
        if self.cfg[j].listen_port != port:
            return False, f"{a} dials {b} on port {port}, but {b} listens on {self.cfg[j].listen_port or 'a random port'}"
        if self.fw[j] is not None and not any(lo <= port <= hi for lo, hi in self.public_open[j]["udp"]):
            return False, f"{b}'s firewall drops UDP {port} from the public side"
        if self.fw[i] is not None and not self.replies_ok[i]:
            return False, f"{a}'s firewall drops the replies (no established/related accept on input)"
        return True, ""

    # -- what the public side sees, per node
    def _public_view(self) -> None:
        self.public_open: list[dict] = []
        self.replies_ok: list[bool] = []
        cache: dict = {}
        for i, m in enumerate(self.m):
            rs = self.fw[i]
            if rs is None:
                self.public_open.append({"tcp": [], "udp": []})
                self.replies_ok.append(True)
                continue
            if id(rs) not in cache:
                cache[id(rs)] = _PublicView(rs, self.c, self.iface).compute()
            view = cache[id(rs)]
            self.public_open.append(view["input"])
            self.replies_ok.append(view["replies"])
            self._check_exposure(m, self.cfg[i], view)

    def _check_exposure(self, m: MemberFiles, cfg: WgConfig, view: dict) -> None:
        expected = {"tcp": [], "udp": []}
        for proto, lo, hi in m.expose:
            expected[proto].append((lo, hi))
        wg_port = [(cfg.listen_port, cfg.listen_port)] if cfg.listen_port else []
        for proto in ("tcp", "udp"):
            allowed = expected[proto] + (wg_port if proto == "udp" else [])
            extra = _subtract(view["input"][proto], allowed)
            if extra:
                self.add("public-port", m.name, f"the public side reaches {describe_ports(proto, extra)}: not exposed by the spec")
            closed = _subtract(allowed, view["input"][proto])
            if closed:
                what = "the WireGuard port" if proto == "udp" and closed == wg_port else "exposed in the spec but"
                self.add("public-port", m.name, f"{describe_ports(proto, closed)} is {what} closed on the public side")
        dnat_extra = _subtract(view["dnat"], expected["tcp"])
        if dnat_extra:
            self.add("public-port", m.name, f"public traffic DNAT'ed to pods passes the forward chain on {describe_ports('tcp', dnat_extra)}")
        if view["metadata"]:
            self.add("metadata", m.name, f"pod addresses ({self.c.pod_cidr}) can reach {versions.METADATA_ADDRESS} through the forward chain")

    # -- every ordered pair
    def pairs(self, report: Report, keep_matrix: bool, fast: bool = True) -> None:
        """Walk every ordered pair hop by hop. The loop below is the fast path for direct and
        one-relay routes: it evaluates the same checks as _walk, in the same order, but reuses
        what does not depend on the destination (the first hop's checks, a relay that forwards
        nothing). Anything else (a longer route, a verdict that depends on addresses) goes
        through _walk."""
        n, iface = self.n, self.iface
        route_ok, ck, addr = self.route_ok, self.ck, self.addr
        self._verdict_cache: dict = {}
        self.fwd = [self._verdicts(rs, "forward", iface, iface) if on else None for rs, on in zip(self.fw, self.fwd_on)]
        self.inp = [self._verdicts(rs, "input", iface, None) for rs in self.fw]
        self.out = [self._verdicts(rs, "output", "", iface) for rs in self.fw]
        self.mtu = [cfg.mtu or (self.c.underlay_mtu - versions.WIREGUARD_OVERHEAD) for cfg in self.cfg]
        self.failures: dict[tuple, list] = {}
        self._report_hops = report.hops
        self.loops: dict[tuple[int, int], str] = {}
        self.mtu_issues: dict[tuple, list] = {}
        self.matrix = {} if keep_matrix else None
        edge_up = [bytearray(n) for _ in range(n)]
        for (i, j), why in self.edge.items():
            if why is None:
                edge_up[i][j] = 1
        inp_const = [v.const for v in self.inp]
        fwd_const = [False if v is None else v.const for v in self.fwd]
        # A relay that drops everything it would forward fails every pair through it the same way.
        relay_fail = [("no-forward", r, -1) if v is None else ("forward-chain", r, -1) if v.const is False else None
                      for r, v in enumerate(self.fwd)]
        mtu = self.mtu
        hops1 = hops2 = 0
        walk, matrix, failures, edge = self._walk, self.matrix, self.failures, self.edge

        def record(key: tuple, s: int, d: int) -> None:
            entry = failures.get(key)
            if entry is None:
                failures[key] = [1, s, d]
            else:
                entry[0] += 1
            if matrix is not None:
                matrix[(s, d)] = "✗ unreachable"

        for s in range(n):
            if not fast or addr[s] is None or self.out[s].const is not True:
                for d in range(n):
                    if d != s:
                        walk(s, d)
                continue
            r_s, ck_s, mtu_s = route_ok[s], ck[s], mtu[s]
            col = [row[s] for row in ck]     # who each member thinks owns s's address (source check)
            first_hop: dict[int, tuple | None] = {}   # the first hop's checks depend on (s, peer) only
            for d in range(n):
                if d == s:
                    continue
                nxt = ck_s[d]
                if not r_s[d]:
                    record(("no-route", s, -1), s, d)
                    continue
                if nxt < 0:
                    record(("no-peer" if nxt == NO_PEER else "unknown-peer", s, -1), s, d)
                    continue
                hop = first_hop.get(nxt, 0)
                if hop == 0:
                    hop = first_hop[nxt] = (("edge", s, nxt) if edge.get((s, nxt)) is not None
                                            else ("source", s, nxt) if col[nxt] != s else None)
                if hop is not None:
                    record(hop, s, d)
                    continue
                if nxt == d:
                    if inp_const[d] is True:
                        hops1 += 1
                        if matrix is not None:
                            matrix[(s, d)] = "direct"
                        continue
                elif relay_fail[nxt] is not None:
                    record(relay_fail[nxt], s, d)
                    continue
                elif (fwd_const[nxt] is True and route_ok[nxt][d] and ck[nxt][d] == d and edge_up[nxt][d]
                      and col[d] == nxt and inp_const[d] is True and mtu[nxt] >= mtu_s):
                    hops2 += 1
                    if matrix is not None:
                        matrix[(s, d)] = f"via {self.names[nxt]}"
                    continue
                walk(s, d)
        report.hops[1] += hops1
        report.hops[2] += hops2
        report.hops += Counter()  # drop zero counts
        report.pairs = n * (n - 1)
        report.reachable = sum(report.hops.values())
        report.matrix = self.matrix
        names = self.names
        self._failure_findings()
        for (relay, relay_mtu), (count, s, d) in self.mtu_issues.items():
            self.add("mtu", relay, f"relays traffic with wg MTU {relay_mtu}, smaller than the sender's "
                     f"(e.g. {names[s]} MTU {mtu[s]} -> {names[d]}): VXLAN packets get fragmented", count)
        self._mtu_chain(mtu)

    def _verdicts(self, rs: Ruleset | None, hook: str, iif: str, oif: str | None) -> "_Verdicts":
        key = (id(rs), hook)
        if key not in self._verdict_cache:
            self._verdict_cache[key] = _Verdicts(rs, hook, iif, oif, self.addr)
        return self._verdict_cache[key]

    # Why a pair fails: (kind, template); {a}/{b} are member names, {i} the interface.
    REASONS = {
        "no-address": ("unreachable", "{a} has no address"),
        "output": ("unreachable", "{a}'s output chain drops {i} traffic"),
        "no-route": ("unreachable", "{a} has no route to the destination over {i}"),
        "no-peer": ("unreachable", "{a}: no peer's AllowedIPs cover the destination; WireGuard drops it"),
        "unknown-peer": ("unreachable", "{a}: the destination maps to a peer that is no member; WireGuard drops it"),
        "source": ("unreachable", "{b} drops what {a} sends from outside {a}'s AllowedIPs there (source check)"),
        "input": ("unreachable", "{a}'s input chain drops {i} traffic"),
        "no-forward": ("unreachable", "{a} must relay but does not forward (ip_forward is off)"),
        "forward-chain": ("unreachable", "{a} must relay but its forward chain drops {i} -> {i}"),
    }

    def _fail(self, code: str, a: int, b: int, s: int, d: int) -> None:
        entry = self.failures.get((code, a, b))
        if entry is None:
            self.failures[(code, a, b)] = [1, s, d]
        else:
            entry[0] += 1
        if self.matrix is not None:
            self.matrix[(s, d)] = "✗ loop" if code == "loop" else "✗ unreachable"

    def _failure_findings(self) -> None:
        names = self.names
        for (code, a, b), (count, s, d) in self.failures.items():
            example = f"(e.g. {names[s]} -> {names[d]})"
            if code == "edge":
                self.add("unreachable", f"{names[a]} -> {names[b]}", f"{self.edge[(a, b)]} {example}", count)
            elif code == "loop":
                self.add("loop", names[s], f"packets circle: {self.loops[(a, b)]} {example}", count)
            else:
                kind, template = self.REASONS[code]
                where = names[b] if code == "source" else names[a]
                self.add(kind, where, template.format(a=names[a], b=names[b] if b >= 0 else "", i=self.iface) + " " + example, count)

    def _walk(self, s: int, d: int) -> None:
        """One pair, hop by hop, recording why it fails."""
        fail = self._fail
        if self.addr[s] is None:
            return fail("no-address", s, -1, s, d)
        if self.addr[d] is None:
            return fail("no-address", d, -1, s, d)
        if not self.out[s].ok(s, d):
            return fail("output", s, -1, s, d)
        cur, path = s, []
        while True:
            if not self.route_ok[cur][d]:
                return fail("no-route", cur, -1, s, d)
            nxt = self.ck[cur][d]
            if nxt < 0:
                return fail("no-peer" if nxt == NO_PEER else "unknown-peer", cur, -1, s, d)
            if self.edge.get((cur, nxt)) is not None:
                return fail("edge", cur, nxt, s, d)
            if self.ck[nxt][s] != cur:
                return fail("source", cur, nxt, s, d)
            if nxt == d:
                if not self.inp[d].ok(s, d):
                    return fail("input", d, -1, s, d)
                self._report_hops[len(path) + 1] += 1
                if self.matrix is not None:
                    self.matrix[(s, d)] = "direct" if not path else "via " + " ".join(self.names[x] for x in path)
                return None
            f = self.fwd[nxt]
            if f is None:
                return fail("no-forward", nxt, -1, s, d)
            if not f.ok(s, d):
                return fail("forward-chain", nxt, -1, s, d)
            if nxt in path or nxt == s:
                self.loops.setdefault((s, nxt), " -> ".join(self.names[x] for x in [s, *path, nxt]))
                return fail("loop", s, nxt, s, d)
            if self.mtu[nxt] < self.mtu[s]:
                self.mtu_issues.setdefault((self.names[nxt], self.mtu[nxt]), [0, s, d])[0] += 1
            path.append(nxt)
            cur = nxt

    def _mtu_chain(self, mtu: list[int]) -> None:
        c = self.c
        for name, m in zip(self.names, mtu):
            if m + versions.WIREGUARD_OVERHEAD > c.underlay_mtu:
                self.add("mtu", name, f"wg MTU {m} + {versions.WIREGUARD_OVERHEAD} B WireGuard overhead exceeds the "
                         f"underlay MTU {c.underlay_mtu}")
            if c.flannel_mtu + versions.VXLAN_OVERHEAD > m:
                self.add("mtu", name, f"flannel MTU {c.flannel_mtu} + {versions.VXLAN_OVERHEAD} B VXLAN overhead exceeds "
                         f"this member's wg MTU {m}")


class _PublicView:
    """What one ruleset lets in from the public side: input ports, DNAT'ed ports, pods -> metadata."""

    def __init__(self, rs: Ruleset, cluster: Cluster, iface: str):
        self.rs, self.c = rs, cluster
        private = {iface, "lo", *POD_INTERFACES}
        self.ifaces = [PUBLIC_IFACE] + sorted((rs.interfaces("input") | rs.interfaces("forward")) - private)
        inner = [ipaddress.ip_network(cluster.vpn_cidr), ipaddress.ip_network(cluster.pod_cidr)]
        nets = set(rs.networks("input")) | set(rs.networks("forward"))
        self.sources = [GENERIC_PUBLIC] + [
            n.network_address + (1 if n.prefixlen < 32 else 0) for n in sorted(nets, key=str)
            if not any(n.overlaps(x) for x in inner)]
        self.pod = ipaddress.ip_network(cluster.pod_cidr).network_address + 2

    def _open(self, hook: str, make) -> dict[str, list[tuple[int, int]]]:
        cuts = self.rs.ports(hook)
        result = {}
        for proto in ("tcp", "udp"):
            ranges = []
            for k, lo in enumerate(cuts):
                hi = cuts[k + 1] - 1 if k + 1 < len(cuts) else 65535
                if any(self.rs.verdict(hook, make(proto, lo, iif, src)) for iif in self.ifaces for src in self.sources):
                    ranges.append((lo, hi))
            result[proto] = _merge(ranges)
        return result

    def compute(self) -> dict:
        dst = GENERIC_PUBLIC + 1
        inp = self._open("input", lambda proto, port, iif, src: Packet(iif, None, src, dst, proto, port, 40000))
        dnat = self._open("forward", lambda proto, port, iif, src: Packet(
            iif, POD_INTERFACES[0], src, self.pod, proto, port, 40000, "new", frozenset({"dnat"}), port))
        replies = all(self.rs.verdict("input", Packet(iif, None, GENERIC_PUBLIC, dst, "udp", 40000, 51820, "established"))
                      for iif in self.ifaces)
        metadata = self.rs.verdict("forward", Packet(POD_INTERFACES[0], PUBLIC_IFACE, self.pod,
                                                     ipaddress.IPv4Address(versions.METADATA_ADDRESS), "tcp", 80, 40000))
        return {"input": inp, "dnat": dnat["tcp"], "replies": replies, "metadata": metadata}


def verify(cluster: Cluster, keep_matrix: bool | None = None, fast: bool = True) -> Report:
    """Simulate the whole cluster; findings empty = every promise holds.

    fast=False walks every pair with the slow, general walk (tests compare both)."""
    t0 = time.perf_counter()
    sim = _Sim(cluster)
    report = Report(cluster.name, sim.names)
    sim.pairs(report, keep_matrix if keep_matrix is not None else sim.n <= MATRIX_LIMIT, fast)
    report.findings = sim.findings
    report.seconds = time.perf_counter() - t0
    return report
