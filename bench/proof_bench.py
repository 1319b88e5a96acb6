"""Section 4: `wgkube verify` on a large cluster and `wgkube lab` wall time, where they exist.

Both are timed through the real CLI in a fresh process, as a user runs them: the figure
includes interpreter start-up and loading the spec. verify also prints its own simulation
time, which is kept beside the wall time.
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .measure import REPO
from .specs import hub_and_spoke, lab_spec, write_spec

LAB_TOOLS = ("ip", "nft", "wg", "wireguard-go")
VERIFY_TIMES = re.compile(r"simulated\s+in\s+([\d.]+)\s+s,\s+([\d.]+)\s+s\s+in\s+all")  # rich may wrap the line


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cli(*args: str, timeout: float = 900) -> tuple[float, subprocess.CompletedProcess]:
    """Run the CLI; wall seconds, and the CPU seconds it used on proc.cpu_s (start-up included)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, "-m", "generator", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    proc.cpu_s = _children_cpu() - c0  # type: ignore[attr-defined]
    return time.perf_counter() - t0, proc


def has_command(name: str) -> bool:
    """The command is registered in the CLI (its module may exist before its command does)."""
    from generator.cli import app
    return any((c.name or c.callback.__name__.replace("_", "-")) == name for c in app.registered_commands)


def _tail(proc: subprocess.CompletedProcess, lines: int = 6) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-lines:])


def _verify_once(target: Path) -> dict:
    wall, proc = _cli("verify", str(target))
    found = VERIFY_TIMES.search(proc.stdout)
    return {"wall_s": wall, "cpu_s": proc.cpu_s, "exit_code": proc.returncode, "simulate_s": float(found.group(1)) if found else None,
            "in_process_s": float(found.group(2)) if found else None, "output_tail": _tail(proc)}


def _summarize(runs: list[dict]) -> dict:
    last = runs[-1]
    out = {"median_s": statistics.median(r["wall_s"] for r in runs), "runs_s": [round(r["wall_s"], 3) for r in runs],
           "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
           "exit_code": last["exit_code"], "output_tail": last["output_tail"]}
    sims = [r["simulate_s"] for r in runs if r["simulate_s"] is not None]
    if sims:
        out["simulate_median_s"] = statistics.median(sims)
        out["in_process_median_s"] = statistics.median(r["in_process_s"] for r in runs if r["in_process_s"] is not None)
    return out


def verify(n: int, runs: int, workdir: Path, log) -> dict:
    if not has_command("verify"):
        return {"status": "missing", "members": n, "note": "`wgkube verify` is not there yet: not measured"}
    base = workdir / f"verify-{n}"
    spec = write_spec(base, hub_and_spoke(n), "cluster.yaml")
    log(f"verify: `wgkube verify SPEC` on {n} members, {runs} runs")
    from_spec = []
    for _ in range(runs):
        from_spec.append(_verify_once(spec))
        if from_spec[-1]["exit_code"] != 0:
            break
    result = {"members": n, "ordered_pairs": n * (n - 1), **_summarize(from_spec)}
    result["status"] = "ok" if result["exit_code"] == 0 else "failed"
    # The other input: a rendered out/<cluster>/ folder, read back from the user-data files.
    _w, rendered = _cli("render", str(spec), "-o", str(base / "out"), "-q", "--no-iso", "--no-packer")
    if rendered.returncode == 0:
        log(f"verify: `wgkube verify OUTDIR` on {n} rendered members, one run")
        result["from_rendered_files"] = _summarize([_verify_once(base / "out" / "bench")])
    else:
        result["from_rendered_files"] = {"status": "render failed", "output_tail": _tail(rendered)}
    return result


def lab(sizes: list[int], workdir: Path, log) -> dict:
    if not has_command("lab"):
        return {"status": "missing", "rows": [], "note": "`wgkube lab` is not there yet: not measured"}
    if os.geteuid() != 0:
        return {"status": "skipped", "rows": [], "note": "`wgkube lab` needs root: not measured"}
    missing = [t for t in LAB_TOOLS if shutil.which(t) is None]
    if missing:
        return {"status": "skipped", "rows": [], "note": f"`wgkube lab` needs {', '.join(missing)}: not measured"}
    rows = []
    for n in sizes:
        name = f"lab{n}"
        base = workdir / name
        spec = write_spec(base, lab_spec(n, name), "cluster.yaml")
        _w, rendered = _cli("render", str(spec), "-o", str(base / "out"), "-q", "--no-iso", "--no-packer")
        if rendered.returncode != 0:
            rows.append({"members": n, "status": "render failed", "exit_code": rendered.returncode, "output_tail": _tail(rendered)})
            continue
        log(f"lab: `wgkube lab` with {n} members (one run)")
        wall, proc = _cli("lab", str(base / "out" / name))
        rows.append({"members": n, "wall_s": wall, "exit_code": proc.returncode,
                     "status": "ok" if proc.returncode == 0 else "failed", "output_tail": _tail(proc)})
    status = "ok" if rows and all(r["status"] == "ok" for r in rows) else "failed"
    return {"status": status, "rows": rows}
