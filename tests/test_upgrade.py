"""Issue 17, item 1: `wgkube upgrade`, the skew rules, and what render does around them.

The flow a user runs: render at 1.36, bump `kubernetes:` to 1.37 (render now refuses: new nodes
would be newer than the API server), `wgkube upgrade` (scripts, control plane first, new nodes
still 1.36), `--control-plane-done` (new nodes 1.37), `--workers-done` (scripts gone)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import HUB_EXAMPLE, need, wgkube
from generator import skew
from generator.artifacts.cloudinit import extract_files
from test_daytwo import spec_doc, write_spec

K8S_DEB = "https://pkgs.k8s.io/core:/stable:/v{}/deb/"


# --------------------------------------------------------------------------- the rules, one place

@pytest.mark.parametrize("running, target, ok, why", [
    ("1.36", "1.37", True, ""),
    ("1.36", "1.36", True, ""),
    ("1.35", "1.37", False, "one minor at a time"),
    ("1.37", "1.36", False, "no downgrade"),
])
def test_kubeadm_upgrades_one_minor_forward_at_a_time(running, target, ok, why):
    problem = skew.upgrade_problem(running, target)
    assert (problem is None) == ok and why in (problem or "")


@pytest.mark.parametrize("kubelet, api, ok", [
    ("1.37", "1.37", True), ("1.34", "1.37", True), ("1.33", "1.37", False), ("1.38", "1.37", False),
])
def test_a_kubelet_is_never_newer_and_at_most_three_minors_older(kubelet, api, ok):
    assert (skew.kubelet_problem(kubelet, api) is None) == ok


def test_minor_arithmetic_uses_numbers():
    assert skew.next_minor("1.9") == "1.10" and skew.previous_minor("1.10") == "1.9"
    assert skew.upgrade_problem("1.9", "1.10") is None  # numbers, not strings


# --------------------------------------------------------------------------- the flow

def _spec(tmp_path: Path, minor: str) -> Path:
    doc = spec_doc()
    doc["kubernetes"] = minor
    return write_spec(tmp_path, doc)


def _set_minor(spec: Path, minor: str) -> None:
    doc = yaml.safe_load(spec.read_text())
    doc["kubernetes"] = minor
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))


def _installs(cluster: Path, node: str) -> set[str]:
    """Which Kubernetes package repositories a node's first boot would use."""
    text = b"".join(c for c, _ in extract_files((cluster / "nodes" / node / "user-data").read_bytes()).values()).decode()
    return {m for m in ("1.35", "1.36", "1.37") if K8S_DEB.format(m) in text}


def _render(spec: Path, *args: str, check: bool = True):
    return wgkube("render", str(spec), "-q", "--no-iso", "--no-packer", *args, check=check)


def test_an_upgrade_moves_new_nodes_only_once_the_control_plane_is_done(tmp_path):
    spec = _spec(tmp_path, "1.36")
    _render(spec)
    cluster = tmp_path / "out" / "d2"
    assert _installs(cluster, "worker-1") == {"1.36"}
    bundle = tmp_path / "cluster.secrets.yaml"
    assert yaml.safe_load(bundle.read_text())["kubernetes"] == {"control_plane": "1.36"}

    _set_minor(spec, "1.37")
    refused = _render(spec, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "cluster.yaml:" in refused.stderr and "kubernetes:" in refused.stderr
    assert "kubelet would be newer than the 1.36 API server" in refused.stderr and "wgkube upgrade" in refused.stderr
    assert _installs(cluster, "worker-1") == {"1.36"}, "a refused render writes nothing"

    started = wgkube("upgrade", str(spec))
    assert "stage 1 of 2" in started.stdout and "--control-plane-done" in started.stdout
    scripts = sorted(p.name for p in (cluster / "upgrade").iterdir())
    assert scripts == ["homelab-1.sh", "hub.sh", "worker-1.sh"]
    assert _installs(cluster, "worker-1") == {"1.36"}, "new nodes wait for the control plane"
    assert json.loads((cluster / "plan.json").read_text())["upgrade_to"] == "1.37"
    # render and plan follow the bundle while it is under way
    _render(spec)
    assert (cluster / "upgrade" / "hub.sh").exists()
    early = wgkube("upgrade", str(spec), "--workers-done", check=False)
    assert early.returncode == 2 and "workers go after it" in early.stderr

    mid = wgkube("upgrade", str(spec), "--control-plane-done")
    assert "stage 2 of 2" in mid.stdout and "drain worker-1" in mid.stdout and "uncordon worker-1" in mid.stdout
    assert _installs(cluster, "worker-1") == {"1.37"}
    plan = wgkube("plan", str(spec))
    assert "stage 2 of 2" in plan.stdout and "kubectl --kubeconfig /etc/kubernetes/admin.conf drain worker-1" in plan.stdout

    wgkube("upgrade", str(spec), "--workers-done")
    assert not (cluster / "upgrade").exists()
    assert yaml.safe_load(bundle.read_text())["kubernetes"] == {"control_plane": "1.37"}
    again = _render(spec)
    assert again.returncode == 0


@pytest.mark.parametrize("first, then, step, message", [
    ("1.35", "1.37", "start", "one minor at a time"),
    ("1.37", "1.36", "start", "no downgrade"),
    ("1.36", "1.36", "start", "nothing to upgrade"),
    ("1.36", "1.36", "--control-plane-done", "no upgrade is under way"),
])
def test_upgrades_kubeadm_would_refuse_are_refused_naming_the_field(tmp_path, first, then, step, message):
    spec = _spec(tmp_path, first)
    _render(spec)
    before = (tmp_path / "cluster.secrets.yaml").read_bytes()
    _set_minor(spec, then)
    r = wgkube("upgrade", str(spec), *([] if step == "start" else [step]), check=False)
    assert r.returncode == 2 and message in r.stderr and "kubernetes:" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "cluster.secrets.yaml").read_bytes() == before


def test_changing_the_target_in_the_middle_is_refused(tmp_path):
    spec = _spec(tmp_path, "1.35")
    _render(spec)
    _set_minor(spec, "1.36")
    wgkube("upgrade", str(spec))
    _set_minor(spec, "1.35")
    r = _render(spec, check=False)
    assert r.returncode == 2 and "under way" in r.stderr and 'kubernetes: "1.36"' in r.stderr


def test_a_bundle_from_before_the_record_uses_the_last_render_and_stays_byte_for_byte(tmp_path):
    """The hub golden fixture has no `kubernetes:` record: a plain render leaves it as it is (the
    byte test in test_hub_unchanged.py), and a bump is still caught through out/'s plan.json."""
    spec = tmp_path / "cluster.yaml"
    shutil.copy(HUB_EXAMPLE, spec)
    shutil.copy(HUB_EXAMPLE.with_suffix(".secrets.yaml"), tmp_path / "cluster.secrets.yaml")
    assert "kubernetes:" not in (tmp_path / "cluster.secrets.yaml").read_text().split("members:")[0]
    before = (tmp_path / "cluster.secrets.yaml").read_bytes()
    _render(spec)
    assert (tmp_path / "cluster.secrets.yaml").read_bytes() == before
    minor = yaml.safe_load(spec.read_text())["kubernetes"]
    _set_minor(spec, skew.previous_minor(minor))
    r = _render(spec, check=False)
    assert r.returncode == 2 and "no downgrade" in r.stderr
    # the same bundle, a cluster rendered one minor lower by an older wgkube, then bumped
    shutil.rmtree(tmp_path / "out")
    _render(spec)
    assert (tmp_path / "cluster.secrets.yaml").read_bytes() == before
    _set_minor(spec, minor)
    r = _render(spec, check=False)
    assert r.returncode == 2 and "newer than the" in r.stderr
    wgkube("upgrade", str(spec))
    assert yaml.safe_load((tmp_path / "cluster.secrets.yaml").read_text())["kubernetes"] == {
        "control_plane": skew.previous_minor(minor), "upgrade_to": minor}


@pytest.mark.tools
def test_upgrade_scripts_pass_shellcheck_on_both_package_families(tmp_path):
    shellcheck = need("shellcheck")
    doc = spec_doc()
    doc["kubernetes"] = "1.36"
    doc["nodes"][1]["os"] = "rocky-9"
    spec = write_spec(tmp_path, doc)
    _render(spec)
    _set_minor(spec, "1.37")
    wgkube("upgrade", str(spec))
    scripts = sorted((tmp_path / "out" / "d2" / "upgrade").glob("*.sh"))
    text = {p.name: p.read_text() for p in scripts}
    assert "dnf upgrade -y --disableexcludes=kubernetes" in text["worker-1.sh"]
    assert "kubeadm upgrade apply -y" in text["hub.sh"] and "kubeadm upgrade node" in text["worker-1.sh"]
    assert "kubeadm upgrade apply" not in text["worker-1.sh"]
    r = subprocess.run([shellcheck, "-s", "bash", *map(str, scripts)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
