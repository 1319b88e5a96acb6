"""NoCloud seed ISO: ISO9660 + Joliet + Rock Ridge, volume label `cidata`, byte-reproducible.

pycdlib stamps the current time into the volume descriptor and every directory record; we
pin all of them to one fixed instant, so the same files always give the same bytes.

Building an ISO with pycdlib costs milliseconds; a cluster needs two per node. The layout of
an image depends only on how many 2 KiB sectors each file takes, so pycdlib builds one image per
layout (``_layout``, cached) and every seed of that layout is that image with the files' bytes
and lengths written in: the same bytes pycdlib would write (tests/test_delivery.py checks it
against pycdlib for random sizes, and reads the result back with xorriso and cloud-init).
"""
from __future__ import annotations

import contextlib
import io
import struct
import time
from functools import lru_cache

LABEL = "cidata"
# 2000-01-01T00:00:00Z: any fixed instant will do; it only has to be the same every time.
EPOCH = 946684800.0
SECTOR = 2048
NAMES = ("user-data", "meta-data", "network-config")


def seed_iso(user_data: bytes, meta_data: bytes, network_config: bytes | None = None) -> bytes:
    datas = [user_data, meta_data] + ([network_config] if network_config is not None else [])
    if not all(datas):
        return build_with_pycdlib(datas)  # an empty file has no extent of its own: no patching
    image, slots = _layout(tuple(-(-len(d) // SECTOR) for d in datas))
    out = bytearray(image)
    for data, (extent, sectors, length_at) in zip(datas, slots):
        start = extent * SECTOR
        out[start:start + sectors * SECTOR] = data.ljust(sectors * SECTOR, b"\0")
        both = struct.pack("<I", len(data)) + struct.pack(">I", len(data))
        for at in length_at:
            out[at:at + 8] = both
    return bytes(out)


def build_with_pycdlib(datas: list[bytes]) -> bytes:
    """The reference: the whole image made by pycdlib (what seed_iso's result must equal)."""
    import pycdlib
    iso = pycdlib.PyCdlib()
    with _frozen_clock():
        iso.new(interchange_level=3, vol_ident=LABEL, joliet=3, rock_ridge="1.09",
                sys_ident="LINUX", app_ident_str="WGKUBE")
        for i, data in enumerate(datas):
            iso.add_fp(io.BytesIO(data), len(data), f"/SEED{i}.;1", rr_name=NAMES[i], joliet_path=f"/{NAMES[i]}")
        out = io.BytesIO()
        iso.write_fp(out)
    iso.close()
    return out.getvalue()


@lru_cache(maxsize=64)
def _layout(sectors: tuple[int, ...]) -> tuple[bytes, list[tuple[int, int, list[int]]]]:
    """pycdlib's image for files of these sector counts, and per file: its first sector, its
    sector count and where its length is recorded (the ISO9660 and the Joliet directory record,
    each a little- and big-endian pair)."""
    image = build_with_pycdlib([b"\0" * (n * SECTOR) for n in sectors])
    iso_names = [f"SEED{i}.;1".encode() for i in range(len(sectors))]
    joliet_names = [name.encode("utf-16-be") for name in NAMES[:len(sectors)]]
    found: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(sectors))}
    for descriptor in range(16, 32):
        vd = image[descriptor * SECTOR:(descriptor + 1) * SECTOR]
        if vd[0] == 255:  # terminator
            break
        if vd[0] not in (1, 2) or vd[1:6] != b"CD001":
            continue
        names = iso_names if vd[0] == 1 else joliet_names
        root_extent, root_size = struct.unpack_from("<I", vd, 156 + 2)[0], struct.unpack_from("<I", vd, 156 + 10)[0]
        pos, end = root_extent * SECTOR, root_extent * SECTOR + root_size
        while pos < end:
            length = image[pos]
            if length == 0:  # records do not cross sectors: skip to the next one
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            name = image[pos + 33:pos + 33 + image[pos + 32]]
            if name in names:
                found[names.index(name)].append((struct.unpack_from("<I", image, pos + 2)[0], pos + 10))
            pos += length
    slots = []
    for i, n in enumerate(sectors):
        extents = {extent for extent, _ in found[i]}
        if len(found[i]) != 2 or len(extents) != 1:
            raise AssertionError(f"unexpected ISO layout from pycdlib for file {i}: {found[i]}")
        slots.append((extents.pop(), n, [at for _, at in found[i]]))
    return image, slots


@contextlib.contextmanager
def _frozen_clock():
    """pycdlib reads time.time()/localtime() (the local zone!) for every record it creates.
    Plain function swaps, restored afterwards: mock.patch cost more than the ISO itself."""
    fixed = time.gmtime(EPOCH)
    saved = time.time, time.localtime, time.gmtime
    time.time = lambda: EPOCH  # type: ignore[assignment]
    time.localtime = time.gmtime = lambda *_: fixed  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time, time.localtime, time.gmtime = saved
