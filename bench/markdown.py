"""Results JSON -> the Markdown tables of docs/benchmarks.md (so the doc is pasted, not retyped).

  python -m bench.markdown [bench/results.json]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .run import DEFAULT_JSON


def _s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def _mib(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine(res: dict) -> str:
    m, meta = res["meta"]["machine"], res["meta"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['os']}, kernel {m['kernel']}; Python {m['python']} "
            f"({libs}; libyaml {'available' if m['pyyaml_libyaml'] else 'missing'}); wgkube {m['wgkube_commit']}; "
            f"run {meta['started']}, {meta['duration_s']:.0f} s, load average {meta['load_before']} before, "
            f"{meta['load_after']} after")


def render(res: dict) -> str:
    r, mem = res["render"], {(x["members"], x["mode"]): x for x in res.get("memory", {}).get("rows", [])}
    rows = []
    for row in r["rows"]:
        n = row["members"]
        g = lambda mode: _mib(mem[(n, mode)]["growth_bytes"]) if (n, mode) in mem else "-"  # noqa: E731
        rows.append([f"{n:,}", _s(row["user-data"]["median_s"]), _s(row["user-data"].get("cpu_median_s")),
                     f"{row['user-data']['per_member_ms']:.1f} ms", _s(row["all"]["median_s"]),
                     _s(row["populate"]["median_s"]), _s(row["spec_load"]["median_s"] + row["plan"]["median_s"]),
                     g("user-data"), g("all")])
    head = ["members", "user-data (wall)", "user-data (CPU)", "per member", "all artifacts", "secrets populate",
            "spec + plan", "peak RSS growth, user-data", "peak RSS growth, all"]
    return _table(head, rows)


def profile(res: dict) -> str:
    parts = []
    for p in res["profile"].values():
        title = f"{p['mode']} render of {p['members']:,} members"
        areas = _table([f"{title}: area (self time; built-ins charged to their caller)", "share"],
                       [[a["area"], f"{a['share']:.0%}"] for a in p["by_area"] if a["share"] >= 0.005])
        funcs = _table([f"{title}: wgkube function (cumulative, nested)", "calls", "share"],
                       [[f"`{f['function']}`", f"{f['calls']:,}", f"{f['share']:.0%}"] for f in p["wgkube_functions"][:10]])
        hot = _table([f"{title}: hottest functions by self time", "calls", "share"],
                     [[f"`{f['function']}`", f"{f['calls']:,}", f"{f['share']:.0%}"] for f in p["hottest_self"][:8]])
        parts.append(f"{areas}\n\n{funcs}\n\n{hot}")
    return "\n\n".join(parts)


def sizes(res: dict) -> str:
    s = res["sizes"]
    marginal = {m["members"]: m for m in s["marginal"]}
    fmt = lambda n: " / ".join(f"{n['bytes'][e]:,}" for e in ("plain", "gz+b64", "gzip"))  # noqa: E731
    rows = []
    for r in s["rows"]:
        m = marginal[r["members"]]
        rows.append([str(r["members"]), fmt(r["hub"]), f"{r['hub']['best_bytes']:,} ({r['hub']['best_encoding']})",
                     r["hub"]["aws_encoding"] or "does not fit", fmt(r["worker"]),
                     " / ".join(f"{m['per_peer_bytes'][e]:.1f}" for e in ("plain", "gz+b64", "gzip")),
                     f"{m['best_per_peer_bytes']:.1f} B = {m['ratio_to_floor']:.2f}x"])
    head = ["members", "hub bytes plain / gz+b64 / gzip", "hub best", "AWS (16 KiB) picks", "worker plain / gz+b64 / gzip",
            "hub +1 peer plain / gz+b64 / gzip", "+1 peer best vs 36 B floor"]
    cap = _table(["provider", "user-data limit", "hub encoding", "members before the hub's user-data outgrows it (est.)"],
                 [[c["provider"], f"{c['limit_bytes'] // 1024} KiB", c["encoding"], f"~{c['max_members']:,}"]
                  for c in s.get("hub_capacity", [])])
    out = f"{_table(head, rows)}\n\n{cap}"
    if s.get("control_planes"):
        cp = _table(["node (tests/specs/ha3.yaml)", "role", "one control plane plain / gzip", "three plain / gzip",
                     "added plain / gzip", "AWS picks"],
                    [[r["node"], r["role_with_three"], f"{r['one']['plain']:,} / {r['one']['gzip']:,}",
                      f"{r['three']['plain']:,} / {r['three']['gzip']:,}",
                      f"{r['three']['plain'] - r['one']['plain']:+,} / {r['three']['gzip'] - r['one']['gzip']:+,}",
                      r["aws_encoding"] or "does not fit"] for r in s["control_planes"]])
        out += "\n\nSeveral control planes (issue 14): user-data bytes per node, three control planes against one\n\n" + cp
    return out


def peer(res: dict) -> str:
    p = res["peer"]
    if p.get("status") != "ok":
        return f"Not run: {p.get('source')}"
    rows = []
    for r in p["rows"]:
        a, b = r["wgkube"], r["wg-meshconf"]
        rows.append([f"{r['members']:,}", f"**{r['speedup']:.1f}x**", f"{r['cpu_speedup']:.1f}x", _s(a["median_s"]),
                     _s(b["median_s"]), f"{a['bytes'] / 1024:,.1f} / {b['bytes'] / 1024:,.1f} KiB",
                     f"{a['peer_sections']:,} / {b['peer_sections']:,}",
                     f"{a['us_per_peer_section']:.0f} / {b['us_per_peer_section']:.0f} us"])
    head = ["members", "wgkube faster by (wall)", "(CPU)", "wgkube", "wg-meshconf", "output wgkube / wg-meshconf",
            "[Peer] sections", "time per [Peer] section"]
    steps = _table(["members", "wgkube: spec / plan / keys (+CAs) / configs", "of which fixed: token, CAs, SA key (est.)",
                    "wg-meshconf: addpeer x N / genconfig"],
                   [[f"{r['members']:,}", " / ".join(_s(r["wgkube"]["steps_median_s"][k]) for k in ("spec", "plan", "keys", "configs")),
                     _s(r["wgkube"]["steps_median_s"].get("fixed_secrets_estimate")),
                     " / ".join(_s(r["wg-meshconf"]["steps_median_s"][k]) for k in ("addpeer", "genconfig"))] for r in p["rows"]])
    startup = p.get("cli_startup_s", {})
    return (f"{_table(head, rows)}\n\n{steps}\n\nCLI start-up (`--help`, median of 3): wgkube {_s(startup.get('wgkube'))}, "
            f"wg-meshconf {_s(startup.get('wg-meshconf'))}.")


def proofs(res: dict) -> str:
    out = []
    v = res.get("verify", {})
    if v.get("status") == "ok":
        line = (f"`wgkube verify SPEC`, {v['members']:,} members ({v['ordered_pairs']:,} ordered pairs): {_s(v['median_s'])} "
                f"wall (median of {len(v['runs_s'])}, CLI start-up included)")
        if "simulate_median_s" in v:
            line += f"; {_s(v['in_process_median_s'])} in process, of which the pair simulation {_s(v['simulate_median_s'])}"
        out.append(line + ".")
        f = v.get("from_rendered_files", {})
        if "median_s" in f:
            out.append(f"`wgkube verify OUTDIR` (reads the {v['members']:,} rendered user-data files back): {_s(f['median_s'])} wall"
                       + (f", {_s(f['in_process_median_s'])} in process" if "in_process_median_s" in f else "") + ".")
    else:
        out.append(f"verify: {v.get('note') or v.get('status')}")
    lab = res.get("lab", {})
    for r in lab.get("rows", []):
        out.append(f"`wgkube lab`, {r['members']} members: {_s(r.get('wall_s'))} wall, {r['status']} (exit {r.get('exit_code')}).")
    if lab.get("note"):
        out.append(f"lab: {lab['note']}")
    return "\n".join(f"- {line}" for line in out)


def targets(res: dict) -> str:
    verdict = {True: "reached", False: "**missed**", None: "not measured"}
    return _table(["target", "result", "measured"],
                  [[t["target"], verdict[t["reached"]], t["measured"] + (f" ({t['why']})" if t["why"] else "")]
                   for t in res["targets"]])


def main(argv: list[str]) -> int:
    res = json.loads(Path(argv[0] if argv else DEFAULT_JSON).read_text())
    parts = [("Machine", machine(res)), ("Targets", targets(res))]
    for key, title, fn in (("render", "Render", render), ("profile", "Profile", profile), ("sizes", "Sizes", sizes),
                           ("peer", "wg-meshconf", peer), ("verify", "verify and lab", proofs)):
        if key in res:
            parts.append((title, fn(res)))
    print("\n\n".join(f"### {title}\n\n{body}" for title, body in parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
