"""NoCloud seed ISO: ISO9660 + Joliet + Rock Ridge, volume label `cidata`, byte-reproducible.

pycdlib stamps the current time into the volume descriptor and every directory record; we
pin all of them to one fixed instant, so the same files always give the same bytes.
"""
from __future__ import annotations

import contextlib
import io
import time

import pycdlib

LABEL = "cidata"
# 2000-01-01T00:00:00Z: any fixed instant will do; it only has to be the same every time.
EPOCH = 946684800.0


def seed_iso(user_data: bytes, meta_data: bytes, network_config: bytes | None = None) -> bytes:
    entries = [("user-data", user_data), ("meta-data", meta_data)]
    if network_config is not None:
        entries.append(("network-config", network_config))
    iso = pycdlib.PyCdlib()
    with _frozen_clock():
        iso.new(interchange_level=3, vol_ident=LABEL, joliet=3, rock_ridge="1.09",
                sys_ident="LINUX", app_ident_str="WGKUBE")
        for i, (name, data) in enumerate(entries):
            iso.add_fp(io.BytesIO(data), len(data), f"/SEED{i}.;1", rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
    iso.close()
    return out.getvalue()


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
