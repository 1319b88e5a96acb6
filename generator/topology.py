"""The VPN topology as a pure model (stage 2, beside plan.py): who peers with whom, who relays,
and the order in which members behind NAT try the relays. Artifacts render WireGuard, the
firewall and the failover loop from it; `verify` checks the rendered files against the same rules.

hub  (today's default, unchanged): every member peers with the hub only.
mesh (issue 13):
  - every pair in which at least one side has a public endpoint peers directly, AllowedIPs = the
    peer's /32, PersistentKeepalive on both sides when either side is behind NAT;
  - two members behind NAT never peer (neither can dial the other, and there is no coordinator
    to time a hole punch): each gives the VPN range (the catch-all) to exactly one relay peer.
    WireGuard picks the peer by longest prefix over AllowedIPs (wg(8): "If there are multiple
    matches, the one with the longest matching prefix is chosen"), so every /32 of a direct peer
    beats the catch-all and only NAT-to-NAT traffic is relayed;
  - the relay order is the SAME on every member behind NAT. WireGuard accepts an incoming packet
    only "if traffic to their source IP would be sent to the same peer" (wg(8)): if A sent via
    relay R1 while B held its catch-all on R2, B would drop A's packets arriving from R1. One
    order means every member moves to the same next relay when one dies, and back together.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_RELAYS = 2


@dataclass(frozen=True)
class Site:
    """What the topology needs to know about a member."""
    name: str
    kind: str          # node | admin
    role: str          # control-plane | worker | admin
    public: bool       # has an endpoint others can dial


@dataclass(frozen=True)
class Mesh:
    relays: tuple[str, ...]        # in order of preference, the same for every member behind NAT
    public: tuple[str, ...]        # spec order
    behind_nat: tuple[str, ...]    # spec order, admins included
    _public_set: frozenset = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_public_set", frozenset(self.public))

    def is_public(self, name: str) -> bool:
        return name in self._public_set

    def direct(self, a: str, b: str) -> bool:
        """A pair peers directly when at least one side can be dialled."""
        return self.is_public(a) or self.is_public(b)

    def relay_order(self, name: str) -> tuple[str, ...]:
        """The relays a member behind NAT gives its catch-all to, first choice first (none for public members)."""
        return () if self.is_public(name) else self.relays

    def relayed_count(self) -> int:
        """Unordered pairs of members behind NAT (each talks through a relay)."""
        k = len(self.behind_nat)
        return k * (k - 1) // 2

    def relayed_pairs(self) -> list[tuple[str, str]]:
        nat = self.behind_nat
        return [(a, b) for i, a in enumerate(nat) for b in nat[i + 1:]]

    def warnings(self) -> list[str]:
        """What a relay loss would cut, when there are fewer than two relays."""
        pairs = self.relayed_count()
        if len(self.relays) >= DEFAULT_RELAYS or not pairs:
            return []
        if not self.relays:
            return [f"no relay: the {len(self.behind_nat)} members behind NAT cannot reach each other ({pairs} pairs)"]
        return [f"only one relay ({self.relays[0]}): if it is lost, the {len(self.behind_nat)} members behind NAT "
                f"({', '.join(self.behind_nat[:5])}{', ...' if len(self.behind_nat) > 5 else ''}) cannot reach each other "
                f"({pairs} pairs) until it is back; direct pairs (at least one public side) are not affected. "
                f"Name a second public node in vpn.relays, or give one more node an endpoint"]


def default_relays(sites: list[Site]) -> tuple[str, ...]:
    """Public control planes, then public workers, in spec order, until there are two."""
    cps = [s.name for s in sites if s.kind == "node" and s.public and s.role == "control-plane"]
    workers = [s.name for s in sites if s.kind == "node" and s.public and s.role != "control-plane"]
    chosen = cps[:]
    for w in workers:
        if len(chosen) >= DEFAULT_RELAYS:
            break
        chosen.append(w)
    return tuple(chosen)


def build_mesh(sites: list[Site], relays: list[str] | None) -> Mesh:
    return Mesh(relays=tuple(relays) if relays is not None else default_relays(sites),
                public=tuple(s.name for s in sites if s.public),
                behind_nat=tuple(s.name for s in sites if not s.public))
