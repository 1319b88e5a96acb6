"""The only module that writes files. Everything is written atomically.

A render is staged in a sibling temporary directory, fsync'd, then swapped in, so a render
killed at any moment leaves the previous output intact. ``manifest.json`` records the sha256
of every file, for ``wgkube plan`` to diff against.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import Problem, UserError

MANIFEST = "manifest.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write data to path so that readers see either the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def lock(path: Path) -> Iterator[None]:
    """Exclusive lock so two renders of the same cluster cannot interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(Problem("", f"another wgkube run holds {path}", "wait for it to finish, then run again")) from None
        yield
    finally:
        os.close(fd)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_of(files: dict[str, tuple[bytes, int]]) -> dict:
    return {"files": {rel: {"sha256": sha256(data), "size": len(data), "mode": oct(mode)} for rel, (data, mode) in sorted(files.items())}}


def read_manifest(cluster_dir: Path) -> dict | None:
    try:
        return json.loads((cluster_dir / MANIFEST).read_text())
    except (FileNotFoundError, ValueError):
        return None


def recover(cluster_dir: Path) -> None:
    """Finish or undo a swap that a killed render left half done."""
    old = cluster_dir.with_name(f".{cluster_dir.name}.old")
    if old.exists():
        if cluster_dir.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, cluster_dir)
    for stale in cluster_dir.parent.glob(f".{cluster_dir.name}.stage-*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_tree(cluster_dir: Path, files: dict[str, tuple[bytes, int]], extra: dict[str, tuple[bytes, int]] | None = None) -> None:
    """Replace cluster_dir with exactly these files (relative path -> (bytes, mode))."""
    cluster_dir.parent.mkdir(parents=True, exist_ok=True)
    recover(cluster_dir)
    stage = Path(tempfile.mkdtemp(prefix=f".{cluster_dir.name}.stage-", dir=cluster_dir.parent))
    try:
        everything = dict(files)
        everything[MANIFEST] = (json.dumps(manifest_of(files), indent=1, sort_keys=True).encode() + b"\n", 0o644)
        everything.update(extra or {})
        for rel, (data, mode) in sorted(everything.items()):
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fsync(f.fileno())
            os.chmod(target, mode)  # umask must not widen or narrow what we meant
        for d in sorted({p.parent for p in stage.rglob("*")}, key=lambda p: -len(p.parts)):
            _fsync_dir(d)
        os.chmod(stage, 0o700)
        old = cluster_dir.with_name(f".{cluster_dir.name}.old")
        if cluster_dir.exists():
            os.replace(cluster_dir, old)
        os.replace(stage, cluster_dir)
        _fsync_dir(cluster_dir.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
