"""The simulation: one object per verify run, built from the three parts (routing, firewall,
reachability), each a mixin in its own module over the same per-member arrays.

Speed: members with the same table share one precomputed row (destination -> peer), so 1,000
members (~1M pairs) stay well under the 5 s budget while every pair is still walked hop by hop.
"""
from __future__ import annotations

from ..read.cluster import Cluster, MemberFiles
from ..read.nftables import Ruleset
from ..read.wgconf import WgConfig, parse_wg_quick
from .firewall import Exposure, forwarding_enabled
from .reachability import Reachability
from .roles import RolePorts
from .report import Finding
from .routing import Routing


class Simulation(Routing, Exposure, Reachability, RolePorts):
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
        self._role_ports()

    @classmethod
    def derived(cls, base: "Simulation", keep: list[int], cfgs: list[WgConfig]) -> "Simulation":
        """The members `keep` of base with new (already parsed) WireGuard configs: for what-if
        runs such as a relay declared down (relays.py). Rulesets are reused, not parsed again."""
        sim = cls.__new__(cls)
        sim.c = base.c
        sim.m = [base.m[i] for i in keep]
        sim.n = len(keep)
        sim.names = [base.names[i] for i in keep]
        sim.iface = base.iface
        sim.findings = []
        sim.cfg = cfgs
        sim._rulesets = base._rulesets
        sim.fw = [base.fw[i] for i in keep]
        sim.fwd_on = [base.fwd_on[i] for i in keep]
        sim._identities()
        sim._tables()
        sim._edges()
        return sim

    def add(self, kind: str, where: str, detail: str, count: int = 1) -> None:
        self.findings.append(Finding(kind, where, detail, count))
