"""`wgkube lab`, the whole run: build the test bed (bed.py), run the checks (checks.py), clean up."""
from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

from ...errors import Problem, UserError
from ..read.cluster import from_out_dir
from .apiproxy import run_apiproxy_checks
from .bed import Check, Interrupted, Lab, LabResult, SetupFailed, preflight, raise_interrupted
from .checks import run_checks
from .failover import run_mesh_checks


def execute(lab: Lab) -> LabResult:
    """Build, check, clean up (also on Ctrl-C, SIGTERM, SIGHUP)."""
    old = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    t0 = time.perf_counter()
    try:
        try:
            lab.build()
        except SetupFailed as exc:
            lab.result.checks.append(Check("apply", "rendered files", "load as rendered", str(exc), False))
            lab.result.setup_seconds = time.perf_counter() - t0
            return lab.result
        t1 = time.perf_counter()
        lab.result.setup_seconds = t1 - t0
        run_checks(lab)
        run_mesh_checks(lab)   # issue 13: a mesh's direct paths and relay failover (nothing for a hub)
        run_apiproxy_checks(lab)   # issue 14: the local API endpoint (only with several control planes)
        lab.result.check_seconds = time.perf_counter() - t1
        return lab.result
    except KeyboardInterrupt:
        raise Interrupted("SIGINT") from None
    finally:
        lab.cleanup()
        for s, handler in old.items():
            signal.signal(s, handler)
        lab.result.total_seconds = time.perf_counter() - t0


def run_lab(out_dir: Path, nat_gateways: int = 2) -> LabResult:
    """Build, check, clean up. UserError (exit 2) for this machine or the folder, RuntimeError
    when the lab itself cannot be built; failed checks are in the result."""
    preflight()
    cluster = from_out_dir(out_dir)
    if cluster.several_control_planes and shutil.which("haproxy") is None:   # issue 14: the local API endpoint
        raise UserError(Problem("", "haproxy is not installed: with several control planes the lab runs each node's "
                                    "rendered haproxy.cfg", "install the haproxy package"))
    return execute(Lab(cluster, nat_gateways))
