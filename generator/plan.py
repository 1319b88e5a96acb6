"""Spec -> plan: addresses, the hub, peers and AllowedIPs, each member's role. Pure, no I/O.

The topology is hub-and-spoke: the control-plane node with a public endpoint is the hub and
the only member every other member peers with. Spokes send the whole VPN range to the hub,
which forwards between them; the hub routes each spoke's /32 to that spoke. Pod traffic is
VXLAN between VPN addresses, so no pod range appears in any AllowedIPs.
"""
from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from functools import cached_property

from . import facts
from .errors import Problem, UserError
from .spec import EXPOSE, OS_FAMILIES, ClusterSpec, parse_endpoint
from .topology import Mesh, Site, build_mesh


@dataclass(frozen=True)
class Exposed:
    protocol: str  # tcp | udp
    first: int
    last: int

    def nft(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # "node" | "admin"
    role: str  # "control-plane" | "worker" | "admin"
    vpn_ip: str
    endpoint_host: str | None = None
    endpoint_port: int | None = None
    os: str | None = None
    package_family: str | None = None
    public_address: str | None = None  # underlay address when known (static network or IP endpoint)
    static_network: dict | None = None
    expose: tuple[Exposed, ...] = ()
    provider: str | None = None

    @property
    def is_node(self) -> bool:
        return self.kind == "node"

    @property
    def behind_nat(self) -> bool:
        return self.endpoint_host is None

    @property
    def endpoint(self) -> str | None:
        if self.endpoint_host is None:
            return None
        host = f"[{self.endpoint_host}]" if ":" in self.endpoint_host else self.endpoint_host
        return f"{host}:{self.endpoint_port}"


@dataclass(frozen=True)
class Peer:
    name: str
    allowed_ips: tuple[str, ...]
    endpoint: str | None
    keepalive: int | None


@dataclass(frozen=True)
class Slot:
    """A spare slot: a key and an address made up front and already in the hub's peer list."""
    name: str  # spare.N: never a valid member name (DNS labels have no dots)
    vpn_ip: str


@dataclass(frozen=True)
class AddonStep:
    """Issue 18: one add-on as the control plane applies it (docs/addons.md)."""
    name: str
    kind: str            # "manifest" (embedded file) | "url" (downloaded, sha256 checked) | "helm"
    source: str          # what the spec said (file path, URL, chart@version): for messages and plan
    content: str = ""    # manifest: the file's text; helm: the values as YAML ("" = none)
    url: str = ""
    sha256: str = ""
    chart: str = ""
    repository: str = ""
    version: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class RegistryStep:
    """Issue 18: a pull secret made in each namespace (the password is in the bundle, not here)."""
    server: str
    username: str
    namespaces: tuple[str, ...]
    patch_default_service_account: bool
    secret_name: str


@dataclass(frozen=True)
class Plan:
    cluster: str
    kubernetes: str
    vpn_cidr: str
    interface: str
    port: int
    wg_mtu: int
    flannel_mtu: int
    underlay_mtu: int
    keepalive: int
    pod_cidr: str
    service_cidr: str
    dns_domain: str
    hub: str
    members: tuple[Member, ...]
    login_user: str
    ssh_keys: tuple[str, ...]
    password_hash: str | None
    token_ttl: str
    # Day two (docs/day-two.md): free spare slots, members that take a slot on this render, and
    # members the hub still knows by their slot name (so its file did not have to change).
    spares: tuple[Slot, ...] = ()
    slot_takes: tuple[tuple[str, str], ...] = ()   # (member, slot) taken on this render
    slot_labels: tuple[tuple[str, str], ...] = ()  # (member, slot) the hub's peer entry keeps
    spares_target: int = 0
    join_window_days: int | None = None
    # issue 13: "hub" (default, output unchanged) or "mesh" with its model (topology.py) and
    # the failover loop's numbers (spec vpn.failover: interval, timeout, misses, return_after).
    topology: str = "hub"
    mesh: Mesh | None = None
    failover: tuple[int, int, int, int] = (2, 1, 3, 10)
    # issue 15: the status endpoint on every node (spec status_endpoint, off unless asked for).
    status_endpoint: bool = False
    # issue 17: `wgkube upgrade` under way to this minor (its scripts are rendered); `kubernetes`
    # is then the minor the control plane runs, which new nodes install. None: as before.
    upgrade_to: str | None = None
    # issue 18: add-ons and registry pull secrets, on the control plane only (empty = as before)
    addons: tuple[AddonStep, ...] = ()
    registries: tuple[RegistryStep, ...] = ()
    # issue 17 item 3 (docs/laptops.md), both opt-in: the admins' file name ("interface": <interface>.conf
    # as before, "cluster": wg-<cluster>.conf) and the admins whose tunnel also carries service_cidr.
    admin_conf: str = "interface"
    service_routes: tuple[str, ...] = ()
    # issue 14: etcd's (heartbeat, election) in ms when the spec sets them (None: etcd's defaults,
    # no extraArgs, output as before).
    etcd_tuning: tuple[int, int] | None = None
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({m.name: m for m in self.members})

    def member(self, name: str) -> Member:
        return self._index[name]

    @property
    def admin_ports(self) -> tuple[int, ...]:
        """What an admin reaches on every node over the VPN (the API on the hub comes on top)."""
        return facts.ADMIN_PORTS if self.status_endpoint else tuple(p for p in facts.ADMIN_PORTS if p != facts.STATUS_PORT)

    @property
    def hub_member(self) -> Member:
        return self._index[self.hub]

    @property
    def api_address(self) -> str:
        return self.hub_member.vpn_ip

    @cached_property
    def control_planes(self) -> tuple[Member, ...]:
        """Issue 14: every control plane, the one that runs `kubeadm init` (the hub) first. Cached:
        every node's files ask for it several times (a plan is frozen; replace() makes a new one)."""
        cps = [m for m in self.nodes if m.role == "control-plane"]
        return tuple(sorted(cps, key=lambda m: m.name != self.hub))

    @property
    def several_control_planes(self) -> bool:
        """Issue 14: more than one control plane, so every node runs the local API endpoint
        (artifacts/apiproxy.py). False: every file renders as before the issue."""
        return len(self.control_planes) > 1

    def initialises(self, m: Member) -> bool:
        """The node that runs `kubeadm init` (and applies the CNI, the admin bindings, add-ons):
        the hub. Every other node joins; other control planes with `--control-plane`. With one
        control plane any control-plane member counts (a base image's stand-in member too)."""
        return m.role == "control-plane" and (m.name == self.hub or not self.several_control_planes)

    @property
    def api_endpoint(self) -> str:
        """host:port every node's kubeadm, kubelet and kube-proxy use for the API: the hub's VPN
        address, or with several control planes the local endpoint on loopback (facts.py)."""
        if self.several_control_planes:
            return f"{facts.LOCAL_API_ADDRESS}:{facts.LOCAL_API_PORT}"
        return f"{self.api_address}:{self.api_port}"

    @property
    def api_port(self) -> int:
        return facts.API_PORT

    @property
    def vpn_prefixlen(self) -> int:
        return ipaddress.ip_network(self.vpn_cidr).prefixlen

    @property
    def nodes(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.is_node)

    @property
    def admins(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if not m.is_node)

    @property
    def admin_interface(self) -> str:
        """The interface name wg-quick gives an admin's tunnel: it takes it from the file name."""
        return laptop_interface(self.cluster) if self.admin_conf == "cluster" else self.interface

    @property
    def admin_wg_file(self) -> str:
        """The admin's WireGuard config under admins/<name>/ (wg-<cluster>.conf when opted in)."""
        return f"{self.admin_interface}.conf"

    @property
    def services_via(self) -> str:
        """The node an admin with `routes: services` sends service_cidr to: the control plane. It
        runs kube-proxy (ClusterIP DNAT happens there), has a public endpoint in both topologies
        (every admin peers with it directly) and is the hub in hub and spoke."""
        return self.hub

    def routes_services(self, m: Member) -> bool:
        return m.name in self.service_routes

    def listen_port(self, m: Member) -> int | None:
        """Members with an endpoint listen on a fixed port; members behind NAT let the kernel pick."""
        return m.endpoint_port if m.endpoint_host is not None else None

    def peers(self, m: Member) -> list[Peer]:
        """Cryptokey routing for member m.

        The hub lists its peers by VPN address, spare slots included, so a member that takes a
        slot lands exactly where the slot was and the hub's file stays byte-identical. A member
        still known by its slot name keeps the slot's entry (no Endpoint: the hub learns it from
        the member's first handshake, which every spoke starts because spokes keep alive)."""
        if self.mesh is not None:
            return self._mesh_peers(m)
        if m.name == self.hub:
            labels = dict(self.slot_labels)
            nat_keepalive = self.keepalive or None
            out: list[tuple[ipaddress.IPv4Address, Peer]] = []
            for o in self.members:
                if o.name == self.hub:
                    continue
                if o.name in labels:
                    peer = Peer(labels[o.name], (f"{o.vpn_ip}/32",), None, nat_keepalive)
                else:
                    peer = Peer(o.name, (f"{o.vpn_ip}/32",), o.endpoint, nat_keepalive if o.behind_nat else None)
                out.append((ipaddress.ip_address(o.vpn_ip), peer))
            out += [(ipaddress.ip_address(s.vpn_ip), Peer(s.name, (f"{s.vpn_ip}/32",), None, nat_keepalive)) for s in self.spares]
            return [peer for _, peer in sorted(out, key=lambda item: item[0])]
        hub = self.hub_member
        # Spokes keep the NAT mapping (and the hub's path back to them) alive. An admin with
        # `routes: services` also sends the service range to the hub (issue 17; docs/laptops.md).
        allowed = (self.vpn_cidr, self.service_cidr) if self.routes_services(m) else (self.vpn_cidr,)
        return [Peer(hub.name, allowed, hub.endpoint, self.keepalive or None)]

    def _mesh_peers(self, m: Member) -> list[Peer]:
        """Mesh (topology.py): a public member lists every other member (and the spare slots) like
        the hub does, by VPN address; a member behind NAT lists the public members only, and the
        first relay of its order also carries the catch-all (the VPN range) for NAT-to-NAT traffic.
        PersistentKeepalive on every link with a side behind NAT.

        A member's entry is the same in every public member's list, and every member behind NAT
        has the same list: both are made once per plan (1,000 members: 100,000 entries otherwise)."""
        mesh = self.mesh
        assert mesh is not None
        cache = self._index.setdefault("_mesh", {})
        if mesh.is_public(m.name):
            full = cache.get("public")
            if full is None:
                keepalive = self.keepalive or None
                labels = dict(self.slot_labels)
                out: list[tuple[int, str, Peer]] = []
                for o in self.members:
                    if o.name in labels:
                        peer = Peer(labels[o.name], (f"{o.vpn_ip}/32",), None, keepalive)
                    else:
                        peer = Peer(o.name, (f"{o.vpn_ip}/32",), o.endpoint, keepalive if o.behind_nat else None)
                    out.append((int(ipaddress.ip_address(o.vpn_ip)), o.name, peer))
                out += [(int(ipaddress.ip_address(s.vpn_ip)), "", Peer(s.name, (f"{s.vpn_ip}/32",), None, keepalive))
                        for s in self.spares]
                full = cache["public"] = [(name, peer) for _, name, peer in sorted(out, key=lambda item: item[0])]
            return [peer for name, peer in full if name != m.name]
        nat = cache.get("nat")
        if nat is None:
            order = mesh.relays
            first = order[0] if order else None
            keepalive = self.keepalive or None
            out2: list[tuple[int, Peer]] = []
            for o in self.members:
                if o.behind_nat:
                    continue
                allowed = (f"{o.vpn_ip}/32", self.vpn_cidr) if o.name == first else (f"{o.vpn_ip}/32",)
                out2.append((int(ipaddress.ip_address(o.vpn_ip)), Peer(o.name, allowed, o.endpoint, keepalive)))
            nat = cache["nat"] = [peer for _, peer in sorted(out2, key=lambda item: item[0])]
        if self.routes_services(m):
            # issue 17: this admin also sends the service range to the control plane (its own copy).
            return [Peer(p.name, p.allowed_ips + (self.service_cidr,), p.endpoint, p.keepalive) if p.name == self.services_via else p
                    for p in nat]
        return list(nat)

    def relays_for(self, m: Member) -> list[Member]:
        """Mesh: the relays a member behind NAT tries, in order (empty for public members and in hub mode)."""
        if self.mesh is None:
            return []
        return [self.member(r) for r in self.mesh.relay_order(m.name)]

    def is_relay(self, m: Member) -> bool:
        return self.mesh is not None and m.name in self.mesh.relays


def allocate(spec: ClusterSpec, pinned: dict[str, str] | None = None, reserved: set[str] | None = None,
             extra: list[str] | None = None, quarantined: set[str] | None = None) -> dict[str, str]:
    """VPN address per member: fixed (spec) first, then the address the member had before
    (pinned, from the secrets bundle), then the lowest free host address, in spec order.
    Reserved addresses (free spare slots) are never handed out; extra names (new spare slots)
    get addresses after every member. Quarantined addresses (recently given up by a removed
    member) are handed out only when nothing else is free."""
    pinned = pinned or {}
    net = ipaddress.ip_network(spec.vpn.cidr)
    names = [n.name for n in spec.nodes] + [a.name for a in spec.admins]
    fixed = {n.name: n.vpn_ip for n in spec.nodes if n.vpn_ip} | {a.name: a.vpn_ip for a in spec.admins if a.vpn_ip}
    taken = {ipaddress.ip_address(ip) for ip in fixed.values()} | {ipaddress.ip_address(ip) for ip in reserved or ()}
    out: dict[str, str] = dict(fixed)
    for name in names:
        if name in out or name not in pinned:
            continue
        ip = ipaddress.ip_address(pinned[name])
        if ip in net and ip not in taken:
            out[name] = str(ip)
            taken.add(ip)
    held = {ipaddress.ip_address(ip) for ip in quarantined or ()}
    free = itertools.chain((h for h in net.hosts() if h not in taken and h not in held),
                           (h for h in net.hosts() if h in held and h not in taken))
    for name in names + list(extra or ()):
        if name not in out:
            try:
                ip = next(free)
            except StopIteration:
                raise UserError(Problem("vpn.cidr", f"{net} has no free address left for {name!r}", "use a larger vpn.cidr, or fewer vpn.spares")) from None
            out[name] = str(ip)
            taken.add(ip)
    return out


def build_plan(spec: ClusterSpec, pinned: dict[str, str] | None = None, *, reserved: dict[str, str] | None = None,
               new_spares: list[str] | None = None, slot_takes: dict[str, str] | None = None,
               slot_labels: dict[str, str] | None = None, spares_target: int = 0, quarantined: set[str] | None = None) -> Plan:
    """reserved: free spare slot -> its address (kept); new_spares: slot names to allocate.
    daytwo.planning.plan_for() works these out from the secrets bundle."""
    reserved = reserved or {}
    addresses = allocate(spec, pinned, set(reserved.values()), new_spares, quarantined)
    spares = sorted([Slot(n, ip) for n, ip in reserved.items()] + [Slot(n, addresses[n]) for n in new_spares or ()],
                    key=lambda s: ipaddress.ip_address(s.vpn_ip))
    members: list[Member] = []
    for n in spec.nodes:
        host = port = None
        if n.endpoint:
            host, port = parse_endpoint(n.endpoint, spec.vpn.port)
        public = None
        if n.network is not None:
            public = str(ipaddress.ip_interface(n.network.address).ip)
        elif host is not None:
            try:
                public = str(ipaddress.ip_address(host))
            except ValueError:
                public = None
        exposed = []
        for item in n.expose:
            m = EXPOSE.fullmatch(item)
            assert m is not None  # checked by spec semantics
            exposed.append(Exposed(m.group(3), int(m.group(1)), int(m.group(2) or m.group(1))))
        members.append(Member(
            name=n.name, kind="node", role=n.role, vpn_ip=addresses[n.name],
            endpoint_host=host, endpoint_port=port, os=n.os, package_family=OS_FAMILIES[n.os],
            public_address=public, static_network=n.network.model_dump() if n.network else None,
            expose=tuple(exposed), provider=n.provider,
        ))
    for a in spec.admins:
        members.append(Member(name=a.name, kind="admin", role="admin", vpn_ip=addresses[a.name]))
    hub = spec.hub
    assert hub is not None  # check_semantics refuses a spec without one
    wg_mtu = spec.vpn.underlay_mtu - facts.WIREGUARD_OVERHEAD
    mesh = None
    if spec.vpn.topology == "mesh":
        mesh = build_mesh([Site(m.name, m.kind, m.role, not m.behind_nat) for m in members], spec.vpn.relays)
    fo = spec.vpn.failover
    return Plan(
        cluster=spec.name, kubernetes=spec.kubernetes, vpn_cidr=spec.vpn.cidr, interface=spec.vpn.interface,
        port=spec.vpn.port, wg_mtu=wg_mtu, flannel_mtu=wg_mtu - facts.VXLAN_OVERHEAD,
        underlay_mtu=spec.vpn.underlay_mtu, keepalive=spec.vpn.keepalive, pod_cidr=spec.pod_cidr,
        service_cidr=spec.service_cidr, dns_domain="cluster.local", hub=hub, members=tuple(members),
        login_user=spec.login.user, ssh_keys=tuple(spec.login.ssh_authorized_keys),
        password_hash=spec.login.password_hash, token_ttl=spec.join.token_ttl,
        spares=tuple(spares), slot_takes=tuple(sorted((slot_takes or {}).items())),
        slot_labels=tuple(sorted((slot_labels or {}).items())), spares_target=spares_target,
        join_window_days=spec.join.window_days,
        topology=spec.vpn.topology, mesh=mesh, failover=(fo.interval, fo.timeout, fo.misses, fo.return_after),
        status_endpoint=spec.status_endpoint,
        admin_conf=spec.vpn.admin_conf, service_routes=tuple(a.name for a in spec.admins if a.routes == "services"),
        etcd_tuning=(spec.etcd.heartbeat_ms, spec.etcd.election_ms) if spec.etcd is not None else None,
    )


def laptop_interface(cluster: str) -> str:
    """wg-<cluster>, the interface (and file) name of an admin's tunnel with `vpn.admin_conf: cluster`.

    wg-quick takes the interface name from the file name and accepts only
    ^[a-zA-Z0-9_=+.-]{1,15}$ (wg-quick/linux.bash; Linux IFNAMSIZ is 16 with the NUL). A cluster
    name is a DNS label of up to 63 characters, so wg-<cluster> fits up to 12 characters; a longer
    one becomes wg-<first 6>.<first 5 hex of sha256(cluster)> (15 characters). Deterministic; the
    '.' can never appear in a cluster name, so a shortened name never equals a short cluster's, and
    two long names clash only if they share the first 6 characters and 20 bits of hash."""
    import hashlib
    name = f"wg-{cluster}"
    if len(name) <= 15:
        return name
    return f"wg-{cluster[:6]}.{hashlib.sha256(cluster.encode()).hexdigest()[:5]}"


def plan_summary(plan: Plan) -> dict:
    """The plan as JSON-able data (written to out/<cluster>/plan.json for tools and tests).
    The mesh keys appear only for a mesh: a hub cluster's plan.json stays byte-identical."""
    out = _summary(plan)
    if plan.mesh is not None:
        interval, timeout, misses, return_after = plan.failover
        out["vpn"]["topology"] = "mesh"
        out["mesh"] = {"relays": list(plan.mesh.relays), "relayed_pairs": plan.mesh.relayed_count(),
                       "failover": {"interval": interval, "timeout": timeout, "misses": misses, "return_after": return_after}}
    if plan.status_endpoint:
        out["status_endpoint"] = {"port": facts.STATUS_PORT}
    if plan.admin_conf != "interface" or plan.service_routes:  # issue 17: only when opted in (plan.json stays as it was)
        out["admins"] = {"wg_file": plan.admin_wg_file, "services_via": plan.services_via,
                         "routes_services": list(plan.service_routes)}
    if plan.several_control_planes or plan.etcd_tuning:  # issue 14: only then (plan.json stays as it was)
        out["control_planes"] = {"names": [m.name for m in plan.control_planes], "api_endpoint": plan.api_endpoint,
                                 "etcd": dict(zip(("heartbeat_ms", "election_ms"), plan.etcd_tuning)) if plan.etcd_tuning else None}
    if plan.addons or plan.registries:  # issue 18: only when there are any (plan.json stays as it was)
        out["addons"] = [{"name": a.name, "kind": a.kind, "source": a.source, "digest": addon_digest(a)} for a in plan.addons]
        out["registries"] = [{"server": r.server, "username": r.username, "namespaces": list(r.namespaces),
                              "patch_default_service_account": r.patch_default_service_account, "secret": r.secret_name}
                             for r in plan.registries]
    return out


def addon_digest(step: AddonStep) -> str:
    """What makes an add-on what it is (its text, URL and hash, chart, version, values), hashed:
    `wgkube plan` compares it with the last render's plan.json to call an add-on changed."""
    import hashlib
    import json
    fields = {k: v for k, v in step.__dict__.items() if k != "source"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _summary(plan: Plan) -> dict:
    return {
        "cluster": plan.cluster,
        "kubernetes": plan.kubernetes,
        **({"upgrade_to": plan.upgrade_to} if plan.upgrade_to else {}),
        "vpn": {"cidr": plan.vpn_cidr, "interface": plan.interface, "port": plan.port, "mtu": plan.wg_mtu,
                "underlay_mtu": plan.underlay_mtu, "keepalive": plan.keepalive},
        "pod_cidr": plan.pod_cidr,
        "service_cidr": plan.service_cidr,
        "flannel_mtu": plan.flannel_mtu,
        "hub": plan.hub,
        "api": f"{plan.api_address}:{plan.api_port}",
        "spares": [{"slot": sp.name, "vpn_ip": sp.vpn_ip} for sp in plan.spares],
        "join": {"window_days": plan.join_window_days, "token_ttl": plan.token_ttl},
        "members": [
            {"name": m.name, "kind": m.kind, "role": m.role, "vpn_ip": m.vpn_ip, "endpoint": m.endpoint,
             "listen_port": plan.listen_port(m), "behind_nat": m.behind_nat, "public_address": m.public_address,
             "static_network": m.static_network,
             "expose": [f"{e.nft()}/{e.protocol}" for e in m.expose], "os": m.os,
             "hub_peer_label": dict(plan.slot_labels).get(m.name)}
            for m in plan.members
        ],
    }


def with_kubernetes(plan: Plan, control_plane: str, upgrade_to: str | None) -> Plan:
    """Issue 17: the minor new nodes install is the one the control plane runs (daytwo/upgrade.py)."""
    if plan.kubernetes == control_plane and plan.upgrade_to == upgrade_to:
        return plan
    import dataclasses
    return dataclasses.replace(plan, kubernetes=control_plane, upgrade_to=upgrade_to, _index={})


def with_addons(plan: Plan, doc) -> Plan:
    """Issue 18: the spec's add-ons and registries, with the local files load_spec read, in the plan."""
    import dataclasses

    import yaml
    spec = doc.spec
    if not spec.addons and not spec.registries:
        return plan
    steps = []
    for i, a in enumerate(spec.addons):
        if a.helm is not None:
            h = a.helm
            values = doc.local_files.get(("addons", i, "helm", "values_file"), "")
            if h.values is not None:
                values = yaml.safe_dump(h.values, sort_keys=True, default_flow_style=False) if h.values else ""
            steps.append(AddonStep(a.name, "helm", f"{h.chart} {h.version} from {h.repository}", content=values,
                                   chart=h.chart, repository=h.repository, version=h.version, namespace=h.namespace))
        elif a.is_url:
            steps.append(AddonStep(a.name, "url", a.manifest, url=a.manifest, sha256=a.sha256 or ""))
        else:
            steps.append(AddonStep(a.name, "manifest", a.manifest, content=doc.local_files.get(("addons", i, "manifest"), "")))
    regs = tuple(RegistryStep(r.server, r.username, tuple(r.namespaces), r.patch_default_service_account, r.secret_name)
                 for r in spec.registries)
    return dataclasses.replace(plan, addons=tuple(steps), registries=regs, _index={})
