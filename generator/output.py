"""Stage 5, output: writes out/<cluster>/. Everything is written atomically (primitives in fsutil.py).

``out/<cluster>`` is a real folder, so ``cp -r``, ``tar`` and ``rsync`` copy its files (issue 16;
before, it was a link to a hidden generation and a plain copy took only the link). A render
writes a whole new generation in a hidden sibling ``out/.<cluster>.gen-*``, makes it durable
with one syncfs(2) (not an fsync per file and folder), then swaps the two folders with one
renameat2(RENAME_EXCHANGE) (atomic: both names exist at every instant), then removes the
previous generation, which the swap left at the hidden name. A render killed at any moment
leaves ``out/<cluster>`` a complete tree, old or new, never a mix and never missing (the
fallback for file systems without RENAME_EXCHANGE has a documented short window: ``_swap``).
``manifest.json`` records the sha256 of every file, for ``wgkube plan`` to diff against.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import Problem, UserError
from . import fsutil
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
    """The first entry under d that is not a listed file or a directory leading to one (a
    symbolic link, a device, a folder that cannot be read: anything that is not a plain listed
    file or folder). Strings and os.scandir, not pathlib: this runs over every file of a
    generation twice per render (issue 19)."""
    dirs = {""}
    for rel in listed:
        parent = os.path.dirname(rel)
        while parent not in dirs:
            dirs.add(parent)
            parent = os.path.dirname(parent)

    def walk(path: str, base: str) -> str | None:
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            return base.rstrip("/") or "."   # cannot be read, so cannot be shown to be ours
        subdirs = []
        for entry in entries:   # folders first, then files, as os.walk reports them
            if entry.is_dir():
                rel = base + entry.name
                if entry.is_symlink() or rel not in dirs:
                    return rel
                subdirs.append((entry.path, rel + "/"))
        for entry in entries:
            if not entry.is_dir():
                rel = base + entry.name
                if rel not in listed or not entry.is_file(follow_symlinks=False):
                    return rel
        for sub in subdirs:
            found = walk(*sub)
            if found is not None:
                return found
        return None

    return walk(str(d), "")


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
    out_dir/<cluster> is absent, a tree of ours, or (layout of wgkube before issue 16) our link
    to a generation of ours."""
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
    if not d.is_symlink() and ownership(d, cluster) is None:
        _remove_tree(d)


def _complete(d: Path) -> bool:
    """d holds every file its manifest lists, byte for byte (a whole generation, not a cut one)."""
    manifest = read_manifest(d)
    if manifest is None:
        return False
    try:
        return all(sha256((d / rel).read_bytes()) == meta.get("sha256") for rel, meta in manifest["files"].items())
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------- layout (issue 16)
# out/<cluster> is a real folder (cp -r, tar and rsync see plain files). Hidden siblings, all
# on the same file system (a rename never crosses one):
#   .<cluster>.gen-*   a staged new generation; after the swap, the same name holds the previous
#                      generation until it is deleted (or, for a migrated out/ of wgkube before
#                      issue 16, the old symbolic link);
#   .<cluster>.old-*   only where RENAME_EXCHANGE is unavailable: the previous generation moved
#                      aside between the two renames of the fallback (see _swap).
# Layouts of earlier versions, still recovered: out/<cluster> as a link to .<cluster>.gen-*,
# .<cluster>.link-* (a link about to replace it), .<cluster>.old and .<cluster>.stage-* (two
# renames), .<cluster>.gen-legacy* (a real folder being turned into a generation).
_LEFTOVERS = ("gen-", "old", "link-", "stage-")


def _leftovers(cluster_dir: Path) -> list[Path]:
    parent, cluster = cluster_dir.parent, cluster_dir.name
    return sorted(p for kind in _LEFTOVERS for p in parent.glob(f".{cluster}.{kind}*"))


def _restorable(p: Path, cluster_dir: Path) -> bool:
    """p was out/<cluster> before a switch that was killed between its two renames: a whole
    generation of ours, or our link to one (layouts before issue 16)."""
    if p.is_symlink():
        target = os.readlink(p)
        return _generation_name(cluster_dir, target) and _restorable(cluster_dir.parent / target, cluster_dir)
    return p.is_dir() and ownership(p, cluster_dir.name) is None and _complete(p)


def recover(cluster_dir: Path) -> None:
    """Tidy what a killed render left behind. Only what ownership() proves is ours is removed,
    and of links only ours (pointing to a .<cluster>.gen-* name): a link holds no data.
    Call only under the lock.

    If out/<cluster> is missing, a switch was killed between two renames (the fallback of _swap,
    or the layouts before) and the previous generation, complete, is put back. Never a staged
    one: it may hold keys the bundle was not saved with; the previous one's keys are all in the
    bundle, old or new. Otherwise out/<cluster> is whole, and this only frees disk and removes
    stray secrets: every hidden generation of ours goes, except the one an old-style link points to."""
    cluster = cluster_dir.name
    if not os.path.lexists(cluster_dir):
        aside = [p for p in _leftovers(cluster_dir) if p.name.startswith((f".{cluster}.old", f".{cluster}.gen-legacy"))]
        for p in aside:
            if _restorable(p, cluster_dir):
                os.rename(p, cluster_dir)
                fsync_dir(cluster_dir.parent)
                break
    current = _current_generation(cluster_dir)
    for p in _leftovers(cluster_dir):
        if p.is_symlink():
            if _generation_name(cluster_dir, os.readlink(p)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        elif current is None or p.name != current.name:
            _remove_if_ours(p, cluster)


def _current_generation(cluster_dir: Path) -> Path | None:
    """The generation an old-style link out/<cluster> points to (None for a real folder)."""
    if cluster_dir.is_symlink():
        target = os.readlink(cluster_dir)
        if _generation_name(cluster_dir, target):
            return cluster_dir.parent / target
    return None


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
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_whole(target: Path, data: bytes, mode: int) -> None:
    """A new file that appears complete or not at all: written into an unnamed file (O_TMPFILE)
    in its folder, then given its name with one link. Used for manifest.json, the proof a
    generation is ours: a render killed while writing it leaves an empty folder (ours), never a
    folder with a cut manifest that proves nothing and would stay forever. Where the file
    system has no O_TMPFILE (or /proc is not mounted), a plain write: then a kill inside that
    one write leaves a folder wgkube cannot prove is its own, which it leaves alone."""
    try:
        fd = os.open(target.parent, os.O_TMPFILE | os.O_WRONLY, mode)
    except (AttributeError, OSError) as e:  # AttributeError: not Linux
        if isinstance(e, OSError) and e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        _write_file(target, data, mode, {target.parent})
        return
    try:
        os.fchmod(fd, mode)
        _write_all(fd, data)
        # linkat(AT_SYMLINK_FOLLOW) names the unnamed file; CPython calls linkat (not link(2),
        # which would link the /proc symbolic link itself) only when given a dir_fd.
        dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.link(f"/proc/self/fd/{fd}", target.name, dst_dir_fd=dfd, follow_symlinks=True)
            return
        except FileNotFoundError:  # no /proc
            pass
        finally:
            os.close(dfd)
    finally:
        os.close(fd)
    _write_file(target, data, mode, {target.parent})


def stage(cluster_dir: Path, files: dict[str, tuple[bytes, int]], meta: dict | None = None) -> Path:
    """Write a complete new generation beside cluster_dir, not yet visible: every byte written,
    then made durable with one syncfs(2) of its file system (no fsync per file and folder), so a
    full disk or a read-only folder shows up here, before the bundle is saved.
    Its manifest.json (naming the cluster: the proof it is ours) is written first, whole.
    Call check_target first, and under the lock."""
    parent = cluster_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover(cluster_dir)
    gen = Path(tempfile.mkdtemp(prefix=f".{cluster_dir.name}.gen-", dir=parent))
    try:
        made = {gen}  # folders created so far: one mkdir each, no walk of the tree afterwards
        manifest = manifest_of(files, {**(meta or {}), "cluster": cluster_dir.name})
        _write_whole(gen / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n", 0o644)
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


def _swap(cluster_dir: Path, gen: Path) -> Path:
    """Put the staged generation at cluster_dir; return where the previous one now is.

    One renameat2(RENAME_EXCHANGE): the two names swap in one atomic step, so out/<cluster> is
    the whole previous or the whole new folder at every instant, for a reader as for a kill.
    It works between a folder and a link too, which migrates the link layout of wgkube before
    issue 16.

    Fallback where the file system or the C library cannot exchange (EINVAL: NFS, some FUSE
    and older file systems; ENOSYS: no renameat2): two renames, previous aside then new in
    place. Between them (two system calls, microseconds) out/<cluster> is missing: a reader
    there sees no folder, and a kill there is repaired by the next render (recover() puts the
    previous generation back). Chosen over refusing to render: the output stays usable on such
    file systems and nothing is ever lost; only that short window is weaker than the exchange."""
    try:
        fsutil.rename_exchange(gen, cluster_dir)
        return gen
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
    aside = cluster_dir.parent / f".{cluster_dir.name}.old-{gen.name.rsplit('-', 1)[-1]}"
    fsutil.rename_noreplace(cluster_dir, aside)
    try:
        os.rename(gen, cluster_dir)
    except BaseException:
        os.rename(aside, cluster_dir)
        raise
    return aside


def _dispose(previous: Path, cluster_dir: Path) -> None:
    """Delete the previous generation if it is provably ours. An old-style link (migration):
    the link first, then the generation it pointed to (a kill between leaves an orphan
    generation of ours, which the next recover() removes)."""
    if previous.is_symlink():
        target = os.readlink(previous)
        if not _generation_name(cluster_dir, target):
            return
        with contextlib.suppress(FileNotFoundError):
            previous.unlink()
        previous = cluster_dir.parent / target
    _remove_if_ours(previous, cluster_dir.name)


def switch(cluster_dir: Path, gen: Path) -> None:
    """Put the staged generation at cluster_dir atomically (first render: one rename; then one
    exchange, see _swap), make that durable (fsync of out/), then remove the previous
    generation if it is provably ours."""
    parent = cluster_dir.parent
    previous = None
    try:
        if os.path.lexists(cluster_dir):
            previous = _swap(cluster_dir, gen)
        else:
            fsutil.rename_noreplace(gen, cluster_dir)
        fsync_dir(parent)
    except BaseException:
        if previous is None and os.path.isdir(gen) and not gen.is_symlink():
            _remove_tree(gen)  # never shown: the staged generation (ours, just written)
        raise
    if previous is not None:
        _dispose(previous, cluster_dir)


def write_tree(cluster_dir: Path, files: dict[str, tuple[bytes, int]], meta: dict | None = None) -> None:
    """Make cluster_dir hold exactly these files (relative path -> (bytes, mode)), atomically.
    meta goes into manifest.json beside the file hashes. Call under the lock."""
    check_target(cluster_dir.parent, cluster_dir)
    switch(cluster_dir, stage(cluster_dir, files, meta))
