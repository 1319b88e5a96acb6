"""Stage 5, output: writes out/<cluster>/. Everything is written atomically (primitives in fsutil.py).

``out/<cluster>`` is a symbolic link to a complete generation directory ``out/.<cluster>.gen-*``.
A render writes and fsyncs a whole new generation, then swaps the link with one rename
(atomic on POSIX), then removes the old generation. A render killed at any moment leaves
``out/<cluster>`` pointing at a complete tree, old or new, never at a mix and never missing.
``manifest.json`` records the sha256 of every file, for ``wgkube plan`` to diff against.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .fsutil import fsync_dir

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


def _generations(cluster_dir: Path) -> list[Path]:
    return [p for p in cluster_dir.parent.glob(f".{cluster_dir.name}.gen-*") if p.is_dir() and not p.is_symlink()]


def recover(cluster_dir: Path) -> None:
    """Tidy what a killed render left behind: stale links and generations nobody points to.
    out/<cluster> itself is always usable; this only frees disk (and removes stray secrets).
    Call only under the lock."""
    parent = cluster_dir.parent
    for link in parent.glob(f".{cluster_dir.name}.link-*"):
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
    # Layout of earlier versions: a real directory swapped with two renames.
    old = parent / f".{cluster_dir.name}.old"
    if old.is_dir():
        if not os.path.lexists(cluster_dir):
            os.replace(old, cluster_dir)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for stale in parent.glob(f".{cluster_dir.name}.stage-*"):
        shutil.rmtree(stale, ignore_errors=True)
    current = _current_generation(cluster_dir)
    if current is None and not os.path.lexists(cluster_dir):
        # Killed between the two steps of moving an old real directory aside (see _adopt).
        legacy = sorted(parent.glob(f".{cluster_dir.name}.gen-legacy*"))
        if legacy:
            os.symlink(legacy[-1].name, cluster_dir)
            current = legacy[-1]
    for gen in _generations(cluster_dir):
        if current is None or gen.resolve() != current.resolve():
            shutil.rmtree(gen, ignore_errors=True)


def _current_generation(cluster_dir: Path) -> Path | None:
    if cluster_dir.is_symlink():
        return cluster_dir.parent / os.readlink(cluster_dir)
    return None


def _adopt(cluster_dir: Path) -> None:
    """An out/<cluster> that is a real directory (older wgkube) becomes a generation."""
    if cluster_dir.is_symlink() or not cluster_dir.is_dir():
        return
    legacy = Path(tempfile.mkdtemp(prefix=f".{cluster_dir.name}.gen-legacy", dir=cluster_dir.parent))
    os.rmdir(legacy)
    os.replace(cluster_dir, legacy)
    os.symlink(legacy.name, cluster_dir)
    fsync_dir(cluster_dir.parent)


def write_tree(cluster_dir: Path, files: dict[str, tuple[bytes, int]], meta: dict | None = None) -> None:
    """Make cluster_dir hold exactly these files (relative path -> (bytes, mode)), atomically.
    meta goes into manifest.json beside the file hashes. Call under the lock."""
    parent = cluster_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover(cluster_dir)
    _adopt(cluster_dir)
    gen = Path(tempfile.mkdtemp(prefix=f".{cluster_dir.name}.gen-", dir=parent))
    try:
        everything = dict(files)
        everything[MANIFEST] = (json.dumps(manifest_of(files, meta), indent=1, sort_keys=True).encode() + b"\n", 0o644)
        for rel, (data, mode) in sorted(everything.items()):
            target = gen / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fsync(f.fileno())
            os.chmod(target, mode)  # umask must not widen or narrow what we meant
        for d in sorted({p.parent for p in gen.rglob("*")} | {gen}, key=lambda p: -len(p.parts)):
            fsync_dir(d)
        os.chmod(gen, 0o700)
        previous = _current_generation(cluster_dir)
        link = parent / f".{cluster_dir.name}.link-{gen.name.rsplit('-', 1)[-1]}"
        os.symlink(gen.name, link)  # relative: out/ can be moved or copied as a whole
        os.replace(link, cluster_dir)  # the switch: one atomic rename
        fsync_dir(parent)
    except BaseException:
        if _current_generation(cluster_dir) is None or _current_generation(cluster_dir).resolve() != gen.resolve():
            shutil.rmtree(gen, ignore_errors=True)
        raise
    if previous is not None and previous.resolve() != gen.resolve():
        shutil.rmtree(previous, ignore_errors=True)
