"""Port range sets (merge, subtract) and how to name a range in a message."""
from __future__ import annotations

from ...facts import NODEPORT_RANGE, VPN_ONLY_PORTS


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def subtract(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in merge(a):
        for blo, bhi in merge(b):
            if bhi < lo or blo > hi:
                continue
            if blo > lo:
                out.append((lo, blo - 1))
            lo = bhi + 1
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return out


def describe_ports(proto: str, ranges: list[tuple[int, int]]) -> str:
    parts = []
    for lo, hi in ranges:
        names = [name for (p, port), name in sorted(VPN_ONLY_PORTS.items(), key=lambda kv: kv[0][1]) if p == proto and lo <= port <= hi]
        if lo <= NODEPORT_RANGE[1] and hi >= NODEPORT_RANGE[0]:
            names.append("NodePorts")
        text = f"{lo}" if lo == hi else f"{lo}-{hi}"
        parts.append(f"{text} ({', '.join(names)})" if names else text)
    return f"{proto} " + ", ".join(parts)
