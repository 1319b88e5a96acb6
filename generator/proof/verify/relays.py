"""The mesh part of `verify` (issue 13): direct paths where a direct path exists, which pairs are
relayed and by whom, the relay failover settings, and every relay declared down in turn.

- direct: a pair with at least one public side must go straight to the destination (its first
  hop is the destination's own peer), never through a third member;
- relayed: pairs of members behind NAT, and the relay each one's catch-all points at;
- failover: every member behind NAT has the failover settings, all list the same relays in the
  same order (else WireGuard's source check drops relayed packets), each relay is a peer with
  its own /32, and the catch-all sits on the first relay;
- relay down: for each relay, the cluster without it, with the catch-all of every member that
  pointed at it moved the way the failover loop moves it (the next relay of its list that is a
  peer), simulated pair by pair again: every pair that does not involve the dead relay must reach.
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field, replace

from ..read.cluster import Cluster
from ..read.failover import parse_failover
from ..read.wgconf import WgConfig, WgPeer
from .report import Finding, Report


@dataclass
class RelayDown:
    relay: str
    pairs: int = 0
    reachable: int = 0
    moved: Counter = field(default_factory=Counter)   # next relay -> members whose catch-all moved there


@dataclass
class MeshResult:
    relays: list[str]
    relayed: Counter = field(default_factory=Counter)            # relay -> NAT-to-NAT pairs through it
    relayed_examples: list[tuple[str, str, str]] = field(default_factory=list)
    direct_pairs: int = 0
    down: list[RelayDown] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failover_seconds: int | None = None


def check_mesh(cluster: Cluster, sim, report: Report) -> MeshResult:
    from .simulate import Simulation   # noqa: F401  (same package; the derived runs below)
    names, n = sim.names, sim.n
    public = [not m.behind_nat for m in sim.m]
    res = MeshResult(list(cluster.relays))
    nat = [i for i in range(n) if not public[i]]
    pairs_nat = len(nat) * (len(nat) - 1) // 2
    if pairs_nat and len(cluster.relays) < 2:
        lost = "members behind NAT cannot reach each other at all" if not cluster.relays else (
            f"if {cluster.relays[0]} is lost, the {len(nat)} members behind NAT cannot reach each other ({pairs_nat} pairs)")
        res.warnings.append(f"only {len(cluster.relays)} relay(s): {lost}; direct pairs are not affected")

    # 1. direct where a direct path exists
    ck = sim.ck
    indirect: dict[tuple[int, int], list] = {}
    pub_idx = [d for d in range(n) if public[d]]
    for s in range(n):
        row = ck[s]
        targets = range(n) if public[s] else pub_idx
        bad = [d for d in targets if row[d] != d and d != s]
        res.direct_pairs += len(targets) - (1 if public[s] else 0) - len(bad)
        for d in bad:
            entry = indirect.setdefault((s, row[d]), [0, d])
            entry[0] += 1
    for (s, via), (count, d) in indirect.items():
        hop = names[via] if via >= 0 else "no peer"
        report.findings.append(Finding("indirect", names[s], f"{names[s]} -> {names[d]} goes to {hop} although "
                                       f"{'both sides' if public[s] and public[d] else 'one side'} can be dialled directly "
                                       f"(a direct /32 peer is missing)", count))
    # 2. relayed pairs: counted per first hop, row by row
    for s in nat:
        row = ck[s]
        hops = Counter(row[d] for d in nat if d != s)
        for via, count in hops.items():
            if via >= 0 and via not in nat:
                res.relayed[names[via]] += count
        if len(res.relayed_examples) < 12:
            res.relayed_examples += [(names[s], names[d], names[row[d]]) for d in nat
                                     if d != s and row[d] >= 0 and row[d] != d][:12 - len(res.relayed_examples)]
    # 3. the failover settings
    confs = {}
    orders = set()
    for i in nat:
        m = sim.m[i]
        if m.failover is None:
            if cluster.relays:
                report.findings.append(Finding("failover", m.name, "behind NAT in a mesh but has no failover settings "
                                               "(/etc/wgkube/failover.conf): a dead relay would cut it off from every member behind NAT"))
            continue
        conf = parse_failover(m.failover)
        confs[i] = conf
        for p in conf.problems:
            report.findings.append(Finding("failover", m.name, f"failover.conf: {p}"))
        orders.add(tuple(r.name for r in conf.relays))
        own = {p.public_key: p for p in sim.cfg[i].peers}
        for r in conf.relays:
            peer = own.get(r.public_key)
            if peer is None:
                report.findings.append(Finding("failover", m.name, f"relay {r.name} in failover.conf is not a [Peer] of its "
                                               f"{sim.iface}.conf (wrong key?)"))
            elif ipaddress.ip_network(f"{r.vpn_ip}/32") not in peer.allowed_ips:
                report.findings.append(Finding("failover", m.name, f"relay {r.name}'s peer lacks its own /32 {r.vpn_ip}: "
                                               "the failover's probe could not reach it"))
        holder = _holder(sim.cfg[i], cluster.vpn_cidr)
        if conf.relays and (holder is None or holder.public_key != conf.relays[0].public_key):
            report.findings.append(Finding("failover", m.name, f"the catch-all {cluster.vpn_cidr} is not on the first relay "
                                           f"({conf.relays[0].name}) of failover.conf"))
        res.failover_seconds = max(res.failover_seconds or 0, conf.worst_case_seconds())
    if len(orders) > 1:
        report.findings.append(Finding("failover", "members behind NAT", "failover.conf lists different relay orders "
                                       f"({' / '.join(','.join(o) for o in sorted(orders))}): relayed packets would arrive "
                                       "from a relay the receiver does not route the sender to, and WireGuard drops them"))
    # 4. each relay down in turn
    relay_names = list(cluster.relays) or sorted({r.name for c in confs.values() for r in c.relays})
    relay_idx = [names.index(r) for r in relay_names if r in names]
    for r in relay_names:
        if r not in names:
            continue
        # With fewer than two relays a relay loss cutting NAT-to-NAT pairs is the known, warned
        # trade-off (spec: allowed with a warning), not a finding.
        res.down.append(_relay_down(cluster, sim, report, names.index(r), confs, relay_idx, findings=len(relay_names) >= 2))
    return res


def _holder(cfg: WgConfig, vpn_cidr: str) -> WgPeer | None:
    net = ipaddress.ip_network(vpn_cidr)
    return next((p for p in cfg.peers if net in p.allowed_ips), None)


def _relay_down(cluster: Cluster, base, report: Report, r: int, confs: dict, relay_idx: list[int],
                findings: bool = True) -> RelayDown:
    """Relay r gone: each catch-all that pointed at r moved to the next relay of that member's
    failover list that is a peer (what the loop does), then every pair among the members behind
    NAT and the remaining relays walked again. Other pairs have a public side: the base run
    proved them direct (one hop, never through r), so r's loss cannot touch them unless they
    involve r itself."""
    result = RelayDown(base.names[r])
    keep = [i for i in range(base.n) if base.m[i].behind_nat or (i in relay_idx and i != r)]
    sub = without(cluster, base, r, keep, confs, result.moved)
    rep = Report(cluster.name, sub.names)
    sub.pairs(rep, False)
    result.pairs, result.reachable = rep.pairs, rep.reachable
    for f in sub.findings if findings else ():
        if f.kind in ("unreachable", "loop"):
            report.findings.append(Finding("relay-down", f"{result.relay} down: {f.where}", f.detail, f.count))
    return result


def without(cluster: Cluster, base, r: int, keep: list[int], confs: dict, moved: Counter):
    """The simulation of the members `keep` once member r is gone (its WireGuard peer removed
    everywhere: it forwards nothing, answers nothing), each catch-all that pointed at r moved to
    the next relay of that member's failover list that is a peer, as the failover loop does
    (counted in `moved`). tests/test_verify_ha.py checks controlplanes.Gone (issue 14: a member down,
    patched lazily onto the base tables) against it."""
    from .simulate import Simulation
    rkey = base.pub[r]
    net = ipaddress.ip_network(cluster.vpn_cidr)
    keys = {base.pub[i] for i in keep}
    cfgs = []
    for i in keep:
        cfg = base.cfg[i]
        holder = _holder(cfg, cluster.vpn_cidr)
        peers = [p for p in cfg.peers if p.public_key in keys]
        conf = confs.get(i)
        if conf is not None and holder is not None and holder.public_key == rkey:
            present = {p.public_key: k for k, p in enumerate(peers)}
            for cand in conf.relays:
                if cand.public_key != rkey and cand.public_key in present:
                    k = present[cand.public_key]
                    peers[k] = replace(peers[k], allowed_ips=[*peers[k].allowed_ips, net])
                    moved[cand.name] += 1
                    break
        cfgs.append(replace(cfg, peers=peers))
    return Simulation.derived(base, keep, cfgs)
