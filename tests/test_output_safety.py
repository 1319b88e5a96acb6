"""No output folder can eat the user's files (issue 12, classes 3 and 6; docs/day-two.md).

wgkube deletes or replaces only trees it can prove it wrote (manifest.json naming the cluster,
nothing unlisted inside). Anything else at out/<cluster> stops the render with exit 2 and is
left exactly as it was. OS errors (read-only, full disk, no permission) are a clean exit 2
naming the path, and the bundle is never saved unless the whole new output is on disk first.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, need_root, wgkube

SPEC = """\
name: demo
nodes:
  - name: hub
    role: control-plane
    endpoint: 203.0.113.10
  - name: w1
admins:
  - name: laptop
"""


def snapshot(path: Path) -> dict[str, object]:
    """Everything under path, without following links: {relative path: bytes | link target | 'dir'}."""
    out: dict[str, object] = {}
    if os.path.islink(path):
        return {".": ("link", os.readlink(path))}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(root) / name
            rel = str(full.relative_to(path))
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full))
            elif full.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = full.read_bytes()
    return out


def render(work: Path, *extra: str, out: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    spec = work / "cluster.yaml"
    if not spec.exists():
        spec.write_text(SPEC)
    return wgkube("render", str(spec), "-o", str(out or work / "out"), "-q", "--no-iso", "--no-packer", *extra, check=check)


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    for w in words:
        assert w in proc.stderr, proc.stderr


def foreign_tree(path: Path) -> None:
    (path / "photos").mkdir(parents=True)
    (path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 precious")
    (path / "notes.txt").write_text("mine\n")


# --------------------------------------------------------------------------- class 3


def test_a_foreign_directory_at_out_cluster_is_refused_and_untouched(tmp_path):
    foreign_tree(tmp_path / "out" / "demo")
    before = snapshot(tmp_path / "out")
    refused(render(tmp_path), "out/demo exists", "deletes only what it wrote")
    assert snapshot(tmp_path / "out") == before
    assert not (tmp_path / "cluster.secrets.yaml").exists(), "refused before the bundle was made"


def test_a_foreign_manifest_for_another_cluster_is_not_proof(tmp_path):
    d = tmp_path / "out" / "demo"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text('{"format": 2, "files": {}, "cluster": "other"}')
    (d / "data.bin").write_bytes(b"x")
    before = snapshot(tmp_path / "out")
    refused(render(tmp_path), "for cluster 'other'")
    assert snapshot(tmp_path / "out") == before


def test_a_symlink_at_out_cluster_that_wgkube_did_not_make_is_refused_and_its_target_kept(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    foreign_tree(elsewhere)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "demo").symlink_to(elsewhere)
    before = snapshot(elsewhere)
    refused(render(tmp_path), "symbolic link", "did not make")
    assert snapshot(elsewhere) == before
    assert os.readlink(tmp_path / "out" / "demo") == str(elsewhere)


def test_out_cluster_pointing_to_dot_dot_keeps_the_spec_and_the_bundle(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    assert render(work).returncode == 0
    bundle = (work / "cluster.secrets.yaml").read_bytes()
    shutil.rmtree(work / "out")
    (work / "out").mkdir()
    (work / "out" / "demo").symlink_to("..")
    refused(render(work), "symbolic link to ..")
    assert (work / "cluster.yaml").read_text() == SPEC
    assert (work / "cluster.secrets.yaml").read_bytes() == bundle


def test_a_regular_file_at_out_cluster_is_refused_and_kept(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "demo").write_text("my file\n")
    refused(render(tmp_path), "is a file")
    assert (tmp_path / "out" / "demo").read_text() == "my file\n"


def test_output_through_a_symlink_into_another_folder_deletes_nothing_there(tmp_path):
    system = tmp_path / "etc"
    foreign_tree(system / "demo")
    (system / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    (tmp_path / "out").symlink_to(system)
    before = snapshot(system)
    refused(render(tmp_path), "exists")
    assert snapshot(system) == before
    # Without a name clash it renders there and leaves everything else in that folder alone.
    shutil.rmtree(system / "demo")
    before = snapshot(system)
    assert render(tmp_path).returncode == 0
    after = snapshot(system)
    assert {k: v for k, v in after.items() if k in before} == before
    assert (system / "demo" / "manifest.json").exists()


def test_output_naming_a_file_is_a_clean_error(tmp_path):
    (tmp_path / "out").write_text("not a folder\n")
    refused(render(tmp_path), "is not a folder")
    assert (tmp_path / "out").read_text() == "not a folder\n"
    assert not (tmp_path / "cluster.secrets.yaml").exists()


def test_a_file_added_inside_the_rendered_tree_stops_the_next_render_and_survives(tmp_path):
    assert render(tmp_path).returncode == 0
    gen = tmp_path / "out" / "demo"
    precious = tmp_path / "out" / "demo" / "nodes" / "hub" / "output-image" / "disk.qcow2"
    precious.parent.mkdir(parents=True)
    precious.write_bytes(b"an image that took an hour")
    refused(render(tmp_path), "nodes/hub/output-image", "did not write")
    assert precious.read_bytes() == b"an image that took an hour" and gen.exists()
    precious.unlink()
    precious.parent.rmdir()
    assert render(tmp_path).returncode == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo"], "once it is clean again, the old generation goes"


def test_lookalike_leftovers_that_are_not_ours_are_left_alone(tmp_path):
    assert render(tmp_path).returncode == 0
    fake = tmp_path / "out" / ".demo.gen-mine"
    foreign_tree(fake)
    (tmp_path / "out" / ".demo.old").mkdir()
    (tmp_path / "out" / ".demo.old" / "keep").write_text("x")
    (tmp_path / "out" / ".demo.link-x").write_text("a file named like our temporary link\n")
    before = {p: snapshot(tmp_path / "out" / p) for p in (".demo.gen-mine", ".demo.old")}
    assert render(tmp_path).returncode == 0
    assert {p: snapshot(tmp_path / "out" / p) for p in before} == before
    assert (tmp_path / "out" / ".demo.link-x").read_text() == "a file named like our temporary link\n"


def test_the_manifest_carries_the_clusters_identity_and_is_written_first(tmp_path):
    assert render(tmp_path).returncode == 0
    import json
    manifest = json.loads((tmp_path / "out" / "demo" / "manifest.json").read_text())
    assert manifest["cluster"] == "demo"
    from generator.output import ownership
    assert not (tmp_path / "out" / "demo").is_symlink(), "a real folder (issue 16)"
    assert ownership(tmp_path / "out" / "demo", "demo") is None
    assert ownership(tmp_path / "out" / "demo", "other") is not None


# --------------------------------------------------------------------------- class 6: OS errors


@contextlib.contextmanager
def tmpfs(path: Path, *options: str):
    need_root("mounts a small tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("mode=0755",) + options), "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_output_folder_is_a_clean_error_and_no_bundle_is_written(tmp_path):
    with tmpfs(tmp_path / "ro", "size=1m", "ro") as ro:
        proc = render(tmp_path, out=ro / "out")
        refused(proc, "Read-only file system", "read-only")
        assert not (tmp_path / "cluster.secrets.yaml").exists(), "the bundle must not be saved when the output cannot be"


def test_a_full_disk_for_the_output_is_a_clean_error_and_no_bundle_is_written(tmp_path):
    with tmpfs(tmp_path / "full", "size=48k") as full:
        proc = render(tmp_path, out=full / "out")
        refused(proc, "No space left on device", "disk is full")
        assert not (tmp_path / "cluster.secrets.yaml").exists()
        assert not [p for p in (full / "out").iterdir()] if (full / "out").exists() else True, "the half-staged generation is removed"


def test_a_full_disk_for_the_bundle_keeps_the_previous_bundle_and_output(tmp_path):
    with tmpfs(tmp_path / "spec", "size=2m") as work:
        assert render(work, out=tmp_path / "out").returncode == 0
        bundle = (work / "cluster.secrets.yaml").read_bytes()
        out_before = snapshot(tmp_path / "out" / "demo")
        # Fill the disk, then add a member (the bundle must grow).
        filler = work / "filler"
        with open(filler, "wb") as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        (work / "cluster.yaml").write_text(SPEC + "  - name: phone\n")
        proc = render(work, out=tmp_path / "out")
        refused(proc, "No space left on device")
        assert (work / "cluster.secrets.yaml").read_bytes() == bundle
        assert snapshot(tmp_path / "out" / "demo") == out_before
        assert not list((tmp_path / "out").glob(".demo.gen-*")), "the staged generation is removed again"


def test_no_permission_is_a_clean_error(tmp_path):
    need_root("runs the CLI as another user")
    import tempfile
    work = Path(tempfile.mkdtemp(prefix="wgkube-perm-"))  # in /tmp itself: another user can reach it
    os.chmod(work, 0o755)
    try:
        (work / "cluster.yaml").write_text(SPEC)
        os.chmod(work / "cluster.yaml", 0o644)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "generator",
                               "render", str(work / "cluster.yaml"), "-o", str(work / "out"), "-q"],
                              capture_output=True, text=True, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO), "HOME": "/"})
        refused(proc, "Permission denied", "no permission")
        assert sorted(p.name for p in work.iterdir()) == ["cluster.yaml"]
    finally:
        shutil.rmtree(work)


# --------------------------------------------------------------------------- class 7 decisions


def test_a_refused_spec_leaves_no_lock_file(tmp_path):
    (tmp_path / "cluster.yaml").write_text(SPEC.replace("name: demo", "name: Demo!"))
    refused(render(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml"]


def test_a_world_readable_bundle_is_used_with_a_warning(tmp_path):
    assert render(tmp_path).returncode == 0
    os.chmod(tmp_path / "cluster.secrets.yaml", 0o644)
    proc = render(tmp_path)
    assert proc.returncode == 0
    assert "readable by other users" in proc.stderr and "chmod 600" in proc.stderr
    check = wgkube("check", str(tmp_path / "cluster.yaml"))
    assert "readable by other users" in check.stderr


def test_a_bundle_behind_a_symlink_is_saved_where_the_link_points(tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    work = tmp_path / "w"
    work.mkdir()
    assert render(work).returncode == 0
    shutil.move(work / "cluster.secrets.yaml", vault / "demo.secrets.yaml")
    (work / "cluster.secrets.yaml").symlink_to(vault / "demo.secrets.yaml")
    (work / "cluster.yaml").write_text(SPEC + "  - name: phone\n")
    assert render(work).returncode == 0
    assert (work / "cluster.secrets.yaml").is_symlink()
    data = yaml.safe_load((vault / "demo.secrets.yaml").read_text())
    assert "phone" in data["members"]
    assert oct((vault / "demo.secrets.yaml").stat().st_mode & 0o777) == "0o600"


def test_lookalikes_are_never_put_back_in_place_of_a_missing_output(tmp_path):
    """With out/demo missing, recovery puts back only a previous generation provably ours."""
    for name in (".demo.old", ".demo.old-x1", ".demo.gen-legacy1"):
        d = tmp_path / "out" / name
        foreign_tree(d)
        (d / "manifest.json").write_text('{"format": 2, "files": {}, "cluster": "demo"}')
    before = snapshot(tmp_path / "out")
    assert render(tmp_path).returncode == 0
    after = snapshot(tmp_path / "out")
    assert {k: v for k, v in after.items() if not k.startswith("demo")} == before
    assert not (tmp_path / "out" / "demo").is_symlink() and (tmp_path / "out" / "demo" / "manifest.json").exists()


@pytest.mark.parametrize("make, found", [
    (lambda d: (d / "extra").write_text("x"), "extra"),                          # an unlisted file
    (lambda d: (d / "a" / "b" / "new").mkdir(), "a/b/new"),                      # an unlisted folder
    (lambda d: (d / "a" / "link").symlink_to("/etc"), "a/link"),                # a link to a folder
    (lambda d: (d / "a" / "b" / "gone").symlink_to("/nonexistent"), "a/b/gone"),  # a broken link
    (lambda d: os.mkfifo(d / "a" / "fifo"), "a/fifo"),                          # not a plain file
    (lambda d: ((d / "a" / "b" / "f").unlink(), (d / "a" / "b" / "f").mkdir()), "a/b/f"),  # a listed file as a folder
    (lambda d: ((d / "top").unlink(), (d / "top").symlink_to(d / "a" / "b" / "f")), "top"),  # a listed file as a link
    (lambda d: None, None),
])
def test_every_kind_of_foreign_entry_is_found(tmp_path, make, found):
    """output._foreign_entry, on which every delete depends: anything but the listed plain files
    and the folders leading to them is named."""
    from generator.output import _foreign_entry
    d = tmp_path / "gen"
    (d / "a" / "b").mkdir(parents=True)
    (d / "top").write_text("t")
    (d / "a" / "b" / "f").write_text("f")
    make(d)
    assert _foreign_entry(d, {"top", "a/b/f"}) == found
