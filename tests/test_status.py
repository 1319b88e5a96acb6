"""`wgkube status` and the status endpoint every node carries (issue 15).

- the rendered reply script, run on made-up first-boot states, prints JSON that `wgkube status`
  reads right (done, running, failed with its message, waiting); it never prints the private key;
- the first-boot script still writes the log lines the reply script reads;
- shellcheck on the script, `systemd-analyze verify` on the socket and its service (marker tools);
- the lab (marker lab): the rendered reply command served in each node's namespace on the
  address and port of the rendered socket unit, `wgkube status` from the laptop's namespace: a
  healthy hub, a worker whose phase failed, a worker that is down; the public side shows no
  status port.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, need, need_root, wgkube
from generator.artifacts import cloudinit
from generator.facts import STATUS_PORT
from generator.proof import status as st

SCRIPT = "/usr/local/sbin/wgkube-status"
SOCKET = "/etc/systemd/system/wgkube-status.socket"
SERVICE = "/etc/systemd/system/wgkube-status@.service"
PHASES = ["preflight", "packages", "firewall", "wireguard", "handshake", "api", "kubeadm", "cni", "done"]


def node_files(out: Path, node: str) -> dict[str, str]:
    return {p: c.decode() for p, (c, _m) in cloudinit.extract_files((out / "nodes" / node / "user-data").read_bytes()).items()}


def make_state(root: Path, done: list[str], log: str, units: dict[str, str] | None = None) -> Path:
    """A node's first-boot state as the first-boot script leaves it, under root/."""
    phases = root / "phases"
    phases.mkdir(parents=True)
    for i, p in enumerate(done):
        (phases / p).write_text(f"2026-12-05T07:0{i}:00Z\n")
        os.utime(phases / p, (1_800_000_000 + i, 1_800_000_000 + i))
    (root / "log").write_text(log)
    stub = root / "bin"
    stub.mkdir()
    states = units or {}
    cases = "".join(f'  {u}) echo {s};;\n' for u, s in states.items())
    (stub / "systemctl").write_text(f'#!/bin/sh\nshift\nfor u in "$@"; do\ncase "$u" in\n{cases}  *) echo inactive;;\nesac\ndone\n')
    (stub / "systemctl").chmod(0o755)
    (stub / "wg").write_text("#!/bin/sh\nprintf 'PRIVATEKEYxx=\\tPUBKEY=\\t51820\\toff\\n"
                             "PEERKEY=\\t(none)\\t203.0.113.10:51820\\t10.88.0.0/24,10.244.0.0/16\\t1800000000\\t1234\\t5678\\t25\\n'\n")
    (stub / "wg").chmod(0o755)
    return root


def log_of(done: list[str], running: str | None = None, failed: tuple[str, str] | None = None, node: str = "worker-1") -> str:
    lines = ["some package manager output"]
    for p in done:
        lines += [f"wgkube-firstboot: phase {p}: start", "noise", f"wgkube-firstboot: phase {p}: done"]
    if running:
        lines.append(f"wgkube-firstboot: phase {running}: start")
    if failed:
        lines.append(f"wgkube-firstboot: FAILED in phase {failed[0]} on {node}: {failed[1]}")
        lines.append("wgkube-firstboot: log: /var/log/wgkube-firstboot.log. Fix the cause and reboot")
    return "\n".join(lines) + "\n"


def run_reply(script: str, root: Path) -> dict:
    """The rendered script with its two paths pointed at root/ (the lab runs it unchanged)."""
    text = script.replace("/var/lib/wgkube/phases", str(root / "phases")).replace("/var/log/wgkube-firstboot.log", str(root / "log"))
    proc = subprocess.run(["sh", "-c", text], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    assert "PRIVATEKEY" not in proc.stdout
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", ["done", "running", "failed", "waiting", "stopped"])
def test_reply_script_states_read_back(example_out, tmp_path, case):
    script = node_files(example_out, "worker-1")[SCRIPT]
    assert script.startswith("#!/bin/sh\n")
    units = {"kubelet": "active", "crio": "active", "wgkube-firstboot": "inactive"}
    if case == "done":
        root = make_state(tmp_path, PHASES, log_of(PHASES), units)
    elif case == "running":
        root = make_state(tmp_path, PHASES[:5], log_of(PHASES[:5], running="api"), {**units, "wgkube-firstboot": "activating"})
    elif case == "failed":
        root = make_state(tmp_path, PHASES[:5], log_of(PHASES[:5], failed=("api", 'the API at 10.88.0.1:6443 "did not" answer \\ within 3600s')),
                          {**units, "wgkube-firstboot": "failed"})
    elif case == "stopped":
        root = make_state(tmp_path, PHASES[:2], log_of(PHASES[:2], running="firewall"), {**units, "wgkube-firstboot": "failed"})
    else:
        root = make_state(tmp_path, [], "", units)
    reply = run_reply(script, root)
    assert reply["schema"] == 1 and reply["node"] == "worker-1" and reply["vpn_ip"] == "10.88.0.2"
    assert reply["units"]["kubelet"] == "active" and "wg-quick@wg0" in reply["units"]
    assert reply["peers"] == [{"public_key": "PEERKEY=", "endpoint": "203.0.113.10:51820",
                               "allowed_ips": "10.88.0.0/24,10.244.0.0/16", "latest_handshake": 1800000000,
                               "rx": 1234, "tx": 5678}]
    row = st.Row("worker-1", "node", "worker", "10.88.0.2")
    st.interpret(row, reply, {"PEERKEY=": "hub"}, {}, "10.88.0.0/24")
    assert row.peers[0].name == "hub" and row.peers[0].catch_all
    if case == "done":
        assert row.state == "done" and [p for p, _ in row.phases_done] == PHASES
    elif case == "running":
        assert (row.state, row.phase) == ("running", "api")
    elif case == "failed":
        assert (row.state, row.phase) == ("failed", "api")
        assert row.message == 'the API at 10.88.0.1:6443 "did not" answer \\ within 3600s'
        assert row.phase_text.startswith("failed api: the API at")
    elif case == "stopped":
        assert (row.state, row.phase) == ("failed", "firewall") and "wgkube-firstboot.service failed" in row.message
    else:
        assert row.state == "waiting" and reply["firstboot"] == {"running": None, "failed": None, "message": None}


def test_first_boot_writes_the_lines_the_status_reads(example_out):
    """The reply script parses these lines of the first-boot log; keep them when the script changes."""
    for node in ("hub", "worker-1"):
        fb = node_files(example_out, node)["/usr/local/sbin/wgkube-firstboot"]
        assert "printf 'wgkube-firstboot: %s\\n'" in fb
        for line in ('say "phase $1: start"', 'say "phase $1: done"', 'say "FAILED in phase $PHASE on $NODE: $*"',
                     'STATE=/var/lib/wgkube/phases', 'LOG=/var/log/wgkube-firstboot.log'):
            assert line in fb, line


def test_endpoint_files_and_firewall_rule(example_out):
    for node, ip in (("hub", "10.88.0.1"), ("worker-1", "10.88.0.2"), ("homelab-1", "10.88.0.3")):
        files = node_files(example_out, node)
        sock = files[SOCKET]
        assert f"ListenStream={ip}:{STATUS_PORT}\n" in sock and "FreeBind=yes" in sock and "Accept=yes" in sock
        assert "ExecStart=/usr/local/sbin/wgkube-status\n" in files[SERVICE]
        rules = [line.strip() for line in files["/etc/wgkube/firewall.nft"].splitlines() if f"dport {STATUS_PORT}" in line]
        assert rules == [f'iifname "wg0" ip saddr 10.88.0.0/24 tcp dport {STATUS_PORT} accept comment "wgkube status: VPN members only"']
    ud = (example_out / "nodes" / "worker-1" / "user-data").read_bytes()
    assert b"wgkube-status.socket" in ud.split(b"runcmd:")[1]


def test_endpoint_is_opt_in_so_older_specs_render_as_before(hub_example_out):
    """A spec without status_endpoint (written before issue 15) gets no status files, no runcmd
    line, no firewall rule, and `wgkube status` says how to turn the endpoint on (exit 2)."""
    for node in ("hub", "worker-1", "homelab-1"):
        ud = (hub_example_out / "nodes" / node / "user-data").read_bytes()
        data = gzip.decompress(ud) if ud[:2] == b"\x1f\x8b" else ud
        files = cloudinit.extract_files(data) if hasattr(cloudinit, "extract_files") else None
        assert b"wgkube-status" not in data and str(STATUS_PORT).encode() not in data, node
        if files is not None:
            assert SOCKET not in files and SERVICE not in files
    assert "status_endpoint" not in json.loads((hub_example_out / "plan.json").read_text())
    proc = wgkube("status", str(hub_example_out), "--no-api", "--timeout", "0.3", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "status_endpoint: true" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.tools
def test_status_files_pass_shellcheck_and_systemd_analyze(example_out, tmp_path):
    files = node_files(example_out, "worker-1")
    (tmp_path / "wgkube-status").write_text(files[SCRIPT])
    proc = subprocess.run([need("shellcheck"), "-s", "sh", str(tmp_path / "wgkube-status")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    # The socket and its template side by side, as in /etc/systemd/system/.
    units = tmp_path / "units"
    units.mkdir()
    for path in (SOCKET, SERVICE):
        (units / Path(path).name).write_text(files[path])
    analyze = need("systemd-analyze")
    proc = subprocess.run([analyze, "verify", "--man=no", str(units / "wgkube-status.socket")], capture_output=True, text=True)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr
    proc = subprocess.run([analyze, "verify", "--man=no", str(units / "wgkube-status@.service")], capture_output=True, text=True)
    # The script is not installed on this test machine; anything else is a unit error.
    lines = [line for line in proc.stderr.splitlines() if line.strip()
             and "Command /usr/local/sbin/wgkube-status is not executable" not in line]
    assert not lines, proc.stderr
    # And the verifier does read them: a misspelt key is reported.
    (units / "wgkube-status.socket").write_text(files[SOCKET].replace("FreeBind=", "FreeBnd="))
    proc = subprocess.run([analyze, "verify", "--man=no", str(units / "wgkube-status.socket")], capture_output=True, text=True)
    assert "Unknown key 'FreeBnd'" in proc.stderr


# --------------------------------------------------------------------------- the client side


def serve_once(reply: bytes) -> tuple[int, threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        conn.sendall(reply)
        conn.close()
        srv.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t


def test_fetch_reasons():
    port, t = serve_once(b'{"schema":1,"node":"x"}\n')
    reply, error, _ = st.fetch("127.0.0.1", port, 2)
    t.join(2)
    assert reply == {"schema": 1, "node": "x"} and error is None
    port, t = serve_once(b"SSH-2.0-OpenSSH\r\n")
    assert st.fetch("127.0.0.1", port, 2)[1].startswith("bad reply")
    t.join(2)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    closed = free.getsockname()[1]
    free.close()
    assert st.fetch("127.0.0.1", closed, 2)[1] == "refused"


def test_status_without_the_vpn_says_so_and_keeps_names_whole(example_out):
    """No tunnel on this machine: every node times out (or has no route), the hint says why."""
    proc = wgkube("status", str(example_out), "--timeout", "0.3", "--no-api", "--json", check=False)
    assert proc.returncode == 0, proc.stderr   # nothing failed: unreachable is not failed
    report = json.loads(proc.stdout)
    assert report["schema"] == 1 and report["cluster"] == "demo" and report["failed"] == []
    rows = {m["name"]: m for m in report["members"]}
    assert set(rows) == {"hub", "worker-1", "homelab-1", "laptop"}
    for n in ("hub", "worker-1", "homelab-1"):
        assert rows[n]["reachable"] is False and rows[n]["error"] in ("timeout", "no route") and rows[n]["hint"]
    assert rows["laptop"]["reachable"] is None
    narrow = subprocess.run([sys.executable, "-m", "generator", "status", str(example_out), "--timeout", "0.3", "--no-api"],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "80", "PYTHONPATH": str(REPO)})
    for line in narrow.stdout.splitlines():
        assert len(line) <= 80, line
    for word in ("homelab-1  10.88.0.3", "worker-1  10.88.0.2", "hub  10.88.0.1", "laptop  10.88.0.4"):
        assert word in narrow.stdout, narrow.stdout


# --------------------------------------------------------------------------- the lab


def unit_value(unit: str, key: str) -> str:
    return re.search(rf"^{key}=(.*)$", unit, re.M).group(1)


@pytest.mark.lab
def test_status_in_the_lab(example_out, tmp_path):
    """The rendered reply in each node's namespace, `wgkube status` from the laptop's."""
    need_root("network namespaces")
    for tool in ("ip", "nft", "wg", "wg-quick", "nsenter", "unshare", "sysctl", "ss"):
        need(tool)
    need("wireguard-go", "userspace WireGuard")
    socat = need("socat", "stands in for systemd's Accept=yes socket in the lab")
    from generator.proof.lab.bed import Lab, preflight
    from generator.proof.read import cluster as rendered

    preflight()
    lab = Lab(rendered.from_out_dir(example_out))
    states = {
        "hub": (PHASES, log_of(PHASES, node="hub"), {"kubelet": "active", "crio": "active", "wgkube-firstboot": "inactive"}),
        "worker-1": (PHASES[:5], log_of(PHASES[:5], failed=("api", "the API at 10.88.0.1:6443 did not answer over the VPN within 3600s")),
                     {"kubelet": "activating", "crio": "active", "wgkube-firstboot": "failed"}),
        "homelab-1": (PHASES, log_of(PHASES, node="homelab-1"), {"kubelet": "active", "crio": "active"}),
    }
    try:
        lab.build()
        for name, (done, log, units) in states.items():
            files = node_files(example_out, name)
            root = make_state(tmp_path / name, done, log, units)
            (root / "bin" / "wg").unlink()       # the real wg, inside wireguard-go's mount namespace
            (root / "wgkube-status").write_text(files[SCRIPT])
            (root / "wgkube-status").chmod(0o755)
            listen = unit_value(files[SOCKET], "ListenStream")
            address, port = listen.rsplit(":", 1)
            command = unit_value(files[SERVICE], "ExecStart")
            # Private mounts inside the node's own mount namespace (never the host's): the made-up
            # state at the paths the script reads, then socat accepting like Accept=yes would.
            script = "\n".join([
                f"mount -t tmpfs none /var/lib && mkdir -p /var/lib/wgkube/phases && mount --bind {root}/phases /var/lib/wgkube/phases",
                f"mount -t tmpfs none /var/log && ln -s {root}/log /var/log/wgkube-firstboot.log",
                f"mount -t tmpfs none /usr/local/sbin && ln -s {root}/wgkube-status /usr/local/sbin/wgkube-status",
                f"export PATH={root}/bin:$PATH",
                f"exec {socat} TCP-LISTEN:{port},bind={address},fork,reuseaddr SYSTEM:'{command}'",
            ])
            lab.spawn(["nsenter", "-t", str(lab.wg_pid[name]), "-m", "-n", "unshare", "--mount", "--propagation", "private",
                       "sh", "-ec", script], f"{name}.status.log")
        for name in states:
            ns = lab.topo.site(name).ns
            deadline = time.monotonic() + 60   # a cap, not a wall: it normally listens within 0.1 s
            while not subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "ss", "-Hltn", f"sport = :{STATUS_PORT}"],
                                     capture_output=True, text=True).stdout.strip():
                assert time.monotonic() < deadline, f"{name}: the status responder did not start"
                time.sleep(0.05)
        # homelab-1 goes down: its WireGuard stops (our wireguard-go, by PID).
        wg_proc = next(p for p in lab.procs if p.pid == lab.wg_pid["homelab-1"])
        wg_proc.terminate()
        wg_proc.wait(5)

        laptop = lab.topo.site("laptop").ns
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
        t0 = time.monotonic()
        proc = subprocess.run(["nsenter", f"--net=/run/netns/{laptop}", sys.executable, "-m", "generator", "status",
                               str(example_out), "--json", "--no-api", "--timeout", "2"], capture_output=True, text=True, env=env)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 1, proc.stdout + proc.stderr   # a member failed
        report = json.loads(proc.stdout)
        rows = {m["name"]: m for m in report["members"]}
        assert report["failed"] == ["worker-1"]
        hub = rows["hub"]
        assert hub["reachable"] and hub["state"] == "done" and [p["phase"] for p in hub["phases_done"]] == PHASES
        assert hub["units"]["kubelet"] == "active"
        assert {p["name"] for p in hub["peers"]} == {"worker-1", "homelab-1", "laptop"}
        laptop_peer = next(p for p in hub["peers"] if p["name"] == "laptop")
        assert laptop_peer["handshake_age"] is not None and laptop_peer["handshake_age"] < 60 and laptop_peer["rx"] > 0
        w1 = rows["worker-1"]
        assert w1["reachable"] and (w1["state"], w1["phase"]) == ("failed", "api")
        assert w1["message"] == "the API at 10.88.0.1:6443 did not answer over the VPN within 3600s"
        # The example is a mesh: public worker-1 peers with every member by its /32, no catch-all.
        assert {p["name"] for p in w1["peers"]} == {"hub", "homelab-1", "laptop"}
        assert not any(p["catch_all"] for p in w1["peers"]), w1["peers"]
        assert rows["homelab-1"]["reachable"] is False and rows["homelab-1"]["error"] == "timeout"
        assert "homelab-1" in rows["homelab-1"]["hint"]
        print(f"\nstatus of 3 nodes from the laptop's namespace: {elapsed:.2f} s (one down: its timeout is 2 s); "
              f"latency hub {hub['latency_ms']} ms, worker-1 {w1['latency_ms']} ms")

        # The table, as a person reads it (100 columns: the README shows it).
        text = subprocess.run(["nsenter", f"--net=/run/netns/{laptop}", sys.executable, "-m", "generator", "status",
                               str(example_out), "--no-api", "--timeout", "2"], capture_output=True, text=True,
                              env={**env, "COLUMNS": "100"}).stdout
        print(text)
        assert re.search(r"│ worker-1\s+│ 10\.88\.0\.2\s+│ ok \d+ ms\s+│ failed api\s+│", text), text
        assert "worker-1 failed in phase api: the API at 10.88.0.1:6443 did not answer over the VPN within 3600s" in text
        assert re.search(r"│ hub\s+│ 10\.88\.0\.1\s+│ ok \d+ ms\s+│ done", text), text
        assert re.search(r"│ homelab-1\s+│ 10\.88\.0\.3\s+│ NO: timeout", text), text
        assert "failed: worker-1" in text

        # The same live state on the topology: tunnels by last handshake, the down and failed members marked.
        graph = subprocess.run(["nsenter", f"--net=/run/netns/{laptop}", sys.executable, "-m", "generator", "graph",
                                str(example_out), "--live", "--text", "--timeout", "2"], capture_output=True, text=True, env=env)
        assert graph.returncode == 0, graph.stderr
        assert "homelab-1  10.88.0.3  (worker, behind NAT)  [unreachable: timeout]" in graph.stdout, graph.stdout
        assert "worker-1  10.88.0.2  (worker, listens UDP 51820 on 198.51.100.20)  [failed api: the API at" in graph.stdout
        assert re.search(r"laptop .*\n      -> hub  \(UDP 51820, keepalive 25s, handshake \d+s ago\)", graph.stdout), graph.stdout

        # Nothing new on the public side: the hub's and worker-1's public addresses, from the internet.
        for name in ("hub", "worker-1"):
            site = lab.topo.site(name)
            probe = subprocess.run(["nsenter", f"--net=/run/netns/{lab.topo.internet}", sys.executable, "-c",
                                    "import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), 1.5)\n"
                                    " print('connected')\nexcept ConnectionRefusedError: print('refused')\n"
                                    "except OSError: print('timeout')", str(site.address), str(STATUS_PORT)],
                                   capture_output=True, text=True)
            assert probe.stdout.strip() == "timeout", (name, probe.stdout, probe.stderr)
    finally:
        lab.cleanup()


def test_watch_refreshes_until_ctrl_c(example_out, tmp_path):
    """--watch draws, redraws every --interval, and ends cleanly on Ctrl-C (exit as the last state)."""
    import signal
    log = tmp_path / "watch.out"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "generator", "status", str(example_out), "--watch", "--interval", "1",
                                 "--timeout", "0.2", "--no-api"], stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "COLUMNS": "120", "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 60
        while log.read_text().count("no member failed") < 2:     # drawn, then drawn again
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, log.read_text()
    assert "homelab-1" in log.read_text() and "Traceback" not in log.read_text()
