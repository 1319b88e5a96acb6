"""Stage 5, output: writes out/<cluster>/. Everything is written atomically (primitives in fsutil.py).

``out/<cluster>`` is a symbolic link to a complete generation directory ``out/.<cluster>.gen-*``.
A render writes a whole new generation, makes it durable with one syncfs(2) (not an fsync per
file and folder), then swaps the link with one rename
(atomic on POSIX), then removes the old generation. A render killed at any moment leaves
``out/<cluster>`` pointing at a complete tree, old or new, never at a mix and never missing.
``manifest.json`` records the sha256 of every file, for ``wgkube plan`` to diff against.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import Problem, UserError
from .fsutil import fsync_dir, sync_filesystem

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_of(files: dict[str, tuple[bytes, int]], meta: dict | None = None) -> dict:
    data = {"format": MANIFEST_FORMAT,
            "files": {rel: {"sha256": sha256(d), "size": len(d), "mode": oct(mode)} for rel, (d, mode) in sorted(files.items())}}
    data.update(meta or {})
    return data


def read_manifest(cluster_dir: Path) -> dict | None:
    try:
        data = json.loads((cluster_dir / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


# --------------------------------------------------------------------------- what is ours
# wgkube deletes or replaces only what it can prove it wrote (issue 12): a real directory whose
# manifest.json names this cluster (older manifests: its plan.json does) and which holds
# nothing the manifest does not list. manifest.json is the first file written into a new
# generation, so even a generation cut short by a kill carries the proof. A name alone
# (`.<cluster>.gen-*`) proves nothing: anything else is left alone, or stops the render.


def _foreign_entry(d: Path, listed: set[str]) -> str | None:
    """The first entry under d that is not a listed file or a directory leading to one."""
    dirs = {str(Path(rel).parent) for rel in listed} | {"."}
    dirs |= {str(p) for rel in listed for p in Path(rel).parents}
    for root, dirnames, filenames in os.walk(d):
        base = Path(root).relative_to(d)
        for name in dirnames:
            rel = str(base / name)
            if os.path.islink(Path(root) / name) or rel not in dirs:
                return rel
        for name in filenames:
            rel = str(base / name)
            full = Path(root) / name
            if rel not in listed or os.path.islink(full) or not stat.S_ISREG(os.lstat(full).st_mode):
                return rel
    return None


def ownership(d: Path, cluster: str) -> str | None:
    """None if d is a tree wgkube wrote for cluster (safe to delete or replace), else why not."""
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link wgkube did not make"
    if not stat.S_ISDIR(st.st_mode):
        return "it is a file, not a folder wgkube made"
    try:
        if not any(os.scandir(d)):
            return None  # an empty folder (a generation killed right after it was made): nothing to lose
        data = json.loads((d / MANIFEST).read_bytes())
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            return f"it has no wgkube {MANIFEST}"
        who = data.get("cluster")
        if who is None:  # manifests of wgkube before issue 12: the plan names the cluster
            who = json.loads((d / "plan.json").read_bytes()).get("cluster")
    except (OSError, ValueError, AttributeError):
        return f"it has no readable wgkube {MANIFEST} naming cluster {cluster}"
    if who != cluster:
        return f"its {MANIFEST} is for cluster {who!r}, not {cluster!r}"
    extra = _foreign_entry(d, set(files) | {MANIFEST})
    if extra is not None:
        return f"it holds {extra}, which wgkube did not write"
    return None


def _generation_name(cluster_dir: Path, target: str) -> bool:
    return "/" not in target and target.startswith(f".{cluster_dir.name}.gen-")


def check_target(out_dir: Path, cluster_dir: Path) -> None:
    """Refuse (UserError, nothing touched) unless out_dir is a folder (or absent) and
    out_dir/<cluster> is absent, our link to a generation of ours, or a tree of ours."""
    what = "move it away or pick another output folder with -o; wgkube deletes only what it wrote"
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise UserError(Problem("-o", f"{out_dir} is not a folder", "give -o a folder (it is made if missing)"))
    cluster = cluster_dir.name
    if cluster_dir.is_symlink():
        target = os.readlink(cluster_dir)
        if not _generation_name(cluster_dir, target):
            raise UserError(Problem("-o", f"{cluster_dir} is a symbolic link to {target}, which wgkube did not make", what))
        why = ownership(cluster_dir.parent / target, cluster)
        if why is not None or not (cluster_dir.parent / target).is_dir():
            raise UserError(Problem("-o", f"{cluster_dir} points to {target}: {why or 'missing'}", what))
        return
    why = ownership(cluster_dir, cluster)
    if why is not None:
        raise UserError(Problem("-o", f"{cluster_dir} exists and {why}", what))


def _remove_tree(d: Path) -> None:
    """Delete a tree of ours with its manifest.json last: a delete cut short by a kill leaves
    a tree that still proves whose it is, so the next run can finish the job."""
    for root, dirnames, filenames in os.walk(d, topdown=False):
        for name in filenames:
            if not (root == str(d) and name == MANIFEST):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(root, name))
        for name in dirnames:
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(os.path.join(root, name))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(d / MANIFEST)
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(d)


def _remove_if_ours(d: Path, cluster: str) -> None:
    if ownership(d, cluster) is None:
        _remove_tree(d)


def _generations(cluster_dir: Path) -> list[Path]:
    return [p for p in cluster_dir.parent.glob(f".{cluster_dir.name}.gen-*") if p.is_dir() and not p.is_symlink()]


def recover(cluster_dir: Path) -> None:
    """Tidy what a killed render left behind: stale links and generations nobody points to.
    out/<cluster> itself is always usable; this only frees disk (and removes stray secrets).
    Only what ownership() proves is ours is removed. Call only under the lock."""
    parent = cluster_dir.parent
    cluster = cluster_dir.name
    for link in parent.glob(f".{cluster}.link-*"):
        if link.is_symlink() and _generation_name(cluster_dir, os.readlink(link)):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
    # Layout of earlier versions: a real directory swapped with two renames.
    old = parent / f".{cluster}.old"
    if old.is_dir() and not old.is_symlink() and ownership(old, cluster) is None:
        if not os.path.lexists(cluster_dir):
            os.replace(old, cluster_dir)
        else:
            _remove_tree(old)
    for stale in parent.glob(f".{cluster}.stage-*"):
        if not stale.is_symlink():
            _remove_if_ours(stale, cluster)
    current = _current_generation(cluster_dir)
    if current is None and not os.path.lexists(cluster_dir):
        # Killed between the two steps of moving an old real directory aside (see _adopt).
        legacy = sorted(p for p in parent.glob(f".{cluster}.gen-legacy*") if ownership(p, cluster) is None)
        if legacy:
            os.symlink(legacy[-1].name, cluster_dir)
            current = legacy[-1]
    for gen in _generations(cluster_dir):
        if current is None or gen.resolve() != current.resolve():
            _remove_if_ours(gen, cluster)


def _current_generation(cluster_dir: Path) -> Path | None:
    if cluster_dir.is_symlink():
        target = os.readlink(cluster_dir)
        if _generation_name(cluster_dir, target):
            return cluster_dir.parent / target
    return None


def _adopt(cluster_dir: Path) -> None:
    """An out/<cluster> that is a real directory of ours (older wgkube) becomes a generation."""
    if cluster_dir.is_symlink() or not cluster_dir.is_dir() or ownership(cluster_dir, cluster_dir.name) is not None:
        return
    legacy = Path(tempfile.mkdtemp(prefix=f".{cluster_dir.name}.gen-legacy", dir=cluster_dir.parent))
    os.rmdir(legacy)
    os.replace(cluster_dir, legacy)
    os.symlink(legacy.name, cluster_dir)
    fsync_dir(cluster_dir.parent)


def _make_parents(folder: Path, made: set[Path]) -> None:
    if folder in made:
        return
    _make_parents(folder.parent, made)
    os.mkdir(folder)
    made.add(folder)


def _write_file(target: Path, data: bytes, mode: int, made: set[Path]) -> None:
    """One new file, not synced (the whole generation is synced once, in stage)."""
    _make_parents(target.parent, made)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # umask must not widen or narrow what we meant
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def stage(cluster_dir: Path, files: dict[str, tuple[bytes, int]], meta: dict | None = None) -> Path:
    """Write a complete new generation beside cluster_dir, not yet visible: every byte written,
    then made durable with one syncfs(2) of its file system (no fsync per file and folder), so a
    full disk or a read-only folder shows up here, before the bundle is saved.
    Its manifest.json (naming the cluster: the proof it is ours) is written first.
    Call check_target first, and under the lock."""
    parent = cluster_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover(cluster_dir)
    _adopt(cluster_dir)
    gen = Path(tempfile.mkdtemp(prefix=f".{cluster_dir.name}.gen-", dir=parent))
    try:
        made = {gen}  # folders created so far: one mkdir each, no walk of the tree afterwards
        manifest = manifest_of(files, {**(meta or {}), "cluster": cluster_dir.name})
        _write_file(gen / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n", 0o644, made)
        for rel, (data, mode) in sorted(files.items()):
            _write_file(gen / rel, data, mode, made)
        os.chmod(gen, 0o700)
        # Durable before it can become visible: the whole tree, files and folders, in one call.
        sync_filesystem(gen)
    except BaseException:
        _remove_tree(gen)
        raise
    return gen


def discard(gen: Path) -> None:
    """A staged generation that will not be used (the bundle could not be saved)."""
    _remove_tree(gen)


def switch(cluster_dir: Path, gen: Path) -> None:
    """Make cluster_dir point to the staged generation (one atomic rename), then remove the
    previous generation if it is provably ours."""
    parent = cluster_dir.parent
    previous = _current_generation(cluster_dir)
    try:
        link = parent / f".{cluster_dir.name}.link-{gen.name.rsplit('-', 1)[-1]}"
        os.symlink(gen.name, link)  # relative: out/ can be moved or copied as a whole
        os.replace(link, cluster_dir)  # the switch: one atomic rename
        fsync_dir(parent)
    except BaseException:
        if _current_generation(cluster_dir) is None or _current_generation(cluster_dir).resolve() != gen.resolve():
            _remove_tree(gen)
        raise
    if previous is not None and previous.resolve() != gen.resolve():
        _remove_if_ours(previous, cluster_dir.name)


def write_tree(cluster_dir: Path, files: dict[str, tuple[bytes, int]], meta: dict | None = None) -> None:
    """Make cluster_dir hold exactly these files (relative path -> (bytes, mode)), atomically.
    meta goes into manifest.json beside the file hashes. Call under the lock."""
    check_target(cluster_dir.parent, cluster_dir)
    switch(cluster_dir, stage(cluster_dir, files, meta))
