"""`wgkube qr NAME [OUTDIR]`: an admin's WireGuard config as a QR code, for the WireGuard phone app.

The config holds the admin's private key: the code is shown only when asked for by name, with a
warning, on a terminal (a pipe or a log file needs --force), and a PNG only where --png says,
written 0600. segno draws it (a maintained, dependency-free QR encoder).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from .common import err


def _default_out() -> Path | None:
    found = [p.parent for p in Path("out").glob("*/plan.json")] if Path("out").is_dir() else []
    return found[0] if len(found) == 1 else None


def qr_code(text: str):
    import segno
    # Error correction M: a phone camera reads it off a screen; ~300 bytes of config fit easily.
    return segno.make(text, error="m", micro=False, boost_error=False)


def register(app: typer.Typer, user_errors) -> None:
    @app.command("qr", short_help="an admin's WireGuard config as a QR code")
    @user_errors
    def qr_cmd(
        name: str = typer.Argument(..., help="an admin of the spec (admins: in the spec), e.g. laptop or phone"),
        out_dir: Path = typer.Argument(None, help="the rendered out/<cluster>/ (default: the only one under ./out)"),
        png: Path = typer.Option(None, "--png", help="also write the code as PNG here (mode 0600)"),
        terminal: bool = typer.Option(True, "--terminal/--no-terminal", help="draw the code in the terminal"),
        force: bool = typer.Option(False, "--force", help="draw it even when stdout is not a terminal (a pipe, a log)"),
    ) -> None:
        """An admin's WireGuard config as a QR code (terminal and/or PNG) for the WireGuard phone app.
        It contains the admin's PRIVATE KEY."""
        from ..errors import Problem, UserError
        if out_dir is None:
            out_dir = _default_out()
            if out_dir is None:
                raise UserError(Problem("", "which cluster? no single out/<cluster>/ here", "give the folder: wgkube qr NAME out/<cluster>"))
        import json
        try:
            plan = json.loads((out_dir / "plan.json").read_text())
            entry = next((m for m in plan["members"] if m["name"] == name), None)
            # issue 17: wg-<cluster>.conf when the spec opts in (plan.json says so), else <interface>.conf
            wg_file = (plan.get("admins") or {}).get("wg_file") or f"{plan['vpn']['interface']}.conf"
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(Problem(str(out_dir / "plan.json"), f"not a rendered wgkube cluster ({exc})",
                                    "give the out/<cluster>/ folder `wgkube render` wrote")) from None
        admins = [m["name"] for m in plan["members"] if m["kind"] == "admin"]
        if entry is None or entry["kind"] != "admin":
            what = "a node (its config stays on the node)" if entry else "not a member"
            raise UserError(Problem(str(out_dir / "plan.json"), f"{name} is {what}; QR codes are for admins: {', '.join(admins) or 'none'}",
                                    "add a phone under admins: in the spec and render again"))
        conf_path = out_dir / "admins" / name / wg_file
        try:
            text = conf_path.read_text()
        except OSError as exc:
            raise UserError(Problem(str(conf_path), f"cannot read the admin's WireGuard config: {exc.strerror}",
                                    "render again with `wgkube render`")) from None
        if terminal and not force and not sys.stdout.isatty() and png is not None:
            terminal = False   # asked for the PNG; a pipe gets no copy of the key
        if terminal and not force and not sys.stdout.isatty():
            err.print(f"[red]refused[/]: stdout is not a terminal, and this QR code holds {name}'s WireGuard PRIVATE KEY. "
                      "Pass --force to print it anyway, or --png FILE.", highlight=False)
            raise typer.Exit(2)
        code = qr_code(text)
        err.print(f"[bold yellow]warning[/]: this QR code contains {name}'s WireGuard PRIVATE KEY "
                  f"({conf_path}). Anyone who photographs it joins the VPN as {name}; "
                  f"if it leaks: wgkube rekey {name} SPEC.", highlight=False)
        if png is not None:
            # Created 0600 before the key goes in.
            fd = os.open(png, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                code.save(f, kind="png", scale=8, border=4)
            err.print(f"PNG: {png} (mode 0600)", highlight=False)
        if terminal:
            code.terminal(out=sys.stdout, border=2, compact=True)
            sys.stdout.flush()
            err.print(f"WireGuard app: + > Scan from QR code; tunnel name: {plan['cluster']}-{name}", highlight=False)
