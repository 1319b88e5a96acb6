"""Small file-system primitives every writing stage shares: atomic replace, stale-temp cleanup, the run lock.

They sit below every stage (the secrets bundle and out/ are both written through them) and import
nothing from the pipeline but the error type.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import Problem, UserError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc = None


def _c():
    """The C library through ctypes (once), or False where it cannot be loaded."""
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    return _libc


def sync_filesystem(path: Path) -> None:
    """Make everything written so far on path's file system durable, in one call: syncfs(2)
    (one journal commit for a whole tree, instead of an fsync per file and folder). Falls back to
    sync(2) where syncfs is not available."""
    libc = _c()
    if libc is False or not hasattr(libc, "syncfs"):  # syncfs: Linux >= 2.6.39
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            import ctypes
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(path))
    finally:
        os.close(fd)


AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    """renameat2(2) (Linux >= 3.15, glibc >= 2.28). OSError(ENOSYS) where the C library has no
    renameat2; OSError(EINVAL) where the file system does not support the flag (NFS, some FUSE)."""
    import errno as errno_mod
    libc = _c()
    if libc is False or not hasattr(libc, "renameat2"):
        raise OSError(errno_mod.ENOSYS, "renameat2 is not available in this C library", str(src))
    if libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        import ctypes
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(src), None, str(dst))


def rename_exchange(a: Path, b: Path) -> None:
    """Swap what the names a and b point to, in one atomic step (RENAME_EXCHANGE): both exist
    before and after, at every instant. Works between a directory and a symbolic link too.
    Raises OSError with errno ENOSYS or EINVAL where that is not possible (see _renameat2)."""
    _renameat2(a, b, RENAME_EXCHANGE)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename src to dst, failing (EEXIST) instead of replacing anything already at dst.
    Where renameat2 or the flag is unavailable: a plain rename after checking dst is absent
    (the check and the rename are two steps; callers hold the run lock)."""
    import errno as errno_mod
    try:
        _renameat2(src, dst, RENAME_NOREPLACE)
    except OSError as e:
        if e.errno not in (errno_mod.ENOSYS, errno_mod.EINVAL):
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno_mod.EEXIST, os.strerror(errno_mod.EEXIST), str(dst)) from None
        os.rename(src, dst)


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
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temps(path: Path) -> None:
    """Temporary files a killed atomic_write left beside path (they may hold secrets).
    Call only under the lock: a live writer's temp file looks the same."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


@contextlib.contextmanager
def lock(path: Path) -> Iterator[None]:
    """Exclusive lock so two runs on the same cluster cannot interleave. Fails at once, clearly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise UserError(Problem("", f"another wgkube run{who} holds {path}: it is changing this cluster's secrets or outputs",
                                    "wait for it to finish, then run again; nothing was changed by this run")) from None
        # Who holds it, for the message above. The lock is the flock, not this text.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
