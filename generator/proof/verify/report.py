"""What `verify` found: the kinds of finding, one finding, the whole report."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ...facts import VXLAN_OVERHEAD, WIREGUARD_OVERHEAD

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
    "role-port": "on the VPN an admin reaches more than the API, SSH and wgkube status, a node cannot reach another's cluster ports, or something opens a connection to an admin",
    "mtu": f"the MTU chain underlay -> WireGuard (-{WIREGUARD_OVERHEAD}) -> VXLAN (-{VXLAN_OVERHEAD}) does not fit",
    # issue 13, mesh
    "indirect": "a pair with a public side goes through a third member instead of directly",
    "failover": "the relay failover settings of a member behind NAT are missing or do not match its WireGuard config",
    # issue 17, laptops
    "services": "an admin's service route (routes: services) is missing, goes to a node that would not forward it, or opens more than DNAT'ed Service connections; or an admin without it has one",
    "relay-down": "with one relay down (and the catch-all moved to the next relay), a pair not involving it does not reach",
    # issue 14, several control planes (docs/verify-ha.md)
    "control-plane-down": "with one control plane down (its WireGuard peer gone), a surviving control plane keeps etcd "
                          "(tcp 2379, 2380 both ways) with less than a majority of all control planes, or a node or admin "
                          "reaches the API (tcp 6443) of no live control plane",
}


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
    mesh: object | None = None     # relays.MeshResult for a mesh (issue 13)
    services: list[str] = field(default_factory=list)   # issue 17: one line per admin with routes: services
    control_planes: object | None = None   # controlplanes.ControlPlanes (issue 14)

    @property
    def ok(self) -> bool:
        return not self.findings

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}
