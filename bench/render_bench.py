"""Section 1: render time, secrets populate time, peak memory and where the time goes."""
from __future__ import annotations

import cProfile
import importlib.util
import math
import pstats
import re
from pathlib import Path

from .measure import timed, worker
from .specs import hub_and_spoke, write_spec

MODES = ("user-data", "all")


def packer_available() -> bool:
    return importlib.util.find_spec("generator.artifacts.packer") is not None


def artifact_flags(mode: str) -> tuple[bool, bool]:
    """(iso, packer) for render_all: user-data only, or every artifact that exists."""
    if mode == "user-data":
        return False, False
    return True, packer_available()


def all_artifacts_label() -> tuple[list[str], str | None]:
    if packer_available():
        return ["user-data", "meta-data", "seed.iso", "packer"], None
    return ["user-data", "meta-data", "seed.iso"], (
        "generator/artifacts/packer.py is not there yet: the 'all' column is user-data + seed ISO, without Packer templates")


def spec_for(workdir: Path, n: int) -> Path:
    return write_spec(workdir, hub_and_spoke(n), f"bench-{n}.yaml")


def warmup_spec(workdir: Path) -> Path:
    return write_spec(workdir, hub_and_spoke(2, name="warmup"), "warmup.yaml")


def timings(sizes: list[int], runs: dict[int, int], workdir: Path, log) -> dict:
    from generator.plan import build_plan
    from generator.pipeline import prepare, render_all
    from generator.secrets import populate
    from generator.spec import load_spec

    iso, packer = artifact_flags("all")
    warm = prepare(warmup_spec(workdir))
    render_all(warm.plan, warm.bundle, iso=iso, packer=packer)  # templates compiled, lazy imports done
    rows = []
    for n in sizes:
        spec = spec_for(workdir, n)
        k = runs[n]
        log(f"render: {n} members, {k} runs per mode")
        doc = load_spec(spec)
        plan = build_plan(doc.spec)
        row = {
            "members": n,
            "runs": k,
            "spec_load": timed(lambda: load_spec(spec), k),
            "plan": timed(lambda: build_plan(doc.spec), k),
            # Key pairs, the cluster CAs and the service-account key: once per cluster in real use
            # (the bundle is kept), so reported apart from the render.
            "populate": timed(lambda: populate(None, plan), k),
        }
        prepared = prepare(spec)  # no bundle file beside the spec: populated in memory, nothing written
        for mode in MODES:
            i, p = artifact_flags(mode)
            row[mode] = timed(lambda: render_all(prepared.plan, prepared.bundle, iso=i, packer=p), k)
            row[mode]["per_member_ms"] = row[mode]["median_s"] / n * 1000
        rows.append(row)
        del prepared
    labels, note = all_artifacts_label()
    return {"rows": rows, "all_artifacts": labels, "notes": [note] if note else []}


def memory(sizes: list[int], workdir: Path, log) -> dict:
    warm = warmup_spec(workdir)
    rows = []
    for n in sizes:
        for mode in MODES:
            log(f"memory: {n} members, {mode} (fresh interpreter)")
            rows.append(worker(["memory", str(spec_for(workdir, n)), str(warm), mode]))
    return {"method": "peak RSS (ru_maxrss) of a fresh interpreter during render_all, minus its RSS just before",
            "rows": rows, "linearity": {mode: linearity([r for r in rows if r["mode"] == mode]) for mode in MODES}}


def linearity(rows: list[dict]) -> dict:
    """Does memory grow like N or like N^2? Compare bytes per member at the two largest sizes.

    Linear growth (plus a fixed offset) keeps bytes/member flat or falling as N grows; N^2
    growth multiplies it by the size ratio (10x from 100 to 1,000 members).
    """
    rows = sorted(rows, key=lambda r: r["members"])
    per_member = {r["members"]: r["growth_bytes"] / r["members"] for r in rows}
    out: dict = {"bytes_per_member": per_member}
    if len(rows) < 2:
        out.update(linear=None, why="needs at least two sizes")
        return out
    a, b = rows[-2], rows[-1]
    ratio = per_member[b["members"]] / per_member[a["members"]] if per_member[a["members"]] else math.inf
    exponent = (math.log(b["growth_bytes"] / a["growth_bytes"]) / math.log(b["members"] / a["members"])
                if a["growth_bytes"] > 0 and b["growth_bytes"] > 0 else None)
    out.update(per_member_ratio=ratio, exponent=exponent, linear=ratio <= 1.5,
               why=f"bytes/member {per_member[a['members']] / 1024:.1f} KiB at {a['members']} -> "
                   f"{per_member[b['members']] / 1024:.1f} KiB at {b['members']} (x{ratio:.2f}; N^2 would give "
                   f"x{b['members'] / a['members']:.0f})")
    return out


# --------------------------------------------------------------------------- profile


def _area(path: str, func: str) -> str:
    if path.endswith(".j2"):
        return "Jinja2 (compiled templates)"
    for marker, area in (("/yaml/", "PyYAML"), ("/jinja2/", "Jinja2"), ("/markupsafe/", "Jinja2"),
                         ("/pydantic", "pydantic"), ("/cryptography/", "cryptography"), ("/pycdlib/", "pycdlib (ISO)"),
                         ("/generator/", "wgkube code")):
        if marker in path:
            return area
    if path.endswith("gzip.py") or "zlib" in func:
        return "gzip/zlib"
    return "stdlib and built-ins"


def _split(path: str, func: str, seconds: float, callers: dict) -> list[tuple[str, float]]:
    """A built-in (len, str.join...) counts for the library that called it, in proportion."""
    if path != "~" or "zlib" in func or not callers:
        return [(_area(path, func), seconds)]
    weights = {}
    for (cpath, _cline, cfunc), value in callers.items():
        area = _area(cpath, cfunc) if cpath != "~" else "stdlib and built-ins"
        weights[area] = weights.get(area, 0.0) + value[3]
    total = sum(weights.values())
    if total <= 0:
        return [(_area(path, func), seconds)]
    return [(area, seconds * w / total) for area, w in weights.items()]


def _label(path: str, line: int, func: str) -> str:
    if path == "~":
        return func
    if "/generator/" in path:
        path = "generator/" + path.split("/generator/", 1)[1]
    elif "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    else:
        path = re.sub(r"^.*/lib/python3\.\d+/", "", path)
    return f"{path}:{line} {func}"


def profiles(n: int, workdir: Path, log) -> dict:
    """One profile per mode: where the time of the user-data render and of the full render goes."""
    return {mode: profile(n, workdir, log, mode) for mode in MODES}


def profile(n: int, workdir: Path, log, mode: str = "user-data", top: int = 12) -> dict:
    """cProfile of one render of n members: totals by library and the costliest functions."""
    from generator.pipeline import prepare, render_all

    log(f"profile: one {mode} render of {n} members under cProfile")
    iso, packer = artifact_flags(mode)
    prepared = prepare(spec_for(workdir, n))
    render_all(prepared.plan, prepared.bundle, iso=iso, packer=packer)  # compile templates outside the profile
    prof = cProfile.Profile()
    prof.enable()
    render_all(prepared.plan, prepared.bundle, iso=iso, packer=packer)
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, func) -> (prim calls, calls, self s, cumulative s, callers)
    total = sum(v[2] for v in stats.values())
    areas: dict[str, float] = {}
    for (path, _line, func), (_cc, _nc, tt, _ct, callers) in stats.items():
        for area, seconds in _split(path, func, tt, callers):
            areas[area] = areas.get(area, 0.0) + seconds
    by_self = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    ours = sorted(((k, v) for k, v in stats.items() if "/generator/" in k[0] and k[2] != "render_all"),
                  key=lambda kv: kv[1][3], reverse=True)[:top]
    fmt = lambda kv: {"function": _label(*kv[0]), "calls": kv[1][1], "self_s": kv[1][2], "cumulative_s": kv[1][3],  # noqa: E731
                      "share": kv[1][3] / total if total else 0.0}
    return {
        "members": n,
        "mode": mode,
        "total_s": total,
        "note": "times under cProfile are inflated (about 1.5-2x); the shares are what matter",
        "by_area": [{"area": a, "self_s": s, "share": s / total if total else 0.0}
                    for a, s in sorted(areas.items(), key=lambda kv: kv[1], reverse=True)],
        "wgkube_functions": [fmt(kv) for kv in ours],
        "hottest_self": [fmt(kv) | {"share": kv[1][2] / total if total else 0.0} for kv in by_self],
    }
