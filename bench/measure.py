"""Timing, subprocess and machine helpers shared by every section."""
from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent


def timed(fn: Callable[[], object], runs: int, between: Callable[[], None] | None = None) -> dict:
    """Median wall and CPU seconds of fn over runs calls (each result dropped before the next)."""
    wall, cpu = [], []
    for _ in range(runs):
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        del result
        if between:
            between()
    return summary(wall, cpu)


def summary(wall: list[float], cpu: list[float] | None = None) -> dict:
    out = {"median_s": statistics.median(wall), "runs_s": [round(x, 4) for x in wall]}
    if cpu:
        out["cpu_median_s"] = statistics.median(cpu)
    return out


def worker(args: list[str], python: str | None = None, script: Path | None = None, timeout: float = 1800) -> dict:
    """Run a measurement in a fresh interpreter; it prints one JSON object on its last stdout line."""
    cmd = [python or sys.executable] + ([str(script)] if script else ["-m", "bench.worker"]) + args
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "0"}
    w0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - w0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-len(args) - 1:])} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        return fields.get("PRETTY_NAME", "").strip('"') or platform.system()
    except OSError:
        return platform.system()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "generator", "cloudinit", "packer"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+uncommitted generator changes" if dirty.stdout.strip() else "")


def machine() -> dict:
    import yaml
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _mem_gib(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in ("pyyaml", "jinja2", "pydantic", "cryptography", "pycdlib")},
        "pyyaml_libyaml": bool(getattr(yaml, "__with_libyaml__", False)),
        "wgkube_commit": _git_commit(),
    }
