"""`wgkube verify SPEC|OUTDIR`: simulate every member pair from the rendered files (no root, no writes)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

SHOWN = 100  # findings printed before "... and N more" (use --all for every one)


def run(target: Path, secrets: Optional[Path], show_all: bool, console: Console) -> int:
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
    if report.matrix is not None:
        table = Table(title=f"{cluster.name}: ping over {cluster.interface}, row -> column")
        table.add_column("from \\ to")
        for name in names:
            table.add_column(name)
        for s, src in enumerate(names):
            table.add_row(src, *("-" if s == d else report.matrix.get((s, d), "?") for d in range(len(names))))
        console.print(table)
    hops = ", ".join(f"{count} in {h} hop{'s' if h > 1 else ''}" for h, count in sorted(report.hops.items())) or "none"
    console.print(f"{source}: {len(names)} members, {report.pairs} ordered pairs, {report.reachable} reach ({hops}); "
                  f"simulated in {report.seconds:.2f} s, {elapsed:.2f} s in all", highlight=False)
    if report.mesh is not None:
        _print_mesh(report.mesh, console)
    if report.ok:
        console.print("[green]ok[/]: every member reaches every other; public side shows only the WireGuard port "
                      "and exposed ports; keepalives and MTU chain fit"
                      + ("; direct wherever a side is public" + ("" if report.mesh.warnings else "; every relay can fail") if report.mesh is not None else ""))
        return 0
    table = Table(title=f"{len(report.findings)} finding(s)")
    for col in ("kind", "where", "pairs", "detail"):
        table.add_column(col, overflow="fold")
    shown = report.findings if show_all else report.findings[:SHOWN]
    for f in shown:
        table.add_row(f.kind, f.where, str(f.count) if f.kind in ("unreachable", "loop", "mtu") else "", f.detail)
    console.print(table)
    if len(shown) < len(report.findings):
        console.print(f"... and {len(report.findings) - len(shown)} more (--all shows every one)")
    for kind in sorted(report.kinds()):
        console.print(f"  {kind}: {KINDS[kind]}", highlight=False)
    return 1


def _print_mesh(mesh, console: Console) -> None:
    """Issue 13: which pairs are relayed, and each relay declared down in turn."""
    relayed = sum(mesh.relayed.values())
    console.print(f"mesh: {mesh.direct_pairs} ordered pairs with a public side, all direct unless listed below; "
                  f"{relayed} relayed (both behind NAT)"
                  + (": " + ", ".join(f"{count} via {name}" for name, count in mesh.relayed.most_common()) if relayed else ""),
                  highlight=False)
    for a, b, via in mesh.relayed_examples[:6]:
        console.print(f"  relayed: {a} -> {b} via {via}", highlight=False)
    if relayed > 6:
        console.print(f"  ... and {relayed - 6} more relayed pairs", highlight=False)
    for d in mesh.down:
        moved = ", ".join(f"{count} catch-all(s) to {name}" for name, count in d.moved.items()) or "no catch-all pointed at it"
        console.print(f"  relay {d.relay} down: {d.reachable} of {d.pairs} pairs among the members behind NAT and the other "
                      f"relays reach ({moved}); pairs with a public side are direct and do not pass it", highlight=False)
    if mesh.failover_seconds is not None:
        console.print(f"  failover settings: a dead relay is routed around within about {mesh.failover_seconds} s "
                      f"(misses x (interval + timeout) + timeout)", highlight=False)
    for w in mesh.warnings:
        console.print(f"[yellow]warning[/]: {w}", highlight=False)


def register(app: typer.Typer, user_errors) -> None:
    @app.command("verify")
    @user_errors
    def verify_cmd(
        target: Path = typer.Argument(..., help="cluster spec (YAML), or a rendered out/<cluster>/ folder"),
        secrets: Optional[Path] = typer.Option(None, "--secrets", help="secrets bundle (default: <spec>.secrets.yaml beside the spec)"),
        show_all: bool = typer.Option(False, "--all", help="print every finding, not the first 100"),
    ) -> None:
        """Prove reachability, public exposure, keepalives and MTU from the rendered files. Exit 1 on any finding."""
        code = run(target, secrets, show_all, Console(width=max(Console().width, 160)))
        raise typer.Exit(code)
