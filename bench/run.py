"""`python -m bench`: run every section, print the tables, write the JSON.

  python -m bench                 full run (several minutes on 2 cores)
  python -m bench --smoke         N=10 only, seconds; what CI runs (tests/test_bench_smoke.py)
  python -m bench --json PATH     where to write the results (default bench/results.json)
  python -m bench --only sizes    one or more sections: render, sizes, peer, proofs, mesh
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from . import cli_bench, mesh_bench, peer_bench, proof_bench, render_bench, report, size_bench, targets
from .measure import loadavg, machine

SECTIONS = ("cli", "render", "sizes", "peer", "proofs", "mesh")
DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Plan:
    mode: str
    render: list[int]
    render_runs: dict[int, int]
    sizes: list[int]
    marginal_k: int
    peer: list[int]
    peer_runs: dict[int, int]
    verify_members: int
    verify_runs: int
    lab: list[int] = field(default_factory=list)
    install: bool = True
    # issue 13: mesh render sizes (10% public), the size measured for a public member, verify sizes
    mesh: list[int] = field(default_factory=list)
    mesh_runs: dict[int, int] = field(default_factory=dict)
    mesh_size_at: int = 50
    mesh_verify: list[int] = field(default_factory=list)
    mesh_lab: bool = False


FULL = Plan(mode="full", render=[10, 100, 1000], render_runs={10: 7, 100: 5, 1000: 3}, sizes=[10, 50, 250],
            marginal_k=10, peer=[10, 100, 500], peer_runs={10: 9, 100: 3, 500: 3}, verify_members=1000, verify_runs=3,
            lab=[4, 12], mesh=[10, 100, 1000], mesh_runs={10: 7, 100: 5, 1000: 3}, mesh_verify=[100, 1000], mesh_lab=True)
# Smoke: keeps every code path working in seconds; never installs anything, never starts a lab.
SMOKE = Plan(mode="smoke", render=[10], render_runs={10: 1}, sizes=[10], marginal_k=10, peer=[10], peer_runs={10: 1},
             verify_members=10, verify_runs=1, lab=[], install=False, mesh=[10], mesh_runs={10: 1}, mesh_size_at=10,
             mesh_verify=[10])


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="wgkube benchmarks: speed, size, a peer tool, verify/lab")
    p.add_argument("--smoke", action="store_true", help="N=10 only, a few seconds (CI)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file (default: bench/results.json)")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    p.add_argument("--no-install", action="store_true", help="do not pip-install wg-meshconf into bench/.venv")
    p.add_argument("--runs", type=int, default=5, help="runs per figure in the cli section (medians; default 5)")
    p.add_argument("--runs-large", type=int, default=None, help="runs of the largest cli figures (500 members against wg-meshconf, whose run starts 501 processes; 3,000-member render)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = SMOKE if args.smoke else FULL
    sections = args.only or list(SECTIONS)
    console = Console(width=None if sys.stdout.isatty() else 160)
    log = lambda msg: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}", highlight=False)  # noqa: E731
    started = time.perf_counter()
    results: dict = {"meta": {"schema": 1, "mode": plan.mode, "sections": sections,
                              "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "machine": machine(), "load_before": loadavg()}}
    failed: list[str] = []

    def section(name: str, fn) -> None:
        """One section; a crash (the generator changing under us, a tool missing) is recorded, not fatal."""
        try:
            results[name] = fn()
        except Exception as exc:  # noqa: BLE001 - reported in the JSON and the exit code
            failed.append(name)
            detail = "".join(traceback.format_exception(exc)).strip().splitlines()[-6:]
            results.setdefault("errors", {})[name] = detail
            console.print(f"[bold red]{name} failed[/]: {detail[-1]}", highlight=False)

    with tempfile.TemporaryDirectory(prefix="wgkube-bench-") as tmp:
        work = Path(tmp)
        if "cli" in sections:
            section("cli", lambda: cli_bench.run(work, plan.mode == "smoke", plan.install and not args.no_install, log, args.runs,
                                                       args.runs_large))
        if "render" in sections:
            section("render", lambda: render_bench.timings(plan.render, plan.render_runs, work, log))
            section("memory", lambda: render_bench.memory(plan.render, work, log))
            section("profile", lambda: render_bench.profiles(max(plan.render), work, log))
        if "sizes" in sections:
            section("sizes", lambda: size_bench.run(plan.sizes, plan.marginal_k, log))
        if "peer" in sections:
            section("peer", lambda: peer_bench.run(plan.peer, plan.peer_runs, work, plan.install and not args.no_install, log))
        if "proofs" in sections:
            section("verify", lambda: proof_bench.verify(plan.verify_members, plan.verify_runs, work, log))
            section("lab", lambda: proof_bench.lab(plan.lab, work, log) if plan.lab else
                                              {"status": "skipped", "rows": [], "note": "the lab is not run in smoke mode"})
        if "mesh" in sections:
            section("mesh", lambda: mesh_bench.run(plan.mesh, plan.mesh_runs, plan.mesh_size_at, plan.mesh_verify,
                                                   plan.mesh_lab, work, log))
    results["targets"] = targets.evaluate(results)
    results["meta"].update(load_after=loadavg(), duration_s=time.perf_counter() - started)
    report.print_all(console, results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    if failed:
        console.print(f"[bold red]sections that failed[/]: {', '.join(failed)} (details under \"errors\" in the JSON)")
    console.print(f"results: {args.json} ({results['meta']['duration_s']:.0f} s; load average before "
                  f"{results['meta']['load_before']}, after {results['meta']['load_after']})", highlight=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
