"""`wgkube lab OUTDIR`: run the rendered cluster in network namespaces and check it with real packets."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _print(result, console: Console) -> None:
    topo = result.topology
    table = Table(title=f"lab {topo.prefix}: where each member sits")
    for col in ("member", "underlay", "NAT gateway", "pod"):
        table.add_column(col)
    for s in topo.sites:
        nat = "-" if s.nat is None else f"nat{s.nat} ({topo.nats[s.nat].wan})"
        table.add_row(s.name, f"{s.address}/{s.prefixlen}", nat, str(s.pod_address or "-"))
    console.print(table)
    pings = {c.subject: c for c in result.checks if c.group == "ping"}
    names = [s.name for s in topo.sites]
    if pings:
        matrix = Table(title="ping over the VPN, row -> column")
        matrix.add_column("from \\ to")
        for n in names:
            matrix.add_column(n)
        for src in names:
            cells = []
            for dst in names:
                c = pings.get(f"{src} -> {dst}")
                cells.append("-" if src == dst else "?" if c is None else "ok" if c.ok else f"[red]✗ {c.got}[/]")
            matrix.add_row(src, *cells)
        console.print(matrix)
    table = Table(title="checks")
    for col in ("check", "subject", "expected", "got", ""):
        table.add_column(col, overflow="fold")
    for c in result.checks:
        if c.group != "ping":
            table.add_row(c.group, c.subject, c.expected, c.got, "ok" if c.ok else "[red]FAIL[/]")
    console.print(table)
    if result.failover_seconds is not None:  # issue 13
        console.print(f"relay failover: {result.failover_seconds:.1f} s from the active relay's link going down until every "
                      f"pair without it pinged again", highlight=False)
    failed = [c for c in result.checks if not c.ok]
    console.print(f"{len(result.checks)} checks, {len(failed)} failed; setup {result.setup_seconds:.1f} s, "
                  f"checks {result.check_seconds:.1f} s, total {result.total_seconds:.1f} s (cleanup included)", highlight=False)


def register(app: typer.Typer, user_errors) -> None:
    @app.command("lab")
    @user_errors
    def lab_cmd(
        out_dir: Path = typer.Argument(..., help="a rendered out/<cluster>/ folder (`wgkube render SPEC -o out`)"),
        nat_gateways: int = typer.Option(2, "--nat-gateways", min=1, help="NAT gateways; members without an endpoint are spread over them round-robin"),
    ) -> None:
        """Run the rendered files in network namespaces (root; wireguard-go) and prove the network promises. Exit 1 on any failed check."""
        from ..proof.lab.run import run_lab
        console = Console(width=max(Console().width, 140))
        try:
            result = run_lab(out_dir, nat_gateways)
        except RuntimeError as exc:
            console.print(f"[red]lab setup failed[/]: {exc}", highlight=False)
            raise typer.Exit(2) from None
        except BaseException as exc:  # noqa: BLE001 - Ctrl-C / SIGTERM: cleanup already ran
            if type(exc).__name__ == "Interrupted":
                console.print(f"interrupted ({exc}); namespaces and processes removed")
                raise typer.Exit(130) from None
            raise
        _print(result, console)
        raise typer.Exit(0 if result.ok else 1)
