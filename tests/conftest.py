"""Shared test helpers.

Optional tools are guarded with ``need(tool)``: skipped with a clear reason on a developer
machine, but a FAILURE when CI=true (CI must have every tool; .ci/run installs them).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "generator" / "example-cluster.yaml"
SPECS = Path(__file__).resolve().parent / "specs"
# The example as it was before issue 13 (hub and spoke): tests about hub behaviour use it, now
# that `wgkube init` writes a mesh. The same file the byte-for-byte hub test renders.
HUB_EXAMPLE = Path(__file__).resolve().parent / "golden" / "hub-example.yaml"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(tool: str, why: str = "") -> str:
    """Path of tool, or skip (locally) / fail (in CI) with a clear reason."""
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} is not installed{': ' + why if why else ''} (bash scripts/test.sh installs it)"
        if IN_CI:
            pytest.fail(f"CI: {msg}")
        pytest.skip(msg)
    return path


def need_root(why: str = "") -> None:
    if os.geteuid() != 0:
        msg = f"needs root{': ' + why if why else ''}"
        if IN_CI:
            pytest.fail(f"CI: {msg}")
        pytest.skip(msg)


def wgkube(*args: str, cwd: Path | None = None, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (exit codes and stderr as a user sees them)."""
    proc = subprocess.run([sys.executable, "-m", "generator", *args], cwd=cwd, capture_output=True, text=True,
                          input=input, env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)})
    if check and proc.returncode != 0:
        raise AssertionError(f"wgkube {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def render_spec(spec_src: Path | str, workdir: Path, *extra: str) -> Path:
    """Copy a spec into workdir, render it there, return out/<cluster>."""
    import yaml
    text = spec_src.read_text() if isinstance(spec_src, Path) else spec_src
    spec = workdir / "cluster.yaml"
    spec.write_text(text)
    wgkube("render", str(spec), "-o", str(workdir / "out"), "-q", *extra)
    return workdir / "out" / yaml.safe_load(text)["name"]


@pytest.fixture(scope="session")
def example_out(tmp_path_factory) -> Path:
    """The embedded example, rendered once per session (all artifacts)."""
    return render_spec(EXAMPLE, tmp_path_factory.mktemp("example"))


@pytest.fixture(scope="session")
def hub_example_out(tmp_path_factory) -> Path:
    """The pre-mesh example (hub and spoke), rendered once per session (all artifacts)."""
    return render_spec(HUB_EXAMPLE, tmp_path_factory.mktemp("hub-example"))
