"""Read a rendered relay failover config (/etc/wgkube/failover.conf, issue 13) back: the shell
assignments the failover loop sources. Only the simple `NAME=value` / `NAME="value"` lines
wgkube writes are understood; anything else is a problem, not a guess."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_ASSIGN = re.compile(r'^([A-Z_][A-Z0-9_]*)=(?:"([^"`$\\]*)"|([^\s"\'`$\\;|&]*))$')
NUMBERS = ("INTERVAL", "TIMEOUT", "MISSES", "RETURN_AFTER")


@dataclass
class Relay:
    name: str
    vpn_ip: str
    public_key: str


@dataclass
class FailoverConf:
    interface: str = ""
    vpn_cidr: str = ""
    numbers: dict[str, int] = field(default_factory=dict)
    relays: list[Relay] = field(default_factory=list)
    # issue 17: an admin with `routes: services` keeps the service range on this peer across moves
    service_cidr: str = ""
    service_key: str = ""
    problems: list[str] = field(default_factory=list)

    def worst_case_seconds(self) -> int:
        """Time to route around a dead relay: MISSES probes of (INTERVAL + TIMEOUT), then one
        probe of the next relay. Assumes the relay died right after a good probe."""
        n = self.numbers
        return n.get("MISSES", 3) * (n.get("INTERVAL", 2) + n.get("TIMEOUT", 1)) + n.get("TIMEOUT", 1)


def parse_failover(text: str) -> FailoverConf:
    conf = FailoverConf()
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ASSIGN.fullmatch(line)
        if not m:
            conf.problems.append(f"line {lineno}: not a plain NAME=value line: {line[:60]!r}")
            continue
        values[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
    conf.interface = values.get("IFACE", "")
    conf.vpn_cidr = values.get("VPN_CIDR", "")
    conf.service_cidr, conf.service_key = values.get("SERVICE_CIDR", ""), values.get("SERVICE_KEY", "")
    for key in NUMBERS:
        if key in values:
            try:
                conf.numbers[key] = int(values[key])
            except ValueError:
                conf.problems.append(f"{key}={values[key]!r} is not a number")
    for item in values.get("RELAYS", "").split():
        parts = item.split(",")
        if len(parts) != 3:
            conf.problems.append(f"RELAYS entry {item[:40]!r} is not name,address,key")
            continue
        conf.relays.append(Relay(*parts))
    if not conf.vpn_cidr or not conf.relays:
        conf.problems.append("no VPN_CIDR or no RELAYS")
    return conf
