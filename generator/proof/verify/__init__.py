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

Parts: routing.py (keys, cryptokey tables, links), firewall.py (rulesets, public exposure),
reachability.py (the pair walk, MTU), report.py (findings), simulate.py (the three together).
"""
from __future__ import annotations

import time

from ..read.cluster import Cluster
from .report import KINDS, MATRIX_LIMIT, Finding, Report
from .simulate import Simulation

__all__ = ["KINDS", "Finding", "Report", "verify"]


def verify(cluster: Cluster, keep_matrix: bool | None = None, fast: bool = True) -> Report:
    """Simulate the whole cluster; findings empty = every promise holds.

    fast=False walks every pair with the slow, general walk (tests compare both)."""
    t0 = time.perf_counter()
    sim = Simulation(cluster)
    report = Report(cluster.name, sim.names)
    sim.pairs(report, keep_matrix if keep_matrix is not None else sim.n <= MATRIX_LIMIT, fast)
    from .services import check_services   # issue 17: admins' service routes
    report.services = check_services(cluster, sim)
    report.findings = sim.findings
    if cluster.topology == "mesh":
        # issue 13: direct paths, relayed pairs, failover settings, each relay down in turn
        from .relays import check_mesh
        report.mesh = check_mesh(cluster, sim, report)
    # issue 14: each control plane down in turn (etcd majority, a live API), who could split them
    from .controlplanes import check_control_planes
    report.control_planes = check_control_planes(cluster, sim, report)
    report.seconds = time.perf_counter() - t0
    return report
