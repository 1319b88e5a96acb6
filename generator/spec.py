"""The cluster spec: what the user writes (cluster.yaml).

Three layers, kept apart like Butane's: ``load_yaml`` (text -> data, with line numbers),
the pydantic model (types, defaults, unknown keys rejected) and ``check_semantics``
(rules that span fields: overlapping CIDRs, duplicate names...). Every problem names the
spec path of the field it is about and, where known, its line.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import versions
from .errors import Problem, UserError

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
EXPOSE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?/(tcp|udp)$")

OS_FAMILIES = {
    "ubuntu-22.04": "apt",
    "ubuntu-24.04": "apt",
    "debian-12": "apt",
    "rocky-9": "dnf",
    "almalinux-9": "dnf",
    "rhel-9": "dnf",
}

# Provider names accepted in the spec; limits live in artifacts/providers.py.
PROVIDERS = ("aws", "hetzner", "digitalocean", "linode", "azure", "openstack", "gcp", "none")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=1, le=65535)]


class Vpn(Strict):
    cidr: str = Field("10.88.0.0/24", description="VPN address range, one address per member")
    port: Port = Field(51820, description="the one public UDP port (WireGuard) of the cluster")
    interface: str = Field("wg0", description="WireGuard interface name, the same on every node")
    underlay_mtu: int = Field(1500, ge=1280, le=9000, description="MTU of the smallest underlay link")
    keepalive: int = Field(25, ge=0, le=600, description="PersistentKeepalive (s) for members behind NAT; 0 disables")
    # day two (issue 5): pre-provisioned slots, already in the hub's peer list (docs/day-two.md)
    spares: int = Field(0, ge=0, le=250, description="spare member slots (key + address) made up front and already in the hub's peer list, so a new member needs no hub change")

    @field_validator("interface")
    @classmethod
    def _iface(cls, v: str) -> str:
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_-]{0,14}", v):
            raise ValueError("must be 1-15 characters: a letter, then letters, digits, '-' or '_'")
        return v

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return _ipv4_network(v)


class StaticNetwork(Strict):
    address: str = Field(description="the node's underlay address with prefix, e.g. 203.0.113.10/24")
    gateway: str | None = None
    nameservers: list[str] = Field(default_factory=list)

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        try:
            iface = ipaddress.ip_interface(v)
        except ValueError:
            raise ValueError("must be an address with a prefix length, e.g. 203.0.113.10/24") from None
        if iface.network.prefixlen == iface.max_prefixlen and "/" not in v:
            raise ValueError("must carry a prefix length, e.g. 203.0.113.10/24")
        return v

    @field_validator("gateway")
    @classmethod
    def _gw(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v

    @field_validator("nameservers")
    @classmethod
    def _ns(cls, v: list[str]) -> list[str]:
        for item in v:
            ipaddress.ip_address(item)
        return v


class Node(Strict):
    name: str = Field(description="DNS-1123 label; becomes the hostname and the Kubernetes node name")
    role: Literal["control-plane", "worker"] = "worker"
    os: Literal[tuple(OS_FAMILIES)] = "debian-12"  # type: ignore[valid-type]
    vpn_ip: str | None = Field(None, description="fixed VPN address; allocated deterministically when absent")
    endpoint: str | None = Field(None, description="public host or IP[:port] other members can reach; absent = behind NAT")
    network: StaticNetwork | None = Field(None, description="static underlay addressing (emits network-config)")
    expose: list[str] = Field(default_factory=list, description="extra public ports, e.g. ['443/tcp', '30000-30010/tcp']")
    provider: Literal[PROVIDERS] | None = Field(None, description="where the user-data goes; picks an encoding that fits")  # type: ignore[valid-type]


class Admin(Strict):
    name: str = Field(description="DNS-1123 label for the admin device (a laptop)")
    vpn_ip: str | None = None


class Login(Strict):
    user: str = Field("ops", description="console/SSH user created on every node")
    ssh_authorized_keys: list[str] = Field(default_factory=list)
    password_hash: str | None = Field(None, description="crypt(3) SHA-512 hash; use `wgkube render --password` to make one")

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
            raise ValueError("must be a POSIX user name (lowercase letter or '_', then up to 31 of a-z 0-9 _ -)")
        return v

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            if not re.match(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+", key):
                raise ValueError(f"not an OpenSSH public key: {key[:40]!r}")
        return v

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\$(6|5|y|2b)\$\S+", v):
            raise ValueError("must be a crypt(3) hash such as $6$..., never a plain password")
        return v


class Join(Strict):
    token_ttl: str = Field("24h", description="bootstrap token lifetime after `kubeadm init` (Go duration)")
    # day two (issue 5): per-node join credentials valid this many days (docs/join-window.md)
    window_days: int | None = Field(None, ge=1, le=365, description="join window: each worker gets its own join credential, valid this many days from when it is added; unset = the shared bootstrap token (token_ttl)")

    @field_validator("token_ttl")
    @classmethod
    def _ttl(cls, v: str) -> str:
        if not re.fullmatch(r"(\d+h)?(\d+m)?(\d+s)?", v) or not v:
            raise ValueError("must be a duration like 24h, 90m or 168h")
        return v


class ClusterSpec(Strict):
    name: str = Field(description="cluster name (DNS-1123 label); names the output folder")
    kubernetes: str = Field(versions.KUBERNETES_DEFAULT, description="Kubernetes minor, e.g. '1.37'")
    vpn: Vpn = Field(default_factory=Vpn)
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    login: Login = Field(default_factory=Login)
    join: Join = Field(default_factory=Join)
    nodes: list[Node]
    admins: list[Admin] = Field(default_factory=list)

    @field_validator("kubernetes", mode="before")
    @classmethod
    def _k8s(cls, v: Any) -> str:
        v = str(v)
        if v not in versions.KUBERNETES_SUPPORTED:
            raise ValueError(
                f"unsupported Kubernetes version {v!r}; supported minors: {', '.join(versions.KUBERNETES_SUPPORTED)}"
            )
        return v

    @field_validator("pod_cidr", "service_cidr")
    @classmethod
    def _nets(cls, v: str) -> str:
        return _ipv4_network(v)


def _ipv4_network(v: str) -> str:
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError as exc:
        raise ValueError(f"not a network in CIDR form ({exc})") from None
    if net.version != 4:
        raise ValueError("only IPv4 ranges are supported for now")
    return str(net)


# --------------------------------------------------------------------------- YAML + lines


# libyaml's parser when present (parsing only: it cannot change any output). Its marks carry
# the lines we report.
_LineLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose_lines(root: yaml.Node | None) -> dict[tuple, int]:
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                lines[path + (k,)] = key.start_mark.line + 1
                walk(value, path + (k,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def format_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """Line of the field at loc, or of its nearest parent that is in the file."""
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


class SpecDocument:
    """A parsed spec plus where each field sits in the file, for error messages."""

    def __init__(self, spec: ClusterSpec, lines: dict[tuple, int], source: str):
        self.spec = spec
        self.lines = lines
        self.source = source

    def line(self, loc: tuple) -> int | None:
        return line_of(self.lines, loc)

    def problem(self, loc: tuple, message: str, hint: str = "") -> Problem:
        return Problem(format_path(loc), message, hint, self.line(loc))


_HINTS = {
    "extra_forbidden": "remove it or fix the spelling; `wgkube schema` lists every field",
    "missing": "add this field",
}


def _describe(loc: tuple) -> str:
    """A hint from the model itself: what the field at loc is for (its description)."""
    model: type[BaseModel] | None = ClusterSpec
    info = None
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        if info is None:
            break
        ann = info.annotation
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = inner[0] if inner else None
    if info is not None and info.description:
        return f"this field is: {info.description}"
    return "`wgkube schema` shows what every field takes"


def parse_spec(text: str, source: str = "cluster.yaml") -> SpecDocument:
    """Text -> validated spec. Raises UserError listing every problem found."""
    try:
        root = yaml.compose(text, Loader=_LineLoader)
        lines = _compose_lines(root)
        data = _LineLoader(text).construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        raise UserError(Problem("", f"malformed YAML: {what}", "check indentation and quoting near this line", line), source) from None
    if not isinstance(data, dict):
        raise UserError(Problem("", "the spec must be a YAML mapping (name:, nodes:, ...)", "start from `wgkube init`", 1), source)
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("literal[", "function-"))))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown field {loc[-1]!r}"
            hint = _HINTS.get(err["type"]) or _describe(loc)
            problems.append(Problem(format_path(loc), msg, hint, line_of(lines, loc)))
        raise UserError(problems, source) from None
    doc = SpecDocument(spec, lines, source)
    problems = check_semantics(doc)
    if problems:
        raise UserError(problems, source)
    return doc


def load_spec(path: Path) -> SpecDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(Problem("", f"cannot read the spec: {exc.strerror}", "give the path of a cluster.yaml; `wgkube init` writes one"), str(path)) from None
    return parse_spec(text, str(path))


# --------------------------------------------------------------------------- semantics


def parse_endpoint(value: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '1.2.3.4:port', '[v6]:port' -> (host, port). ValueError if bad."""
    host, port = value, default_port
    if value.startswith("["):
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?", value)
        if not m:
            raise ValueError("an IPv6 endpoint looks like [2001:db8::1]:51820")
        host, port = m.group(1), int(m.group(2) or default_port)
        ipaddress.IPv6Address(host)
    elif value.count(":") == 1:
        host, _, p = value.partition(":")
        if not p.isdigit():
            raise ValueError("the port after ':' must be a number")
        port = int(p)
    elif value.count(":") > 1:
        raise ValueError("write IPv6 endpoints in brackets: [2001:db8::1]:51820")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
            raise ValueError(f"{host!r} is neither an IP address nor a valid host name") from None
    return host, port


def check_semantics(doc: SpecDocument) -> list[Problem]:
    spec = doc.spec
    p: list[Problem] = []
    if not DNS_LABEL.fullmatch(spec.name):
        p.append(doc.problem(("name",), f"{spec.name!r} is not a DNS-1123 label", "use lowercase letters, digits and '-', at most 63 characters"))

    vpn = ipaddress.ip_network(spec.vpn.cidr)
    nets = {"vpn.cidr": vpn, "pod_cidr": ipaddress.ip_network(spec.pod_cidr), "service_cidr": ipaddress.ip_network(spec.service_cidr)}
    keys = list(nets)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if nets[a].overlaps(nets[b]):
                p.append(doc.problem(tuple(b.split(".")), f"{nets[b]} overlaps {a} {nets[a]}", "VPN, pod and service ranges must be disjoint"))
    if ipaddress.ip_network(spec.pod_cidr).prefixlen > 22:
        p.append(doc.problem(("pod_cidr",), f"{spec.pod_cidr} is too small: every node takes a /24 from it", "use a /16, or at least a /22"))

    members: list[tuple[tuple, str, str | None]] = [(("nodes", i), n.name, n.vpn_ip) for i, n in enumerate(spec.nodes)]
    members += [(("admins", i), a.name, a.vpn_ip) for i, a in enumerate(spec.admins)]

    seen_names: dict[str, tuple] = {}
    for loc, name, _ in members:
        if not DNS_LABEL.fullmatch(name):
            p.append(doc.problem(loc + ("name",), f"{name!r} is not a valid name (DNS-1123 label)", "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"))
        if name in seen_names:
            p.append(doc.problem(loc + ("name",), f"duplicate name {name!r} (also at {format_path(seen_names[name])})", "every node and admin needs its own name"))
        else:
            seen_names[name] = loc

    usable = vpn.num_addresses - 2 if vpn.prefixlen < 31 else vpn.num_addresses
    wanted = len(members) + spec.vpn.spares  # day two: spare slots take addresses too
    if wanted > usable:
        spares = f" and {spec.vpn.spares} spare slots" if spec.vpn.spares else ""
        p.append(doc.problem(("vpn", "cidr"), f"{vpn} has {usable} usable addresses but the spec has {len(members)} members{spares}", f"use a larger range, e.g. /{max(8, 32 - (wanted + 2).bit_length())}"))

    seen_ips: dict[ipaddress.IPv4Address, tuple] = {}
    for loc, _name, ip in members:
        if ip is None:
            continue
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            p.append(doc.problem(loc + ("vpn_ip",), f"{ip!r} is not an IP address", f"pick an address inside vpn.cidr {vpn}"))
            continue
        if addr not in vpn or addr in (vpn.network_address, vpn.broadcast_address):
            p.append(doc.problem(loc + ("vpn_ip",), f"{ip} is outside vpn.cidr {vpn} (or is its network/broadcast address)", f"pick a host address inside {vpn}"))
        elif addr in seen_ips:
            p.append(doc.problem(loc + ("vpn_ip",), f"duplicate VPN address {ip} (also at {format_path(seen_ips[addr])})", "every member needs its own address; drop vpn_ip to allocate one"))
        else:
            seen_ips[addr] = loc

    if not spec.nodes:
        p.append(doc.problem(("nodes",), "the spec has no nodes", "add at least one control-plane node with an endpoint"))
    cps = [i for i, n in enumerate(spec.nodes) if n.role == "control-plane"]
    if spec.nodes and not cps:
        p.append(doc.problem(("nodes",), "no node has role control-plane", "set `role: control-plane` on the node that should run the API server"))
    if spec.nodes and not any(n.endpoint for n in spec.nodes):
        p.append(doc.problem(("nodes",), "no node has a public endpoint, so no member can reach another", "give the hub (a control-plane node) `endpoint: <public IP or host>`"))
    elif cps and not any(spec.nodes[i].endpoint for i in cps):
        p.append(doc.problem(("nodes", cps[0], "endpoint"), "no control-plane node has a public endpoint; the hub must be one", "set `endpoint:` on the first control-plane node"))
    if len(cps) > 1:
        p.append(doc.problem(("nodes", cps[1], "role"), "only one control-plane node is supported for now (the hub)", "make the other nodes workers"))

    for i, n in enumerate(spec.nodes):
        if n.endpoint is not None:
            try:
                parse_endpoint(n.endpoint, spec.vpn.port)
            except ValueError as exc:
                p.append(doc.problem(("nodes", i, "endpoint"), f"bad endpoint {n.endpoint!r}: {exc}", "write host, IP, host:port or [IPv6]:port"))
        for j, item in enumerate(n.expose):
            m = EXPOSE.fullmatch(item)
            if not m or not 1 <= int(m.group(1)) <= 65535 or (m.group(2) and not int(m.group(1)) < int(m.group(2)) <= 65535):
                p.append(doc.problem(("nodes", i, "expose", j), f"bad port {item!r}", "write PORT/tcp, PORT/udp or FIRST-LAST/tcp with ports 1-65535"))
            elif m.group(3) == "udp" and int(m.group(1)) <= spec.vpn.port <= int(m.group(2) or m.group(1)):
                p.append(doc.problem(("nodes", i, "expose", j), f"{item} includes the WireGuard port", "the WireGuard port is opened already; remove it here"))
        if n.network is not None and n.network.gateway is not None:
            net = ipaddress.ip_interface(n.network.address).network
            if ipaddress.ip_address(n.network.gateway) not in net:
                p.append(doc.problem(("nodes", i, "network", "gateway"), f"gateway {n.network.gateway} is not inside {net}", "the gateway must be on the node's own subnet"))
    return p
