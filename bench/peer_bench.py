"""Section 3: wgkube next to wg-meshconf, same machine, same run, fresh interpreter for every run.

Both sides do the whole job for N members: make every key pair, then write one wg-quick config
per member. wgkube: parse the spec, plan, populate the secrets (which also makes the cluster
CAs), render every wg0.conf. wg-meshconf: ``addpeer`` per member, then ``genconfig``.
The topologies differ and the output sizes say by how much: wgkube is hub-and-spoke (the hub
has N-1 peers, every spoke 1), wg-meshconf a full mesh (every member has N-1 peers).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .measure import worker
from .specs import hub_and_spoke, members, write_spec

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
PACKAGE = "wg-meshconf==2.5.1"  # pinned: the figures compare against this exact version
SCRIPT = HERE / "meshconf_worker.py"


def _imports(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import wg_meshconf.database_manager"], capture_output=True).returncode == 0


def meshconf_python(install: bool, log) -> tuple[str | None, str]:
    """An interpreter that can import wg_meshconf, and where it came from (or why there is none)."""
    if importlib.util.find_spec("wg_meshconf") is not None:
        return sys.executable, "the current environment"
    python = VENV / "bin" / "python"
    if python.exists() and _imports(python):
        return str(python), "bench/.venv"
    if not install:
        return None, ("wg-meshconf is not installed: run `python -m bench` once (it installs "
                      f"{PACKAGE} into bench/.venv), or pip install {PACKAGE}")
    log(f"installing {PACKAGE} into bench/.venv (a venv that sees this environment's cryptography, so both tools "
        "use the same X25519 code)")
    made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], capture_output=True, text=True)
    if made.returncode != 0:
        return None, f"could not create bench/.venv: {made.stderr.strip()[-500:]}"
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PACKAGE],
                         capture_output=True, text=True)
    if pip.returncode != 0 or not _imports(python):
        return None, f"pip install {PACKAGE} failed: {(pip.stderr or pip.stdout).strip()[-500:]}"
    return str(python), "bench/.venv (installed by this run)"


def _startup(cmd: list[str], runs: int = 3) -> float:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def _side(results: list[dict]) -> dict:
    first = results[0]
    med = statistics.median(r["work_s"] for r in results)
    steps = {k: statistics.median(r["steps_s"][k] for r in results) for k in first["steps_s"]}
    return {"median_s": med, "cpu_median_s": statistics.median(r["cpu_s"] for r in results),
            "runs_s": [round(r["work_s"], 4) for r in results], "steps_median_s": steps, "files": first["files"],
            "bytes": first["bytes"], "peer_sections": first["peer_sections"],
            "us_per_peer_section": med / first["peer_sections"] * 1e6, "cryptography": first["cryptography"]}


def run(sizes: list[int], runs: dict[int, int], workdir: Path, install: bool, log) -> dict:
    python, source = meshconf_python(install, log)
    out: dict = {"tool": "wg-meshconf", "package": PACKAGE, "source": source}
    if python is None:
        log(f"[bold red]wg-meshconf unavailable[/]: {source}")
        return out | {"status": "unavailable", "rows": []}
    meshconf_cli = Path(python).with_name("wg-meshconf")
    out["cli_startup_s"] = {
        "wgkube": _startup([sys.executable, "-m", "generator", "--help"]),
        "wg-meshconf": _startup([str(meshconf_cli), "--help"] if meshconf_cli.exists() else [python, "-m", "wg_meshconf", "--help"]),
    }
    rows = []
    for n in sizes:
        log(f"peer: {n} members, {runs[n]} runs each, interleaved")
        base = workdir / f"peer-{n}"
        spec = write_spec(base, hub_and_spoke(n), "cluster.yaml")
        roster = base / "members.json"
        roster.write_text(json.dumps(members(n)))
        ours, theirs = [], []
        for r in range(runs[n]):  # interleaved, so a busy moment on the machine hits both sides alike
            ours.append(worker(["wg-configs", str(spec), str(base / f"wgkube-{r}")]))
            theirs.append(worker([str(roster), str(base / f"meshconf-{r}")], python=python, script=SCRIPT))
            shutil.rmtree(base / f"wgkube-{r}", ignore_errors=True)
            shutil.rmtree(base / f"meshconf-{r}", ignore_errors=True)
        a, b = _side(ours), _side(theirs)
        out.setdefault("version", theirs[0]["version"])
        rows.append({"members": n, "wgkube": a, "wg-meshconf": b,
                     "speedup": b["median_s"] / a["median_s"], "cpu_speedup": b["cpu_median_s"] / a["cpu_median_s"],
                     "per_peer_section_speedup": b["us_per_peer_section"] / a["us_per_peer_section"]})
    return out | {"status": "ok", "rows": rows,
                  "topology": {"wgkube": "hub-and-spoke: 2(N-1) [Peer] sections in all",
                               "wg-meshconf": "full mesh: N(N-1) [Peer] sections in all"}}
