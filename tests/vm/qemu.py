"""Host side of the wgkube VM boot test: qemu VMs, vde switches, a NAT namespace.

No pytest dependency: tests/test_vm.py drives it, and ``python3 tests/vm/qemu.py
smoke`` runs a self-check of image + harness with hand-written NoCloud seeds.

What it runs, all tracked by PID and torn down by :meth:`Lab.close` (also on an
exception, Ctrl-C, SIGTERM, and through PR_SET_PDEATHSIG if this process dies):

* one ``vde_switch`` per network segment, its socket in a private temp dir;
* a NAT gateway: a network namespace created here (``ip netns add``) that plugs
  into the switches with ``vde_plug2tap`` run *inside* the namespace, so its
  taps never exist on the host, and masquerades one segment behind another
  with nftables. Nothing on the host's own network is touched;
* VMs: ``qemu-system-x86_64`` under TCG (KVM does not work on the test
  machines), direct kernel boot of the image from build_image.sh through a
  copy-on-write qcow2 overlay, the NoCloud seed ISO as a CD-ROM, one
  virtio-net NIC per segment with a fixed MAC, serial 0 -> console.log,
  serial 1 -> report.log (the guest reporter, see guest/wgkube-test-reporter),
  a unix-socket monitor (power off: ``quit``) and the qemu guest agent
  (in-guest reboot).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TypeVar

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build_image.sh"
REQUIRED_TOOLS = (
    "qemu-system-x86_64",
    "qemu-img",
    "debootstrap",
    "mke2fs",
    "vde_switch",
    "vde_plug2tap",
    "ip",
    "nft",
)

T = TypeVar("T")


class VMTestError(RuntimeError):
    """A VM, switch or namespace did not do what the test needed."""


def missing_tools() -> list[str]:
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


def log(msg: str) -> None:
    print(f"[vm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- image


@dataclass(frozen=True)
class Image:
    dir: Path
    build_seconds: float
    cached: bool

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs.img"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"


def _build_progress(cache_root: Path) -> tuple:
    """What grows while an image is built, ours or a concurrent run's we wait for (flock): the
    build directories' logs and file counts, and the finished images."""
    marks = []
    for d in sorted(cache_root.glob("build.*")):
        try:
            # debootstrap.log, initramfs.log, rootfs.img (mke2fs) grow; rootfs/ changes as it fills.
            marks += [(f.name, f.stat().st_size, f.stat().st_mtime) for f in d.iterdir()]
            marks += [(c.name, c.stat().st_mtime) for c in (d / "rootfs").iterdir()] if (d / "rootfs").is_dir() else []
        except OSError:
            continue
    marks += [d.parent.name for d in cache_root.glob("*/DONE")]
    # CPU time of every process building an image (debootstrap, dpkg and update-initramfs run
    # chrooted into a build directory; mke2fs reads one): busy for minutes without a new file.
    ticks = 0
    root = str(cache_root)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            chroot = os.readlink(f"/proc/{pid}/root")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if chroot.startswith(root) or root.encode() in cmd or b"build_image.sh" in cmd:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(stat[11]) + int(stat[12])  # utime + stime
        except (OSError, ValueError, IndexError):
            continue
    marks.append(ticks)
    return tuple(marks)


def build_image(stall: float = 300, cap: float = 2400) -> Image:
    """Run build_image.sh (a no-op when the cached image matches the recipe).

    No fixed wall: on a busy machine (or behind another run's build, which holds the cache lock)
    debootstrap is slow but makes progress. It fails when nothing moved for `stall` seconds, or
    at the outer cap."""
    t0 = time.monotonic()
    cache_root = Path(os.environ.get("WGKUBE_VM_CACHE", "/var/cache/wgkube-vm"))
    err_path = Path(tempfile.mkstemp(prefix="wgkube-vm-build-", suffix=".log")[1])
    try:
        with open(err_path, "w") as err:
            proc = subprocess.Popen(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=err, text=True)
            last, moved = None, time.monotonic()
            while proc.poll() is None:
                mark = (err_path.stat().st_size, _build_progress(cache_root))
                now = time.monotonic()
                if mark != last:
                    last, moved = mark, now
                elif now - moved > stall or now - t0 > cap:
                    proc.kill()
                    proc.wait()
                    raise VMTestError(f"build_image.sh made no progress for {now - moved:.0f} s "
                                      f"({now - t0:.0f} s in all):\n{err_path.read_text()[-4000:]}")
                time.sleep(2)
            stdout = proc.stdout.read() if proc.stdout else ""
        stderr = err_path.read_text()
    finally:
        err_path.unlink(missing_ok=True)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise VMTestError(f"build_image.sh failed (rc={proc.returncode}):\n{stderr[-4000:]}")
    out = Path(stdout.strip().splitlines()[-1])
    return Image(dir=out, build_seconds=took, cached="cached image" in stderr)


def make_seed_iso(files: dict[str, str | bytes], out: Path) -> Path:
    """NoCloud seed (volume label cidata) from {name: content}."""
    src = Path(tempfile.mkdtemp(prefix="seed-", dir=out.parent))
    try:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            (src / name).write_bytes(data)
        subprocess.run(
            ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-V", "cidata", "-J", "-R", str(src)],
            check=True,
            capture_output=True,
        )
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- reports


BEGIN_RE = re.compile(r"==WGKUBE-REPORT-BEGIN== (.*)$")
END_RE = re.compile(r"==WGKUBE-REPORT-END== seq=(\d+)(?: took=([0-9.]+))?")
SECTION_RE = re.compile(r"^--- (\S+) ---$")


@dataclass
class Report:
    """One block the guest reporter wrote to its second serial port."""

    header: dict[str, str]
    sections: dict[str, list[str]] = field(default_factory=dict)
    took: float | None = None

    # header ------------------------------------------------------------
    @property
    def seq(self) -> int:
        return int(self.header.get("seq", 0))

    @property
    def boot_id(self) -> str:
        return self.header.get("boot_id", "")

    @property
    def bootcount(self) -> int:
        return int(self.header.get("bootcount", 0))

    @property
    def time(self) -> float:
        return float(self.header.get("time", 0))

    @property
    def uptime(self) -> float:
        return float(self.header.get("uptime", 0))

    @property
    def boot_time(self) -> float:
        """Guest wall clock at kernel start."""
        return self.time - self.uptime

    @property
    def host(self) -> str:
        return self.header.get("host", "")

    def text(self, section: str) -> str:
        return "\n".join(self.sections.get(section, []))

    # phases --------------------------------------------------------------
    @property
    def phases(self) -> dict[str, float]:
        """Phase sentinel name -> mtime (epoch), ordered by mtime."""
        out = []
        for line in self.sections.get("phases", []):
            parts = line.split()
            if len(parts) >= 2:
                try:
                    out.append((parts[0], float(parts[1])))
                except ValueError:
                    continue
        return dict(sorted(out, key=lambda kv: kv[1]))

    # cloud-init ------------------------------------------------------------
    @property
    def cloud_init_finished(self) -> bool:
        return "cloud-init-result" in self.sections

    @property
    def cloud_init_result(self) -> dict:
        lines = self.sections.get("cloud-init-result", [])
        raw = lines[0].strip() if lines else ""
        return json.loads(raw) if raw.startswith("{") else {}

    def _kv(self, section: str, key: str) -> str | None:
        for line in self.sections.get(section, []):
            if line.startswith(key + ": "):
                return line[len(key) + 2 :].strip()
        return None

    @property
    def user_data_sha256(self) -> str | None:
        return self._kv("cloud-init-result", "user-data-sha256")

    @property
    def boot_finished(self) -> str | None:
        return self._kv("cloud-init-result", "boot-finished")

    @property
    def instance_id(self) -> str | None:
        return self._kv("cloud-init-result", "instance-id")

    @property
    def cloud_init_problems(self) -> list[str]:
        return [line for line in self.sections.get("cloud-init-log-problems", []) if line.strip()]

    # systemd ---------------------------------------------------------------
    @property
    def units(self) -> dict[str, dict[str, str]]:
        units: dict[str, dict[str, str]] = {}
        cur: dict[str, str] = {}
        for line in self.sections.get("units", []) + [""]:
            if not line.strip():
                if cur.get("Id"):
                    units[cur["Id"]] = cur
                cur = {}
                continue
            key, _, value = line.partition("=")
            cur[key] = value
        return units

    @property
    def failed_units(self) -> list[str]:
        return [line.split()[0] for line in self.sections.get("units-failed", []) if line.strip()]

    # network ---------------------------------------------------------------
    @property
    def addresses(self) -> dict[str, list[str]]:
        """ifname -> ['10.77.0.2/24', ...] (IPv4 and IPv6)."""
        out: dict[str, list[str]] = {}
        for line in self.sections.get("ip", []):
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("inet", "inet6"):
                out.setdefault(parts[1], []).append(parts[3])
        return out

    @property
    def links(self) -> dict[str, dict[str, str]]:
        """ifname -> {'mtu': '1420', 'flags': 'UP,...', 'state': 'UNKNOWN'}."""
        out: dict[str, dict[str, str]] = {}
        for line in self.sections.get("ip", []):
            m = re.match(r"^\d+: ([^:@]+)(?:@\S+)?: <([^>]*)> (.*)$", line)
            if not m:
                continue
            rest = m.group(3).split()
            info = {"flags": m.group(2)}
            for i in range(0, len(rest) - 1):
                if rest[i] in ("mtu", "state", "qdisc"):
                    info[rest[i]] = rest[i + 1]
            out[m.group(1)] = info
        return out

    @property
    def wg(self) -> dict[str, dict]:
        """`wg show all dump` -> {ifname: {'listen_port':, 'public_key':, 'peers': {pubkey: {...}}}}."""
        out: dict[str, dict] = {}
        for line in self.sections.get("wg", []):
            f = line.split("\t")
            if len(f) == 5:
                out[f[0]] = {"public_key": f[2], "listen_port": f[3], "fwmark": f[4], "peers": {}}
            elif len(f) == 9 and f[0] in out:
                out[f[0]]["peers"][f[1]] = {
                    "endpoint": f[3],
                    "allowed_ips": f[4],
                    "latest_handshake": int(f[5]) if f[5].isdigit() else 0,
                    "rx": int(f[6]) if f[6].isdigit() else 0,
                    "tx": int(f[7]) if f[7].isdigit() else 0,
                    "keepalive": f[8],
                }
        return out

    @property
    def ping(self) -> dict[str, str]:
        out = {}
        for line in self.sections.get("ping", []):
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = parts[1]
        return out

    @property
    def sysctls(self) -> dict[str, tuple[str, str]]:
        """Rendered sysctl.d keys -> (wanted, in effect), from section kernel-settings."""
        out = {}
        for line in self.sections.get("kernel-settings", []):
            m = re.match(r"^sysctl (\S+) want=(\S*) have=(\S*)$", line)
            if m:
                out[m.group(1)] = (m.group(2), m.group(3))
        return out

    @property
    def modules(self) -> dict[str, bool]:
        """Rendered modules-load.d modules -> loaded?"""
        out = {}
        for line in self.sections.get("kernel-settings", []):
            parts = line.split()
            if len(parts) == 3 and parts[0] == "module":
                out[parts[1]] = parts[2] == "loaded"
        return out

    @property
    def pki(self) -> dict[str, str]:
        """/etc/kubernetes/pki file (relative) -> sha256, from section pki."""
        out = {}
        for line in self.sections.get("pki", []):
            parts = line.split()
            if len(parts) == 2 and len(parts[0]) == 64:
                out[parts[1]] = parts[0]
        return out

    @property
    def ordering_cycles(self) -> list[str]:
        """systemd's 'ordering cycle' journal lines of this boot (empty when there was none)."""
        return [line for line in self.sections.get("ordering-cycles", []) if line.strip()]

    def unit_failed(self, unit: str) -> bool:
        return self.units.get(unit, {}).get("ActiveState") == "failed"

    # stand-ins ---------------------------------------------------------------
    @property
    def standin_records(self) -> list[dict]:
        out = []
        for line in self.sections.get("standin", []):
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def standin_calls(self, tool: str, sub: str | None = None) -> list[dict]:
        return [
            r
            for r in self.standin_records
            if r.get("tool") == tool and "event" not in r and (sub is None or r.get("sub") == sub)
        ]

    def standin_events(self, event: str) -> list[dict]:
        return [r for r in self.standin_records if r.get("event") == event]


def parse_reports(text: str) -> list[Report]:
    """All complete report blocks in a serial log, oldest first."""
    reports: list[Report] = []
    cur: Report | None = None
    section: str | None = None
    for raw in text.replace("\r", "").split("\n"):
        m = BEGIN_RE.search(raw)
        if m:
            header = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
            cur, section = Report(header=header), None
            continue
        if cur is None:
            continue
        m = END_RE.search(raw)
        if m:
            if int(m.group(1)) == cur.seq:
                cur.took = float(m.group(2)) if m.group(2) else None
                reports.append(cur)
            cur, section = None, None
            continue
        m = SECTION_RE.match(raw)
        if m:
            section = m.group(1)
            cur.sections.setdefault(section, [])
            continue
        if section is not None:
            cur.sections[section].append(raw)
    return reports


# --------------------------------------------------------------------------- lab


def _pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def wait_until(pred: Callable[[], T], timeout: float, what: str, poll: float = 2.0,
               check: Callable[[], None] | None = None) -> T:
    """Poll pred() until it returns something truthy; raise VMTestError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise VMTestError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def guest_progress(vms: Iterable["VM"]) -> tuple:
    """What moves when guests do something (not the reporter's periodic blocks): boots, cloud-init
    finishing, phase sentinels, the first-boot unit's state, stand-in calls, console output."""
    mark = []
    for vm in vms:
        r = vm.latest()
        try:
            console = vm.console_log.stat().st_size
        except OSError:
            console = 0
        if r is None:
            mark.append((vm.name, console))
            continue
        unit = r.units.get("wgkube-firstboot.service", {})
        mark.append((vm.name, console, r.boot_id, r.cloud_init_finished, tuple(r.phases),
                     unit.get("ActiveState"), len(r.standin_records), tuple(sorted(r.ping.items()))))
    return tuple(mark)


def wait_progressing(pred: Callable[[], T], what: str, vms: Iterable["VM"], stall: float = 600, cap: float = 3600,
                     poll: float = 3.0, check: Callable[[], None] | None = None) -> T:
    """Poll pred() until it returns something truthy. No fixed wall: on a busy machine TCG guests
    are slow but keep moving; fail only when no guest moved (guest_progress) for `stall` seconds,
    or at the outer cap."""
    vms = list(vms)
    t0 = moved = time.monotonic()
    last = None
    while True:
        if check is not None:
            check()
        value = pred()
        if value:
            return value
        mark = guest_progress(vms)
        now = time.monotonic()
        if mark != last:
            last, moved = mark, now
        elif now - moved > stall:
            raise VMTestError(f"no guest made progress for {now - moved:.0f} s ({now - t0:.0f} s in all) waiting for {what}")
        if now - t0 > cap:
            raise VMTestError(f"timed out after {cap:.0f} s waiting for {what} (guests still moving)")
        time.sleep(poll)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> None:
    """Remove namespaces and run dirs that a killed earlier run (SIGKILL) left behind.

    Only names this module creates (wgkvm-<pid>-...) whose creating process is gone.
    """
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^wgkvm-(\d+)-[0-9a-f]+-", name)
        if m and not _pid_alive(int(m.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    for d in Path(tempfile.gettempdir()).glob("wgkvm-*-*"):
        m = re.match(r"^wgkvm-(\d+)-", d.name)
        if m and d.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)


class Lab:
    """Owns every process, namespace and temp dir of one test run."""

    def __init__(self, log_dir: Path | None = None, keep_logs: bool = False):
        sweep_stale()
        self.id = f"{os.getpid()}-{secrets.token_hex(2)}"
        # Sockets live in a short private dir (unix socket paths are limited to 108 bytes).
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"wgkvm-{os.getpid()}-"))
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="wgkube-vm-logs-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.keep_logs = keep_logs
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._netns: list[str] = []
        self.vms: dict[str, VM] = {}
        self._closed = False
        self._old_handlers: dict[int, object] = {}
        atexit.register(self.close)

    # context manager + signals ------------------------------------------------
    def __enter__(self) -> "Lab":
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                old = signal.getsignal(sig)
                if old in (signal.SIG_DFL, None):
                    self._old_handlers[sig] = old
                    signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)  # type: ignore[arg-type]

    def _on_signal(self, signum, frame):  # noqa: ARG002
        # Like Ctrl-C: unwinds through finally/__exit__ -> close(), and pytest stops the session
        # (a SystemExit inside a fixture would only fail that test and set the fixture up again).
        raise KeyboardInterrupt(f"signal {signum}")

    # processes ------------------------------------------------------------------
    def spawn(self, label: str, argv: list[str], logfile: Path | None = None, stdin=subprocess.DEVNULL
              ) -> subprocess.Popen:
        out = open(logfile, "ab") if logfile else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pdeathsig,
                start_new_session=True,
            )
        finally:
            if logfile:
                out.close()  # type: ignore[union-attr]
        self._procs.append((label, proc))
        return proc

    def stop_process(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass

    # building blocks --------------------------------------------------------------
    def switch(self, name: str) -> "Switch":
        return Switch(self, name)

    def nat_gateway(self, name: str, outside: "Switch", outside_addr: str, inside: "Switch", inside_addr: str
                    ) -> "NatGateway":
        return NatGateway(self, name, outside, outside_addr, inside, inside_addr)

    def vm(self, name: str, image: Image, seed_iso: Path, nics: list[tuple["Switch", str]], **kw) -> "VM":
        vm = VM(self, name, image, seed_iso, nics, **kw)
        self.vms[name] = vm
        return vm

    # teardown ----------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for vm in list(self.vms.values()):
            try:
                vm.quit(timeout=5)
            except Exception as exc:  # noqa: BLE001 - teardown must go on
                log(f"{vm.name}: quit failed: {exc}")
        for label, proc in reversed(self._procs):
            try:
                self.stop_process(proc)
            except Exception as exc:  # noqa: BLE001
                log(f"{label} (pid {proc.pid}): stop failed: {exc}")
        for ns in reversed(self._netns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._own_log_dir and not self.keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        elif self.keep_logs:
            log(f"logs kept in {self.log_dir}")


class Switch:
    """One vde_switch (a network segment), foreground child of this process."""

    def __init__(self, lab: Lab, name: str):
        self.lab, self.name = lab, name
        self.sock = lab.run_dir / f"{name}.vde"
        # stdin stays an open pipe: vde_switch exits on EOF of its console.
        self.proc = lab.spawn(f"vde_switch[{name}]", ["vde_switch", "-s", str(self.sock)],
                              logfile=lab.log_dir / f"switch-{name}.log", stdin=subprocess.PIPE)
        wait_until(lambda: (self.sock / "ctl").exists(), 10, f"vde_switch {name} socket", poll=0.1,
                   check=self._check)

    def _check(self) -> None:
        if self.proc.poll() is not None:
            raise VMTestError(f"vde_switch {self.name} exited with {self.proc.returncode}")


class NatGateway:
    """A network namespace routing `inside` to `outside` with nftables masquerade.

    Taps are created by vde_plug2tap running inside the namespace, so they only
    ever exist there; the host's interfaces, routes and firewall are untouched.
    """

    def __init__(self, lab: Lab, name: str, outside: Switch, outside_addr: str, inside: Switch, inside_addr: str):
        self.lab = lab
        self.ns = f"wgkvm-{lab.id}-{name}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        lab._netns.append(self.ns)
        self.run("ip", "link", "set", "lo", "up")
        self.taps = {}
        for tap, sw, addr in (("out0", outside, outside_addr), ("in0", inside, inside_addr)):
            lab.spawn(f"vde_plug2tap[{self.ns}/{tap}]",
                      ["ip", "netns", "exec", self.ns, "vde_plug2tap", "-s", str(sw.sock), tap],
                      logfile=lab.log_dir / f"gw-{name}-{tap}.log")
            wait_until(lambda t=tap: self.run("ip", "link", "show", t, check=False).returncode == 0, 10,
                       f"tap {tap} in namespace {self.ns}", poll=0.1)
            self.run("ip", "addr", "add", addr, "dev", tap)
            self.run("ip", "link", "set", tap, "up")
            self.taps[tap] = addr
        self.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        inside_net = subprocess.run(
            ["python3", "-c", f"import ipaddress;print(ipaddress.ip_interface('{inside_addr}').network)"],
            capture_output=True, text=True, check=True).stdout.strip()
        ruleset = (
            "table ip wgkube_lab_nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "out0" ip saddr {inside_net} counter masquerade\n'
            "  }\n"
            "}\n"
        )
        self.run("nft", "-f", "-", input=ruleset)

    def run(self, *argv: str, check: bool = True, input: str | None = None, timeout: float = 30
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True,
                              input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise VMTestError(f"in {self.ns}: {' '.join(argv)} failed: {proc.stderr.strip()}")
        return proc

    def masqueraded(self) -> int:
        """Connections (first packets) the masquerade rule has translated so far."""
        out = self.run("nft", "list", "chain", "ip", "wgkube_lab_nat", "postrouting").stdout
        m = re.search(r"counter packets (\d+)", out)
        return int(m.group(1)) if m else 0

    def ping(self, addr: str) -> bool:
        return self.run("ping", "-n", "-c1", "-W2", addr, check=False).returncode == 0


class VM:
    """One qemu-system-x86_64 guest booted from the shared base image."""

    def __init__(self, lab: Lab, name: str, image: Image, seed_iso: Path, nics: list[tuple[Switch, str]],
                 memory: int = 512, append: str = "", accel: str | None = None, cpu: str | None = None):
        self.lab, self.name, self.image = lab, name, image
        self.seed_iso = Path(seed_iso)
        self.nics = nics
        self.memory = memory
        self.append = append
        self.accel = accel or os.environ.get("WGKUBE_VM_ACCEL", "tcg")
        # qemu64 (no AVX): measured ~12% faster boots under TCG than "max" here.
        self.cpu = cpu or os.environ.get("WGKUBE_VM_CPU", "qemu64")
        self.run_dir = lab.run_dir / name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.disk = self.run_dir / "disk.qcow2"
        self.monitor_sock = self.run_dir / "mon.sock"
        self.qga_sock = self.run_dir / "qga.sock"
        self.console_log = lab.log_dir / f"{name}.console.log"
        self.report_log = lab.log_dir / f"{name}.report.log"
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.rootfs), "-F", "raw",
                        str(self.disk)], check=True, capture_output=True)

    def argv(self) -> list[str]:
        cmdline = f"root=/dev/vda rw console=ttyS0,115200 mitigations=off {self.append}".strip()
        argv = [
            "qemu-system-x86_64", "-name", self.name,
            "-machine", "pc", "-accel", self.accel, "-cpu", self.cpu, "-m", str(self.memory), "-smp", "1",
            "-display", "none", "-vga", "none", "-nodefaults", "-no-user-config",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd), "-append", cmdline,
            "-drive", f"file={self.disk},if=virtio,format=qcow2,cache=unsafe",
            "-drive", f"file={self.seed_iso},media=cdrom,if=ide,readonly=on,format=raw",
            "-serial", f"file:{self.console_log}",
            "-serial", f"file:{self.report_log}",
            "-monitor", f"unix:{self.monitor_sock},server=on,wait=off",
            "-chardev", f"socket,id=qga0,path={self.qga_sock},server=on,wait=off",
            "-device", "virtio-serial",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ]
        for i, (sw, mac) in enumerate(self.nics):
            argv += ["-netdev", f"vde,id=n{i},sock={sw.sock}", "-device", f"virtio-net-pci,netdev=n{i},mac={mac}"]
        return argv

    # life cycle -----------------------------------------------------------------------
    def start(self) -> "VM":
        if self.proc is not None and self.proc.poll() is None:
            raise VMTestError(f"{self.name} already running")
        self.started_at = time.time()
        self.proc = self.lab.spawn(f"qemu[{self.name}]", self.argv(), logfile=self.lab.log_dir / f"{self.name}.qemu.log")
        wait_until(lambda: self.monitor_sock.exists(), 15, f"{self.name} monitor socket", poll=0.1,
                   check=self.check_alive)
        log(f"{self.name}: started (pid {self.proc.pid})")
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise VMTestError(f"qemu for {self.name} exited with {self.proc.returncode}:\n"
                              + self._tail(self.lab.log_dir / f"{self.name}.qemu.log", 2000)
                              + "\n--- console ---\n" + self._tail(self.console_log, 3000))

    def monitor(self, command: str, timeout: float = 5.0) -> str:
        """Run one human-monitor command through the unix socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.monitor_sock))
            buf = b""
            while b"(qemu) " not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    return buf.decode(errors="replace")
                buf += chunk
            s.sendall(command.encode() + b"\n")
            out = b""
            try:
                while out.count(b"(qemu) ") < 1:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    out += chunk
            except socket.timeout:
                pass
            return out.decode(errors="replace")

    def qga(self, command: str, arguments: dict | None = None, timeout: float = 10.0,
            expect_reply: bool = True) -> dict | None:
        """One qemu-guest-agent command (after a guest-sync handshake)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.qga_sock))
            sync_id = secrets.randbelow(2**31)
            s.sendall(json.dumps({"execute": "guest-sync", "arguments": {"id": sync_id}}).encode() + b"\n")
            f = s.makefile("rb")
            while True:
                line = f.readline()
                if not line:
                    raise VMTestError(f"{self.name}: guest agent closed the connection")
                try:
                    if json.loads(line).get("return") == sync_id:
                        break
                except ValueError:
                    continue
            msg = {"execute": command}
            if arguments:
                msg["arguments"] = arguments
            s.sendall(json.dumps(msg).encode() + b"\n")
            if not expect_reply:
                return None
            line = f.readline()
            reply = json.loads(line)
            if "error" in reply:
                raise VMTestError(f"{self.name}: guest agent {command}: {reply['error']}")
            return reply.get("return")

    def guest_exec(self, argv: list[str], timeout: float = 60, input: bytes | None = None,
                   env: list[str] | None = None) -> tuple[int, str]:
        """Run a command in the guest through the agent; input goes to its stdin (as
        `ssh host sudo bash -s < script` would send a script)."""
        import base64

        args: dict = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if input is not None:
            args["input-data"] = base64.b64encode(input).decode()
        if env is not None:
            args["env"] = env
        pid = self.qga("guest-exec", args)["pid"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.qga("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
                err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
                return st.get("exitcode", -1), out + err
            time.sleep(0.5)
        raise VMTestError(f"{self.name}: guest-exec {argv} timed out")

    def reboot(self, timeout: float = 30) -> str:
        """Clean in-guest reboot through the guest agent; returns how it was done."""
        try:
            wait_until(lambda: self._qga_ping(), timeout, f"{self.name} guest agent", poll=2)
            self.qga("guest-shutdown", {"mode": "reboot"}, expect_reply=False)
            return "guest-agent"
        except (VMTestError, OSError) as exc:
            log(f"{self.name}: guest agent reboot failed ({exc}); using monitor system_reset")
            self.monitor("system_reset")
            return "system_reset"

    def _qga_ping(self) -> bool:
        try:
            self.qga("guest-ping", timeout=3)
            return True
        except (VMTestError, OSError, ValueError):
            return False

    def quit(self, timeout: float = 10) -> None:
        """Power off: `quit` through the monitor, then SIGTERM/SIGKILL by PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.monitor("quit", timeout=3)
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.lab.stop_process(self.proc)

    # observation ---------------------------------------------------------------------
    @staticmethod
    def _tail(path: Path, n: int) -> str:
        try:
            data = path.read_bytes()
        except OSError:
            return ""
        return data[-n:].decode(errors="replace")

    def console(self) -> str:
        try:
            return self.console_log.read_bytes().decode(errors="replace")
        except OSError:
            return ""

    def reports(self) -> list[Report]:
        try:
            return parse_reports(self.report_log.read_bytes().decode(errors="replace"))
        except OSError:
            return []

    def latest(self, boot_id: str | None = None) -> Report | None:
        reps = self.reports()
        if boot_id is not None:
            reps = [r for r in reps if r.boot_id == boot_id]
        return reps[-1] if reps else None

    def wait_report(self, pred: Callable[[Report], bool], timeout: float, what: str,
                    boot_id: str | None = None, not_boot_id: str | None = None) -> Report:
        def probe():
            r = self.latest(boot_id)
            if r is None or (not_boot_id is not None and r.boot_id == not_boot_id):
                return None
            return r if pred(r) else None

        try:
            return wait_until(probe, timeout, f"{self.name}: {what}", poll=2, check=self.check_alive)
        except VMTestError as exc:
            last = self.latest()
            raise VMTestError(f"{exc}\n--- last report of {self.name} ---\n"
                              + (render_report(last) if last else "(none)")
                              + f"\n--- console tail of {self.name} ---\n" + self._tail(self.console_log, 4000)
                              ) from None


def render_report(r: Report) -> str:
    lines = [f"seq={r.seq} boot_id={r.boot_id} bootcount={r.bootcount} uptime={r.uptime}"]
    for name, body in r.sections.items():
        lines.append(f"--- {name} ---")
        lines.extend(body)
    return "\n".join(lines)


# --------------------------------------------------------------------------- smoke


def _wg_keypair() -> tuple[str, str]:
    priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    pub = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True, check=True).stdout.strip()
    return priv, pub


def _smoke_seed(name: str, addr: str, gw: str, wg_conf: str) -> dict[str, str]:
    indented = "\n".join("      " + line for line in wg_conf.splitlines())
    return {
        "meta-data": f"instance-id: iid-smoke-{name}\nlocal-hostname: {name}\n",
        "network-config": (
            "version: 2\nethernets:\n  primary:\n    match: {name: \"en*\"}\n"
            f"    addresses: [{addr}]\n    routes: [{{to: default, via: {gw}}}]\n"
        ),
        "user-data": (
            "#cloud-config\n"
            "write_files:\n"
            "  - path: /etc/wireguard/wg0.conf\n"
            "    permissions: '0600'\n"
            "    content: |\n"
            f"{indented}\n"
            "runcmd:\n"
            "  - [systemctl, enable, --now, wg-quick@wg0.service]\n"
            "  - [sh, -c, 'echo SMOKE-RUNCMD-DONE > /dev/console']\n"
        ),
    }


def smoke(keep_logs: bool = False) -> int:
    """Hand-written seeds: boot, cloud-init, kernel WireGuard, vde ping, NAT, reboot."""
    missing = missing_tools() + [t for t in ("xorriso", "wg") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        print(f"smoke needs root and: {', '.join(missing) or 'nothing else'}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    image = build_image()
    log(f"image {image.dir} ({'cached' if image.cached else 'built'} in {image.build_seconds:.0f} s)")
    with Lab(keep_logs=keep_logs) as lab:
        pub = lab.switch("public")
        priv = lab.switch("private")
        gw = lab.nat_gateway("gw", pub, "203.0.113.1/24", priv, "192.168.50.1/24")
        (a_priv, a_pub), (b_priv, b_pub) = _wg_keypair(), _wg_keypair()
        conf_a = (f"[Interface]\nPrivateKey = {a_priv}\nAddress = 10.99.0.1/24\nListenPort = 51820\nMTU = 1380\n\n"
                  f"[Peer]\nPublicKey = {b_pub}\nAllowedIPs = 10.99.0.2/32\n")
        conf_b = (f"[Interface]\nPrivateKey = {b_priv}\nAddress = 10.99.0.2/24\n\n"
                  f"[Peer]\nPublicKey = {a_pub}\nAllowedIPs = 10.99.0.1/32\nEndpoint = 203.0.113.20:51820\n"
                  "PersistentKeepalive = 5\n")
        ping = "wgkube.ping=10.99.0.1,10.99.0.2,203.0.113.1"
        seed_a = make_seed_iso(_smoke_seed("smoke-a", "203.0.113.20/24", "203.0.113.1", conf_a),
                               lab.run_dir / "a.iso")
        seed_b = make_seed_iso(_smoke_seed("smoke-b", "192.168.50.20/24", "192.168.50.1", conf_b),
                               lab.run_dir / "b.iso")
        a = lab.vm("smoke-a", image, seed_a, [(pub, "52:54:00:99:00:01")], append=ping).start()
        b = lab.vm("smoke-b", image, seed_b, [(priv, "52:54:00:99:00:02")], append=ping).start()
        for vm in (a, b):
            r = vm.wait_report(lambda r: r.cloud_init_finished, 400, "cloud-init finished")
            log(f"{vm.name}: cloud-init finished at uptime {r.uptime:.0f} s; problems: {r.cloud_init_problems}")
            assert r.cloud_init_result.get("v1", {}).get("errors") == [], r.text("cloud-init-result")
        r = b.wait_report(lambda r: r.ping.get("10.99.0.1") == "ok", 120, "ping 10.99.0.1 over wg through NAT")
        log(f"smoke-b: pings over WireGuard through NAT: {r.ping}; wg: {r.wg}")
        r = a.wait_report(lambda r: r.ping.get("10.99.0.2") == "ok", 60, "ping 10.99.0.2 back")
        peer = next(iter(r.wg["wg0"]["peers"].values()))
        log(f"smoke-a: sees smoke-b's endpoint as {peer['endpoint']} (NAT: 203.0.113.1 expected)")
        assert peer["endpoint"].startswith("203.0.113.1:"), peer
        assert gw.ping("203.0.113.20") and gw.ping("192.168.50.20"), "gateway namespace cannot reach the VMs"
        boot1 = b.latest().boot_id
        how = b.reboot()
        r = b.wait_report(lambda r: r.ping.get("10.99.0.1") == "ok", 300, "tunnel after reboot",
                          not_boot_id=boot1)
        log(f"smoke-b: rebooted ({how}), bootcount={r.bootcount}, tunnel back: {r.ping}")
    log(f"smoke OK in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "smoke":
        sys.exit(smoke(keep_logs="--keep" in sys.argv))
    print("usage: python3 tests/vm/qemu.py smoke [--keep]", file=sys.stderr)
    sys.exit(2)
