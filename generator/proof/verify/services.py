"""Issue 17 (docs/laptops.md): admins with `routes: services` reach ClusterIPs through a node that
runs kube-proxy, and only them.

For each admin, from its rendered WireGuard config: a [Peer] whose AllowedIPs cover the whole
service range when the spec gave it `routes: services` (none otherwise); that peer is a node that
forwards (ip_forward), routes the admin's /32 back to it, and whose firewall accepts a connection
from the admin whose ORIGINAL destination is a ClusterIP that kube-proxy DNAT'ed (to a pod, or to
the node itself for a hostNetwork backend) while it drops the same connection sent straight to a
pod IP. Any other admin routes no part of the service range, and the control plane drops its
Service traffic."""
from __future__ import annotations

import ipaddress

from ...facts import POD_INTERFACES
from ..read.nftables import Packet

PORT = 8080   # any Service port: the rule looks at the original destination address, not the port


def check_services(cluster, sim) -> list[str]:
    """Adds "services" findings to sim; returns one report line per admin with the route."""
    if not cluster.service_cidr:
        return []
    svc = ipaddress.ip_network(cluster.service_cidr)
    cluster_ip = next(svc.hosts())
    pod_ip = next(ipaddress.ip_network(cluster.pod_cidr).hosts())
    iface, a, names = sim.iface, sim.addr, sim.names
    lines: list[str] = []
    # Without a route the laptop never sends a ClusterIP into the tunnel; the node that would
    # receive one (the control plane: the hub, or the admins' services node in a mesh) must still
    # refuse it from an admin not named in its rule.
    # Issue 14: in hub and spoke only the hub can receive an admin's packet (every other node
    # gets admin traffic through the hub's forward chain), so other control planes do not count.
    hub = next((j for j, m in enumerate(sim.m) if m.role == "control-plane" and m.endpoint_host), None)
    node_reps = {j for j, m in enumerate(sim.m) if m.kind == "node" and sim.fw[j] is not None and a[j] is not None
                 and (m.name == cluster.services_via or (m.role == "control-plane" and m.endpoint_host
                                                         and (cluster.topology == "mesh" or j == hub)))}
    for i, m in enumerate(sim.m):
        if m.kind != "admin" or a[i] is None:
            continue
        holders = [p for p in sim.cfg[i].peers if any(n.version == 4 and n.overlaps(svc) for n in p.allowed_ips)]
        if not m.routes_services:
            for p in holders:
                sim.add("services", m.name, f"[Peer] {p.label or p.public_key[:12]} routes the service range {svc}, "
                        "but the spec does not give this admin `routes: services`")
            for j in sorted(node_reps):
                if _accepts(sim, j, Packet(iface, POD_INTERFACES[0], a[i], pod_ip, "tcp", PORT, 40000,
                                           ct_status=frozenset({"dnat"}), orig_daddr=cluster_ip)):
                    sim.add("services", names[j], f"forwards Service traffic from the admin {m.name}, "
                            "which has no `routes: services`")
            continue
        full = [p for p in holders if any(n.version == 4 and svc.subnet_of(n) for n in p.allowed_ips)]
        if len(full) != 1:
            sim.add("services", m.name, f"has `routes: services` but {'no' if not full else len(full)} [Peer] "
                    f"routes the whole service range {svc}")
            continue
        j = sim.by_key.get(full[0].public_key)
        if j is None or sim.m[j].kind != "node":
            sim.add("services", m.name, f"routes the service range {svc} to {full[0].label or '?'}, which is not a node "
                    "(kube-proxy DNATs ClusterIPs on nodes)")
            continue
        via = names[j]
        problems = []
        if cluster.services_via and via != cluster.services_via:
            problems.append(f"the plan sends it to {cluster.services_via}")
        if not sim.fwd_on[j]:
            problems.append(f"{via} does not forward (ip_forward)")
        if sim.ck[j][i] != i:
            problems.append(f"{via}'s WireGuard does not route {a[i]} back to {m.name}")
        for oif in POD_INTERFACES:
            if not _accepts(sim, j, Packet(iface, oif, a[i], pod_ip, "tcp", PORT, 40000,
                                           ct_status=frozenset({"dnat"}), orig_daddr=cluster_ip)):
                problems.append(f"{via}'s forward chain drops a Service connection DNAT'ed to a pod behind {oif}")
        if sim.fw[j] is not None and not sim.fw[j].verdict("input", Packet(iface, None, a[i], a[j], "tcp", PORT, 40000,
                                                                           ct_status=frozenset({"dnat"}), orig_daddr=cluster_ip)):
            problems.append(f"{via}'s input chain drops a Service connection DNAT'ed to the node itself (hostNetwork backend)")
        if _accepts(sim, j, Packet(iface, POD_INTERFACES[0], a[i], pod_ip, "tcp", PORT, 40000)):
            problems.append(f"{via} forwards a connection from {m.name} straight to a pod IP ({pod_ip})")
        problems += _failover_keeps(cluster, sim, m, j, svc)
        if problems:
            sim.add("services", m.name, f"routes the service range {svc} to {via}, but " + "; ".join(problems))
            continue
        lines.append(f"{m.name} -> {svc} via {via}: ClusterIP connections kube-proxy DNATs are forwarded, "
                     "pod IPs dialled directly are dropped")
    return lines


def _failover_keeps(cluster, sim, m, j: int, svc) -> list[str]:
    """Mesh: when the node carrying the service range is a relay, the admin's failover loop
    rewrites that peer's AllowedIPs at every move (`wg set ... allowed-ips` replaces the whole
    list, wg(8)); its settings must name the peer and the range, and the loop must put it back."""
    via = sim.names[j]
    if cluster.topology != "mesh" or via not in cluster.relays or m.failover is None:
        return []
    from ..read.failover import parse_failover
    conf = parse_failover(m.failover)
    if conf.service_key != sim.pub[j] or conf.service_cidr != str(svc):
        return [f"its failover settings do not keep {svc} on {via} (SERVICE_KEY/SERVICE_CIDR), so the first relay "
                "move drops the route"]
    if "keep" not in (m.failover_script or "") or "SERVICE_CIDR" not in (m.failover_script or ""):
        return ["its failover loop does not put the service range back when it moves the catch-all"]
    return []


def _accepts(sim, j: int, pkt: Packet) -> bool:
    rs = sim.fw[j]
    return sim.fwd_on[j] and (rs is None or rs.verdict("forward", pkt))
