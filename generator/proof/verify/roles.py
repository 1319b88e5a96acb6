"""The VPN side by role: nodes reach each other's cluster ports; admins reach the API on the hub
(issue 14: on every control plane) and SSH, nothing else (not etcd, not a kubelet); nothing
opens a connection to an admin. In the
hub-and-spoke topology every packet between two members passes the hub, so the hub's forward
chain and the destination's input chain decide; in a mesh (issue 13) the source's output chain,
the relay cryptokey routing picks (if any) and the destination's input chain. One member per
distinct ruleset stands for all."""
from __future__ import annotations

from ...facts import API_PORT, VPN_ONLY_PORTS
from ..read.nftables import Packet

CLUSTER_TCP = sorted(port for proto, port in VPN_ONLY_PORTS if proto == "tcp")


class RolePorts:
    """Mixed into the simulation after the routing tables exist."""

    def _reaches(self, hub: int, s: int, d: int, port: int | None, proto: str = "tcp") -> bool:
        iface, a = self.iface, self.addr
        if self.c.topology == "mesh":
            # Issue 13: no hub in the path. The first hop is what cryptokey routing picks (the
            # destination itself, or a relay), and the source's own output chain decides too.
            via = self.ck[s][d]
            relay = via if via >= 0 and via != d else None
            rs = self.fw[s]
            if rs is not None and not rs.verdict("output", Packet("", iface, a[s], a[d], proto, port, 40000)):
                return False
        else:
            relay = hub if s != hub and d != hub else None
        if relay is not None:
            rs = self.fw[relay]
            if not self.fwd_on[relay] or (rs is not None and not rs.verdict(
                    "forward", Packet(iface, iface, a[s], a[d], proto, port, 40000))):
                return False
        rs = self.fw[d]
        return rs is None or rs.verdict("input", Packet(iface, None, a[s], a[d], proto, port, 40000))

    def _role_ports(self) -> None:
        hub = next((i for i, m in enumerate(self.m) if m.role == "control-plane" and m.endpoint_host), None)
        if hub is None or self.addr[hub] is None:
            return
        nodes = [i for i, m in enumerate(self.m) if m.kind == "node" and self.addr[i] is not None]
        admins = [i for i, m in enumerate(self.m) if m.kind == "admin" and self.addr[i] is not None]
        # One destination per distinct ruleset (workers without `expose` share one), the hub always;
        # issue 14: every control plane (each serves the API, and etcd to the others).
        cps = {i for i in nodes if self.m[i].role == "control-plane"}
        reps: dict[int, int] = {}
        for i in nodes:
            reps.setdefault(id(self.fw[i]), i)
        targets = sorted({hub, *cps, *reps.values()})
        names = self.names
        for s in admins:
            for d in targets:
                allowed = set(self.c.admin_ports) | ({API_PORT} if d == hub or d in cps else set())
                wrong = [p for p in CLUSTER_TCP if self._reaches(hub, s, d, p) != (p in allowed)]
                extra = [p for p in wrong if p not in allowed]
                if extra:
                    self.add("role-port", names[s], f"the admin reaches {names[d]} on tcp {', '.join(map(str, extra))} "
                             f"(admins may reach only the API on the control planes, SSH and, when the spec serves it, wgkube status)")
                missing = [p for p in wrong if p in allowed]
                if missing and self._reaches(hub, s, d, None, "icmp"):  # else: unreachable says it
                    self.add("role-port", names[s], f"the admin cannot reach {names[d]} on tcp "
                             f"{', '.join(map(str, missing))} over the VPN")
            # Relayed by the hub (a worker, or a pod behind it; the hub's own processes are trusted).
            for src in sorted(set(reps.values()) - {hub}):
                if self._reaches(hub, src, s, 22):
                    self.add("role-port", names[src], f"opens a connection to the admin {names[s]} (tcp 22): "
                             "nothing on the VPN may start one toward an admin")
        for s in sorted({hub, *cps, *reps.values()}):
            for d in targets:
                if d == s:
                    continue
                ports = CLUSTER_TCP if d == hub or d in cps else [p for p in CLUSTER_TCP if p not in (API_PORT, 2379, 2380, 10257, 10259)]
                if not self._reaches(hub, s, d, None, "icmp"):
                    continue  # no path at all: the pair walk reports it (unreachable)
                blocked = [p for p in ports if not self._reaches(hub, s, d, p)]
                if blocked:
                    self.add("role-port", names[s], f"cannot reach {names[d]} on tcp {', '.join(map(str, blocked))} "
                             "over the VPN (nodes reach each other's cluster ports)")
