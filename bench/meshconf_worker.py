"""wg-meshconf's side of the peer comparison, run by the benchmark's own interpreter (bench/.venv).

Standalone on purpose: it imports nothing from wgkube or bench. It drives wg-meshconf's Python
API exactly as its CLI does (``addpeer`` once per member, then ``genconfig`` for all), without
starting a new interpreter per command, which would only make wg-meshconf look slower.

  python meshconf_worker.py MEMBERS.json WORKDIR   ->  one JSON line on stdout
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from importlib import metadata
from pathlib import Path

from wg_meshconf.database_manager import DatabaseManager

LISTEN_PORT = 51820  # the CLI's default for addpeer --listenport


def main(members_path: str, workdir: str) -> int:
    members = json.loads(Path(members_path).read_text())
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    database, output = work / "database.csv", work / "output"
    w0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        manager = DatabaseManager(database)
        manager.init()
        for m in members:
            # A /32 per member: wg-meshconf reuses each Address as that peer's AllowedIPs on every
            # other member, so a shared prefix would make the ranges overlap.
            manager.addpeer(m["name"], [f"{m['vpn_ip']}/32"], Endpoint=m["endpoint"], ListenPort=LISTEN_PORT)
        added = time.perf_counter() - w0
        manager.genconfig(None, output)
    work_s, cpu_s = time.perf_counter() - w0, time.process_time() - c0
    files = sorted(output.glob("*.conf"))
    texts = [f.read_text() for f in files]
    print(json.dumps({"work_s": work_s, "cpu_s": cpu_s, "files": len(files), "bytes": sum(len(t.encode()) for t in texts),
                      "peer_sections": sum(t.count("[Peer]") for t in texts), "steps_s": {"addpeer": added, "genconfig": work_s - added},
                      "version": metadata.version("wg-meshconf"), "cryptography": metadata.version("cryptography")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
