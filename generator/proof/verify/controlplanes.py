"""Several control planes (issue 14 item 5; docs/verify-ha.md): each control plane declared down
in turn, and every member whose loss could split the control planes.

A member "down" is gone from every WireGuard config (its peer removed everywhere: it forwards
nothing, answers nothing); members behind NAT whose catch-all pointed at it move it the way the
failover loop does (relays.without, the same model as "relay down"). In what is left:

- etcd: every surviving control plane must keep etcd with a majority of ALL control planes
  (itself counted), a link being tcp 2379 and 2380 open both ways (each member of a raft cluster
  dials the others): the route hop by hop (cryptokey routing, the receiver's source check), the
  source's output chain, each relay's ip_forward and forward chain, the destination's input
  chain, and the replies back the same way as established traffic;
- API: every surviving node and admin must reach tcp 6443 on at least one live control plane
  (a control plane has its own).

A control plane down that breaks either is a finding (`control-plane-down`), except the single
points of failure verify already warns about: the hub in hub and spoke (the VPN's relay for
everyone) and the only relay of a mesh; those are warnings. Any member whose loss leaves no
majority of the control planes able to reach each other (a relay several control planes behind
NAT go through, the hub) is named in a warning. With one control plane: one warning line that
it is a single point of failure.
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

from ...facts import API_PORT
from ..read.cluster import Cluster
from ..read.failover import parse_failover
from ..read.nftables import Packet
from .report import Finding, Report
from .routing import NO_PEER, UNKNOWN_PEER

ETCD_PORTS = (2379, 2380)      # client (the API server, the other members' health checks) and peers
EPHEMERAL = 40000
KIND = "control-plane-down"


@dataclass
class Down:
    member: str
    control_plane: bool
    etcd: dict[str, int] = field(default_factory=dict)    # surviving control plane -> control planes it keeps etcd with
    majority: bool = True      # some majority of all control planes still reach each other
    api: int = 0               # surviving nodes and admins that reach a live API
    api_total: int = 0
    moved: Counter = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)   # (member, why)
    known: str | None = None   # the warned single point of failure this member is (then warnings, not findings)


@dataclass
class ControlPlanes:
    names: list[str]
    quorum: int
    down: list[Down] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def several(self) -> bool:
        return len(self.names) > 1


class Gone:
    """The base simulation with member x gone (its peer removed from every config: it forwards
    nothing, answers nothing) and each catch-all that pointed at x moved to the next relay of that
    member's failover list that is a peer, as the failover loop does: the same model as relay
    down (relays.without), but patched onto the base tables lazily, entry by entry, so that a
    1,000-member mesh does not rebuild every cryptokey table once per control plane. Only an
    entry that pointed at x changes: it goes to the longest remaining prefix (the moved
    catch-all, usually), or nowhere."""

    def __init__(self, cluster: Cluster, base, x: int | None, confs: dict, moved: Counter | None = None):
        self.base, self.x = base, x
        self.names, self.addr, self.iface, self.fw, self.fwd_on, self.m = (
            base.names, base.addr, base.iface, base.fw, base.fwd_on, base.m)
        self.vpn = ipaddress.ip_network(cluster.vpn_cidr)
        self.holder: dict[int, int] = {}        # member -> where its catch-all moved
        self._ck: dict[tuple[int, int], int] = {}
        if x is None:
            return
        xkey = base.pub[x]
        for i, conf in confs.items():
            if i == x:
                continue
            held = next((p for p in base.cfg[i].peers if self.vpn in p.allowed_ips), None)
            if held is None or held.public_key != xkey:
                continue
            present = {p.public_key for p in base.cfg[i].peers}
            for cand in conf.relays:
                if cand.public_key != xkey and cand.public_key in present and cand.public_key in base.by_key:
                    self.holder[i] = base.by_key[cand.public_key]
                    if moved is not None:
                        moved[cand.name] += 1
                    break

    def route(self, i: int, d: int) -> bool:
        return bool(self.base.route_ok[i][d])

    def next(self, i: int, d: int) -> int:
        j = self.base.ck[i][d]
        if self.x is None or j != self.x:
            return j
        hit = self._ck.get((i, d))
        if hit is None:
            hit, best, a = NO_PEER, -1, self.addr[d]
            for p in self.base.cfg[i].peers:
                k = self.base.by_key.get(p.public_key, UNKNOWN_PEER)
                if k == self.x:
                    continue
                nets = [*p.allowed_ips, self.vpn] if self.holder.get(i) == k else p.allowed_ips
                for net in nets:
                    if net.version == 4 and a in net and net.prefixlen > best:
                        hit, best = k, net.prefixlen
            self._ck[(i, d)] = hit
        return hit

    def edge(self, i: int, j: int) -> str | None:
        if self.x is not None and self.x in (i, j):
            return f"{self.names[self.x]} is down"
        return self.base.edge.get((i, j), "no tunnel")


def path(sim: Gone, s: int, d: int) -> tuple[list[int] | None, str]:
    """Cryptokey routing s -> d hop by hop: the members in between, or None and why not."""
    names = sim.names
    if sim.addr[s] is None or sim.addr[d] is None:
        return None, "no VPN address"
    cur, hops = s, []
    while True:
        if not sim.route(cur, d):
            return None, f"{names[cur]} has no route to {names[d]}"
        nxt = sim.next(cur, d)
        if nxt < 0:
            return None, f"{names[cur]}: no peer's AllowedIPs cover {names[d]}'s address"
        why = sim.edge(cur, nxt)
        if why is not None:
            return None, why
        if sim.next(nxt, s) != cur:
            return None, f"{names[nxt]} drops what {names[s]} sends through {names[cur]} (source check)"
        if nxt == d:
            return hops, ""
        if nxt in hops or nxt == s:
            return None, "packets circle: " + " -> ".join(names[x] for x in [s, *hops, nxt])
        hops.append(nxt)
        cur = nxt


def tcp(sim, s: int, d: int, port: int) -> str | None:
    """None when a TCP connection s -> d:port opens and its replies come back; else why not."""
    a, iface, names = sim.addr, sim.iface, sim.names
    hops, why = path(sim, s, d)
    if hops is None:
        return why
    back, why = path(sim, d, s)
    if back is None:
        return f"replies: {why}"
    for src, dst, via, sport, dport, state in ((s, d, hops, EPHEMERAL, port, "new"),
                                               (d, s, back, port, EPHEMERAL, "established")):
        what = "" if state == "new" else "replies: "
        rs = sim.fw[src]
        if rs is not None and not rs.verdict("output", Packet("", iface, a[src], a[dst], "tcp", dport, sport, state)):
            return f"{what}{names[src]}'s output chain drops it"
        for r in via:
            if not sim.fwd_on[r]:
                return f"{what}{names[r]} must relay but does not forward (ip_forward is off)"
            rs = sim.fw[r]
            if rs is not None and not rs.verdict("forward", Packet(iface, iface, a[src], a[dst], "tcp", dport, sport, state)):
                return f"{what}{names[r]}'s forward chain drops it"
        rs = sim.fw[dst]
        if rs is not None and not rs.verdict("input", Packet(iface, None, a[src], a[dst], "tcp", dport, sport, state)):
            return f"{what}{names[dst]}'s input chain drops it"
    return None


def etcd_link(sim, x: int, y: int) -> str | None:
    for port in ETCD_PORTS:
        for s, d in ((x, y), (y, x)):
            why = tcp(sim, s, d, port)
            if why is not None:
                return f"{sim.names[s]} -> {sim.names[d]} tcp {port}: {why}"
    return None


def check_control_planes(cluster: Cluster, sim, report: Report) -> ControlPlanes | None:
    names = sim.names
    cps = [i for i, m in enumerate(sim.m) if m.kind == "node" and m.role == "control-plane" and sim.addr[i] is not None]
    if not cps:
        return None
    res = ControlPlanes([names[i] for i in cps], len(cps) // 2 + 1)
    if len(cps) == 1:
        res.warnings.append(f"{names[cps[0]]} is the only control plane: while it is down there is no API and no etcd "
                            "(a single point of failure; 3 or 5 control planes remove it)")
        return res
    hub = next((i for i in cps if sim.m[i].endpoint_host), None) if cluster.topology != "mesh" else None
    confs = {i: parse_failover(m.failover) for i, m in enumerate(sim.m) if m.failover}
    # Who could split them: every control plane, and every member a control-plane pair goes through.
    on_path: set[int] = set()
    whole = Gone(cluster, sim, None, confs)
    for s, d in combinations(cps, 2):
        for x, y in ((s, d), (d, s)):
            hops, _ = path(whole, x, y)
            on_path.update(hops or ())
    for x in cps + sorted(on_path - set(cps)):
        down = _down(cluster, sim, x, cps, res.quorum, confs)
        if x == hub:
            down.known = "the hub: every member's only peer"
        elif cluster.topology == "mesh" and names[x] in cluster.relays and len(cluster.relays) < 2:
            down.known = "the only relay"
        res.down.append(down)
        if down.control_plane and down.known is None:
            for where, why in down.problems:
                report.findings.append(Finding(KIND, f"{down.member} down: {where}", why))
    cut = [d for d in res.down if not d.majority]
    if hub is not None:
        hd = next(d for d in res.down if d.member == names[hub])
        res.warnings.append(f"hub and spoke: {names[hub]} is still the VPN relay: losing it cuts every member off from "
                            "every other, whatever the control planes"
                            + (f" (etcd loses its majority: {_etcd_text(hd, res)})" if not hd.majority else "")
                            + "; vpn.topology: mesh removes that")
    for d in cut:
        if hub is not None and d.member == names[hub]:
            continue
        what = "a control plane" if d.control_plane else "a relay" if d.member in cluster.relays else "a member"
        res.warnings.append(f"losing {d.member} ({what}{', ' + d.known if d.known else ''}) leaves no majority of the "
                            f"control planes ({res.quorum} of {len(cps)}) able to reach each other on etcd's ports: "
                            f"{_etcd_text(d, res)}"
                            + (f"; {d.api} of {d.api_total} nodes and admins reach a live API" if d.api < d.api_total else ""))
    for d in res.down:
        if d.known and d.majority and d.problems and not (hub is not None and d.member == names[hub]):
            res.warnings.append(f"losing {d.member} ({d.known}): " + "; ".join(f"{w}: {why}" for w, why in d.problems[:3])
                                + (f"; and {len(d.problems) - 3} more" if len(d.problems) > 3 else ""))
    return res


def _etcd_text(d: Down, res: ControlPlanes) -> str:
    return ", ".join(f"{name} keeps {k} of {len(res.names)}" for name, k in d.etcd.items())


def _down(cluster: Cluster, base, x: int, cps: list[int], quorum: int, confs: dict) -> Down:
    res = Down(base.names[x], x in cps)
    sub = Gone(cluster, base, x, confs, res.moved)
    names = base.names
    live = [i for i in cps if i != x]
    links = {}
    for p, q in combinations(live, 2):
        links[(p, q)] = links[(q, p)] = etcd_link(sub, p, q)
    for p in live:
        bad = [q for q in live if q != p and links[(p, q)] is not None]
        kept = len(live) - len(bad)          # itself and every control plane it keeps a link with
        res.etcd[names[p]] = kept
        if kept < quorum:
            res.problems.append((names[p], f"keeps etcd (tcp 2379, 2380 both ways) with {kept} of {len(cps)} control "
                                 f"planes, itself counted; a majority is {quorum}: "
                                 + "; ".join(links[(p, q)] for q in bad)))
    res.majority = any(all(links[(p, q)] is None for p, q in combinations(group, 2))
                       for size in range(quorum, len(live) + 1) for group in combinations(live, size))
    for k in range(base.n):
        if k == x or base.m[k].kind not in ("node", "admin") or base.addr[k] is None:
            continue
        res.api_total += 1
        if k in live:
            res.api += 1
            continue
        why = None
        for c in live:
            why = tcp(sub, k, c, API_PORT)
            if why is None:
                res.api += 1
                break
        else:
            res.problems.append((names[k], f"reaches no live API (tcp {API_PORT} on "
                                 f"{', '.join(names[c] for c in live)}): {why or 'no control plane left'}"))
    return res
