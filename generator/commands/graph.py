"""`wgkube graph SPEC|OUTDIR`: the topology as SVG/PNG (Graphviz `dot`), or as text (see proof/graph.py)."""
from __future__ import annotations

from pathlib import Path

import typer

from .common import err, out


def register(app: typer.Typer, user_errors) -> None:
    @app.command("graph", short_help="draw the topology (SVG, PNG; --live: tunnel state)")
    @user_errors
    def graph_cmd(
        source: Path = typer.Argument(..., help="a cluster spec, or a rendered out/<cluster>/ folder (--live needs the folder)"),
        output: Path = typer.Option(None, "-o", "--output", help="SVG to write (default: <cluster>-topology.svg here); a PNG beside it"),
        live: bool = typer.Option(False, "--live", help="ask every member's status over the VPN and colour tunnels by their last handshake"),
        as_text: bool = typer.Option(False, "--text", help="print the topology as text instead of drawing it"),
        no_png: bool = typer.Option(False, "--no-png", help="SVG only"),
        timeout: float = typer.Option(3.0, "--timeout", min=0.2, help="--live: seconds to wait for each member"),
    ) -> None:
        """Draw the cluster: members grouped by provider or network position, public vs behind NAT,
        control planes and relays marked, the public UDP port on each listener, every tunnel."""
        from ..errors import Problem, UserError
        from ..proof import graph as g
        if not source.exists():
            raise UserError(Problem(str(source), "no such file or folder", "give a spec or a rendered out/<cluster>/"))
        cluster, providers = g.source_of(source)
        topo = g.topology(cluster, providers)
        if live:
            if not source.is_dir():
                raise UserError(Problem(str(source), "--live needs the rendered out/<cluster>/ folder", "wgkube graph out/<cluster> --live"))
            from ..proof.status import gather
            g.add_live(topo, gather(source, timeout=timeout, use_api=False))
        if as_text:
            out.print(g.text(topo, live), highlight=False, markup=False, soft_wrap=True)
            return
        source_dot = g.dot(topo, live)
        try:
            svg = g.render_with_dot(source_dot, "svg")
        except FileNotFoundError as exc:
            err.print(f"[yellow]cannot draw[/]: {exc}. The topology as text instead:", highlight=False)
            out.print(g.text(topo, live), highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(3) from None
        except RuntimeError as exc:
            err.print(f"[red]error[/]: {exc}", highlight=False)
            raise typer.Exit(1) from None
        target = output or Path(f"{topo.cluster}-topology.svg")
        target.write_bytes(svg)
        written = [str(target)]
        if not no_png:
            try:
                target.with_suffix(".png").write_bytes(g.render_with_dot(source_dot, "png"))
                written.append(str(target.with_suffix(".png")))
            except RuntimeError as exc:   # dot without its cairo/gd renderer
                err.print(f"no PNG ({exc}); the SVG is complete", highlight=False)
        out.print(f"{len(topo.members)} members, {len(topo.edges)} tunnels: {', '.join(written)}", highlight=False)
