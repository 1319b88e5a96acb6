"""Measurements that need a fresh interpreter: peak memory, and wgkube's side of the peer comparison.

Usage (run by bench.measure.worker, which reads the JSON printed last):
  python -m bench.worker memory SPEC WARMUP_SPEC (user-data|all)
  python -m bench.worker wg-configs SPEC OUTDIR
"""
from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path


def _status_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Start a new high-water mark (Linux >= 4.0). ru_maxrss cannot be used: it also carries the
    peak of the parent process the interpreter was spawned from, not only this one's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory(spec: Path, warmup: Path, mode: str) -> dict:
    from generator.pipeline import prepare, render_all
    from .render_bench import artifact_flags

    iso, packer = artifact_flags(mode)
    # Warm up on a 2-member spec: imports, template compilation and the ISO library's first use
    # must not count as memory that grows with the members.
    small = prepare(warmup)
    render_all(small.plan, small.bundle, iso=iso, packer=packer)
    prepared = prepare(spec)
    del small
    gc.collect()
    reset = _reset_peak()
    before = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    rendered = render_all(prepared.plan, prepared.bundle, iso=iso, packer=packer)
    seconds = time.perf_counter() - t0
    peak = _status_bytes("VmHWM")
    return {
        "members": len(prepared.plan.members),
        "mode": mode,
        "rss_before_bytes": before,
        "peak_rss_bytes": peak,
        # What the render added at its peak on top of what the process held just before it
        # (an upper bound when the high-water mark could not be reset).
        "growth_bytes": max(0, peak - before),
        "peak_reset": reset,
        "output_bytes": sum(len(data) for data, _mode in rendered.files.values()),
        "files": len(rendered.files),
        "render_s": seconds,
    }


def wg_configs(spec: Path, outdir: Path) -> dict:
    """wgkube's side of the peer comparison: spec -> plan -> keys -> one wg-quick config per member."""
    from importlib import metadata

    from generator.artifacts.wireguard import wg_conf
    from generator.plan import build_plan
    from generator.secrets import populate
    from generator.spec import load_spec

    outdir.mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}
    w0, c0 = time.perf_counter(), time.process_time()
    doc = load_spec(spec)
    steps["spec"] = time.perf_counter() - w0
    plan = build_plan(doc.spec)
    steps["plan"] = time.perf_counter() - w0 - sum(steps.values())
    bundle, _added = populate(None, plan)  # every WireGuard key pair (and the cluster CAs) made here
    steps["keys"] = time.perf_counter() - w0 - sum(steps.values())
    total = sections = 0
    for member in plan.members:
        text = wg_conf(plan, bundle, member)
        (outdir / f"{member.name}.conf").write_text(text)
        total += len(text.encode())
        sections += text.count("[Peer]")
    steps["configs"] = time.perf_counter() - w0 - sum(steps.values())
    work_s, cpu_s = time.perf_counter() - w0, time.process_time() - c0
    # Not timed above: the part of "keys" that does not grow with the members (the token, the
    # cluster CAs, the service-account key), estimated by populating a 2-member cluster.
    # wg-meshconf makes no such thing; the report shows it so the reader can take it out.
    two = build_plan(doc.spec.model_copy(update={"nodes": doc.spec.nodes[:2], "admins": []}))
    p0 = time.perf_counter()
    populate(None, two)
    steps["fixed_secrets_estimate"] = time.perf_counter() - p0
    return {"work_s": work_s, "cpu_s": cpu_s, "steps_s": steps,
            "files": len(plan.members), "bytes": total, "peer_sections": sections,
            "cryptography": metadata.version("cryptography")}


def main(argv: list[str]) -> int:
    what, *args = argv
    if what == "memory":
        result = memory(Path(args[0]), Path(args[1]), args[2])
    elif what == "wg-configs":
        result = wg_configs(Path(args[0]), Path(args[1]))
    else:
        print(f"unknown measurement {what!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
