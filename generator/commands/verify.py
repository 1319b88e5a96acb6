"""`wgkube verify SPEC|OUTDIR`: simulate every member pair from the rendered files (no root, no writes)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .common import JsonOpt, matrix, print_text, table, write_json

SHOWN = 100  # findings printed before "... and N more" (use --all for every one)


def run(target: Path, secrets: Optional[Path], show_all: bool, as_json: bool = False) -> int:
    from ..proof.read import cluster as rendered
    from ..proof.verify import KINDS, verify
    t0 = time.perf_counter()
    if target.is_dir():
        cluster = rendered.from_out_dir(target)
        source = f"{target} (rendered files)"
    else:
        from ..pipeline import prepare
        cluster = rendered.from_prepared(prepare(target, secrets))
        source = f"{target} (rendered in memory, nothing written)"
    report = verify(cluster)
    elapsed = time.perf_counter() - t0
    names = report.names
    if as_json:
        write_json({
            "cluster": cluster.name, "source": str(target), "ok": report.ok, "members": names, "pairs": report.pairs,
            "reachable": report.reachable, "hops": {str(h): c for h, c in sorted(report.hops.items())},
            "matrix": None if report.matrix is None else
            {src: {dst: report.matrix.get((s, d), "?") for d, dst in enumerate(names) if d != s} for s, src in enumerate(names)},
            "findings": [{"kind": f.kind, "where": f.where, "pairs": f.count, "detail": f.detail} for f in report.findings],
            "kinds": {k: KINDS[k] for k in sorted(report.kinds())},
            "seconds": {"simulation": round(report.seconds, 3), "total": round(elapsed, 3)},
        } | ({"services": report.services} if report.services else {})
          | ({"control_planes": _control_planes_json(report.control_planes)}
             if report.control_planes is not None and report.control_planes.several else {}))
        return 0 if report.ok else 1
    if report.matrix is not None:
        print_text(matrix(f"{cluster.name}: ping over {cluster.interface}, row -> column", names,
                          lambda s, d: report.matrix.get((s, d), "?")))
    hops = ", ".join(f"{count} in {h} hop{'s' if h > 1 else ''}" for h, count in sorted(report.hops.items())) or "none"
    print_text(f"{source}: {len(names)} members, {report.pairs} ordered pairs, {report.reachable} reach ({hops}); "
               f"simulated in {report.seconds:.2f} s, {elapsed:.2f} s in all", prose=True)
    if report.mesh is not None:
        _print_mesh(report.mesh)
    for line in report.services:   # issue 17: admins with routes: services
        print_text(f"services: {line}", prose=True)
    cps = report.control_planes
    if cps is not None:
        _print_control_planes(cps)
    if report.ok:
        print_text("ok: every member reaches every other; public side shows only the WireGuard port "
                   "and exposed ports; keepalives and MTU chain fit"
                   + ("; direct wherever a side is public" + ("" if report.mesh.warnings else "; every relay can fail")
                      if report.mesh is not None else "")
                   + ("; any one control plane can fail" if cps is not None and cps.several and not cps.warnings else ""),
                   prose=True)
        return 0
    shown = report.findings if show_all else report.findings[:SHOWN]
    rows = [(f.kind, f.where, str(f.count) if f.kind in ("unreachable", "loop", "mtu") else "", f.detail) for f in shown]
    print_text(table(f"{len(report.findings)} finding{'s' if len(report.findings) != 1 else ''}", ("kind", "where", "pairs", "detail"), rows))
    if len(shown) < len(report.findings):
        print_text(f"... and {len(report.findings) - len(shown)} more (--all shows every one)")
    for kind in sorted(report.kinds()):
        print_text(f"{kind}: {KINDS[kind]}", prose=True)
    return 1


def _print_mesh(mesh) -> None:
    """Issue 13: which pairs are relayed, and each relay declared down in turn."""
    relayed = sum(mesh.relayed.values())
    print_text(f"mesh: {mesh.direct_pairs} ordered pairs with a public side, all direct unless listed below; "
               f"{relayed} relayed (both behind NAT)"
               + (": " + ", ".join(f"{count} via {name}" for name, count in mesh.relayed.most_common()) if relayed else ""),
               prose=True)
    for a, b, via in mesh.relayed_examples[:6]:
        print_text(f"  relayed: {a} -> {b} via {via}")
    if relayed > 6:
        print_text(f"  ... and {relayed - 6} more relayed pairs")
    for d in mesh.down:
        moved = ", ".join(f"{count} catch-all{'s' if count != 1 else ''} to {name}" for name, count in d.moved.items()) or "no catch-all pointed at it"
        print_text(f"relay {d.relay} down: {d.reachable} of {d.pairs} pairs among the members behind NAT and the other "
                   f"relays reach ({moved}); pairs with a public side are direct and do not pass it", prose=True)
    if mesh.failover_seconds is not None:
        print_text(f"failover settings: a dead relay is routed around within about {mesh.failover_seconds} s "
                   f"(misses x (interval + timeout) + timeout)", prose=True)
    for w in mesh.warnings:
        print_text(f"warning: {w}", prose=True)


def _print_control_planes(cps) -> None:
    """Issue 14 (docs/verify-ha.md): each control plane down in turn; one line for a single one."""
    if cps.several:
        print_text(f"control planes: {', '.join(cps.names)}; etcd needs a majority ({cps.quorum} of {len(cps.names)}) "
                   f"reaching each other on tcp 2379 and 2380, every node one live API (tcp 6443)", prose=True)
    for d in cps.down:
        moved = "".join(f"; {count} catch-all{'s' if count != 1 else ''} to {name}" for name, count in d.moved.items())
        etcd = "etcd keeps its majority" if d.majority else "etcd loses its majority"
        print_text(f"{'control plane' if d.control_plane else 'member'} {d.member} down: {etcd} "
                   f"({', '.join(f'{name} {k}/{len(cps.names)}' for name, k in d.etcd.items())}); "
                   f"{d.api} of {d.api_total} nodes and admins reach a live API{moved}"
                   + (f" ({d.known}: a warning, not a finding)" if d.known and d.problems and d.control_plane else ""),
                   prose=True)
    for w in cps.warnings:
        print_text(f"warning: {w}", prose=True)


def _control_planes_json(cps) -> dict:
    return {"names": cps.names, "quorum": cps.quorum, "warnings": cps.warnings,
            "down": [{"member": d.member, "control_plane": d.control_plane, "etcd": d.etcd, "majority": d.majority,
                      "api": d.api, "api_total": d.api_total, "moved": dict(d.moved), "known": d.known,
                      "problems": [{"member": w, "detail": why} for w, why in d.problems]} for d in cps.down]}


def register(app: typer.Typer, user_errors) -> None:
    @app.command("verify", short_help="prove the network from the rendered files (no root)")
    @user_errors
    def verify_cmd(
        target: Path = typer.Argument(..., help="cluster spec (YAML), or a rendered out/<cluster>/ folder"),
        secrets: Optional[Path] = typer.Option(None, "--secrets", help="secrets bundle (default: <spec>.secrets.yaml beside the spec)"),
        show_all: bool = typer.Option(False, "--all", help="print every finding, not the first 100"),
        as_json: bool = JsonOpt,
    ) -> None:
        """Prove reachability, public exposure, keepalives and MTU from the rendered files. Exit 1 on any finding."""
        raise typer.Exit(run(target, secrets, show_all, as_json))
