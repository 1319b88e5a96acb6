"""`wgkube graph`: the topology the rendered files make, as Graphviz DOT (laid out by `dot`) or text.

Read from the WireGuard configs (proof/read/cluster.py), not from the plan: an edge is a tunnel
both configs name (each peer's public key matched to the member owning it), drawn from the
member that dials (has an Endpoint) to the one that listens, labelled with the one public UDP
port. Members are grouped by provider (when the spec says it) or by where they sit: public,
behind NAT, admins. Control planes, relays (a member others send the whole VPN range to: it
forwards between them) and listeners are marked. With live state (proof/status.py) each tunnel
is coloured by its last handshake and members that reach others through a relay say so.
"""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..secrets.pki import wg_public_from_private
from .read.cluster import Cluster
from .read.wgconf import parse_wg_quick

FRESH = 180     # s: a handshake younger than this means the tunnel is live (WireGuard rekeys every 2 min)
COLOURS = {"fresh": "#2e7d32", "stale": "#ef6c00", "never": "#c62828", "unknown": "#9e9e9e"}


@dataclass
class GMember:
    name: str
    kind: str
    role: str
    vpn_ip: str
    group: str
    public: bool
    listen: str | None = None          # "UDP 51820 on 203.0.113.10"
    relay: bool = False
    via: str | None = None             # the relay holding this member's catch-all
    live: str | None = None            # live note (phase / unreachable)


@dataclass
class Edge:
    a: str          # dials (or either, when both can)
    b: str          # listens
    port: int | None
    keepalive: int | None
    live: str = ""  # fresh | stale | never | unknown; "" = not live
    age: int | None = None
    both: bool = False   # each side can dial the other (two public members)


@dataclass
class Topology:
    cluster: str
    members: list[GMember] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def groups(self) -> dict[str, list[GMember]]:
        out: dict[str, list[GMember]] = {}
        for m in self.members:
            out.setdefault(m.group, []).append(m)
        return out


def topology(cluster: Cluster, providers: dict[str, str] | None = None) -> Topology:
    providers = providers or {}
    topo = Topology(cluster.name)
    net = ipaddress.ip_network(cluster.vpn_cidr)
    cfgs = {m.name: parse_wg_quick(m.wg_conf) for m in cluster.members}
    by_key = {}
    for name, cfg in cfgs.items():
        if cfg.private_key:
            try:
                by_key[wg_public_from_private(cfg.private_key)] = name
            except ValueError:
                pass
    relays: dict[str, str] = {}
    for m in cluster.members:
        for p in cfgs[m.name].peers:
            if any(a.version == net.version and net.subnet_of(a) for a in p.allowed_ips) and p.public_key in by_key:
                relays[m.name] = by_key[p.public_key]
    for m in cluster.members:
        cfg = cfgs[m.name]
        addr = cfg.address4
        public = not m.behind_nat
        if m.kind == "admin":
            group = "admins"
        elif m.name in providers and providers[m.name]:
            group = f"provider: {providers[m.name]}"
        else:
            group = "public" if public else "behind NAT"
        listen = None
        if cfg.listen_port and public:
            listen = f"UDP {cfg.listen_port} on {m.public_address or m.endpoint_host}"
        topo.members.append(GMember(m.name, m.kind, m.role, str(addr.ip) if addr else "?", group, public, listen,
                                    relay=m.name in relays.values(), via=relays.get(m.name)))
    seen = set()
    for m in cluster.members:
        for p in cfgs[m.name].peers:
            other = by_key.get(p.public_key)
            if other is None or frozenset((m.name, other)) in seen:
                continue
            seen.add(frozenset((m.name, other)))
            back = next((q for q in cfgs[other].peers if by_key.get(q.public_key) == m.name), None)
            hp = p.endpoint_host_port
            both = bool(hp and back is not None and back.endpoint_host_port)
            if both and m.role == "control-plane":   # draw spoke -> hub when both could dial
                dialer, listener, port, ka = other, m.name, back.endpoint_host_port[1], back.keepalive
            elif hp:        # m dials other
                dialer, listener, port, ka = m.name, other, hp[1], p.keepalive
            elif back is not None and back.endpoint_host_port:
                dialer, listener, port, ka = other, m.name, back.endpoint_host_port[1], back.keepalive
            else:
                dialer, listener, port, ka = m.name, other, None, None
            topo.edges.append(Edge(dialer, listener, port, ka, both=both))
    return topo


def add_live(topo: Topology, report) -> None:
    """Colour tunnels by the last handshake either end reported (proof.status.Report)."""
    rows = {r.name: r for r in report.rows}
    for m in topo.members:
        r = rows.get(m.name)
        if r is None or r.kind == "admin":
            continue
        m.live = r.phase_text if r.reachable else f"unreachable: {r.error}"
    for e in topo.edges:
        ages = []
        for here, there in ((e.a, e.b), (e.b, e.a)):
            r = rows.get(here)
            if r and r.reachable:
                ages += [p.handshake_age for p in r.peers if p.name == there]
        if not ages:
            e.live = "unknown"
            continue
        known = [a for a in ages if a is not None]
        e.age = min(known) if known else None
        e.live = "never" if e.age is None else "fresh" if e.age < FRESH else "stale"


# --------------------------------------------------------------------------- DOT


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(topo: Topology, live: bool = False) -> str:
    big = len(topo.members) > 12
    lines = [f"graph {_q(topo.cluster)} {{",
             f"  graph [rankdir=LR, fontname=Helvetica, fontsize=12, labelloc=t, nodesep={0.08 if big else 0.3}, "
             f"ranksep={1.6 if big else 1.0}, label={_q(f'wgkube cluster {topo.cluster}' + (' (live)' if live else ''))}];",
             "  node [fontname=Helvetica, fontsize=10, shape=box, style=\"rounded,filled\", fillcolor=\"#e3f2fd\"];",
             "  edge [fontname=Helvetica, fontsize=9, color=\"#455a64\"];"]
    for i, (group, members) in enumerate(sorted(topo.groups().items(), key=lambda g: _group_order(g[0]))):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_q(group)}; style=\"rounded,dashed\"; color=\"#90a4ae\";")
        for m in members:
            label = [m.name, m.vpn_ip]
            marks = []
            if m.role == "control-plane":
                marks.append("control plane")
            if m.relay:
                marks.append("relay")
            if marks:
                label.append(", ".join(marks))
            if m.listen:
                label.append(m.listen)
            if not m.public:
                label.append("behind NAT" if m.kind == "node" else "admin, behind NAT")
            if live and m.via and not m.relay:
                label.append(f"others via {m.via} (relayed)")
            if live and m.live:
                label.append(m.live if len(m.live) < 40 else m.live[:37] + "...")
            attrs = {"label": "\\n".join(s.replace("\\", "\\\\").replace('"', '\\"') for s in label)}
            if m.role == "control-plane" or m.relay:
                attrs.update(penwidth="2.5", fillcolor="#bbdefb")
            if not m.public:
                attrs.update(fillcolor="#eceff1", style="rounded,filled,dashed")
            if m.kind == "admin":
                attrs.update(shape="note", style="filled", fillcolor="#fff8e1")
            if live and m.live and (m.live.startswith("unreachable") or m.live.startswith("failed")):
                attrs.update(color=COLOURS["never"], penwidth="2.5")
            lines.append(f"    {_q(m.name)} [" + ", ".join(f'{k}="{v}"' for k, v in attrs.items()) + "];")
        lines.append("  }")
    # Big clusters: the groups alternate left and right of what they dial (the hub), so the
    # picture is a wide star rather than one tall column. Sides balance the member counts.
    right: set[str] = set()
    if big:
        load = [0, 0]
        listeners = {e.b for e in topo.edges}
        for group, members in sorted(topo.groups().items(), key=lambda g: (-len(g[1]), g[0])):
            if any(m.name in listeners for m in members):
                continue
            side = 0 if load[0] <= load[1] else 1
            load[side] += len(members)
            if side:
                right.update(m.name for m in members)
    for e in topo.edges:
        attrs = {"dir": "both" if e.both else "forward", "arrowsize": "0.6"}
        a, b = e.a, e.b
        if a in right:      # listener first: dot ranks it left of the dialer; the arrow still points at it
            a, b = b, a
            attrs["dir"] = "both" if e.both else "back"
        label = []
        if e.port and not big:
            label.append(f"UDP {e.port}")
        if e.keepalive and not big:
            label.append(f"keepalive {e.keepalive}s")
        if live and e.live:
            attrs["color"] = COLOURS[e.live]
            attrs["penwidth"] = "2"
            if e.live == "never":
                attrs["style"] = "dashed"
            if not big:
                label.append("no handshake" if e.live == "never" else "?" if e.live == "unknown" else f"handshake {e.age}s ago")
        if label:
            attrs["label"] = "\\n".join(label)
        lines.append(f"  {_q(a)} -- {_q(b)} [" + ", ".join(f'{k}="{v}"' for k, v in attrs.items()) + "];")
    if live:
        lines.append("  subgraph cluster_legend { label=\"last handshake\"; style=dashed; color=\"#cfd8dc\"; node [shape=plaintext, style=\"\"];")
        lines.append(f"    legend [label=<<font color=\"{COLOURS['fresh']}\">&#9473; &lt; {FRESH // 60} min</font><br/>"
                     f"<font color=\"{COLOURS['stale']}\">&#9473; older</font><br/><font color=\"{COLOURS['never']}\">&#9476; never</font><br/>"
                     f"<font color=\"{COLOURS['unknown']}\">&#9473; not known (no status)</font>>]; }}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _group_order(group: str) -> tuple[int, str]:
    return ({"admins": 3, "behind NAT": 2, "public": 1}.get(group, 0), group)


def render_with_dot(source: str, fmt: str, dot_bin: str | None = None) -> bytes:
    """Run Graphviz's `dot`; RuntimeError with what to install when it is missing or fails."""
    dot_bin = dot_bin or shutil.which("dot")
    if dot_bin is None:
        raise FileNotFoundError("Graphviz is not installed (no `dot`): apt-get install graphviz, dnf install graphviz, brew install graphviz")
    proc = subprocess.run([dot_bin, f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"dot -T{fmt} failed: {proc.stderr.decode(errors='replace').strip()[:300]}")
    return proc.stdout


# --------------------------------------------------------------------------- text


def text(topo: Topology, live: bool = False) -> str:
    """The terminal fallback: groups, members with their marks, and who each tunnel goes to."""
    dials = {}
    for e in topo.edges:
        dials.setdefault(e.a, []).append(e)
    out = [f"wgkube cluster {topo.cluster}: {len(topo.members)} members, {len(topo.edges)} tunnels"]
    for group, members in sorted(topo.groups().items(), key=lambda g: _group_order(g[0])):
        out.append(f"{group}:")
        for m in members:
            marks = [m.role if m.kind == "node" else "admin"]
            if m.relay:
                marks.append("relay")
            if m.listen:
                marks.append(f"listens {m.listen}")
            if not m.public:
                marks.append("behind NAT")
            out.append(f"  {m.name}  {m.vpn_ip}  ({', '.join(marks)})" + (f"  [{m.live}]" if live and m.live else ""))
            for e in dials.get(m.name, []):
                extra = [f"UDP {e.port}"] if e.port else []
                if e.keepalive:
                    extra.append(f"keepalive {e.keepalive}s")
                if live and e.live:
                    extra.append("no handshake" if e.live == "never" else "handshake ?" if e.live == "unknown" else f"handshake {e.age}s ago")
                out.append(f"      {'<->' if e.both else '->'} {e.b}" + (f"  ({', '.join(extra)})" if extra else ""))
            if live and m.via and not m.relay:
                out.append(f"      other members: relayed by {m.via}")
    return "\n".join(out) + "\n"


def svg_graph(svg: bytes) -> tuple[set[str], set[tuple[str, str]]]:
    """(node titles, edge endpoints) of an SVG written by dot: how tests read a drawing back."""
    import xml.etree.ElementTree as ET
    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.fromstring(svg)
    nodes, edges = set(), set()
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        title = g.find("s:title", ns)
        if title is None or title.text is None:
            continue
        if g.get("class") == "node":
            nodes.add(title.text)
        elif g.get("class") == "edge":
            a, _, b = title.text.partition("--")
            edges.add((a, b))
    return nodes, edges


def source_of(path: Path):
    """(Cluster, providers) from a spec (rendered in memory) or an out/<cluster>/ folder."""
    from .read import cluster as rendered
    if path.is_dir():
        return rendered.from_out_dir(path), {}
    from ..pipeline import prepare
    prepared = prepare(path)
    return rendered.from_prepared(prepared), {m.name: m.provider for m in prepared.plan.members if m.provider}
