"""Section "cli": what users feel. Every figure is a fresh `wgkube` process writing its files
(the console script, as installed), timed from the outside: wall clock around the process and the
CPU of the process and its children (getrusage). Medians of RUNS runs; the peers run in the same
loop, one after the other, so a busy moment hits both sides. The load average is recorded before
and after every figure.

  startup   `wgkube --help`, `wgkube check` of the example spec; `wg-meshconf --help`
  render    re-render (bundle present, out/ holding the previous render) of 1,000 members,
            user-data only and everything (ISOs, Packer), and of 3,000 members, everything;
            beside each, interleaved, its file-system floor (bench/fs_floor.py: the same tree
            written with bare system calls, synced once, the previous one deleted)
  peers     a first render (keys made) of N members, user-data only, against wg-meshconf as its
            users run it: `wg-meshconf addpeer` once per member, then `genconfig`
  bash /24  a first render of a /24 (254 members), user-data only, against bench/wg_bash.sh
            (wg genkey/pubkey per member, one wg-quick config each)
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .measure import REPO, loadavg
from .specs import hub_and_spoke, members, write_spec

HERE = Path(__file__).resolve().parent
BASH_SCRIPT = HERE / "wg_bash.sh"


def wgkube_cmd() -> list[str]:
    script = Path(sys.executable).with_name("wgkube")
    return [str(script)] if script.exists() else [sys.executable, "-m", "generator"]


def timed_process(cmd: list[str] | list[list[str]], cwd: Path | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, children included) of one command, or of a chain of
    commands run one after the other."""
    chain = cmd if cmd and isinstance(cmd[0], list) else [cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    for c in chain:
        proc = subprocess.run(c, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, c))[:200]} exited {proc.returncode}: {proc.stderr.decode()[-1500:]}")
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _stats(samples: list[tuple[float, float]]) -> dict:
    walls, cpus = [s[0] for s in samples], [s[1] for s in samples]
    return {"median_s": statistics.median(walls), "cpu_median_s": statistics.median(cpus),
            "runs_s": [round(w, 4) for w in walls], "cpu_runs_s": [round(c, 4) for c in cpus]}


LOG = print


def interleaved(sides: dict[str, callable], runs: int, label: str = "") -> dict:
    """Run every side once per round, RUNS rounds; each side's callable prepares its own fresh
    state and returns (wall, cpu). Each figure is logged as soon as it is measured."""
    samples: dict[str, list] = {name: [] for name in sides}
    load_before = loadavg()
    for _ in range(runs):
        for name, fn in sides.items():
            samples[name].append(fn())
    result = {"load_before": load_before, "load_after": loadavg(), **{name: _stats(s) for name, s in samples.items()}}
    for name in sides:
        LOG(f"cli: {label} {name}: median {result[name]['median_s']:.3f} s wall, {result[name]['cpu_median_s']:.3f} s CPU "
            f"({runs} runs; load {load_before[:1]} -> {result['load_after'][:1]})")
    return result


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def startup(work: Path, runs: int, meshconf: str | None, log) -> dict:
    log(f"cli: start-up, {runs} runs")
    wg = wgkube_cmd()
    spec = work / "startup" / "cluster.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "generator" / "example-cluster.yaml", spec)
    sides = {"wgkube --help": lambda: timed_process(wg + ["--help"]),
             "wgkube check": lambda: timed_process(wg + ["check", str(spec)])}
    if meshconf:
        sides["wg-meshconf --help"] = lambda: timed_process([meshconf, "--help"])
    return interleaved(sides, runs, "start-up")


def render(work: Path, sizes: list[tuple[int, bool]], runs: int, log, runs_large: int | None = None) -> list[dict]:
    wg = wgkube_cmd()
    rows = []
    for n, full in sizes:
        nruns = (runs_large or runs) if n >= 3000 else runs
        log(f"cli: re-render of {n} members ({'everything' if full else 'user-data only'}), {runs} runs")
        base = _fresh(work / f"render-{n}-{'full' if full else 'ud'}")
        spec = write_spec(base, hub_and_spoke(n), "cluster.yaml")
        cmd = wg + ["render", str(spec), "-q"] + ([] if full else ["--no-iso", "--no-packer"])
        first = timed_process(cmd)  # makes the bundle and the first out/: not counted
        shape = _tree_shape(base / "out" / "bench")
        (base / "shape.json").write_text(json.dumps(shape))
        floor = [sys.executable, str(HERE / "fs_floor.py"), str(base / "shape.json"), str(_fresh(base / "floor"))]
        timed_process(floor)  # the floor's first tree: not counted either
        result = interleaved({"wgkube": lambda: timed_process(cmd), "file-system floor": lambda: timed_process(floor)},
                             nruns, f"render {n} {'full' if full else 'user-data'}")
        files, size = len(shape["files"]), sum(f[1] for f in shape["files"])
        rows.append({"members": n, "full": full, "runs": nruns, "files": files, "bytes": size, "first_render_s": first[0], **result})
        shutil.rmtree(base, ignore_errors=True)
    return rows


def _tree_shape(tree: Path) -> dict:
    """Folders, and files with their sizes and modes, of a rendered tree (for bench/fs_floor.py,
    and the file count and bytes of the figure)."""
    dirs, files = [], []
    for top, dirnames, filenames in os.walk(tree):
        rel = os.path.relpath(top, tree)
        dirs += [os.path.normpath(os.path.join(rel, d)) for d in sorted(dirnames)]
        for name in sorted(filenames):
            st = os.lstat(os.path.join(top, name))
            files.append([os.path.normpath(os.path.join(rel, name)), st.st_size, st.st_mode & 0o777])
    return {"dirs": dirs, "files": files}


def _meshconf_chain(meshconf: str, n: int, db: Path, out: Path) -> list[list[str]]:
    chain = []
    for m in members(n):
        cmd = [meshconf, "-d", str(db), "addpeer", m["name"], "--address", f"{m['vpn_ip']}/32", "--listenport", "51820"]
        if m["endpoint"]:
            cmd += ["--endpoint", m["endpoint"]]
        chain.append(cmd)
    chain.append([meshconf, "-d", str(db), "genconfig", "-o", str(out)])
    return chain


def peers(work: Path, sizes: list[int], runs: dict[int, int], meshconf: str | None, log) -> list[dict]:
    wg = wgkube_cmd()
    rows = []
    for n in sizes:
        log(f"cli: {n} members, wgkube render vs wg-meshconf as a process, {runs[n]} runs interleaved")
        base = _fresh(work / f"peers-{n}")
        spec_dir = base / "spec"
        spec = write_spec(spec_dir, hub_and_spoke(n), "cluster.yaml")

        def ours() -> tuple[float, float]:
            d = _fresh(base / "wgkube")
            shutil.copy(spec, d / "cluster.yaml")
            return timed_process(wg + ["render", str(d / "cluster.yaml"), "-q", "--no-iso", "--no-packer"])

        def theirs() -> tuple[float, float]:
            d = _fresh(base / "meshconf")
            return timed_process(_meshconf_chain(meshconf, n, d / "database.csv", d / "output"), cwd=d)

        sides = {"wgkube": ours}
        if meshconf:
            sides["wg-meshconf"] = theirs
        result = interleaved(sides, runs[n], f"first render {n}")
        row = {"members": n, "runs": runs[n], **result}
        if meshconf:
            row["speedup"] = result["wg-meshconf"]["median_s"] / result["wgkube"]["median_s"]
            row["cpu_speedup"] = result["wg-meshconf"]["cpu_median_s"] / result["wgkube"]["cpu_median_s"]
        rows.append(row)
        shutil.rmtree(base, ignore_errors=True)
    return rows


def bash24(work: Path, runs: int, log) -> dict:
    if shutil.which("wg") is None:
        return {"status": "unavailable", "note": "the bash script needs `wg` (wireguard-tools)"}
    log(f"cli: a /24 (254 members), wgkube render vs bench/wg_bash.sh, {runs} runs interleaved")
    wg = wgkube_cmd()
    base = _fresh(work / "bash24")
    spec = write_spec(base / "spec", hub_and_spoke(254), "cluster.yaml")

    def ours() -> tuple[float, float]:
        d = _fresh(base / "wgkube")
        shutil.copy(spec, d / "cluster.yaml")
        return timed_process(wg + ["render", str(d / "cluster.yaml"), "-q", "--no-iso", "--no-packer"])

    def script() -> tuple[float, float]:
        d = _fresh(base / "bash")
        return timed_process(["bash", str(BASH_SCRIPT), str(d / "out")])

    result = interleaved({"wgkube": ours, "bash": script}, runs, "/24")
    shutil.rmtree(base, ignore_errors=True)
    return {"status": "ok", "members": 254, **result, "speedup": result["bash"]["median_s"] / result["wgkube"]["median_s"],
            "cpu_speedup": result["bash"]["cpu_median_s"] / result["wgkube"]["cpu_median_s"]}


def run(work: Path, smoke: bool, install: bool, log, runs: int = 5, runs_large: int | None = None) -> dict:
    from .peer_bench import meshconf_python
    global LOG
    LOG = log
    python, source = meshconf_python(install, log)
    meshconf = None
    if python is not None:
        candidate = Path(python).with_name("wg-meshconf")
        meshconf = str(candidate) if candidate.exists() else shutil.which("wg-meshconf")
    if smoke:
        runs = 1
        render_sizes, peer_sizes = [(10, False), (10, True)], [10]
    else:
        render_sizes, peer_sizes = [(1000, False), (1000, True), (3000, True)], [10, 100, 500]
    out = {"runs": runs, "command": " ".join(wgkube_cmd()), "meshconf": meshconf, "meshconf_source": source,
           "startup": startup(work, runs, meshconf, log)}
    out["bash24"] = bash24(work, runs, log) if not smoke else {"status": "skipped", "note": "not in smoke mode"}
    out["peers"] = peers(work, peer_sizes, {n: (runs_large or runs) if n >= 500 else runs for n in peer_sizes}, meshconf, log)
    out["render"] = render(work, render_sizes, runs, log, runs_large)
    return out
