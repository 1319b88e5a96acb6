"""The printed tables (rich). Everything printed is also in the JSON."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def _mib(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def _s(x: float | None) -> str:
    return "-" if x is None else (f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s")


def render_table(res: dict, mem: dict | None) -> Table:
    t = Table(title="Render time (median) and peak memory")
    for col in ("members", "user-data", "per member", f"all ({' + '.join(res['all_artifacts'])})", "populate secrets",
                "peak RSS growth ud / all"):
        t.add_column(col, justify="right")
    growth = {}
    for r in (mem or {}).get("rows", []):
        growth[(r["members"], r["mode"])] = r["growth_bytes"]
    for r in res["rows"]:
        n = r["members"]
        g = " / ".join(_mib(growth[(n, m)]) if (n, m) in growth else "-" for m in ("user-data", "all"))
        t.add_row(str(n), _s(r["user-data"]["median_s"]), f"{r['user-data']['per_member_ms']:.1f} ms",
                  _s(r["all"]["median_s"]), _s(r["populate"]["median_s"]), g)
    return t


def profile_table(prof: dict) -> Table:
    t = Table(title=f"Where the time goes: {prof['mode']} render of {prof['members']} members (cProfile, self time by area)")
    t.add_column("area")
    t.add_column("share", justify="right")
    for a in prof["by_area"][:7]:
        t.add_row(a["area"], f"{a['share']:.0%}")
    return t


def functions_table(prof: dict, rows: int = 8) -> Table:
    t = Table(title="Costliest wgkube functions (cumulative, overlapping)")
    for col in ("function", "calls", "share"):
        t.add_column(col, justify="right" if col != "function" else "left")
    for f in prof["wgkube_functions"][:rows]:
        t.add_row(f["function"], str(f["calls"]), f"{f['share']:.0%}")
    return t


def sizes_table(sizes: dict) -> Table:
    t = Table(title="User-data bytes per node (plain / gz+b64 / gzip) and hub cost per extra peer")
    for col in ("members", "hub", "hub best", "worker", "worker best", "hub +1 peer (best)", "floor"):
        t.add_column(col, justify="right")
    marginal = {m["members"]: m for m in sizes["marginal"]}
    for r in sizes["rows"]:
        h, w, m = r["hub"], r["worker"], marginal[r["members"]]
        fmt = lambda s: " / ".join(str(s["bytes"][e]) for e in ("plain", "gz+b64", "gzip"))  # noqa: E731
        t.add_row(str(r["members"]), fmt(h), f"{h['best_bytes']} ({h['best_encoding']})", fmt(w),
                  f"{w['best_bytes']} ({w['best_encoding']})",
                  f"{m['best_per_peer_bytes']:.1f} B ({m['ratio_to_floor']:.2f}x)", f"{m['floor_bytes']} B")
    return t


def peer_table(peer: dict) -> Table:
    t = Table(title=f"wgkube vs {peer['tool']} {peer.get('version', '')}: WireGuard configs with keys for N members")
    for col in ("members", "wgkube", "wg-meshconf", "wgkube faster by", "bytes wgkube / meshconf",
                "[Peer] sections", "per section"):
        t.add_column(col, justify="right")
    for r in peer["rows"]:
        a, b = r["wgkube"], r["wg-meshconf"]
        t.add_row(str(r["members"]), _s(a["median_s"]), _s(b["median_s"]), f"{r['speedup']:.1f}x",
                  f"{_kib(a['bytes'])} / {_kib(b['bytes'])}", f"{a['peer_sections']} / {b['peer_sections']}",
                  f"{a['us_per_peer_section']:.0f} / {b['us_per_peer_section']:.0f} us")
    return t


def targets_table(targets: list[dict]) -> Table:
    t = Table(title="Targets")
    for col in ("target", "result", "measured"):
        t.add_column(col)
    for x in targets:
        verdict = {True: "[green]reached[/]", False: "[red]missed[/]", None: "[yellow]not measured[/]"}[x["reached"]]
        t.add_row(x["target"], verdict, x["measured"] + (f" ({x['why']})" if x["why"] else ""))
    return t


def cli_tables(cli: dict) -> list[Table]:
    def load(f: dict) -> str:
        return f"{f['load_before'][0]:.2f} -> {f['load_after'][0]:.2f}" if f.get("load_before") else "-"
    tables = []
    t = Table(title=f"The CLI as users run it: fresh processes, files written, medians of {cli['runs']} (wall / CPU)")
    for col in ("figure", "wgkube", "peer", "peer figure", "wgkube faster by", "load before -> after"):
        t.add_column(col)
    st = cli["startup"]
    for key in ("wgkube --help", "wgkube check"):
        peer = st.get("wg-meshconf --help") if key == "wgkube --help" else None
        t.add_row(key, f"{_s(st[key]['median_s'])} / {_s(st[key]['cpu_median_s'])}", "wg-meshconf --help" if peer else "",
                  f"{_s(peer['median_s'])} / {_s(peer['cpu_median_s'])}" if peer else "",
                  f"{peer['median_s'] / st[key]['median_s']:.1f}x" if peer else "", load(st))
    for r in cli["render"]:
        what = f"render {r['members']:,} members, {'everything' if r['full'] else 'user-data only'} ({r['files']:,} files)"
        floor = r.get("file-system floor")
        t.add_row(what, f"{_s(r['wgkube']['median_s'])} / {_s(r['wgkube']['cpu_median_s'])}",
                  "file-system floor (same tree)" if floor else "",
                  f"{_s(floor['median_s'])} / {_s(floor['cpu_median_s'])}" if floor else "", "", load(r))
    for r in cli["peers"]:
        peer = r.get("wg-meshconf")
        t.add_row(f"first render, {r['members']} members, user-data only", f"{_s(r['wgkube']['median_s'])} / {_s(r['wgkube']['cpu_median_s'])}",
                  "wg-meshconf addpeer x N + genconfig" if peer else "",
                  f"{_s(peer['median_s'])} / {_s(peer['cpu_median_s'])}" if peer else "",
                  f"{r['speedup']:.1f}x" if peer else "", load(r))
    b = cli.get("bash24", {})
    if b.get("status") == "ok":
        t.add_row("first render, a /24 (254 members), user-data only", f"{_s(b['wgkube']['median_s'])} / {_s(b['wgkube']['cpu_median_s'])}",
                  "bench/wg_bash.sh", f"{_s(b['bash']['median_s'])} / {_s(b['bash']['cpu_median_s'])}", f"{b['speedup']:.1f}x", load(b))
    tables.append(t)
    return tables


def print_all(console: Console, results: dict) -> None:
    if "cli" in results:
        for t in cli_tables(results["cli"]):
            console.print(t)
    if "render" in results:
        console.print(render_table(results["render"], results.get("memory")))
        for note in results["render"]["notes"]:
            console.print(f"[yellow]note[/]: {note}")
    for prof in results.get("profile", {}).values():
        console.print(profile_table(prof))
        console.print(functions_table(prof))
    if "sizes" in results:
        console.print(sizes_table(results["sizes"]))
    peer = results.get("peer")
    if peer:
        if peer["status"] == "ok":
            console.print(peer_table(peer))
        else:
            console.print(f"[bold red]wg-meshconf comparison not run[/]: {peer['source']}")
    for key in ("verify", "lab"):
        item = results.get(key)
        if not item:
            continue
        if item.get("note"):
            console.print(f"[yellow]{key}[/]: {item['note']}")
        elif key == "verify":
            console.print(f"verify: {item['members']} members ({item['ordered_pairs']} ordered pairs): "
                          f"{_s(item['median_s'])} median, exit {item['exit_code']}")
        else:
            for r in item["rows"]:
                console.print(f"lab: {r['members']} members: {_s(r.get('wall_s'))}, {r['status']} (exit {r.get('exit_code')})")
    mesh = results.get("mesh")
    if mesh:  # issue 13
        for r in mesh["render"]:
            ud = r["user-data"]
            console.print(f"mesh render: {r['members']} members ({r['public']} public, relays {', '.join(r['relays'])}): "
                          f"{_s(ud['median_s'])} wall, {_s(ud['cpu_median_s'])} CPU (medians)")
        sz = mesh["sizes"]
        console.print(f"mesh sizes at {sz['members']} members: public {sz['largest_public']} {sz['public']['bytes']} "
                      f"(best {sz['public']['best_encoding']}); behind NAT {sz['behind_nat']['name']} {sz['behind_nat']['bytes']}")
        for v in mesh["verify"]:
            console.print(f"mesh verify: {v['members']} members ({v['ordered_pairs']} pairs, {v['relayed_pairs']} relayed, "
                          f"{len(v['relay_down'])} relays down in turn): {_s(v['median_s'])}, ok={v['ok']}")
        lab = mesh["lab"]
        console.print(f"mesh lab: {lab.get('note') or lab['status']}"
                      + (f", relay failover {lab['failover_s']:.1f} s, lab {_s(lab['wall_s'])}" if lab.get("failover_s") is not None else ""))
    console.print(targets_table(results["targets"]))
