"""The mesh checks of `wgkube lab` (issue 13), with real packets:

1. direct: two public members ping each other while the relays' forward counters stand still
   (the relay rule `counter accept` of every relay not in the pair), and the sender's WireGuard
   transfer counter for the other's peer moves: public traffic never passes a relay. A
   NAT-to-NAT ping is the control: it moves the active relay's counter.
2. failover: the rendered failover loop runs in every namespace behind NAT (the script and
   settings exactly as rendered, with the member's own `wg`); the active relay is taken down for
   real (its underlay link goes down); the lab measures the time until every pair that does not
   involve that relay pings again, and checks each catch-all moved to the next relay.
3. return: the relay comes back (link up, default route again); every loop must move the
   catch-all back to it (hysteresis: after RETURN_AFTER answers) and every pair pings.
"""
from __future__ import annotations

import json
import subprocess
import time

from ..read.failover import parse_failover
from ..read.wgconf import parse_wg_quick
from .bed import Check, Lab
from .checks import PING_TIMEOUT, _Probes
from .net import ROUTER, SERVICE_PORT, cluster_ip

RELAY_COMMENT = "relay: between VPN peers behind NAT"
LIMIT = 60.0            # seconds: give up measuring after this (the target is 30 s)
TARGET = 30.0


def relay_counter(lab: Lab, ns: str) -> int | None:
    proc = subprocess.run(lab.ns_argv(ns, "nft", "-j", "list", "chain", "inet", "wgkube", "forward"), capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    for item in json.loads(proc.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule and rule.get("comment") == RELAY_COMMENT:
            return next((e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e), None)
    return None


def wg(lab: Lab, name: str, *args: str) -> str:
    """`wg` inside the member's own mount namespace (wireguard-go's socket lives there)."""
    proc = subprocess.run(["nsenter", "-t", str(lab.wg_pid[name]), "-m", "-n", "wg", *args], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""


def transfer_to(lab: Lab, name: str, key: str) -> int:
    for line in wg(lab, name, "show", lab.iface_of(name), "transfer").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == key:
            return int(parts[2])   # bytes sent to that peer
    return -1


def catch_all_holder(lab: Lab, name: str, cidr: str) -> str | None:
    for line in wg(lab, name, "show", lab.iface_of(name), "allowed-ips").splitlines():
        key, _, ips = line.partition("\t")
        if cidr in ips.split():
            return key
    return None


def _pings(lab: Lab, pairs: list[tuple[str, str]], timeout: float) -> dict[tuple[str, str], str]:
    probes = _Probes(lab)
    by_src: dict[str, list] = {}
    for a, b in pairs:
        by_src.setdefault(a, []).append(({"kind": "ping", "host": lab.vpn_ip[b], "timeout": timeout}, (a, b)))
    for a, targets in by_src.items():
        probes.add(lab.topo.site(a).ns, targets)
    return {key: got for key, got in probes.collect()}


def run_mesh_checks(lab: Lab) -> None:
    c = lab.cluster
    if c.topology != "mesh" or not c.relays:
        return
    checks = lab.result.checks
    sites = lab.topo.sites
    names = [s.name for s in sites if s.name in lab.vpn_ip]
    keys = {s.name: _public_key(s.member.wg_conf) for s in sites}
    public = [s.name for s in sites if s.public]
    nat = [s.name for s in sites if not s.public]
    relays = [r for r in c.relays if r in names]

    # 1. direct: public pairs never pass a relay
    plain = [n for n in public if n not in relays]
    pair = (plain[:2] if len(plain) >= 2 else public[:2])
    if len(pair) == 2:
        a, b = pair
        watch = [r for r in relays if r not in pair]
        before = {r: relay_counter(lab, lab.topo.site(r).ns) for r in watch}
        sent = transfer_to(lab, a, keys[b])
        got = _pings(lab, [(a, b), (b, a)], PING_TIMEOUT)
        after = {r: relay_counter(lab, lab.topo.site(r).ns) for r in watch}
        moved = {r: (after[r] or 0) - (before[r] or 0) for r in watch}
        delta = transfer_to(lab, a, keys[b]) - sent
        ok = all(v == "reply" for v in got.values()) and all(v == 0 for v in moved.values()) and None not in before.values() and delta > 0
        checks.append(Check("direct", f"{a} <-> {b} (public)", f"replies; relay counters ({', '.join(watch) or 'none'}) +0; "
                            f"{a}'s transfer to {b} grows",
                            f"{'/'.join(got.values())}; " + ", ".join(f"{r} +{v}" for r, v in moved.items()) + f"; +{delta} B", ok))
    if len(nat) >= 2 and relays:
        # Two nodes if there are (an admin's traffic is accepted by the admin rules before the
        # relay rule, so only the relay's WireGuard transfer counter shows it).
        nodes_nat = [n for n in nat if lab.topo.site(n).member.kind == "node"]
        a, b = (nodes_nat[:2] if len(nodes_nat) >= 2 else nat[:2])
        first = relays[0]
        before_r = relay_counter(lab, lab.topo.site(first).ns)
        sent = transfer_to(lab, first, keys[b])
        got = _pings(lab, [(a, b)], PING_TIMEOUT)
        after_r = relay_counter(lab, lab.topo.site(first).ns)
        moved_r = (after_r or 0) - (before_r or 0)
        relayed = transfer_to(lab, first, keys[b]) - sent
        checks.append(Check("relayed", f"{a} -> {b} (both behind NAT)", f"reply; relay {first} forwards it (its transfer to {b} grows)",
                            f"{got.get((a, b))}; {first} +{relayed} B to {b}, relay rule +{moved_r}",
                            got.get((a, b)) == "reply" and relayed > 0))
    if len(relays) < 2 or len(nat) < 2:
        return
    _failover(lab, relays, nat, names, keys)


def _public_key(wg_conf: str) -> str:
    from ...secrets.pki import wg_public_from_private
    return wg_public_from_private(parse_wg_quick(wg_conf).private_key or "")


def _failover(lab: Lab, relays: list[str], nat: list[str], names: list[str], keys: dict[str, str]) -> None:
    c, checks = lab.cluster, lab.result.checks
    loops = {}
    for name in nat:
        m = lab.topo.site(name).member
        if m.failover is None or m.failover_script is None:
            checks.append(Check("failover", f"{name}: failover loop", "rendered", "missing", False))
            return
        d = lab.dir / name
        (d / "failover.conf").write_text(m.failover)
        (d / "wgkube-failover").write_text(m.failover_script)
        loops[name] = lab.spawn(["nsenter", "-t", str(lab.wg_pid[name]), "-m", "-n", "sh", str(d / "wgkube-failover"),
                                 str(d / "failover.conf")], f"{name}.failover.log")
    conf = parse_failover(lab.topo.site(nat[0]).member.failover or "")
    numbers = conf.numbers
    if not _wait(lambda: all("watching" in _log(lab, n) for n in nat), 10):
        checks.append(Check("failover", "failover loops", "start", "no 'watching' line in their logs", False))
        return
    active = relays[0]
    nxt = relays[1]
    site = lab.topo.site(active)
    remaining = [(a, b) for a in names for b in names if a != b and active not in (a, b)]
    # Down for real: the relay's underlay link.
    lab.run(lab.ns_argv(site.ns, "ip", "link", "set", "eth0", "down"), f"{active}: link down")
    t0 = time.monotonic()
    elapsed, rounds, failing = _until_all_reach(lab, remaining, t0)
    ok = elapsed is not None and elapsed < TARGET
    lab.result.failover_seconds = elapsed
    checks.append(Check("failover", f"relay {active} down (link): every other pair reaches again",
                        f"under {TARGET:.0f} s (settings: {numbers.get('MISSES')} misses x ({numbers.get('INTERVAL')} s + "
                        f"{numbers.get('TIMEOUT')} s))",
                        f"{elapsed:.1f} s, {rounds} rounds of {len(remaining)} pings" if elapsed is not None
                        else f"not after {LIMIT:.0f} s ({len(failing)} pairs fail, e.g. {' -> '.join(failing[0]) if failing else '?'})", ok))
    for name in nat:
        holder = catch_all_holder(lab, name, c.vpn_cidr)
        checks.append(Check("failover", f"{name}: catch-all {c.vpn_cidr}", f"on {nxt}",
                            f"on {_name_of(holder, keys)}; log: {_last_switch(lab, name)}", holder == keys[nxt]))
    # Back: link up, the route the link took with it, then every loop returns to the preferred relay.
    lab.run(lab.ns_argv(site.ns, "sh", "-ec", f"ip link set eth0 up\nip route replace default via {ROUTER} dev eth0 onlink"),
            f"{active}: link up")
    t1 = time.monotonic()
    back = _wait(lambda: all(catch_all_holder(lab, n, c.vpn_cidr) == keys[active] for n in nat),
                 LIMIT + numbers.get("RETURN_AFTER", 10) * (numbers.get("INTERVAL", 2) + numbers.get("TIMEOUT", 1)))
    t_back = time.monotonic() - t1
    everyone = [(a, b) for a in names for b in names if a != b]
    got = _pings(lab, everyone, PING_TIMEOUT) if back else {}
    bad = [k for k, v in got.items() if v != "reply"]
    checks.append(Check("failover", f"relay {active} back: catch-alls return to it, every pair reaches",
                        f"after {numbers.get('RETURN_AFTER')} answers in a row",
                        (f"back after {t_back:.1f} s; {len(everyone) - len(bad)}/{len(everyone)} pairs reply" if back
                         else f"not back after {t_back:.0f} s"), back and not bad))
    _services_after_failover(lab, nat, keys)


def _services_after_failover(lab: Lab, nat, keys: dict[str, str]) -> None:
    """Issue 17: an admin with `routes: services` still routes the service range to the control
    plane after its loop moved the catch-all away and back (allowed-ips replaces the whole list)."""
    c = lab.cluster
    if not c.services_via:
        return
    ip = cluster_ip(c)
    for name in nat:
        member = lab.topo.site(name).member
        if not member.routes_services:
            continue
        holder = None
        for line in wg(lab, name, "show", lab.iface_of(name), "allowed-ips").splitlines():
            key, _, ips = line.partition("\t")
            if c.service_cidr in ips.split():
                holder = key
        probes = _Probes(lab)
        probes.add(lab.topo.site(name).ns, [({"kind": "tcp", "host": str(ip), "port": SERVICE_PORT, "timeout": PING_TIMEOUT}, name)])
        got = probes.collect()[0][1]
        lab.result.checks.append(Check("failover", f"{name}: service range {c.service_cidr} after the moves",
                                       f"on {c.services_via}; ClusterIP connects",
                                       f"on {_name_of(holder, keys)}; ClusterIP {got}",
                                       holder == keys.get(c.services_via) and got == "connected"))


def _until_all_reach(lab: Lab, pairs, t0: float):
    rounds = 0
    failing = pairs
    while time.monotonic() - t0 < LIMIT:
        rounds += 1
        got = _pings(lab, failing, 1.0)
        failing = [k for k, v in got.items() if v != "reply"]
        if not failing:
            # Everyone that failed reached; confirm the whole set once more (a flap would show here).
            got = _pings(lab, pairs, 2.0)
            failing = [k for k, v in got.items() if v != "reply"]
            if not failing:
                return time.monotonic() - t0, rounds, []
    return None, rounds, failing


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def _log(lab: Lab, name: str) -> str:
    try:
        return (lab.dir / f"{name}.failover.log").read_text(errors="replace")
    except OSError:
        return ""


def _last_switch(lab: Lab, name: str) -> str:
    lines = [line for line in _log(lab, name).splitlines() if "now on relay" in line]
    return lines[-1].removeprefix("wgkube-failover: ") if lines else "(no switch logged)"


def _name_of(key: str | None, keys: dict[str, str]) -> str:
    return next((n for n, k in keys.items() if k == key), "nobody" if key is None else "an unknown peer")
