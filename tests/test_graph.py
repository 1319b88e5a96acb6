"""`wgkube graph`: the drawing read back (every member a node, every intended tunnel an edge),
the 50-member picture, the text fallback without Graphviz, and --live marks (issue 15).

tests/specs/graph50.yaml: a hub, 20 public workers over three providers, 25 workers behind NAT,
4 admins. docs/graph-example.png and docs/graph-50.svg were drawn from the example and this spec.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLE, REPO, SPECS, need, render_spec, wgkube
from generator.proof import graph as g


def intended(out: Path) -> tuple[set[str], set[frozenset[str]]]:
    """Every member, and every pair whose rendered WireGuard configs list each other (for a hub
    without mesh: exactly one tunnel from each member to the hub, checked too)."""
    from generator.proof.read import cluster as rendered
    from generator.proof.read.wgconf import parse_wg_quick
    from generator.secrets.pki import wg_public_from_private
    plan = json.loads((out / "plan.json").read_text())
    names = {m["name"] for m in plan["members"]}
    confs = {m.name: parse_wg_quick(m.wg_conf) for m in rendered.from_out_dir(out).members}
    key = {wg_public_from_private(c.private_key): n for n, c in confs.items()}
    pairs = {frozenset((n, key[p.public_key])) for n, c in confs.items() for p in c.peers if p.public_key in key}
    if plan.get("topology", "hub") == "hub" and not plan.get("mesh"):
        assert pairs == {frozenset((n, plan["hub"])) for n in names if n != plan["hub"]}
    return names, pairs


@pytest.mark.parametrize("spec", [EXAMPLE, SPECS / "graph50.yaml"], ids=["example", "50-members"])
def test_svg_has_every_member_and_every_tunnel(spec, tmp_path):
    need("dot", "Graphviz lays the graph out")
    out = render_spec(spec, tmp_path, "--no-iso", "--no-packer")
    members, tunnels = intended(out)
    for source in (tmp_path / "cluster.yaml", out):
        svg = tmp_path / f"{source.name}.svg"
        proc = wgkube("graph", str(source), "-o", str(svg))
        assert f"{len(members)} members, {len(tunnels)} tunnels" in proc.stdout
        nodes, edges = g.svg_graph(svg.read_bytes())
        assert nodes == members
        assert {frozenset(e) for e in edges} == tunnels
        assert svg.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert "control plane, relay" in text and "UDP 51820 on 203.0.113.10" in text and "behind NAT" in text
    if spec == EXAMPLE:
        # From the spec the provider groups the hub; listeners show their public port.
        from_spec = (tmp_path / "cluster.yaml.svg").read_text()
        assert "provider: hetzner" in from_spec and "UDP 51820 on 198.51.100.20" in from_spec


def test_text_fallback_without_graphviz(tmp_path):
    out = render_spec(EXAMPLE, tmp_path, "--no-iso", "--no-packer")
    env = {**os.environ, "PATH": "/nonexistent", "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-m", "generator", "graph", str(out), "-o", str(tmp_path / "x.svg")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "Graphviz is not installed" in proc.stderr and "apt-get install graphviz" in proc.stderr
    assert "hub  10.88.0.1  (control-plane, relay, listens UDP 51820 on 203.0.113.10)" in proc.stdout
    assert "homelab-1  10.88.0.3  (worker, behind NAT)\n      -> hub  (UDP 51820, keepalive 25s)" in proc.stdout
    assert not (tmp_path / "x.svg").exists()


def test_live_marks_from_a_status_report(tmp_path):
    from generator.proof import status as st
    from generator.proof.read import cluster as rendered
    out = render_spec(EXAMPLE, tmp_path, "--no-iso", "--no-packer")
    topo = g.topology(rendered.from_out_dir(out))
    hub = st.Row("hub", "node", "control-plane", "10.88.0.1", reachable=True, state="done",
                 peers=[st.Peer("worker-1", "k1", None, [], 20, 1, 1), st.Peer("homelab-1", "k2", None, [], None, 0, 0),
                        st.Peer("laptop", "k3", None, [], 900, 1, 1)])
    w1 = st.Row("worker-1", "node", "worker", "10.88.0.2", reachable=True, state="failed", phase="api", message="x",
                peers=[st.Peer("hub", "k0", None, ["10.88.0.0/24"], 20, 1, 1, catch_all=True)])
    down = st.Row("homelab-1", "node", "worker", "10.88.0.3", reachable=False, error="timeout")
    g.add_live(topo, st.Report("demo", [hub, w1, down, st.Row("laptop", "admin", "admin", "10.88.0.4")]))
    live = {frozenset((e.a, e.b)): e.live for e in topo.edges if "hub" in (e.a, e.b)}
    assert live == {frozenset(("worker-1", "hub")): "fresh", frozenset(("homelab-1", "hub")): "never",
                    frozenset(("laptop", "hub")): "stale"}
    text = g.text(topo, live=True)
    assert "[unreachable: timeout]" in text and "[failed api: x]" in text and "relayed by hub" in text
    source = g.dot(topo, live=True)
    assert g.COLOURS["never"] in source and "others via hub (relayed)" in source
