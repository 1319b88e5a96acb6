"""The WireGuard side of `verify`: who is who (keys and addresses, from the configs themselves),
each member's cryptokey routing table (longest prefix over the AllowedIPs of one interface), and
which links can come up (both sides list each other, someone can start the handshake, NAT
keepalives)."""
from __future__ import annotations

import bisect
import ipaddress

from ...secrets import pki
from ..read.wgconf import WgPeer

NAT_UDP_TIMEOUT = 120         # s: Linux conntrack's timeout for a UDP flow that has seen replies
NO_PEER, UNKNOWN_PEER = -2, -3   # cryptokey table entries that are not a member index


class Routing:
    """Mixed into the simulation: keys, addresses, cryptokey tables and links."""

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
