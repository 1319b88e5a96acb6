"""Every ordered pair of members, hop by hop: the route to the WireGuard interface, cryptokey
routing, the receiver's source check, whether a relaying member forwards (ip_forward and its
forward chain) and whether the destination's input chain accepts it; then the MTU chain."""
from __future__ import annotations

from collections import Counter

from ...facts import VXLAN_OVERHEAD, WIREGUARD_OVERHEAD
from ..read.nftables import Ruleset
from .firewall import Verdicts
from .report import Report
from .routing import NO_PEER


class Reachability:
    """Mixed into the simulation: the pair walk and the MTU chain."""

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
        self.mtu = [cfg.mtu or (self.c.underlay_mtu - WIREGUARD_OVERHEAD) for cfg in self.cfg]
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

    def _verdicts(self, rs: Ruleset | None, hook: str, iif: str, oif: str | None) -> "Verdicts":
        key = (id(rs), hook)
        if key not in self._verdict_cache:
            self._verdict_cache[key] = Verdicts(rs, hook, iif, oif, self.addr)
        return self._verdict_cache[key]

    # Why a pair fails: (kind, template); {a}/{b} are member names, {i} the interface.

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
            if m + WIREGUARD_OVERHEAD > c.underlay_mtu:
                self.add("mtu", name, f"wg MTU {m} + {WIREGUARD_OVERHEAD} B WireGuard overhead exceeds the "
                         f"underlay MTU {c.underlay_mtu}")
            if c.flannel_mtu + VXLAN_OVERHEAD > m:
                self.add("mtu", name, f"flannel MTU {c.flannel_mtu} + {VXLAN_OVERHEAD} B VXLAN overhead exceeds "
                         f"this member's wg MTU {m}")
