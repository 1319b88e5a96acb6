"""The files each member receives, as `verify` and `lab` read them.

Two sources give the same shape: a spec prepared in memory (nothing written) or a rendered
out/<cluster>/ folder (plan.json + each node's user-data, decoded whatever its encoding, + the
admins' configs). Both hand back the exact texts a member would get, plus the few plan facts
the files alone do not say (who sits behind NAT, public addresses, exposed ports).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ...artifacts import cloudinit
from ...errors import Problem, UserError
from ...facts import ADMIN_PORTS, API_PORT, STATUS_PORT

FIREWALL_PATH = "/etc/wgkube/firewall.nft"
SYSCTL_PATH = "/etc/sysctl.d/90-wgkube.conf"
FAILOVER_PATH = "/etc/wgkube/failover.conf"   # issue 13: mesh members behind NAT
FAILOVER_SCRIPT_PATH = "/usr/local/sbin/wgkube-failover"
APIPROXY_PATH = "/etc/wgkube/haproxy.cfg"       # issue 14: the local API endpoint, with several control planes


def wg_path(interface: str) -> str:
    return f"/etc/wireguard/{interface}.conf"


@dataclass(frozen=True)
class MemberFiles:
    name: str
    kind: str                               # node | admin
    role: str
    behind_nat: bool
    endpoint_host: str | None
    endpoint_port: int | None
    public_address: str | None
    expose: tuple[tuple[str, int, int], ...]  # (tcp|udp, first, last)
    wg_conf: str
    firewall: str | None                    # admins get none from wgkube
    sysctl: str | None
    failover: str | None = None             # mesh, behind NAT: the relay failover settings
    failover_script: str | None = None      # ... and the loop itself (the lab runs it)
    routes_services: bool = False           # issue 17: an admin with `routes: services`
    apiproxy: str | None = None             # issue 14: the local API endpoint's haproxy.cfg (several control planes)


@dataclass
class Cluster:
    name: str
    interface: str
    vpn_cidr: str
    pod_cidr: str
    port: int
    underlay_mtu: int
    flannel_mtu: int
    members: list[MemberFiles] = field(default_factory=list)
    # Day-two spare slots: VPN address -> slot name. The hub lists them as peers whose keys
    # belong to no member yet; that is on purpose, not a stray peer.
    spares: dict[str, str] = field(default_factory=dict)
    # Issue 13: "hub" or "mesh", and the mesh's relays in order of preference (from the plan).
    topology: str = "hub"
    relays: list[str] = field(default_factory=list)
    # Issue 15: every node serves wgkube status on the VPN (spec status_endpoint).
    status_endpoint: bool = False
    # Issue 17 (docs/laptops.md): the admins' file name under admins/<name>/, the service range and
    # the node admins with `routes: services` send it to (None: nobody opted in).
    admin_wg_file: str = ""
    service_cidr: str = ""
    services_via: str | None = None
    # Issue 14: the control planes, the one that runs `kubeadm init` first, and the API port they serve.
    control_planes: list[str] = field(default_factory=list)
    api_port: int = API_PORT

    @property
    def several_control_planes(self) -> bool:
        return len(self.control_planes) > 1

    @property
    def admin_ports(self) -> tuple[int, ...]:
        """What an admin may reach on every node (the API on the hub comes on top)."""
        return ADMIN_PORTS if self.status_endpoint else tuple(p for p in ADMIN_PORTS if p != STATUS_PORT)

    def member(self, name: str) -> MemberFiles:
        return next(m for m in self.members if m.name == name)

    def with_member(self, name: str, **changes) -> "Cluster":
        """A copy with one member's texts replaced (tests break files on purpose with this)."""
        members = [replace(m, **changes) if m.name == name else m for m in self.members]
        return replace(self, members=members)


def _expose(items) -> tuple[tuple[str, int, int], ...]:
    out = []
    for item in items:
        ports, _, proto = item.partition("/")
        lo, _, hi = ports.partition("-")
        out.append((proto, int(lo), int(hi or lo)))
    return tuple(out)


def from_prepared(prepared) -> Cluster:
    """From generator.render.prepare(...): renders only the member files, writes nothing."""
    from ...artifacts import admin as admin_art
    from ...artifacts import apiproxy as apiproxy_art
    from ...artifacts import firewall, wireguard
    from ...artifacts.templates import render
    plan, bundle = prepared.plan, prepared.bundle
    sysctl_text = render("sysctl.conf.j2")
    cluster = Cluster(plan.cluster, plan.interface, plan.vpn_cidr, plan.pod_cidr, plan.port,
                      plan.underlay_mtu, plan.flannel_mtu)
    cluster.spares = {slot.vpn_ip: slot.name for slot in getattr(plan, "spares", ())}
    if plan.mesh is not None:
        from ...artifacts import failover as failover_art
        cluster.topology, cluster.relays = "mesh", list(plan.mesh.relays)
    cluster.status_endpoint = plan.status_endpoint
    cluster.admin_wg_file, cluster.service_cidr = plan.admin_wg_file, plan.service_cidr
    cluster.services_via = plan.services_via if plan.service_routes else None
    cluster.control_planes, cluster.api_port = [m.name for m in plan.control_planes], plan.api_port
    for m in plan.members:
        if m.is_node:
            # The three artifacts node_files puts at these paths, without rendering the rest
            # (kubeadm, first-boot script...): keeps 1,000 members fast.
            wg, fw, sysctl = wireguard.wg_conf(plan, bundle, m), firewall.ruleset(plan, m), sysctl_text
        else:
            admin_files = admin_art.files(plan, bundle, m)
            wg = admin_files[f"admins/{m.name}/{plan.admin_wg_file}"][0].decode()
            fw = sysctl = None
        cluster.members.append(MemberFiles(
            m.name, m.kind, m.role, m.behind_nat, m.endpoint_host, m.endpoint_port, m.public_address,
            tuple((e.protocol, e.first, e.last) for e in m.expose), wg, fw, sysctl,
            *((failover_art.conf(plan, bundle, m),
               # an admin's loop as admin.files renders it (issue 17: with the keep step for routes: services)
               failover_art.script() if m.is_node else admin_files[f"admins/{m.name}/wgkube-failover"][0].decode())
              if plan.mesh is not None and failover_art.wanted(plan, m) else (None, None)),
            plan.routes_services(m),
            apiproxy_art.config(plan, m) if m.is_node and plan.several_control_planes else None))
    return cluster


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(Problem(str(path), f"cannot read {what}: {exc.strerror}",
                                "give the rendered out/<cluster>/ folder (`wgkube render SPEC -o out`)")) from None


def from_out_dir(out_dir: Path) -> Cluster:
    """From a rendered out/<cluster>/ folder: exactly the bytes that would be delivered."""
    raw = _read(out_dir / "plan.json", "the plan")
    try:
        plan = json.loads(raw)
        vpn = plan["vpn"]
        cluster = Cluster(plan["cluster"], vpn["interface"], vpn["cidr"], plan["pod_cidr"], vpn["port"],
                          vpn["underlay_mtu"], plan["flannel_mtu"])
        entries = plan["members"]
        cluster.spares = {s["vpn_ip"]: s["slot"] for s in plan.get("spares") or []}
        if vpn.get("topology") == "mesh":
            cluster.topology, cluster.relays = "mesh", list(plan["mesh"]["relays"])
        cluster.status_endpoint = "status_endpoint" in plan
        admins = plan.get("admins") or {}     # issue 17: present only when the spec opts in
        cluster.admin_wg_file = admins.get("wg_file") or f"{cluster.interface}.conf"
        cluster.service_cidr = plan["service_cidr"]
        routed = set(admins.get("routes_services") or [])
        cluster.services_via = admins.get("services_via") if routed else None
        # Issue 14: plan.json names the control planes (init first) only with several or etcd tuning.
        cps = (plan.get("control_planes") or {}).get("names")
        cluster.control_planes = list(cps) if cps else [e["name"] for e in entries if e["role"] == "control-plane"]
        cluster.api_port = int(plan["api"].rpartition(":")[2])
    except (ValueError, KeyError, TypeError):
        raise UserError(Problem(str(out_dir / "plan.json"), "not a wgkube plan.json (corrupt or from another version)",
                                "re-render with `wgkube render`")) from None
    for e in entries:
        host = port = None
        if e.get("endpoint"):
            host, _, p = e["endpoint"].rpartition(":")
            host, port = host.strip("[]"), int(p)
        if e["kind"] == "node":
            ud_path = out_dir / "nodes" / e["name"] / "user-data"
            try:
                files = {k: v[0].decode() for k, v in cloudinit.extract_files(_read(ud_path, "user-data")).items()}
            except (yaml.YAMLError, ValueError, OSError, AttributeError) as exc:
                raise UserError(Problem(str(ud_path), f"cannot decode this user-data ({exc})",
                                        "re-render with `wgkube render`")) from None
            if wg_path(cluster.interface) not in files:
                raise UserError(Problem(str(ud_path), f"no {wg_path(cluster.interface)} in write_files", "re-render with `wgkube render`"))
            wg, fw, sysctl = files[wg_path(cluster.interface)], files.get(FIREWALL_PATH), files.get(SYSCTL_PATH)
            failover, failover_script = files.get(FAILOVER_PATH), files.get(FAILOVER_SCRIPT_PATH)
            apiproxy = files.get(APIPROXY_PATH)
        else:
            apiproxy = None
            wg = _read(out_dir / "admins" / e["name"] / cluster.admin_wg_file, "the admin's WireGuard config").decode()
            fw = sysctl = None
            fo_path = out_dir / "admins" / e["name"] / "failover.conf"
            failover = fo_path.read_text() if fo_path.is_file() else None
            script_path = out_dir / "admins" / e["name"] / "wgkube-failover"
            failover_script = script_path.read_text() if script_path.is_file() else None
        cluster.members.append(MemberFiles(
            e["name"], e["kind"], e["role"], bool(e["behind_nat"]), host, port, e.get("public_address"),
            _expose(e.get("expose") or []), wg, fw, sysctl, failover, failover_script, e["name"] in routed, apiproxy))
    return cluster


def replace_node_file(out_dir: Path, node: str, path: str, content: str) -> None:
    """Rewrite one write_files entry of a rendered node's user-data (plain #cloud-config result).

    For experiments and tests: `wgkube lab` and `wgkube verify` then run on the changed file.
    """
    ud_path = out_dir / "nodes" / node / "user-data"
    doc = yaml.safe_load(cloudinit.decode_user_data(ud_path.read_bytes()))
    for entry in doc["write_files"]:
        if entry["path"] == path:
            entry.pop("encoding", None)
            entry["content"] = content
            break
    else:
        raise KeyError(f"{node} has no write_files entry {path}")
    ud_path.write_text("#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=4096))
