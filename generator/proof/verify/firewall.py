"""The firewall side of `verify`: the sysctl that turns forwarding on, per-hook verdicts on VPN
traffic, and what each ruleset lets in from the public side (input ports, DNAT'ed ports, pods to
the metadata service), checked against what the spec exposes."""
from __future__ import annotations

import ipaddress

from ...facts import METADATA_ADDRESS, POD_INTERFACES
from ..read.cluster import Cluster, MemberFiles
from ..read.nftables import Packet, Ruleset, parse_ruleset
from ..read.wgconf import WgConfig
from .ports import describe_ports, merge, subtract

PUBLIC_IFACE = "(public)"      # stands for the node's uplink, whatever its name
GENERIC_PUBLIC = ipaddress.IPv4Address("192.0.2.77")


def sysctl_values(text: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, eq, value = line.partition("=")
        if eq:
            values[key.strip().lstrip("-").replace("/", ".")] = value.strip()
    return values


def forwarding_enabled(text: str | None) -> bool:
    v = sysctl_values(text)
    return v.get("net.ipv4.ip_forward") == "1" or v.get("net.ipv4.conf.all.forwarding") == "1"


def normalized(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


class Verdicts:
    """Does one hook of one member's ruleset let VPN traffic s -> d through?

    Rules can only tell addresses apart by the networks they mention, so addresses are grouped
    by which of those networks contain them; one evaluation per group pair, usually just one.
    """

    def __init__(self, rs: Ruleset | None, hook: str, iif: str, oif: str | None, addrs: list):
        self.rs, self.hook, self.iif, self.oif, self.addrs = rs, hook, iif, oif, addrs
        self.const: bool | None = True
        if rs is None or not rs.base_chains(hook):
            return
        spans = [(int(n.network_address), int(n.broadcast_address)) for n in rs.networks(hook)]
        self.cls = [None if a is None else tuple(lo <= int(a) <= hi for lo, hi in spans) for a in addrs]
        groups = {c for c in self.cls if c is not None}
        self.cache: dict = {}
        self.const = None
        if len(groups) <= 1:
            rep = next((a for a in addrs if a is not None), GENERIC_PUBLIC)
            self.const = self._eval(rep, rep)
        elif len(groups) <= 32:
            # A few classes (say, the admins a hub's rules name): when every class pair gets the
            # same verdict, the hook is constant for pings after all (the fast path needs that).
            reps = {}
            for a, c in zip(addrs, self.cls):
                if c is not None:
                    reps.setdefault(c, a)
            for cs, s in reps.items():
                for cd, d in reps.items():
                    self.cache[(cs, cd)] = self._eval(s, d)
            values = set(self.cache.values())
            if len(values) == 1:
                self.const = values.pop()

    def _eval(self, s, d) -> bool:
        return self.rs.verdict(self.hook, Packet(self.iif, self.oif, s, d, "icmp"))

    def ok(self, s: int, d: int) -> bool:
        if self.const is not None:
            return self.const
        key = (self.cls[s], self.cls[d])
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = self._eval(self.addrs[s], self.addrs[d])
        return hit


class PublicView:
    """What one ruleset lets in from the public side: input ports, DNAT'ed ports, pods -> metadata."""

    def __init__(self, rs: Ruleset, cluster: Cluster, iface: str):
        self.rs, self.c = rs, cluster
        private = {iface, "lo", *POD_INTERFACES}
        self.ifaces = [PUBLIC_IFACE] + sorted((rs.interfaces("input") | rs.interfaces("forward")) - private)
        inner = [ipaddress.ip_network(cluster.vpn_cidr), ipaddress.ip_network(cluster.pod_cidr)]
        nets = set(rs.networks("input")) | set(rs.networks("forward"))
        self.sources = [GENERIC_PUBLIC] + [
            n.network_address + (1 if n.prefixlen < 32 else 0) for n in sorted(nets, key=str)
            if not any(n.overlaps(x) for x in inner)]
        self.pod = ipaddress.ip_network(cluster.pod_cidr).network_address + 2

    def _open(self, hook: str, make) -> dict[str, list[tuple[int, int]]]:
        cuts = self.rs.ports(hook)
        result = {}
        for proto in ("tcp", "udp"):
            ranges = []
            for k, lo in enumerate(cuts):
                hi = cuts[k + 1] - 1 if k + 1 < len(cuts) else 65535
                if any(self.rs.verdict(hook, make(proto, lo, iif, src)) for iif in self.ifaces for src in self.sources):
                    ranges.append((lo, hi))
            result[proto] = merge(ranges)
        return result

    def compute(self) -> dict:
        dst = GENERIC_PUBLIC + 1
        inp = self._open("input", lambda proto, port, iif, src: Packet(iif, None, src, dst, proto, port, 40000))
        dnat = self._open("forward", lambda proto, port, iif, src: Packet(
            iif, POD_INTERFACES[0], src, self.pod, proto, port, 40000, "new", frozenset({"dnat"}), port))
        replies = all(self.rs.verdict("input", Packet(iif, None, GENERIC_PUBLIC, dst, "udp", 40000, 51820, "established"))
                      for iif in self.ifaces)
        metadata = self.rs.verdict("forward", Packet(POD_INTERFACES[0], PUBLIC_IFACE, self.pod,
                                                     ipaddress.IPv4Address(METADATA_ADDRESS), "tcp", 80, 40000))
        return {"input": inp, "dnat": dnat["tcp"], "replies": replies, "metadata": metadata}


class Exposure:
    """Mixed into the simulation: rulesets per member and the public side's view of each."""

    def _ruleset(self, m: MemberFiles) -> Ruleset | None:
        if m.firewall is None:
            return None
        key = normalized(m.firewall)
        rs = self._rulesets.get(key)
        if rs is None:
            rs = self._rulesets[key] = parse_ruleset(m.firewall)
        for p in rs.problems:
            self.add("config", m.name, f"firewall.nft {p}")
        return rs

    def _public_view(self) -> None:
        self.public_open: list[dict] = []
        self.replies_ok: list[bool] = []
        cache: dict = {}
        for i, m in enumerate(self.m):
            rs = self.fw[i]
            if rs is None:
                self.public_open.append({"tcp": [], "udp": []})
                self.replies_ok.append(True)
                continue
            if id(rs) not in cache:
                cache[id(rs)] = PublicView(rs, self.c, self.iface).compute()
            view = cache[id(rs)]
            self.public_open.append(view["input"])
            self.replies_ok.append(view["replies"])
            self._check_exposure(m, self.cfg[i], view)

    def _check_exposure(self, m: MemberFiles, cfg: WgConfig, view: dict) -> None:
        expected = {"tcp": [], "udp": []}
        for proto, lo, hi in m.expose:
            expected[proto].append((lo, hi))
        wg_port = [(cfg.listen_port, cfg.listen_port)] if cfg.listen_port else []
        for proto in ("tcp", "udp"):
            allowed = expected[proto] + (wg_port if proto == "udp" else [])
            extra = subtract(view["input"][proto], allowed)
            if extra:
                self.add("public-port", m.name, f"the public side reaches {describe_ports(proto, extra)}: not exposed by the spec")
            closed = subtract(allowed, view["input"][proto])
            if closed:
                what = "the WireGuard port" if proto == "udp" and closed == wg_port else "exposed in the spec but"
                self.add("public-port", m.name, f"{describe_ports(proto, closed)} is {what} closed on the public side")
        dnat_extra = subtract(view["dnat"], expected["tcp"])
        if dnat_extra:
            self.add("public-port", m.name, f"public traffic DNAT'ed to pods passes the forward chain on {describe_ports('tcp', dnat_extra)}")
        if view["metadata"]:
            self.add("metadata", m.name, f"pod addresses ({self.c.pod_cidr}) can reach {METADATA_ADDRESS} through the forward chain")
