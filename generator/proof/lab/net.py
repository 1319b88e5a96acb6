"""Where everything sits in the lab: namespaces, underlay addresses, NAT gateways, pods. Pure.

    internet (router, 192.0.2.1, metadata 169.254.169.254)
      |-- eth0 of every member with an endpoint (its public address, /32)
      |-- wan0 of NAT gateway k (masquerade) -- lan0 bridge 192.168.x.0/24 -- members behind NAT
    every node: a "pod" namespace behind a cni0 bridge, address from the pod CIDR

Members without an endpoint (the plan says behind_nat) go to the NAT gateways round-robin, so
two gateways with three NAT'd members put two members behind one NAT and one behind the other.
The spec has no field for this on purpose: it is a lab choice (`--nat-gateways`).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ...errors import Problem, UserError
from ...facts import METADATA_ADDRESS
from ..read.cluster import Cluster, MemberFiles

ROUTER = ipaddress.IPv4Address("192.0.2.1")
METADATA = ipaddress.IPv4Address(METADATA_ADDRESS)
PUBLIC_POOLS = ("198.51.100.0/24", "203.0.113.0/24")   # documentation ranges, inside the lab only
LAN_POOL = "192.168.0.0/16"


@dataclass
class Site:
    member: MemberFiles
    ns: str
    address: ipaddress.IPv4Address        # underlay address on eth0
    prefixlen: int
    gateway: ipaddress.IPv4Address
    nat: int | None = None                # index into Topology.nats
    pod_ns: str | None = None
    pod_net: ipaddress.IPv4Network | None = None

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def public(self) -> bool:
        return self.nat is None

    @property
    def pod_address(self) -> ipaddress.IPv4Address | None:
        return None if self.pod_net is None else self.pod_net.network_address + 2

    @property
    def pod_gateway(self) -> ipaddress.IPv4Address | None:
        return None if self.pod_net is None else self.pod_net.network_address + 1


@dataclass
class Nat:
    ns: str
    wan: ipaddress.IPv4Address
    lan: ipaddress.IPv4Network
    members: list[str] = field(default_factory=list)

    @property
    def lan_gateway(self) -> ipaddress.IPv4Address:
        return self.lan.network_address + 1


@dataclass
class Topology:
    prefix: str
    internet: str
    sites: list[Site]
    nats: list[Nat]
    hosts: dict[str, ipaddress.IPv4Address]   # endpoint host names -> lab address (private /etc/hosts)

    def site(self, name: str) -> Site:
        return next(s for s in self.sites if s.name == name)

    def namespaces(self) -> list[str]:
        """Creation order; cleanup runs it backwards."""
        pods = [s.pod_ns for s in self.sites if s.pod_ns]
        return [self.internet, *(n.ns for n in self.nats), *(s.ns for s in self.sites), *pods]


def _ip(value: str | None) -> ipaddress.IPv4Address | None:
    if value is None:
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if addr.version != 4:
        raise UserError(Problem(value, "the lab runs IPv4 underlays only", "use an IPv4 endpoint for the lab"))
    return addr


def plan_topology(cluster: Cluster, prefix: str, nat_gateways: int = 2) -> Topology:
    inner = [ipaddress.ip_network(cluster.vpn_cidr), ipaddress.ip_network(cluster.pod_cidr)]
    taken: set[ipaddress.IPv4Address] = {ROUTER, METADATA}
    wanted: dict[str, ipaddress.IPv4Address] = {}
    for m in cluster.members:
        if m.behind_nat:
            continue
        # Peers dial the endpoint: the lab gives the member that address when it is one.
        addr = _ip(m.endpoint_host) or _ip(m.public_address)
        if addr is not None:
            if addr in taken or any(addr in n for n in inner):
                raise UserError(Problem(f"nodes.{m.name}.endpoint", f"{addr} clashes with another lab address or the VPN/pod range",
                                        "give each public member its own address outside the VPN and pod ranges"))
            taken.add(addr)
            wanted[m.name] = addr
    pool = (a for net in PUBLIC_POOLS for a in ipaddress.ip_network(net).hosts() if a not in taken)
    hosts: dict[str, ipaddress.IPv4Address] = {}
    for m in cluster.members:
        if not m.behind_nat and m.name not in wanted:
            wanted[m.name] = next(pool)
            if m.endpoint_host:
                hosts[m.endpoint_host] = wanted[m.name]
    behind = [m for m in cluster.members if m.behind_nat]
    count = max(1, min(nat_gateways, len(behind))) if behind else 0
    lans = (n for n in ipaddress.ip_network(LAN_POOL).subnets(new_prefix=24)
            if int(n.network_address) >> 8 & 0xFF >= 10 and not any(n.overlaps(x) for x in inner)
            and not any(a in n for a in taken))
    nats = [Nat(f"{prefix}-nat{k}", next(pool), next(lans)) for k in range(count)]
    pods = ipaddress.ip_network(cluster.pod_cidr).subnets(new_prefix=24)
    sites: list[Site] = []
    for m in cluster.members:
        pod_ns = pod_net = None
        if m.kind == "node":
            pod_ns, pod_net = f"{prefix}-pod-{m.name}", next(pods)
        if m.behind_nat:
            k = len([s for s in sites if s.nat is not None]) % count
            nat = nats[k]
            addr = nat.lan.network_address + 10 + len(nat.members)
            nat.members.append(m.name)
            sites.append(Site(m, f"{prefix}-{m.name}", addr, 24, nat.lan_gateway, k, pod_ns, pod_net))
        else:
            sites.append(Site(m, f"{prefix}-{m.name}", wanted[m.name], 32, ROUTER, None, pod_ns, pod_net))
    return Topology(prefix, f"{prefix}-internet", sites, nats, hosts)


# --------------------------------------------------------------------------- shell scripts per namespace

QUIET_IPV6 = "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ip link set lo up"


def base_scripts(topo: Topology) -> dict[str, str]:
    """Phase 1, per namespace: no IPv6 chatter (it would blur the drop counters), lo up."""
    return {ns: QUIET_IPV6 for ns in topo.namespaces()}


def link_scripts(topo: Topology) -> dict[str, str]:
    """Phase 2: veth pairs, created from one side straight into the other namespace."""
    inet = [f"ip link add m{i} type veth peer name eth0 netns {s.ns}" for i, s in enumerate(topo.sites) if s.public]
    inet += [f"ip link add g{k} type veth peer name wan0 netns {n.ns}" for k, n in enumerate(topo.nats)]
    scripts = {topo.internet: "\n".join(inet) + "\n"}
    for k, nat in enumerate(topo.nats):
        lines = [f"ip link add p{i} type veth peer name eth0 netns {s.ns}" for i, s in enumerate(topo.sites) if s.nat == k]
        scripts[nat.ns] = "\n".join(lines) + "\n"
    for s in topo.sites:
        if s.pod_ns:
            scripts[s.ns] = f"ip link add vethpod0 type veth peer name eth0 netns {s.pod_ns}\n"
    return scripts


def address_scripts(topo: Topology, pod_cidr: str, service_ip: ipaddress.IPv4Address | None = None) -> dict[str, str]:
    """Phase 3: addresses, routes, the NAT gateways' masquerade, pods behind cni0."""
    inet = ["sysctl -qw net.ipv4.ip_forward=1",
            # On lo: no dummy module needed, and ARP answers for any local address anyway.
            f"ip addr add {METADATA}/32 dev lo", f"ip addr add {ROUTER}/32 dev lo"]
    for i, s in enumerate(topo.sites):
        if s.public:
            inet += [f"ip link set m{i} up", f"ip route add {s.address}/32 dev m{i} src {ROUTER}"]
    for k, n in enumerate(topo.nats):
        inet += [f"ip link set g{k} up", f"ip route add {n.wan}/32 dev g{k} src {ROUTER}"]
    scripts = {topo.internet: "\n".join(inet) + "\n"}
    for k, n in enumerate(topo.nats):
        lines = ["sysctl -qw net.ipv4.ip_forward=1",
                 f"ip addr add {n.wan}/32 dev wan0", "ip link set wan0 up", f"ip route add default via {ROUTER} dev wan0 onlink",
                 "ip link add lan0 type bridge", f"ip addr add {n.lan_gateway}/24 dev lan0", "ip link set lan0 up"]
        lines += [f"ip link set p{i} master lan0 up" for i, s in enumerate(topo.sites) if s.nat == k]
        lines.append("nft -f - <<'EOF'\n" + NAT_RULESET + "EOF")
        scripts[n.ns] = "\n".join(lines) + "\n"
    for s in topo.sites:
        lines = [f"ip addr add {s.address}/{s.prefixlen} dev eth0", "ip link set eth0 up",
                 f"ip route add default via {s.gateway} dev eth0" + (" onlink" if s.public else "")]
        if s.pod_ns:
            lines += ["ip link add cni0 type bridge", f"ip addr add {s.pod_gateway}/24 dev cni0", "ip link set cni0 up",
                      "ip link set vethpod0 master cni0 up",
                      "nft -f - <<'EOF'\n" + stand_in_ruleset(s, pod_cidr, service_ip) + "EOF"]
            scripts[s.pod_ns] = (f"ip addr add {s.pod_address}/24 dev eth0\nip link set eth0 up\n"
                                 f"ip route add default via {s.pod_gateway} dev eth0\n")
        scripts[s.ns] = "\n".join(lines) + "\n"
    return scripts


NAT_RULESET = """table ip wgkubelab_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" masquerade comment "a home router"
    }
}
"""

DNAT_PORT = 30081        # the stand-in NodePort DNAT'ed to the pod
POD_PORT = 8080
SERVICE_PORT = 80        # issue 17: the stand-in Service's port on its ClusterIP


def cluster_ip(cluster: Cluster) -> ipaddress.IPv4Address | None:
    """Issue 17: the stand-in Service's ClusterIP (service_cidr + 100), when an admin has
    `routes: services`; None otherwise (the lab's rulesets stay exactly as before)."""
    if not cluster.services_via or not cluster.service_cidr:
        return None
    return ipaddress.ip_network(cluster.service_cidr).network_address + 100


def stand_in_ruleset(site: Site, pod_cidr: str, service_ip: ipaddress.IPv4Address | None = None) -> str:
    """What kube-proxy and flannel would add next to wgkube's table (a separate table, as they do).

    service_ip (issue 17): a STAND-IN for kube-proxy's ClusterIP handling, on every node as
    kube-proxy runs on every node: its KUBE-SERVICES chain DNATs `-d <ClusterIP> --dport <port>`
    to an endpoint (here the node's own pod), and marks for masquerade (KUBE-MARK-MASQ) what comes
    from outside the cluster CIDR (`! -s <clusterCIDR>`), so the backend's replies return through
    this node (kubernetes.io/docs/reference/networking/virtual-ips/, iptables proxy mode)."""
    service = "" if service_ip is None else (
        f'\n        ip daddr {service_ip} tcp dport {SERVICE_PORT} dnat to {site.pod_address}:{POD_PORT} '
        f'comment "kube-proxy stand-in: KUBE-SERVICES ClusterIP DNAT"')
    masq = "" if service_ip is None else (
        f'\n        ct status dnat ct original ip daddr {service_ip} ip saddr != {pod_cidr} masquerade '
        f'comment "kube-proxy stand-in: KUBE-MARK-MASQ from outside the cluster CIDR"')
    return f"""table ip wgkubelab_k8s {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        fib daddr type local tcp dport {DNAT_PORT} dnat to {site.pod_address}:{POD_PORT} comment "kube-proxy NodePort stand-in: to this node only"{service}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {pod_cidr} ip daddr != {pod_cidr} masquerade comment "flannel ipMasq stand-in"{masq}
    }}
}}
"""


def hosts_file(topo: Topology) -> str:
    lines = ["127.0.0.1 localhost"] + [f"{addr} {name}" for name, addr in sorted(topo.hosts.items())]
    return "\n".join(lines) + "\n"
