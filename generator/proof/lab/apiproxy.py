"""The local API endpoint in the lab (issue 14 item 6), only with several control planes.

What runs for real: each node's haproxy.cfg exactly as rendered into its user-data (read back
like wg0.conf and firewall.nft, proof/read/cluster.py), under the distribution's haproxy binary
inside that node's namespace (`haproxy -W -db`: master-worker in the foreground, its pid file in
the lab's temp folder; the host's haproxy.service is never touched), and the real wireguard-go
tunnels between the nodes. What is a stand-in: the API server on each control plane's VPN
address and API port (probe.py api_standin, a TCP listener that answers each connection with its
node name; its docstring says what it does not copy).

Checks, with real packets:

1. control: before haproxy runs, 127.0.0.1:7445 refuses on every node (nothing else answers
   there, so an answer later is haproxy's);
2. every node's rendered config passes `haproxy -c`, then haproxy starts and 127.0.0.1:7445
   answers on every node;
3. on every control plane, 127.0.0.1:7445 answers from its own stand-in, attempt after attempt
   (`balance first`: its own server first, the others `backup`);
4. the first control plane (the one that ran `kubeadm init`) has its stand-in stopped: every
   worker dialling 127.0.0.1:7445 again and again keeps getting answers, from the other control
   planes; its own endpoint answers from a backup; the switch is measured; the stand-in comes
   back and is used again;
5. each control plane in turn has its WireGuard interface taken down (the closest to a machine
   dying: its packets stop, nothing answers, no reset): the same on every worker, measured; the
   interface comes back (with the routes the kernel dropped with it) and the workers reach it again.

A measurement: the time from the take-down to the first answer from another control plane, the
failed attempts (an attempt in flight at the take-down counts), and the time to the end of the
last failed attempt, i.e. until haproxy took the control plane out of rotation (bounded by
out_of_rotation_limit, from the rendered health check and `timeout connect`). It ends after
STEADY answers in a row from the other control planes, or as soon as it has failed beyond doubt. Everything waits on progress with a
generous deadline (LIMIT), never a fixed sleep.
"""
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from dataclasses import dataclass, field

from ...facts import LOCAL_API_ADDRESS, LOCAL_API_CHECK_FALL, LOCAL_API_CHECK_INTERVAL_MS, LOCAL_API_PORT
from ..read.wgconf import parse_wg_quick
from .bed import PROBE, PYTHON, Check, Lab, wait_ready, wg_quick_routes

GROUP = "api endpoint"
LOCAL = f"{LOCAL_API_ADDRESS}:{LOCAL_API_PORT}"
LIMIT = 30.0          # seconds: generous deadline for anything to happen (haproxy acts within ~3 s)
STEADY = 12           # answers in a row from the other control planes that end a measurement
OWN = 10              # answers in a row a control plane's endpoint must give from itself
# Failed attempts allowed per take-down: haproxy marks a server down after FALL failed checks,
# INTERVAL apart; a client that meets the dead server meanwhile fails. Attempts are sequential,
# 50 ms apart; one toward a refusing server takes haproxy's retries (a turn-around of about 1 s
# each), one toward a silent server waits for `timeout connect`: a handful at most. The bound is
# well above a healthy run (1-2 seen) and below what a config without health checks gives (every
# third attempt, without end).
MAX_FAILED = 6


def out_of_rotation_limit(config: str) -> float:
    """Seconds after a take-down by which the last failed attempt must have ended: the server is
    marked down after (FALL + 1) x INTERVAL at most (FALL misses, the first check may have just
    started), and an attempt already waiting on the silent server ends at the rendered
    `timeout connect`; plus 2 s for a busy machine."""
    m = re.search(r"^\s*timeout\s+connect\s+(\d+)(ms|s)?\s*$", config, re.M)
    # Unset, haproxy has no connect timeout (it warns): then only LIMIT bounds it.
    connect = LIMIT if m is None else int(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return (LOCAL_API_CHECK_FALL + 1) * LOCAL_API_CHECK_INTERVAL_MS / 1000 + connect + 2


@dataclass
class Switch:
    """One control plane taken down, seen from one client's 127.0.0.1:7445."""
    down: str
    how: str                       # "API stand-in stopped" | "WireGuard down"
    client: str
    first_other: float | None      # s from the take-down to the first answer from another control plane
    out_of_rotation: float | None  # s to the end of the last failed attempt (0.0: none failed)
    failed: int
    attempts: int                  # attempts that ended after the take-down, until the measurement ended
    answered_by: list[str] = field(default_factory=list)   # who answered afterwards
    from_down: int = 0             # answers from the downed control plane to attempts started after the take-down
    steady: bool = False           # STEADY answers in a row from the others were reached within LIMIT
    failures: list[str] = field(default_factory=list)      # what the failed attempts got (closed, refused, timeout...)
    limit: float = 0.0             # out_of_rotation_limit of the client's config

    @property
    def ok(self) -> bool:
        return (self.steady and self.first_other is not None and self.failed <= MAX_FAILED and self.from_down == 0
                and self.out_of_rotation is not None and self.out_of_rotation <= self.limit)

    def text(self) -> str:
        if self.first_other is None:
            return f"no answer from another control plane within {LIMIT:.0f} s ({self.failed} failed of {self.attempts})"
        return (f"first answer from another after {self.first_other:.2f} s, {self.failed} failed of {self.attempts} attempts"
                f" ({', '.join(sorted(set(self.failures))) + ', ' if self.failures else ''}last failure {self.out_of_rotation:.2f} s after);"
                f" then {', '.join(self.answered_by)}"
                + ("" if self.steady else "; never steady") + (f"; {self.from_down} answers from {self.down}" if self.from_down else ""))


class Dialer:
    """probe.py dial in a node's namespace: 127.0.0.1:7445 again and again, one JSON line per attempt."""

    def __init__(self, lab: Lab, name: str, tag: str):
        self.name = name
        self.proc = lab.spawn(lab.ns_argv(lab.topo.site(name).ns, PYTHON, str(PROBE), "dial", LOCAL_API_ADDRESS,
                                          str(LOCAL_API_PORT)), f"{name}.dial-{tag}.log", stdout=subprocess.PIPE)
        self.attempts: list[dict] = []
        self._buf = b""

    def read(self, wait: float) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        r, _, _ = select.select([fd], [], [], wait)
        if r:
            chunk = os.read(fd, 65536)
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            self.attempts += [json.loads(line) for line in lines if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _wait(dialers: list[Dialer], done, limit: float = LIMIT) -> bool:
    """Read every dialer until done(dialer) holds for all, or the deadline."""
    deadline = time.monotonic() + limit
    while True:
        pending = [d for d in dialers if not done(d)]
        if not pending:
            return True
        if time.monotonic() > deadline or any(d.proc.poll() is not None for d in pending):
            return False
        for d in pending:
            d.read(0.05)


def _since(d: Dialer, t: float) -> list[dict]:
    return [a for a in d.attempts if a["start"] >= t]


def run_apiproxy_checks(lab: Lab) -> None:
    c = lab.cluster
    if not c.several_control_planes:
        return
    checks = lab.result.checks
    nodes = [s for s in lab.topo.sites if s.member.kind == "node" and s.name in lab.vpn_ip]
    cps = [n for n in c.control_planes if n in lab.vpn_ip]
    workers = [s.name for s in nodes if s.name not in cps]
    missing = [s.name for s in nodes if s.member.apiproxy is None]
    if missing:
        checks.append(Check(GROUP, f"haproxy.cfg of {', '.join(missing)}", "rendered (several control planes)", "missing", False))
        return

    # 1. control: nothing answers on the local endpoint before haproxy runs.
    dialers = [Dialer(lab, s.name, "control") for s in nodes]
    _wait(dialers, lambda d: len(d.attempts) >= 1, 10)
    for d in dialers:
        d.stop()
        got = d.attempts[0]["got"] if d.attempts else "no attempt"
        checks.append(Check(GROUP, f"{d.name}: {LOCAL} before haproxy runs (control)", "refused", got, got == "refused"))

    # 2. the stand-in API servers, then haproxy with each node's rendered config.
    standins = {n: _start_standin(lab, n) for n in cps}
    if None in standins.values():
        checks.append(Check(GROUP, "API stand-ins", "listening", "did not start", False))
        return
    if not all(_start_haproxy(lab, s) for s in nodes):
        return
    dialers = [Dialer(lab, s.name, "start") for s in nodes]
    up = _wait(dialers, lambda d: any(a["got"] in cps for a in d.attempts))
    for d in dialers:
        d.stop()
        got = next((a["got"] for a in d.attempts if a["got"] in cps), d.attempts[-1]["got"] if d.attempts else "no attempt")
        checks.append(Check(GROUP, f"{d.name}: {LOCAL} with haproxy running", "a control plane answers", got, got in cps))
    if not up:
        return

    # 3. a control plane's endpoint answers from its own API server while that is up.
    own = {n: Dialer(lab, n, "own") for n in cps}
    _wait(list(own.values()), lambda d: len(d.attempts) >= OWN)
    for n, d in own.items():
        d.stop()
        got = [a["got"] for a in d.attempts[:OWN]]
        checks.append(Check(GROUP, f"{n}: {LOCAL} while its API stand-in is up", f"{OWN} answers from {n}",
                            f"{sum(g == n for g in got)}/{len(got)} from {n}" + "".join(f", {g}" for g in sorted(set(got) - {n})),
                            len(got) == OWN and all(g == n for g in got)))

    if not workers:
        checks.append(Check(GROUP, "a control plane taken down", "a worker keeps getting answers", "no worker in the spec: not measured", True))
        return

    # 4. the first control plane's stand-in stopped (the API server process dying, the node up).
    first = cps[0]
    _take_down(lab, cps, first, "API stand-in stopped", workers + [first],
               down=lambda: _stop(standins[first]),
               back=lambda: standins.__setitem__(first, _start_standin(lab, first)))
    # 5. each control plane in turn loses its WireGuard interface (the machine gone from the VPN).
    for n in cps:
        _take_down(lab, cps, n, "WireGuard down", workers,
                   down=lambda n=n: lab.run(lab.ns_argv(lab.topo.site(n).ns, "ip", "link", "set", lab.iface, "down"),
                                            f"{n}: {lab.iface} down"),
                   back=lambda n=n: _wireguard_up(lab, n))


def _start_standin(lab: Lab, name: str) -> subprocess.Popen | None:
    # The node's listeners on the VPN-only ports (checks.py) hold 0.0.0.0:<API port>: stop them first.
    listener = lab.listeners.pop(name, None)
    if listener is not None:
        _stop(listener)
    site = lab.topo.site(name)
    proc = lab.spawn(lab.ns_argv(site.ns, PYTHON, str(PROBE), "api-standin", name, lab.vpn_ip[name], str(lab.cluster.api_port)),
                     f"{name}.api-standin.log", stdout=subprocess.PIPE, text=True)
    return proc if wait_ready(proc, 10) else None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait()


def _start_haproxy(lab: Lab, site) -> bool:
    d = lab.dir / site.name
    cfg = d / "haproxy.cfg"
    # Exactly as rendered: nothing in it needs changing inside a namespace (it binds loopback,
    # dials VPN addresses, drops to the haproxy user the package creates, and names no pid file,
    # socket, chroot or log target of the host). The pid file goes on the command line instead.
    cfg.write_text(site.member.apiproxy or "")
    check = subprocess.run(lab.ns_argv(site.ns, "haproxy", "-c", "-q", "-f", str(cfg)), capture_output=True, text=True)
    if check.returncode != 0:
        lab.result.checks.append(Check(GROUP, f"{site.name}: haproxy -c -f haproxy.cfg", "valid",
                                       (check.stderr.strip() or check.stdout.strip())[-300:], False))
        return False
    lab.spawn(lab.ns_argv(site.ns, "haproxy", "-W", "-db", "-f", str(cfg), "-p", str(d / "haproxy.pid")), f"{site.name}.haproxy.log")
    return True


def _wireguard_up(lab: Lab, name: str) -> None:
    """The interface back up, and the AllowedIPs routes the kernel removed when it went down."""
    site = lab.topo.site(name)
    cfg = parse_wg_quick(site.member.wg_conf)
    lines = [f"ip link set {lab.iface} up"] + [f"ip route replace {net} dev {lab.iface}" for net in wg_quick_routes(cfg)]
    lab.run(lab.ns_argv(site.ns, "sh", "-ec", "\n".join(lines)), f"{name}: {lab.iface} up")


def _take_down(lab: Lab, cps: list[str], down_cp: str, how: str, clients: list[str], down, back) -> None:
    checks = lab.result.checks
    others = [n for n in cps if n != down_cp]
    dialers = [Dialer(lab, n, f"{down_cp}-{how.split()[0].lower()}") for n in clients]
    try:
        # In rotation before: a worker gets an answer from down_cp (round robin), down_cp itself from itself.
        t_mark = time.monotonic()
        if not _wait(dialers, lambda d: any(a["got"] == down_cp for a in _since(d, t_mark))):
            checks.append(Check(GROUP, f"{down_cp} {how}", f"{down_cp} answers every client first", "it did not", False))
            return
        t0 = time.monotonic()
        down()

        limits = {d.name: out_of_rotation_limit(lab.topo.site(d.name).member.apiproxy or "") for d in dialers}

        def settled(d: Dialer) -> bool:
            after = [a for a in d.attempts if a["end"] > t0]
            return len(after) >= STEADY and all(a["got"] in others for a in after[-STEADY:])

        def decided(d: Dialer) -> bool:
            """Steady, or failed beyond doubt already (no use waiting for LIMIT)."""
            failed = [a for a in d.attempts if a["end"] > t0 and a["got"] not in cps]
            return settled(d) or len(failed) > MAX_FAILED or any(a["end"] - t0 > limits[d.name] for a in failed)

        _wait(dialers, decided)
        for d in dialers:
            after = [a for a in d.attempts if a["end"] > t0]
            failed = [a for a in after if a["got"] not in cps]
            answers = [a for a in after if a["got"] in others]
            sw = Switch(down_cp, how, d.name,
                        first_other=round(min(a["end"] for a in answers) - t0, 3) if answers else None,
                        out_of_rotation=round(max(a["end"] for a in failed) - t0, 3) if failed else 0.0,
                        failed=len(failed), attempts=len(after),
                        answered_by=sorted({a["got"] for a in answers}),
                        from_down=sum(1 for a in after if a["got"] == down_cp and a["start"] > t0),
                        steady=settled(d), failures=[a["got"] for a in failed], limit=limits[d.name])
            lab.result.api_switches.append(sw)
            checks.append(Check(GROUP, f"{down_cp} {how}: {d.name} -> {LOCAL}",
                                f"answers from {' or '.join(others)}; at most {MAX_FAILED} failed, none after {sw.limit:.0f} s",
                                sw.text(), sw.ok))
        # Back: every client is answered by down_cp again (a worker in its rotation, down_cp by itself).
        back()
        t1 = time.monotonic()
        again = _wait(dialers, lambda d: any(a["got"] == down_cp for a in _since(d, t1)))
        checks.append(Check(GROUP, f"{down_cp} back ({how.replace('stopped', 'restarted').replace('down', 'up')})",
                            f"{', '.join(clients)} answered by {down_cp} again",
                            f"after {time.monotonic() - t1:.1f} s" if again else
                            f"not within {LIMIT:.0f} s: " + ", ".join(d.name for d in dialers
                                                                      if not any(a["got"] == down_cp for a in _since(d, t1))),
                            again))
    finally:
        for d in dialers:
            d.stop()
