"""Section 5 (issue 13): the mesh. Render time at 10/100/1,000 members with 10% public (the same
generated specs as section 1, with `vpn.topology: mesh`), the bytes of a public member's
user-data at 50 members (the largest public member: it lists every other member), `verify`
time (the relay-down simulations included), and the relay failover measured in the lab."""
from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path

from .measure import REPO, timed
from .specs import hub_and_spoke, write_spec

LAB_SPEC = REPO / "tests" / "specs" / "mesh-lab.yaml"
FAILOVER = re.compile(r"relay failover: ([\d.]+) s")


def mesh_spec(n: int, name: str = "mesh", capacity: int | None = None) -> dict:
    spec = copy.deepcopy(hub_and_spoke(n, name=name, capacity=capacity))
    spec["vpn"]["topology"] = "mesh"
    return spec


def _prepared(workdir: Path, n: int):
    from generator.pipeline import prepare
    return prepare(write_spec(workdir / f"mesh-{n}", mesh_spec(n), "cluster.yaml"))


def render_times(sizes: list[int], runs: dict[int, int], workdir: Path, log) -> list[dict]:
    from generator.pipeline import render_all
    warm = _prepared(workdir, 3)
    render_all(warm.plan, warm.bundle, iso=False, packer=False)
    rows = []
    for n in sizes:
        prepared = _prepared(workdir, n)
        mesh = prepared.plan.mesh
        log(f"mesh: render {n} members ({len(mesh.public)} public), {runs[n]} runs")
        t = timed(lambda: render_all(prepared.plan, prepared.bundle, iso=False, packer=False), runs[n])
        rows.append({"members": n, "public": len(mesh.public), "behind_nat": len(mesh.behind_nat),
                     "relays": list(mesh.relays), "user-data": t | {"per_member_ms": t["median_s"] / n * 1000}})
        del prepared
    return rows


def public_sizes(n: int, workdir: Path, log) -> dict:
    from .size_bench import _sizes
    prepared = _prepared(workdir, n)
    plan, bundle = prepared.plan, prepared.bundle
    log(f"mesh: user-data bytes of every public member at {n} members")
    rows = {m: _sizes(plan, bundle, plan.member(m)) for m in plan.mesh.public}
    largest = max(rows, key=lambda m: rows[m]["bytes"]["plain"])
    nat = next(m for m in plan.mesh.behind_nat if plan.member(m).is_node)
    return {"members": n, "largest_public": largest, "public": rows[largest], "behind_nat": _sizes(plan, bundle, plan.member(nat)) | {"name": nat}}


def verify_times(sizes: list[int], workdir: Path, log) -> list[dict]:
    from generator.proof.read import cluster as rendered
    from generator.proof.verify import verify
    rows = []
    for n in sizes:
        cluster = rendered.from_prepared(_prepared(workdir, n))
        log(f"mesh: verify {n} members (every pair, then each relay down)")
        result = {}
        t = timed(lambda: result.setdefault("r", verify(cluster, keep_matrix=False)), 1)
        report = result["r"]
        rows.append({"members": n, "ordered_pairs": report.pairs, "reachable": report.reachable, "ok": report.ok,
                     "relayed_pairs": sum(report.mesh.relayed.values()),
                     "relay_down": [{"relay": d.relay, "reachable": d.reachable, "pairs": d.pairs} for d in report.mesh.down],
                     **t})
    return rows


def lab_failover(workdir: Path, log) -> dict:
    from .proof_bench import LAB_TOOLS, _cli, _tail, has_command
    if not has_command("lab") or os.geteuid() != 0 or any(shutil.which(t) is None for t in LAB_TOOLS):
        return {"status": "skipped", "note": "the lab needs root, ip, nft, wg and wireguard-go: not measured"}
    base = workdir / "mesh-lab"
    base.mkdir(parents=True, exist_ok=True)
    shutil.copy(LAB_SPEC, base / "cluster.yaml")
    _w, rendered = _cli("render", str(base / "cluster.yaml"), "-o", str(base / "out"), "-q", "--no-iso", "--no-packer")
    if rendered.returncode != 0:
        return {"status": "render failed", "output_tail": _tail(rendered)}
    log("mesh: `wgkube lab` on tests/specs/mesh-lab.yaml (7 members, 2 relays), relay taken down for real")
    wall, proc = _cli("lab", str(base / "out" / "meshlab"))
    found = FAILOVER.search(proc.stdout)
    return {"status": "ok" if proc.returncode == 0 else "failed", "wall_s": wall, "exit_code": proc.returncode,
            "failover_s": float(found.group(1)) if found else None, "output_tail": _tail(proc)}


def run(sizes: list[int], runs: dict[int, int], size_at: int, verify_at: list[int], lab: bool, workdir: Path, log) -> dict:
    return {"render": render_times(sizes, runs, workdir, log), "sizes": public_sizes(size_at, workdir, log),
            "verify": verify_times(verify_at, workdir, log),
            "lab": lab_failover(workdir, log) if lab else {"status": "skipped", "note": "the lab is not run in smoke mode"}}
