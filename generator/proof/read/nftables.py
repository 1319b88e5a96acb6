"""A small model of an nftables ruleset: enough to ask "is this packet accepted?".

`verify` uses it on the rendered /etc/wgkube/firewall.nft of every node (does the hub forward
wg0 -> wg0? which ports does the public side see?). It understands the statements wgkube
renders plus the usual neighbours (add/insert rule, sets, ranges, negation, jump/goto).
Anything else is reported as not understood, never silently guessed.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

VERDICTS = {"accept", "drop", "reject", "return", "continue", "jump", "goto", "queue"}
FAMILIES = {"ip", "ip6", "inet", "arp", "bridge", "netdev"}


@dataclass
class Packet:
    """What a rule can look at. Ports are None for ICMP."""
    iif: str
    oif: str | None
    saddr: ipaddress.IPv4Address
    daddr: ipaddress.IPv4Address
    proto: str                       # tcp | udp | icmp
    dport: int | None = None
    sport: int | None = None
    ct_state: str = "new"
    ct_status: frozenset[str] = frozenset()
    orig_dport: int | None = None
    orig_daddr: ipaddress.IPv4Address | None = None   # ct original ip daddr (before DNAT); None: = daddr


@dataclass
class Match:
    key: str                         # e.g. "iifname", "ip saddr", "tcp dport", "ct state"
    values: list
    negate: bool = False


@dataclass
class Rule:
    matches: list[Match]
    verdict: str | None
    target: str | None
    text: str
    line: int


@dataclass
class Chain:
    name: str
    family: str
    table: str
    hook: str | None = None
    chain_type: str | None = None
    policy: str = "accept"
    rules: list[Rule] = field(default_factory=list)


@dataclass
class Ruleset:
    chains: dict[tuple[str, str, str], Chain] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def base_chains(self, hook: str) -> list[Chain]:
        return [c for c in self.chains.values() if c.hook == hook and c.chain_type in (None, "filter")
                and c.family in ("ip", "inet")]

    def networks(self, hook: str) -> list[ipaddress.IPv4Network]:
        """Every IPv4 network a rule of this hook mentions (for address classes)."""
        nets = set()
        for c in self._reachable(hook):
            for r in c.rules:
                for m in r.matches:
                    if m.key in ("ip saddr", "ip daddr"):
                        nets.update(v for v in m.values if isinstance(v, ipaddress.IPv4Network))
        return sorted(nets, key=lambda n: (int(n.network_address), n.prefixlen))

    def ports(self, hook: str) -> list[int]:
        """Boundaries of every port range the hook's rules mention: verdicts are constant between them."""
        cuts = {1, 65536}
        for c in self._reachable(hook):
            for r in c.rules:
                for m in r.matches:
                    if m.key.endswith(("dport", "sport", "proto-dst")):
                        for lo, hi in m.values:
                            cuts.update((lo, hi + 1))
        return sorted(p for p in cuts if p <= 65535)

    def interfaces(self, hook: str) -> set[str]:
        names = set()
        for c in self._reachable(hook):
            for r in c.rules:
                for m in r.matches:
                    if m.key in ("iifname", "iif", "oifname", "oif"):
                        names.update(m.values)
        return names

    def _reachable(self, hook: str) -> list[Chain]:
        seen: dict[tuple, Chain] = {}
        todo = list(self.base_chains(hook))
        while todo:
            c = todo.pop()
            key = (c.family, c.table, c.name)
            if key in seen:
                continue
            seen[key] = c
            for r in c.rules:
                if r.target and (c.family, c.table, r.target) in self.chains:
                    todo.append(self.chains[(c.family, c.table, r.target)])
        return list(seen.values())

    def verdict(self, hook: str, pkt: Packet) -> bool:
        """True when every base chain on this hook lets the packet through."""
        for chain in self.base_chains(hook):
            result = self._run(chain, pkt, 0)
            if (result or chain.policy) != "accept":
                return False
        return True

    def _run(self, chain: Chain, pkt: Packet, depth: int) -> str | None:
        if depth > 16:
            return "drop"
        for rule in chain.rules:
            if not all(_matches(m, pkt) for m in rule.matches):
                continue
            v = rule.verdict
            if v in ("accept", "drop", "reject", "queue"):
                return "drop" if v in ("reject", "queue") else v
            if v == "return":
                return None
            if v in ("jump", "goto"):
                target = self.chains.get((chain.family, chain.table, rule.target or ""))
                if target is None:
                    return "drop"
                result = self._run(target, pkt, depth + 1)
                if result is not None or v == "goto":
                    return result
        return None


# --------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r'"[^"]*"|[{},;]|!=|[^\s{},;"]+')


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _strip_comment(line: str) -> str:
    out, quoted = [], False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch == "#" and not quoted:
            break
        out.append(ch)
    return "".join(out).strip()


def parse_ruleset(text: str) -> Ruleset:
    rs = Ruleset()
    stack: list[tuple[str, ...]] = []      # ("table", family, name) / ("chain", name)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line:
            continue
        try:
            _line(rs, stack, line, lineno)
        except (ValueError, IndexError) as exc:
            rs.problems.append(f"line {lineno}: not understood ({exc}): {line}")
    if stack:
        rs.problems.append("unbalanced braces: a table or chain is not closed")
    return rs


def _line(rs: Ruleset, stack: list, line: str, lineno: int) -> None:
    toks = _tokens(line)
    if toks == ["}"]:
        if not stack:
            raise ValueError("'}' without an open block")
        stack.pop()
        return
    if toks[0] == "table" and toks[-1] == "{":
        family, name = _family_name(toks[1:-1])
        stack.append(("table", family, name))
        return
    if toks[0] == "chain" and toks[-1] == "{" and stack and stack[-1][0] == "table":
        _, family, table = stack[-1]
        rs.chains.setdefault((family, table, toks[1]), Chain(toks[1], family, table))
        stack.append(("chain", family, table, toks[1]))
        return
    if not stack:
        _command(rs, toks, line, lineno)
        return
    if stack[-1][0] != "chain":
        raise ValueError("only chains can sit inside a table here")
    _, family, table, name = stack[-1]
    chain = rs.chains[(family, table, name)]
    if toks[0] in ("type", "policy"):
        _chain_spec(chain, toks)
        return
    chain.rules.append(parse_rule(toks, line, lineno))


def _family_name(toks: list[str]) -> tuple[str, str]:
    if len(toks) == 1:
        return "ip", toks[0]
    if len(toks) == 2 and toks[0] in FAMILIES:
        return toks[0], toks[1]
    raise ValueError("expected [family] name")


def _command(rs: Ruleset, toks: list[str], line: str, lineno: int) -> None:
    """Top-level commands: table/delete/flush lines (no effect on a fresh load) and add/insert rule."""
    if toks[0] in ("table", "delete", "flush", "destroy") and toks[-1] != "{":
        if toks[0] == "flush" and toks[1:2] == ["ruleset"]:
            rs.chains.clear()
        elif toks[0] in ("delete", "destroy", "flush") and toks[1:2] == ["table"]:
            family, name = _family_name(toks[2:])
            for key in [k for k in rs.chains if k[:2] == (family, name)]:
                if toks[0] == "flush":
                    rs.chains[key].rules.clear()
                else:
                    del rs.chains[key]
        return
    if toks[0] in ("add", "insert") and toks[1] == "rule":
        rest = toks[2:]
        family = rest.pop(0) if rest[0] in FAMILIES and len(rest) > 3 else "ip"
        table, chain_name = rest[0], rest[1]
        rest = rest[2:]
        if rest[:1] in (["position"], ["handle"], ["index"]):
            rest = rest[2:]
        chain = rs.chains.get((family, table, chain_name))
        if chain is None:
            raise ValueError(f"no chain {family} {table} {chain_name} defined before this rule")
        rule = parse_rule(rest, line, lineno)
        if toks[0] == "add":
            chain.rules.append(rule)
        else:
            chain.rules.insert(0, rule)
        return
    raise ValueError(f"unknown command {toks[0]!r}")


def _chain_spec(chain: Chain, toks: list[str]) -> None:
    parts = [p for p in " ".join(toks).split(";") if p.strip()]
    for part in parts:
        words = part.split()
        if words[0] == "type":
            chain.chain_type, chain.hook = words[1], words[3] if words[2] == "hook" else None
        elif words[0] == "policy":
            chain.policy = words[1]
        else:
            raise ValueError(f"unknown chain setting {part.strip()!r}")


def _values(toks: list[str], i: int) -> tuple[list[str], int]:
    """One value, a comma list (established,related) or an anonymous set { a, b }."""
    if toks[i] == "{":
        j = toks.index("}", i)
        return [t for t in toks[i + 1:j] if t != ","], j + 1
    values = [toks[i]]
    i += 1
    while i + 1 < len(toks) and toks[i] == ",":
        values.append(toks[i + 1])
        i += 2
    return values, i


def _ports(raw: list[str]) -> list[tuple[int, int]]:
    out = []
    for v in raw:
        lo, _, hi = v.partition("-")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b <= 65535:
            raise ValueError(f"bad port range {v}")
        out.append((a, b))
    return out


_SERVICES = {"ssh": 22, "http": 80, "https": 443, "domain": 53}


def parse_rule(toks: list[str], text: str, lineno: int) -> Rule:
    matches: list[Match] = []
    verdict = target = None
    i = 0
    while i < len(toks):
        t = toks[i]
        if t in ("counter", "log", "comment", "limit", "notrack"):
            i = _skip_statement(toks, i)
            continue
        if toks[i:i + 4] == ["tcp", "option", "maxseg", "size"] and "set" in toks[i + 4:i + 5]:
            # MSS clamping (`... size set rt mtu` or `... size set 1360`): rewrites the packet,
            # decides nothing.
            i += 5
            i += 2 if toks[i:i + 1] == ["rt"] else 1
            continue
        if t in VERDICTS:
            verdict = t
            if t in ("jump", "goto"):
                target = toks[i + 1]
                i += 2
            elif t == "reject" and i + 1 < len(toks) and toks[i + 1] == "with":
                i += 4
            else:
                i += 1
            continue
        key, i = _match_key(toks, i)
        negate = toks[i] == "!="
        if negate:
            i += 1
        raw, i = _values(toks, i)
        raw = [v.strip('"') for v in raw]
        matches.append(Match(key, _convert(key, raw), negate))
    return Rule(matches, verdict, target, text, lineno)


def _skip_statement(toks: list[str], i: int) -> int:
    t = toks[i]
    i += 1
    if t == "counter" and i < len(toks) and toks[i] == "packets":
        i += 4
    elif t == "comment":
        i += 1
    elif t == "log":
        while i < len(toks) and toks[i] in ("prefix", "level", "flags"):
            i += 2
    elif t == "limit":
        while i < len(toks) and toks[i] not in VERDICTS and toks[i] not in ("counter", "comment", "log"):
            i += 1
    return i


_TWO_WORD = {
    ("ip", "saddr"), ("ip", "daddr"), ("ip", "protocol"), ("ip6", "saddr"), ("ip6", "daddr"), ("ip6", "nexthdr"),
    ("tcp", "dport"), ("tcp", "sport"), ("udp", "dport"), ("udp", "sport"), ("th", "dport"), ("th", "sport"),
    ("ct", "state"), ("ct", "status"), ("meta", "l4proto"), ("meta", "nfproto"), ("meta", "iifname"),
    ("meta", "oifname"), ("meta", "iif"), ("meta", "oif"), ("icmp", "type"), ("icmpv6", "type"), ("tcp", "flags"),
}


def _match_key(toks: list[str], i: int) -> tuple[str, int]:
    t = toks[i]
    if t in ("iifname", "oifname", "iif", "oif"):
        return t, i + 1
    if t == "ct" and toks[i + 1:i + 3] == ["original", "proto-dst"]:
        return "ct original proto-dst", i + 3
    if t == "ct" and toks[i + 1:i + 4] == ["original", "ip", "daddr"]:
        return "ct original ip daddr", i + 4
    pair = (t, toks[i + 1] if i + 1 < len(toks) else "")
    if pair in _TWO_WORD:
        key = f"{pair[0]} {pair[1]}"
        return key.removeprefix("meta ") if pair[0] == "meta" and pair[1] in ("iifname", "oifname", "iif", "oif") else key, i + 2
    raise ValueError(f"unknown match {t!r}")


def _convert(key: str, raw: list[str]) -> list:
    if key in ("ip saddr", "ip daddr", "ct original ip daddr"):
        return [ipaddress.ip_network(v, strict=False) for v in raw]
    if key.endswith(("dport", "sport", "proto-dst")):
        return _ports([str(_SERVICES.get(v, v)) for v in raw])
    return raw


# --------------------------------------------------------------------------- matching


def _matches(m: Match, p: Packet) -> bool:
    k = m.key
    if k in ("iifname", "iif"):
        hit = p.iif in m.values
    elif k in ("oifname", "oif"):
        hit = p.oif is not None and p.oif in m.values
    elif k == "ip saddr":
        hit = any(p.saddr in n for n in m.values)
    elif k == "ip daddr":
        hit = any(p.daddr in n for n in m.values)
    elif k in ("ip6 saddr", "ip6 daddr", "ip6 nexthdr", "icmpv6 type"):
        return False  # our packets are IPv4: an IPv6 match never matches, negated or not
    elif k == "meta nfproto":
        hit = "ipv4" in m.values
    elif k in ("ip protocol", "meta l4proto"):
        hit = p.proto in m.values
    elif k in ("tcp dport", "udp dport", "tcp sport", "udp sport", "th dport", "th sport"):
        proto, field_ = k.split()
        if proto != "th" and p.proto != proto:
            return False
        port = p.dport if field_ == "dport" else p.sport
        if port is None:
            return False
        hit = any(lo <= port <= hi for lo, hi in m.values)
    elif k == "ct original ip daddr":
        orig = p.daddr if p.orig_daddr is None else p.orig_daddr
        hit = any(orig in n for n in m.values)
    elif k == "ct original proto-dst":
        hit = p.orig_dport is not None and any(lo <= p.orig_dport <= hi for lo, hi in m.values)
    elif k == "ct state":
        hit = p.ct_state in m.values
    elif k == "ct status":
        hit = any(v in p.ct_status for v in m.values)
    elif k == "icmp type":
        if p.proto != "icmp":
            return False
        hit = "echo-request" in m.values
    elif k == "tcp flags":
        if p.proto != "tcp":
            return False
        hit = True  # a new connection's SYN: treat flag matches as matching
    else:
        raise AssertionError(k)
    return hit != m.negate
