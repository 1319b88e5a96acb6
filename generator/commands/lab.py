"""`wgkube lab OUTDIR`: run the rendered cluster in network namespaces and check it with real packets."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from .common import JsonOpt, is_terminal, matrix, print_text, table, write_json


def _json(result) -> dict:
    topo = result.topology
    out = {
        "prefix": topo.prefix, "ok": result.ok,
        "members": [{"name": s.name, "underlay": f"{s.address}/{s.prefixlen}",
                     "nat_gateway": None if s.nat is None else {"name": f"nat{s.nat}", "wan": str(topo.nats[s.nat].wan)},
                     "pod": None if s.pod_address is None else str(s.pod_address)} for s in topo.sites],
        "checks": [{"group": c.group, "subject": c.subject, "expected": c.expected, "got": c.got, "ok": c.ok} for c in result.checks],
        "failed": sum(1 for c in result.checks if not c.ok),
        "failover_seconds": getattr(result, "failover_seconds", None),
        "seconds": {"setup": round(result.setup_seconds, 2), "checks": round(result.check_seconds, 2), "total": round(result.total_seconds, 2)},
    }
    if getattr(result, "api_switches", None):   # issue 14, several control planes only (a single one: the JSON as before)
        out["api_switches"] = [{"down": w.down, "how": w.how, "client": w.client, "first_other_seconds": w.first_other,
                                "out_of_rotation_seconds": w.out_of_rotation, "failed": w.failed, "attempts": w.attempts,
                                "answered_by": w.answered_by, "ok": w.ok} for w in result.api_switches]
    return out


def _print(result) -> None:
    topo = result.topology
    rows = [(s.name, f"{s.address}/{s.prefixlen}", "-" if s.nat is None else f"nat{s.nat} ({topo.nats[s.nat].wan})",
             str(s.pod_address or "-")) for s in topo.sites]
    print_text(table(f"lab {topo.prefix}: where each member sits", ("member", "underlay", "NAT gateway", "pod"), rows))
    pings = {c.subject: c for c in result.checks if c.group == "ping"}
    names = [s.name for s in topo.sites]
    if pings:
        def cell(i: int, j: int) -> str:
            c = pings.get(f"{names[i]} -> {names[j]}")
            return "?" if c is None else "ok" if c.ok else f"✗ {c.got}"
        print_text("")
        print_text(matrix("ping over the VPN, row -> column", names, cell))
    rows = [(c.group, c.subject, c.expected, c.got, "ok" if c.ok else "FAIL") for c in result.checks if c.group != "ping"]
    print_text("")
    text = table("checks", ("check", "subject", "expected", "got", "result"), rows)
    if is_terminal() and any(line.startswith("  subject:") for line in text.splitlines()):
        # Too wide for this terminal: one line per check instead of a block of five.
        lines = ["checks (result, check: subject -> what happened)"]
        for group, subject, expected, got, res in rows:
            lines.append(f"{res:<4} {group}: {subject} -> {got}" + ("" if res == "ok" else f" (expected {expected})"))
        text = "\n".join(lines)
    print_text(text)
    if getattr(result, "failover_seconds", None) is not None:  # issue 13
        print_text(f"relay failover: {result.failover_seconds:.1f} s from the active relay's link going down until every "
                   f"pair without it pinged again", prose=True)
    for w in getattr(result, "api_switches", []):  # issue 14: several control planes
        first = "no answer from another control plane" if w.first_other is None else \
            f"first answer from another control plane after {w.first_other:.2f} s"
        print_text(f"local API endpoint: {w.down} {w.how}, {w.client} -> 127.0.0.1:7445: {first}, "
                   f"{w.failed} of {w.attempts} attempts failed, the last {w.out_of_rotation or 0:.2f} s after; "
                   f"then answered by {', '.join(w.answered_by) or 'nobody'}", prose=True)
    failed = [c for c in result.checks if not c.ok]
    print_text(f"{len(result.checks)} checks, {len(failed)} failed; setup {result.setup_seconds:.1f} s, "
               f"checks {result.check_seconds:.1f} s, total {result.total_seconds:.1f} s (cleanup included)", prose=True)


def register(app: typer.Typer, user_errors) -> None:
    @app.command("lab", short_help="rendered files in namespaces, real packets (root)")
    @user_errors
    def lab_cmd(
        out_dir: Path = typer.Argument(..., help="a rendered out/<cluster>/ folder (`wgkube render SPEC`)"),
        nat_gateways: int = typer.Option(2, "--nat-gateways", min=1, help="NAT gateways; members without an endpoint are spread over them round-robin"),
        as_json: bool = JsonOpt,
    ) -> None:
        """Run the rendered files in network namespaces (root; wireguard-go) and prove the network promises. Exit 1 on any failed check."""
        from ..proof.lab.run import run_lab
        try:
            result = run_lab(out_dir, nat_gateways)
        except RuntimeError as exc:
            sys.stderr.write(f"lab setup failed: {exc}\n")
            raise typer.Exit(2) from None
        except BaseException as exc:  # noqa: BLE001 - Ctrl-C / SIGTERM: cleanup already ran
            if type(exc).__name__ == "Interrupted":
                print_text(f"interrupted ({exc}); namespaces and processes removed")
                raise typer.Exit(130) from None
            raise
        if as_json:
            write_json(_json(result))
        else:
            _print(result)
        raise typer.Exit(0 if result.ok else 1)
