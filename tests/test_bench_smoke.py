"""The benchmark's smoke run (N=10): keeps `python -m bench` working; CI runs only this.

It runs the real command in a fresh process and checks the JSON it writes: every section is
there, numbers are positive, and the figures that follow from the topology are exact.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))  # bench/ is not an installed package: import it from the checkout
from bench.render_bench import linearity  # noqa: E402

TARGET_IDS = {"render_1000", "memory_linear", "hub50_aws", "worker_16k_raw", "hub_marginal", "vs_meshconf", "verify_1000",
              "cli_help", "cli_check", "cli_render_1000_ud", "cli_render_1000_full", "cli_render_3000_full", "cli_vs_meshconf",
              "cli_vs_bash24",
              "mesh_render_1000", "mesh_public50_aws", "mesh_failover_lab"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--json", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, f"python -m bench --smoke exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text()), proc.stdout


def test_prints_tables_and_writes_every_section(smoke):
    results, stdout = smoke
    assert "Targets" in stdout and "Render time" in stdout
    assert results["meta"]["mode"] == "smoke"
    assert results["meta"]["machine"]["cores"] >= 1
    assert "errors" not in results, results.get("errors")
    for key in ("render", "memory", "profile", "sizes", "peer", "verify", "lab", "mesh", "targets"):
        assert key in results, key


def test_render_times_and_memory_are_sane(smoke):
    results, _ = smoke
    (row,) = results["render"]["rows"]
    assert row["members"] == 10
    for key in ("user-data", "all", "populate", "plan", "spec_load"):
        assert 0 < row[key]["median_s"] < 60, key
    mem = {r["mode"]: r for r in results["memory"]["rows"]}
    assert set(mem) == {"user-data", "all"}
    for r in mem.values():
        assert r["peak_rss_bytes"] >= r["rss_before_bytes"] > 0
        assert r["growth_bytes"] == r["peak_rss_bytes"] - r["rss_before_bytes"]
        assert r["members"] == 10
    # The seed ISOs (and Packer templates) are extra files and bytes: "all" must carry more.
    assert mem["all"]["output_bytes"] > mem["user-data"]["output_bytes"] > 10 * 4096
    assert mem["all"]["files"] > mem["user-data"]["files"]


def test_profile_accounts_for_the_whole_render(smoke):
    profiles = smoke[0]["profile"]
    assert set(profiles) == {"user-data", "all"}
    for prof in profiles.values():
        assert prof["total_s"] > 0
        assert sum(a["share"] for a in prof["by_area"]) == pytest.approx(1.0, abs=0.01)
        assert any(f["function"].startswith("generator/") for f in prof["wgkube_functions"])


def test_sizes_follow_from_the_data(smoke):
    sizes = smoke[0]["sizes"]
    (row,) = sizes["rows"]
    hub, worker = row["hub"], row["worker"]
    assert hub["bytes"]["plain"] > worker["bytes"]["plain"] > 0
    for node in (hub, worker):
        assert node["best_bytes"] == min(node["bytes"].values())
        assert node["bytes"]["gzip"] < node["bytes"]["plain"]
    (m,) = sizes["marginal"]
    assert m["floor_bytes"] == 36
    # A peer brings 32 random bytes of public key: no encoding can make it cost less.
    assert m["best_per_peer_bytes"] >= 32


def test_peer_comparison_or_a_clear_reason(smoke):
    peer = smoke[0]["peer"]
    assert peer["status"] in ("ok", "unavailable")
    if peer["status"] == "unavailable":
        assert "wg-meshconf" in peer["source"]
        return
    (row,) = peer["rows"]
    assert row["speedup"] > 0
    # Hub-and-spoke: the hub has 9 peers and each spoke 1; a full mesh has 9 on every member.
    assert row["wgkube"]["peer_sections"] == 2 * 9
    assert row["wg-meshconf"]["peer_sections"] == 10 * 9
    assert row["wgkube"]["files"] == row["wg-meshconf"]["files"] == 10


def test_verify_and_targets(smoke):
    results, _ = smoke
    v = results["verify"]
    assert v["status"] in ("ok", "missing"), v.get("output_tail")
    if v["status"] == "ok":
        assert v["ordered_pairs"] == 90 and v["median_s"] > 0
    assert {t["id"] for t in results["targets"]} == TARGET_IDS
    assert all(t["reached"] in (True, False, None) for t in results["targets"])


def test_linearity_tells_linear_from_quadratic():
    linear = [{"members": n, "growth_bytes": 2_000_000 + 15_000 * n} for n in (10, 100, 1000)]
    square = [{"members": n, "growth_bytes": 2_000_000 + 50 * n * n} for n in (10, 100, 1000)]
    assert linearity(linear)["linear"] is True
    assert linearity(square)["linear"] is False
    assert linearity(linear[:1])["linear"] is None


def test_cli_figures_are_fresh_processes_writing_files(smoke):
    """Issue 19: the headline figures are CLI processes (start-up, render, peers), each with its load."""
    results, _ = smoke
    cli = results["cli"]
    assert cli["startup"]["wgkube --help"]["median_s"] > 0 and cli["startup"]["load_before"]
    assert {(r["members"], r["full"]) for r in cli["render"]} == {(10, False), (10, True)}
    assert all(r["files"] > 10 and r["wgkube"]["cpu_median_s"] > 0 for r in cli["render"])
    (peer,) = cli["peers"]
    assert peer["members"] == 10 and peer["wgkube"]["median_s"] > 0


def test_mesh_figures(smoke):
    """Issue 13: the mesh section renders, sizes and verifies a 10-member mesh (members 0..9: the
    hub is the only public one, so it is the only relay and every other pair is relayed)."""
    mesh = smoke[0]["mesh"]
    (row,) = mesh["render"]
    assert row["members"] == 10 and row["user-data"]["median_s"] > 0
    assert row["public"] + row["behind_nat"] == 10 and row["relays"][0] == "hub"
    sizes = mesh["sizes"]
    assert sizes["public"]["best_bytes"] == min(sizes["public"]["bytes"].values()) > 0
    (v,) = mesh["verify"]
    assert v["ok"] and v["reachable"] == v["ordered_pairs"] == 90
    assert mesh["lab"]["status"] == "skipped"
