"""`wgkube status`: ask every member for its state over the VPN and put it next to the plan.

Each node answers on <VPN IP>:facts.STATUS_PORT with one JSON object (cloudinit/wgkube-status.sh.j2;
shape in docs/status.md) and closes. This module reads the rendered out/<cluster>/ (who the
members are, their VPN addresses, their public keys to name the peers), asks every node at once,
turns the replies into one row per member, and adds what the Kubernetes API says about each node
(Ready, INTERNAL-IP) when kubectl and the admin kubeconfig reach it. Admins serve no status.

Nothing here needs root; it only opens TCP connections to VPN addresses.
"""
from __future__ import annotations

import errno
import ipaddress
import json
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import Problem, UserError
from ..facts import STATUS_PORT
from ..secrets.pki import wg_public_from_private
from .read.cluster import from_out_dir
from .read.wgconf import parse_wg_quick

SCHEMA = 1            # of the JSON `wgkube status --json` prints (docs/status.md)
MAX_REPLY = 1 << 20   # a node's reply is a few hundred bytes per peer
STALE_HANDSHAKE = 180  # s: WireGuard re-handshakes every 2 min while traffic flows (REKEY_AFTER_TIME)


@dataclass
class Peer:
    name: str                  # member name, or the public key's first 8 characters when unknown
    public_key: str
    endpoint: str | None
    allowed_ips: list[str]
    handshake_age: int | None  # s; None = never
    rx: int
    tx: int
    catch_all: bool = False    # holds the VPN-wide range: traffic to members without a peer of their own goes here


@dataclass
class Row:
    name: str
    kind: str                  # node | admin
    role: str
    vpn_ip: str
    reachable: bool | None = None   # None: not asked (admins)
    error: str | None = None        # no route | timeout | refused | bad reply
    hint: str | None = None
    latency_ms: float | None = None
    state: str = "unknown"          # done | running | failed | waiting | unknown
    phase: str | None = None        # the running or failed phase
    message: str | None = None
    phases_done: list[tuple[str, str]] = field(default_factory=list)   # (phase, UTC time), in order
    units: dict[str, str] = field(default_factory=dict)
    peers: list[Peer] = field(default_factory=list)
    ready: bool | None = None       # Kubernetes node Ready; None = not known
    internal_ip: str | None = None
    internal_ip_ok: bool | None = None   # INTERNAL-IP is the VPN address
    addons: list[dict] = field(default_factory=list)  # issue 18: [{step, state: pending|applied|failed, message}]

    @property
    def addons_text(self) -> str:
        return ", ".join(f"{a['step']} {a['state']}" + (f" ({a['message']})" if a.get("message") else "") for a in self.addons)

    @property
    def phase_text(self) -> str:
        if self.kind == "admin":
            return "-"
        if self.state == "failed":
            return f"failed {self.phase}" + (f": {self.message}" if self.message else "")
        if self.state == "running":
            return f"running {self.phase}"
        return self.state


@dataclass
class Report:
    cluster: str
    rows: list[Row]
    kubernetes: str | None = None   # why the API columns are empty (kubectl missing, error), or None
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.rows if r.state == "failed"]

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "cluster": self.cluster, "failed": self.failed,
                "kubernetes_note": self.kubernetes, "seconds": round(self.seconds, 3),
                "members": [_row_json(r) for r in self.rows]}


def _row_json(r: Row) -> dict:
    d = asdict(r)
    d["phases_done"] = [{"phase": p, "at": at} for p, at in r.phases_done]
    if not r.addons:
        d.pop("addons")  # issue 18: only on a control plane with add-ons
    return d


# --------------------------------------------------------------------------- the rendered side


@dataclass
class Member:
    name: str
    kind: str
    role: str
    vpn_ip: str
    public_key: str | None


def members(out_dir: Path) -> tuple[str, list[Member]]:
    """(cluster, members) from a rendered out/<cluster>/: names, VPN addresses, public keys."""
    try:
        plan = json.loads((out_dir / "plan.json").read_text())
        entries = [(e["name"], e["kind"], e["role"], e["vpn_ip"]) for e in plan["members"]]
        name = plan["cluster"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(Problem(str(out_dir / "plan.json"), "not a rendered wgkube cluster (no readable plan.json)",
                                "give the out/<cluster>/ folder `wgkube render SPEC -o out` wrote")) from None
    if "status_endpoint" not in plan:
        # Opt-in (spec status_endpoint): a spec written before issue 15 renders as it always did.
        raise UserError(Problem("status_endpoint", f"cluster {name} was rendered without the status endpoint, so its nodes serve no status",
                                "add `status_endpoint: true` to the spec and render again; nodes created from the new "
                                "files serve it (a running node needs the three wgkube-status files from its new user-data)"))
    keys: dict[str, str] = {}
    try:
        for m in from_out_dir(out_dir).members:
            key = parse_wg_quick(m.wg_conf).private_key
            if key:
                keys[m.name] = wg_public_from_private(key)
    except UserError:
        pass   # peers are then named by their allowed IPs only
    return name, [Member(n, k, r, ip, keys.get(n)) for n, k, r, ip in entries]


# --------------------------------------------------------------------------- asking a node


def fetch(address: str, port: int = STATUS_PORT, timeout: float = 3.0) -> tuple[dict | None, str | None, float]:
    """(reply, error, seconds). error: 'no route', 'timeout', 'refused', 'bad reply: ...'."""
    t0 = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            chunks, size = [], 0
            while size <= MAX_REPLY:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except ConnectionRefusedError:
        return None, "refused", time.monotonic() - t0
    except (TimeoutError, socket.timeout):
        return None, "timeout", time.monotonic() - t0
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
            return None, "no route", time.monotonic() - t0
        return None, f"error: {exc.strerror or exc}", time.monotonic() - t0
    elapsed = time.monotonic() - t0
    try:
        reply = json.loads(b"".join(chunks))
        if not isinstance(reply, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        return None, f"bad reply: {str(exc)[:80]}", elapsed
    return reply, None, elapsed


def source_address(address: str) -> str | None:
    """The local address the kernel would send from toward address (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((address, STATUS_PORT))
            return s.getsockname()[0]
    except OSError:
        return None


def hint_for(error: str, row: Row, hub: str | None) -> str:
    if error == "no route":
        return ("this machine has no route to the VPN: bring up your tunnel "
                "(wg-quick up out/<cluster>/admins/<you>/wg0.conf, or wg-<cluster>.conf with vpn.admin_conf: cluster) and run status from a VPN member")
    if error == "timeout":
        via = f" and on {hub} (`wg show`: a recent handshake with {row.name}?)" if hub and hub != row.name else ""
        return (f"no answer over the VPN: is {row.name} powered on and past cloud-init? Look at its serial "
                f"console for 'wgkube-firstboot:' lines{via}")
    if error == "refused":
        return (f"{row.name} is reachable over the VPN but nothing listens on {STATUS_PORT}/tcp: "
                "wgkube-status.socket not started yet (cloud-init still running?) or disabled")
    return f"{row.name} answered, but not with wgkube status JSON: another service on {STATUS_PORT}/tcp?"


def _age(now: int, stamp: int) -> int | None:
    return None if not stamp else max(0, now - stamp)


def interpret(row: Row, reply: dict, names_by_key: dict[str, str], by_ip: dict[str, str], vpn_cidr: str | None) -> None:
    """Fill a row from a node's reply (schema 1; unknown keys are ignored)."""
    phases = reply.get("phases") or {}
    done = sorted(((str(p), str(at)) for p, at in phases.items()), key=lambda pa: pa[1])  # stable: ties keep ls -tr order
    row.phases_done = done
    fb = reply.get("firstboot") or {}
    row.units = {str(k): str(v) for k, v in (reply.get("units") or {}).items()}
    row.addons = [{"step": str(a.get("step")), "state": str(a.get("state")),
                   "message": None if a.get("message") is None else str(a.get("message"))}
                  for a in (reply.get("addons") or []) if isinstance(a, dict)]
    unit = row.units.get("wgkube-firstboot", "")
    if fb.get("failed"):
        row.state, row.phase, row.message = "failed", fb["failed"], fb.get("message")
    elif "done" in phases:
        row.state = "done"
    elif fb.get("running"):
        row.state, row.phase = "running", fb["running"]
        if unit == "failed":
            row.state = "failed"
            row.message = "first boot stopped in this phase (wgkube-firstboot.service failed); see /var/log/wgkube-firstboot.log"
    elif not phases:
        row.state = "waiting"
    else:
        row.state, row.phase = "running", f"after {done[-1][0]}"
    now = int(reply.get("time") or time.time())
    net = ipaddress.ip_network(vpn_cidr) if vpn_cidr else None
    for p in reply.get("peers") or []:
        key = str(p.get("public_key", ""))
        allowed = [a for a in str(p.get("allowed_ips", "")).split(",") if a and a != "(none)"]
        name = names_by_key.get(key)
        if name is None:
            hosts = [a.split("/")[0] for a in allowed if a.endswith("/32")]
            name = next((by_ip[h] for h in hosts if h in by_ip), key[:8] + "…")
        endpoint = p.get("endpoint")
        catch_all = net is not None and any(_covers(a, net) for a in allowed)
        row.peers.append(Peer(name, key, None if endpoint in (None, "(none)") else str(endpoint), allowed,
                              _age(now, int(p.get("latest_handshake") or 0)), int(p.get("rx") or 0),
                              int(p.get("tx") or 0), catch_all))


def _covers(allowed: str, net) -> bool:
    try:
        a = ipaddress.ip_network(allowed, strict=False)
    except ValueError:
        return False
    return a.version == net.version and net.subnet_of(a)


# --------------------------------------------------------------------------- the API's view


def kubernetes_nodes(kubeconfig: Path | None, timeout: float = 5.0) -> tuple[dict[str, tuple[bool | None, str | None]], str | None]:
    """{node: (Ready, InternalIP)} from `kubectl get nodes`, or ({}, why not)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return {}, "kubectl is not installed: node Ready and INTERNAL-IP not shown"
    if kubeconfig is None or not kubeconfig.is_file():
        return {}, "no admin kubeconfig in the out folder: node Ready and INTERNAL-IP not shown"
    try:
        proc = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), f"--request-timeout={int(timeout)}s",
                               "get", "nodes", "-o", "json"], capture_output=True, text=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return {}, f"kubectl get nodes did not answer within {timeout + 5:.0f} s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["exit " + str(proc.returncode)])[-1]
        return {}, f"the API did not answer (kubectl: {last[:160]})"
    try:
        items = json.loads(proc.stdout)["items"]
    except (ValueError, KeyError):
        return {}, "kubectl get nodes gave no node list"
    out = {}
    for item in items:
        name = item.get("metadata", {}).get("name")
        st = item.get("status", {})
        ready = next((c.get("status") == "True" for c in st.get("conditions", []) if c.get("type") == "Ready"), None)
        ip = next((a.get("address") for a in st.get("addresses", []) if a.get("type") == "InternalIP"), None)
        out[name] = (ready, ip)
    return out, None


# --------------------------------------------------------------------------- the whole report


def gather(out_dir: Path, *, timeout: float = 3.0, kubeconfig: Path | None = None, use_api: bool = True,
           port: int = STATUS_PORT) -> Report:
    t0 = time.monotonic()
    cluster, ms = members(out_dir)
    try:
        plan = json.loads((out_dir / "plan.json").read_text())
        vpn_cidr, hub = plan["vpn"]["cidr"], plan.get("hub")
    except (OSError, ValueError, KeyError):
        vpn_cidr, hub = None, None
    names_by_key = {m.public_key: m.name for m in ms if m.public_key}
    by_ip = {m.vpn_ip: m.name for m in ms}
    rows = [Row(m.name, m.kind, m.role, m.vpn_ip) for m in ms]
    nodes = [r for r in rows if r.kind == "node"]
    api: dict = {}
    note = None
    with ThreadPoolExecutor(max_workers=min(32, len(nodes) + 1)) as pool:
        if use_api:
            if kubeconfig is None:
                admins = sorted((out_dir / "admins").glob("*/kubeconfig"))
                kubeconfig = admins[0] if admins else None
            api_job = pool.submit(kubernetes_nodes, kubeconfig)
        replies = list(pool.map(lambda r: fetch(r.vpn_ip, port, timeout), nodes))
        if use_api:
            api, note = api_job.result()
    outside = None
    if vpn_cidr and nodes and any(reply is None for reply, _, _ in replies):
        src = source_address(nodes[0].vpn_ip)
        if src is None or ipaddress.ip_address(src) not in ipaddress.ip_network(vpn_cidr):
            outside = src or "no address"
    for row, (reply, error, seconds) in zip(nodes, replies):
        row.latency_ms = round(seconds * 1000, 1)
        if reply is None:
            row.reachable, row.error, row.hint = False, error, hint_for(error or "", row, hub)
            if outside:
                row.hint = (f"this machine sends to {vpn_cidr} from {outside}, not from a VPN address: its tunnel "
                            f"is down. Bring it up (wg-quick up admins/<you>/wg0.conf, or wg-<cluster>.conf) and ask again")
            continue
        row.reachable = True
        interpret(row, reply, names_by_key, by_ip, vpn_cidr)
    for row in nodes:
        if row.name in api:
            row.ready, row.internal_ip = api[row.name]
            row.internal_ip_ok = row.internal_ip == row.vpn_ip if row.internal_ip else None
    return Report(cluster, rows, note if use_api else None, time.monotonic() - t0)


def handshake_summary(row: Row, limit: int = 4, sep: str = ", ") -> str:
    """'hub 12s' per peer; many peers (the hub) as counts, naming the stale ones."""
    if not row.peers:
        return "-" if row.reachable else ""
    def fmt(age):
        if age is None:
            return "never"
        return f"{age}s" if age < 120 else f"{age // 60}m" if age < 7200 else f"{age // 3600}h"
    if len(row.peers) <= limit:
        return sep.join(f"{p.name} {fmt(p.handshake_age)}" for p in row.peers)
    fresh = [p for p in row.peers if p.handshake_age is not None and p.handshake_age < STALE_HANDSHAKE]
    stale = [p for p in row.peers if p not in fresh]
    text = f"{len(row.peers)} peers: {len(fresh)} < {STALE_HANDSHAKE // 60} min"
    if stale:
        text += "; stale or never: " + ", ".join(f"{p.name} {fmt(p.handshake_age)}" for p in stale)
    return text
