"""`wgkube status OUTDIR`: every member's state, asked over the VPN (see proof/status.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from .common import out

STATE_STYLE = {"done": "green", "running": "yellow", "failed": "bold red", "waiting": "yellow", "unknown": "dim"}


def _reach(r) -> str:
    if r.kind == "admin":
        return "admin"
    if r.reachable:
        return f"ok {r.latency_ms:.0f} ms"
    return f"NO: {r.error}"


def _api(r) -> str:
    if r.kind == "admin":
        return "-"
    if r.ready is None and r.internal_ip is None:
        return "?"
    text = "Ready" if r.ready else "NotReady"
    if r.internal_ip:
        text += f" {r.internal_ip}"
        if r.internal_ip_ok is False:
            text += f" (NOT the VPN address {r.vpn_ip}: set kubelet --node-ip)"
    return text


def _units(r, sep: str = ", ") -> str:
    keep = {k: v for k, v in r.units.items() if k in ("kubelet", "containerd", "crio")}
    return sep.join(f"{k} {v or '?'}" for k, v in keep.items())


def _phase_cell(r) -> str:
    """The table cell: the message goes under the table, where it has the full width."""
    if r.state == "failed":
        return f"failed {r.phase}"
    return r.phase_text


def renderable(report, width: int):
    """A table at 100 columns and more; below, one block per member (names and addresses never cut)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    from ..proof.status import handshake_summary

    title = f"wgkube status: {report.cluster}, {len(report.rows)} members, asked in {report.seconds:.1f} s"
    foot = []
    if report.kubernetes:
        foot.append(Text(f"API: {report.kubernetes}", style="dim"))
    failed = report.failed
    foot.append(Text(f"failed: {', '.join(failed)}" if failed else "no member failed",
                     style="bold red" if failed else "green"))
    if width >= 100:
        api = any(r.ready is not None or r.internal_ip for r in report.rows)
        t = Table(title=title, title_justify="left", expand=False)
        cols = [("member", {"no_wrap": True}), ("VPN IP", {"no_wrap": True}), ("reach", {}), ("first boot", {})]
        cols += [("node (API)", {"overflow": "fold"})] if api else []
        cols += [("runtime", {}), ("handshakes", {})]
        for col, kw in cols:
            t.add_column(col, **kw)
        for r in report.rows:
            cells = [r.name, r.vpn_ip, _reach(r), Text(_phase_cell(r), style=STATE_STYLE.get(r.state, ""))]
            cells += [_api(r)] if api else []
            cells += [_units(r, "\n"), handshake_summary(r, sep="\n")]
            t.add_row(*cells)
        notes = [Text(f"{r.name} failed in phase {r.phase}: {r.message}", style="red")
                 for r in report.rows if r.state == "failed" and r.message]
        notes += [Text(f"{r.name}: {r.hint}", style="dim") for r in report.rows if r.hint]
        notes += [Text(f"{r.name} add-ons: {r.addons_text}", style="red" if any(a["state"] == "failed" for a in r.addons) else "")
                  for r in report.rows if r.addons]
        return Group(t, *notes, *foot)
    blocks = [Text(title, style="bold")]
    for r in report.rows:
        b = Text()
        b.append(f"{r.name}", style="bold")
        b.append(f"  {r.vpn_ip}  {r.role}\n")
        b.append(f"  reach: {_reach(r)}\n")
        if r.hint:
            b.append(f"  check: {r.hint}\n", style="dim")
        if r.kind == "node" and r.reachable:
            b.append("  first boot: ")
            b.append(r.phase_text, style=STATE_STYLE.get(r.state, ""))
            b.append(f"\n  node (API): {_api(r)}\n")
            if _units(r):
                b.append(f"  runtime: {_units(r)}\n")
            b.append(f"  handshakes: {handshake_summary(r)}\n")
            if r.addons:
                b.append(f"  add-ons: {r.addons_text}\n")
        blocks.append(b)
    return Group(*blocks, *foot)


def admin_cert_warnings(out_dir: Path, now=None) -> list[str]:
    """Issue 17 item 2: each admins/<name>/kubeconfig of the rendered folder whose certificate expires
    within facts.ADMIN_CERT_WARN_DAYS, or has expired (the spec is not at hand here: SPEC stands for it)."""
    import datetime as dt
    from ..daytwo.admins import expiry_warning, kubeconfig_not_after
    now = now or dt.datetime.now(dt.timezone.utc)
    found = []
    for path in sorted((out_dir / "admins").glob("*/kubeconfig")):
        try:
            not_after = kubeconfig_not_after(path.read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if not_after is not None and (w := expiry_warning(path.parent.name, not_after, now)):
            found.append(w)
    return found


def _print_admin_warnings(out_dir: Path, stream: str = "out") -> None:
    import sys
    for w in admin_cert_warnings(out_dir):
        if stream == "err":
            sys.stderr.write(f"warning: {w}\n")
        else:
            out.print(f"warning: {w}", style="yellow", highlight=False, soft_wrap=True)


def register(app: typer.Typer, user_errors) -> None:
    @app.command("status", short_help="every member's state, asked over the VPN")
    @user_errors
    def status_cmd(
        out_dir: Path = typer.Argument(..., help="the rendered out/<cluster>/ folder"),
        watch: bool = typer.Option(False, "--watch", "-w", help="refresh in place until Ctrl-C"),
        interval: float = typer.Option(5.0, "--interval", min=1.0, help="seconds between refreshes with --watch"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object (shape: docs/status.md)"),
        timeout: float = typer.Option(3.0, "--timeout", min=0.2, help="seconds to wait for each member"),
        kubeconfig: Path = typer.Option(None, "--kubeconfig", help="for the API columns (default: the first admins/*/kubeconfig)"),
        no_api: bool = typer.Option(False, "--no-api", help="do not ask the Kubernetes API"),
    ) -> None:
        """Every member's state, asked over the VPN (run it from a VPN member, e.g. the admin laptop):
        first-boot phase, node Ready and INTERNAL-IP, handshakes. Exit 1 while any member has failed."""
        from ..proof.status import gather

        def once():
            return gather(out_dir, timeout=timeout, kubeconfig=kubeconfig, use_api=not no_api)

        if as_json and watch:
            raise typer.BadParameter("--json and --watch do not go together; poll with --json instead")
        if as_json:
            report = once()
            print(json.dumps(report.to_json(), indent=1))
            _print_admin_warnings(out_dir, "err")  # stdout holds the one JSON object
            raise typer.Exit(1 if report.failed else 0)
        if not watch:
            report = once()
            out.print(renderable(report, out.width), highlight=False, soft_wrap=False)
            _print_admin_warnings(out_dir)
            raise typer.Exit(1 if report.failed else 0)
        _print_admin_warnings(out_dir)  # once, before the refreshes
        report = once()
        if not out.is_terminal:
            # Piped or logged: rich Live would show only the last state; print each one in turn.
            try:
                while True:
                    out.print(renderable(report, out.width), highlight=False, soft_wrap=False)
                    out.file.flush()
                    time.sleep(interval)
                    report = once()
            except KeyboardInterrupt:
                pass
            raise typer.Exit(1 if report.failed else 0)
        from rich.live import Live
        try:
            with Live(renderable(report, out.width), console=out, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    report = once()
                    live.update(renderable(report, out.width), refresh=True)
        except KeyboardInterrupt:
            pass
        raise typer.Exit(1 if report.failed else 0)
