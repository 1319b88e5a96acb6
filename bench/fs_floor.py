"""The file-system floor of a re-render: the same tree (folders, files, sizes, modes) written
with bare system calls beside the previous one, made durable with one syncfs(2), then the
previous one deleted and the new one renamed into its place. That is the work wgkube's write
stage cannot avoid (it does the same plus a manifest, the ownership checks and the exchange),
so wgkube's wall time minus this is what its own code costs.

    python bench/fs_floor.py SHAPE.json DIR     (DIR/cur is the previous tree; made if missing)
"""
from __future__ import annotations

import ctypes
import json
import os
import sys


def write_tree(root: str, shape: dict) -> None:
    os.mkdir(root)
    for rel in shape["dirs"]:
        os.mkdir(os.path.join(root, rel))
    for rel, size, mode in shape["files"]:
        fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, b"x" * size)
        finally:
            os.close(fd)


def delete_tree(root: str) -> None:
    for top, dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
        for name in dirs:
            os.rmdir(os.path.join(top, name))
    os.rmdir(root)


def syncfs(path: str) -> None:
    # generator.fsutil.sync_filesystem does the same; not imported, so the floor never pays
    # for importing wgkube.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")
    finally:
        os.close(fd)


def main(shape_file: str, work: str) -> None:
    with open(shape_file) as f:
        shape = json.load(f)
    cur, new = os.path.join(work, "cur"), os.path.join(work, "new")
    if not os.path.isdir(cur):
        write_tree(cur, shape)
        return
    write_tree(new, shape)
    syncfs(new)
    delete_tree(cur)
    os.rename(new, cur)


if __name__ == "__main__":
    main(*sys.argv[1:3])
