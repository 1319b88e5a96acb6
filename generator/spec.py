"""The cluster spec: what the user writes (cluster.yaml).

Three layers, kept apart like Butane's: ``load_yaml`` (text -> data, with line numbers),
the pydantic model (types, defaults, unknown keys rejected) and ``check_semantics``
(rules that span fields: overlapping CIDRs, duplicate names...). Every problem names the
spec path of the field it is about and, where known, its line.
"""
from __future__ import annotations

import ipaddress
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from . import addons_spec, versions
from .addons_spec import Addon, Registry
from .errors import Problem, UserError, shown

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
EXPOSE = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?/(tcp|udp)$")

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


# --------------------------------------------------------------------------- allow-lists
# Every free-text value that reaches a generated file is checked here against what its
# consumer accepts (an allow-list of characters and shapes, never a list of bad characters);
# the generators then write it with an encoder for their format (artifacts/encode.py).
# ASCII only: Python's \d and str.isdigit() also accept digits of other scripts ("２４h").

def _integer(v: Any) -> Any:
    """Integers as integers. YAML `true` is not 1 and 51820.0 is not a port; a string of ASCII
    digits ("51820") is still taken, as before (quoted numbers are common in YAML)."""
    if isinstance(v, bool) or isinstance(v, float):
        raise ValueError(f"must be a whole number, not {type(v).__name__} {shown(v)}")
    if isinstance(v, str):
        if not re.fullmatch(r"[0-9]{1,9}", v):
            raise ValueError(f"must be a whole number, not {shown(v)}")
        return int(v)
    return v


Int = Annotated[int, BeforeValidator(_integer)]
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(_integer)]

_IP_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")


def ip_address(v: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address and nothing else: no IPv6 zone ("%eth0"; Python accepts any text there,
    newlines included), no spaces. cloud-init copies these values verbatim: its ifupdown
    renderer (canonical/cloud-init, cloudinit/net/eni.py: _iface_add_subnet writes
    "    gateway VALUE" / "    dns-nameservers VALUE", Renderer._render_route writes
    "post-up route add default gw VALUE || true") and its networkd renderer alike, so a line
    break in a value is a new ifupdown stanza line that ifup runs as root."""
    if not isinstance(v, str) or not _IP_CHARS.fullmatch(v):
        raise ValueError(f"{shown(v)} is not an IP address (digits, '.', and for IPv6 hex digits and ':'; no %zone)")
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"{shown(v)} is not an IP address") from None


# Accounts that exist on the supported images before cloud-init runs and belong to the system:
# cloud-init would change their shell, sudo rights and keys (Debian base-passwd, RHEL setup).
SYSTEM_USERS = frozenset("""root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats
nobody _apt adm halt shutdown operator ftp systemd-network systemd-resolve systemd-timesync systemd-coredump
messagebus sshd polkitd tss chrony dbus rpc rpcuser syslog uuidd tcpdump landscape pollinate lxd usbmux
dnsmasq avahi cockpit-ws libstoragemgmt unbound setroubleshoot sssd""".split())

SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_SSH_KEY = re.compile(r"(?P<type>[a-z0-9@.-]{7,40}) (?P<blob>[A-Za-z0-9+/]{16,16384}={0,2})(?: (?P<comment>[^\x00-\x1f\x7f-\x9f\u2028\u2029]{0,1024}))?")

# Go's time.ParseDuration as kubeadm reads `ttl`, restricted to h/m/s with ASCII digits, and
# at most what an int64 of nanoseconds holds (Go refuses more: "invalid duration").
_DURATION = re.compile(r"(?:([0-9]{1,10})h)?(?:([0-9]{1,10})m)?(?:([0-9]{1,10})s)?")
GO_DURATION_MAX_NS = 2**63 - 1


def duration_seconds(v: str) -> int | None:
    m = _DURATION.fullmatch(v) if v else None
    if m is None:
        return None
    h, mi, se = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + se


class Failover(Strict):
    """The relay failover loop on members behind NAT (mesh only). Worst case to route around a dead
    relay: misses x (interval + timeout), plus one timeout per dead relay tried: 3 x 3 + 1 = 10 s."""
    interval: Int = Field(2, ge=1, le=60, description="seconds between probes of the active relay (a ping through the tunnel)")
    timeout: Int = Field(1, ge=1, le=10, description="seconds a probe waits for its reply")
    misses: Int = Field(3, ge=1, le=20, description="probes in a row the active relay may miss before the catch-all moves to the next relay that answers")
    return_after: Int = Field(10, ge=1, le=1000, description="probes in a row a more preferred relay must answer before the catch-all returns to it (hysteresis)")


class Vpn(Strict):
    cidr: str = Field("10.88.0.0/24", description="VPN address range, one address per member")
    port: Port = Field(51820, description="the one public UDP port (WireGuard) of the cluster")
    interface: str = Field("wg0", description="WireGuard interface name, the same on every node")
    underlay_mtu: Int = Field(1500, ge=1280, le=9000, description="MTU of the smallest underlay link")
    keepalive: Int = Field(25, ge=0, le=600, description="PersistentKeepalive (s) for members behind NAT; 0 disables")
    # day two (issue 5): pre-provisioned slots, already in the hub's peer list (docs/day-two.md)
    spares: Int = Field(0, ge=0, le=250, description="spare member slots (key + address) made up front and already in the hub's peer list, so a new member needs no hub change")
    # issue 13: no single point of failure (docs/design.md "Topology"). Absent = hub, exactly as before.
    topology: Literal["hub", "mesh"] = Field("hub", description="hub: every member dials the hub; mesh: every pair with a public side peers directly, members behind NAT reach each other through relays with failover")
    relays: list[str] | None = Field(None, description="mesh: the public nodes that forward between members behind NAT, in order of preference; default: public control planes, then public workers in spec order until there are two")
    failover: Failover = Field(default_factory=Failover, description="mesh: how members behind NAT notice a dead relay and move to the next")
    # Issue 17 item 3, opt-in (absent = admins/<name>/<interface>.conf as before): docs/laptops.md.
    admin_conf: Literal["interface", "cluster"] = Field("interface", description="file name of each admin's WireGuard config (wg-quick names the laptop's interface after it): interface = <vpn.interface>.conf as before; cluster = wg-<cluster>.conf, so tunnels to two clusters coexist on one laptop (names over 12 characters are shortened: wg-<first 6>.<5 hex of sha256>)")

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
        # A prefix length, not a netmask: the text is copied into network-config as is.
        m = re.fullmatch(r"([0-9A-Fa-f:.]{2,45})/([0-9]{1,3})", v)
        if m is None:
            raise ValueError("must be an address with a prefix length, e.g. 203.0.113.10/24 or 2001:db8::10/64 (no netmask, no %zone)")
        addr = ip_address(m.group(1))
        if int(m.group(2)) > addr.max_prefixlen or m.group(2) != str(int(m.group(2))):
            raise ValueError(f"prefix length /{m.group(2)} does not fit an IPv{addr.version} address")
        return v

    @field_validator("gateway")
    @classmethod
    def _gw(cls, v: str | None) -> str | None:
        if v is not None:
            ip_address(v)
        return v

    @field_validator("nameservers")
    @classmethod
    def _ns(cls, v: list[str]) -> list[str]:
        for item in v:
            ip_address(item)
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
    # Issue 17 item 3, opt-in (absent = the VPN range only, output as before): docs/laptops.md.
    routes: Literal["vpn", "services"] = Field("vpn", description="what the laptop's tunnel carries: vpn (the VPN range only) or services (also the cluster's service_cidr, through the control plane, whose kube-proxy DNATs ClusterIPs: curl a ClusterIP from the laptop)")


class Login(Strict):
    user: str = Field("ops", description="console/SSH user created on every node")
    ssh_authorized_keys: list[str] = Field(default_factory=list)
    password_hash: str | None = Field(None, description="crypt(3) SHA-512 hash; make one with `wgkube hash-password`")

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
            raise ValueError("must be a POSIX user name (lowercase letter or '_', then up to 31 of a-z 0-9 _ -)")
        if v in SYSTEM_USERS or v.startswith("systemd-"):
            raise ValueError(f"{v!r} is a system account of the base image; cloud-init would give it a shell, sudo and your keys")
        return v

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        # One authorized_keys line each: TYPE BASE64 [COMMENT], nothing before (no options such
        # as command=), no line break or control character anywhere (sshd reads line by line).
        for i, key in enumerate(v):
            m = _SSH_KEY.fullmatch(key)
            if m is None or m.group("type") not in SSH_KEY_TYPES:
                raise ValueError(f"key {i + 1} is not one OpenSSH public key line (type, base64, optional comment; no options, "
                                 f"no line breaks): {shown(key, 40)}")
        return v

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v: str | None) -> str | None:
        # The crypt(3) alphabet only: a ':' or line break would break /etc/shadow's format.
        if v is not None and not re.fullmatch(r"\$(6|5|y|2b)\$[./0-9A-Za-z$=,]{1,500}", v):
            raise ValueError("must be a crypt(3) hash such as $6$... (letters, digits, . / $ = , only), never a plain password")
        return v


class Join(Strict):
    token_ttl: str = Field("24h", description="bootstrap token lifetime after `kubeadm init` (Go duration)")
    # day two (issue 5, issue 11 item 12): per-node bootstrap tokens expiring this many days after
    # the worker is added (docs/join-window.md). Unset by default so a spec written for an older
    # wgkube renders byte for byte as before (tests/test_hub_unchanged.py); `wgkube init` writes 14.
    window_days: Annotated[int | None, BeforeValidator(_integer)] = Field(None, ge=1, le=365, description="join window: each worker joins with its own bootstrap token (kubeadm init on the hub creates it; revocable with kubeadm token delete), expiring this many days after the worker is added; unset = the shared bootstrap token (token_ttl), as specs from older wgkube had. wgkube init sets 14")

    @field_validator("token_ttl")
    @classmethod
    def _ttl(cls, v: str) -> str:
        seconds = duration_seconds(v)
        if seconds is None:
            raise ValueError("must be a duration like 24h, 90m or 168h (ASCII digits with h, m, s)")
        if seconds * 10**9 > GO_DURATION_MAX_NS:
            raise ValueError(f"{v} is longer than a Go duration can hold (about 2562047h)")
        if seconds == 0:
            # kubeadm reads 0 as "never expires": a join credential that outlives everything.
            raise ValueError("0 would make the bootstrap token never expire")
        return v


class EtcdTuning(Strict):
    """Issue 14: etcd's two time parameters, for members far apart (etcd's tuning guide,
    Documentation/tuning.md in etcd-io/website: heartbeat about the round-trip time between members,
    election timeout at least 5x the heartbeat, commonly 10x, and at most 50 s). Absent = etcd's
    defaults (100 ms / 1000 ms) and no extraArgs: a spec without this key renders as before."""
    heartbeat_ms: Int = Field(100, ge=10, le=10000, description="etcd --heartbeat-interval in ms: about the largest round-trip time between control planes (ping over the VPN)")
    election_ms: Int = Field(1000, ge=50, le=50000, description="etcd --election-timeout in ms: at least 5x heartbeat_ms (10x is usual), at most 50000")


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
    # Issue 15, opt-in so a spec written before it renders byte for byte as before; `wgkube init` writes true.
    status_endpoint: bool = Field(False, description="serve each node's state read-only on <VPN IP>:10280/tcp for `wgkube status` and `wgkube graph --live` (a systemd socket, VPN members only; about 2.4 KB of user-data per node)")
    # Issue 18: applied once each on the control plane after the CNI; absent = nothing, output as before.
    addons: list[Addon] = Field(default_factory=list, description="applied in order on the control plane after the CNI, each once: a manifest (file or https URL with sha256) or a pinned Helm chart (docs/addons.md)")
    registries: list[Registry] = Field(default_factory=list, description="private registry pull secrets made on the control plane; the password is in the secrets bundle (wgkube secret set registry.<server>)")
    # Issue 14: several control planes (odd counts) need etcd tuned to the sites' round-trip time.
    etcd: EtcdTuning | None = Field(None, description="etcd time parameters (ms) for control planes far apart; absent = etcd's defaults (docs/design.md, \"Several control planes\")")

    @property
    def hub(self) -> str | None:
        """The first control plane with an endpoint: the hub, and the one that runs `kubeadm init`
        (None only for a spec check_semantics refuses)."""
        return next((n.name for n in self.nodes if n.role == "control-plane" and n.endpoint), None)

    @field_validator("kubernetes", mode="before")
    @classmethod
    def _k8s(cls, v: Any) -> str:
        v = str(v)
        if v not in versions.KUBERNETES_SUPPORTED:
            raise ValueError(
                f"unsupported Kubernetes version {shown(v)}; supported minors: {', '.join(versions.KUBERNETES_SUPPORTED)} "
                f"(quote it, kubernetes: \"1.30\": unquoted, YAML reads 1.30 as the number 1.3)"
            )
        return v

    @field_validator("pod_cidr", "service_cidr")
    @classmethod
    def _nets(cls, v: str) -> str:
        return _ipv4_network(v)


def _ipv4_network(v: str) -> str:
    if not re.fullmatch(r"[0-9./]{1,40}", v):
        raise ValueError(f"not a network in CIDR form: {shown(v)}")
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

# Bounds on what a spec may make us do (issue 12). A 1,000-node spec is about 80 KB, 3 levels
# deep, with no aliases; these leave room for comments and anchors while refusing in well under
# a second what would otherwise hang or exhaust memory (an alias "billion laughs", /dev/zero).
MAX_SPEC_BYTES = 1024 * 1024
MAX_DEPTH = 40            # nested mappings/sequences
MAX_ALIASES = 1000        # *alias uses
MAX_EXPANDED = 200_000    # YAML nodes after expanding every alias (what the model would walk)


class _SpecYAMLError(Exception):
    def __init__(self, message: str, hint: str, line: int | None, path: tuple = ()):
        super().__init__(message)
        self.problem = Problem(format_path(path), message, hint, line)


class _Open:
    """A collection being composed: its node, its path in the document, its expanded size."""
    __slots__ = ("node", "path", "size", "anchor", "key")

    def __init__(self, node: yaml.Node, path: tuple, anchor: str | None):
        self.node, self.path, self.size, self.anchor, self.key = node, path, 1, anchor, None


def compose_strict(text: str) -> yaml.Node | None:
    """YAML text -> one node tree, refusing what a spec never needs and an attacker would use:
    duplicate keys (both lines named), more than one document, recursive or undefined aliases,
    too many aliases or an expansion past MAX_EXPANDED nodes, nesting deeper than MAX_DEPTH.
    Built from parser events with an explicit stack (no recursion), so no input can exhaust
    the Python stack, and aliases are counted before anything expands them."""
    resolver = yaml.resolver.Resolver()
    anchors: dict[str, tuple[yaml.Node, int]] = {}
    open_anchors: set[str] = set()
    stack: list[_Open] = []
    root: yaml.Node | None = None
    documents = aliases = 0

    def child_path() -> tuple:
        top = stack[-1]
        if isinstance(top.node, yaml.SequenceNode):
            return top.path + (len(top.node.value),)
        if top.key is not None and isinstance(top.key, yaml.ScalarNode):
            return top.path + (top.key.value,)
        return top.path

    def add(node: yaml.Node, size: int) -> None:
        nonlocal root
        if not stack:
            root = node
            return
        top = stack[-1]
        top.size += size
        if top.size > MAX_EXPANDED:
            raise _SpecYAMLError(f"the document expands to more than {MAX_EXPANDED:,} YAML nodes (aliases expanding aliases)",
                                 "write the values out; a spec never needs more than a few aliases", node.start_mark.line + 1, top.path)
        if isinstance(top.node, yaml.SequenceNode):
            top.node.value.append(node)
        elif top.key is None:
            top.key = node
        else:
            top.node.value.append((top.key, node))
            top.key = None

    def anchor_of(event) -> str | None:
        name = event.anchor
        if name is not None and (name in anchors or name in open_anchors):
            raise _SpecYAMLError(f"anchor &{name} is defined twice", "give each anchor its own name",
                                 event.start_mark.line + 1, child_path() if stack else ())
        return name

    for event in yaml.parse(text, Loader=_LineLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _SpecYAMLError("the file holds more than one YAML document ('---')",
                                     "keep one spec per file", line)
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _SpecYAMLError(f"more than {MAX_ALIASES} aliases", "write the values out", line, child_path())
            if event.anchor in open_anchors:
                raise _SpecYAMLError(f"alias *{event.anchor} refers to a collection that contains it (a loop)",
                                     "an alias may only repeat a value defined before it", line, child_path())
            if event.anchor not in anchors:
                raise _SpecYAMLError(f"alias *{event.anchor} has no anchor &{event.anchor} before it",
                                     "define the anchor first, or write the value out", line, child_path())
            add(*anchors[event.anchor])
        elif isinstance(event, yaml.ScalarEvent):
            anchor = anchor_of(event)
            tag = event.tag if event.tag not in (None, "!") else resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
            if anchor is not None:
                anchors[anchor] = (node, 1)
            add(node, 1)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            path = child_path() if stack else ()
            if len(stack) >= MAX_DEPTH:
                raise _SpecYAMLError(f"nested more than {MAX_DEPTH} levels deep",
                                     "a spec is at most a few levels deep; check the brackets and indentation", line, path)
            anchor = anchor_of(event)
            kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
            tag = event.tag if event.tag not in (None, "!") else resolver.resolve(kind, None, event.implicit)
            node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
            if anchor is not None:
                open_anchors.add(anchor)
            stack.append(_Open(node, path, anchor))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            done = stack.pop()
            done.node.end_mark = event.end_mark
            if isinstance(done.node, yaml.MappingNode):
                _refuse_duplicate_keys(done)
            if done.anchor is not None:
                open_anchors.discard(done.anchor)
                anchors[done.anchor] = (done.node, done.size)
            add(done.node, done.size)
    return root


def _refuse_duplicate_keys(mapping: _Open) -> None:
    seen: dict[tuple, yaml.Node] = {}
    for key, _value in mapping.node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        ident = (key.tag, key.value)
        if ident in seen:
            first = seen[ident].start_mark.line + 1
            raise _SpecYAMLError(f"duplicate key {shown(key.value)}: on line {first} and again on line {key.start_mark.line + 1}",
                                 "YAML would silently keep only the last one; merge them into one", key.start_mark.line + 1,
                                 mapping.path + (key.value,))
        seen[ident] = key


def _compose_lines(root: yaml.Node | None) -> dict[tuple, int]:
    """Line of every field path. Iterative; its size is bounded by MAX_EXPANDED."""
    lines: dict[tuple, int] = {}
    todo: list[tuple[yaml.Node, tuple]] = [(root, ())] if root is not None else []
    while todo:
        node, path = todo.pop()
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                lines[path + (k,)] = key.start_mark.line + 1
                todo.append((value, path + (k,)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                todo.append((item, path + (i,)))
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
        # issue 18: the local files add-ons name, read by load_spec ({spec path of the field: text})
        self.local_files: dict[tuple, str] = {}

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
    if len(text) > MAX_SPEC_BYTES:
        raise UserError(Problem("", f"the spec is {len(text):,} characters; at most {MAX_SPEC_BYTES:,} are read",
                                "a spec of 1,000 nodes is about 80 KB: is this the right file?"), source)
    try:
        root = compose_strict(text)
        lines = _compose_lines(root)
        data = yaml.constructor.SafeConstructor().construct_document(root) if root is not None else None
    except _SpecYAMLError as exc:
        raise UserError(exc.problem, source) from None
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
                msg = f"unknown field {shown(loc[-1])}"
            hint = _HINTS.get(err["type"]) or _describe(loc)
            problems.append(Problem(format_path(loc), msg, hint, line_of(lines, loc)))
        raise UserError(problems, source) from None
    doc = SpecDocument(spec, lines, source)
    problems = check_semantics(doc)
    if problems:
        raise UserError(problems, source)
    return doc


def read_spec_text(path: Path) -> str:
    """The spec file as text: a regular file (never a FIFO, device or directory), at most
    MAX_SPEC_BYTES, UTF-8. Anything else is a UserError naming what and where."""
    def refuse(message: str, hint: str, line: int | None = None) -> UserError:
        return UserError(Problem("", message, hint, line), str(path))
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise refuse(f"cannot read the spec: {exc.strerror}", "give the path of a cluster.yaml; `wgkube init` writes one") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or special file"
            raise refuse(f"the spec is {what}, not a regular file", "give the path of a cluster.yaml file")
        chunks, size = [], 0
        while size <= MAX_SPEC_BYTES:
            chunk = os.read(fd, min(1 << 16, MAX_SPEC_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise refuse(f"cannot read the spec: {exc.strerror}", "check the file and its permissions") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_SPEC_BYTES:
        raise refuse(f"the spec is larger than {MAX_SPEC_BYTES:,} bytes", "a spec of 1,000 nodes is about 80 KB: is this the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        enc = "UTF-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "LATIN1"
        raise refuse(f"the spec is not UTF-8 text: byte {exc.start} (0x{data[exc.start]:02x}) at line {line}, column {column}",
                     f"save it as UTF-8 (for a {enc} file: iconv -f {enc} -t UTF-8 old.yaml > cluster.yaml)", line) from None


def load_spec(path: Path) -> SpecDocument:
    doc = parse_spec(read_spec_text(path), str(path))
    if doc.spec.addons:
        doc.local_files = addons_spec.read_local(doc, path.parent)
    return doc


# --------------------------------------------------------------------------- semantics


def parse_endpoint(value: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '1.2.3.4:port', '[v6]:port' -> (host, port). ValueError if bad."""
    host, port = value, default_port
    if value.startswith("["):
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::([0-9]{1,5}))?", value)
        if not m:
            raise ValueError("an IPv6 endpoint looks like [2001:db8::1]:51820")
        host, port = m.group(1), int(m.group(2) or default_port)
        ipaddress.IPv6Address(host)
    elif value.count(":") == 1:
        host, _, p = value.partition(":")
        if not re.fullmatch(r"[0-9]{1,5}", p):
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
            raise ValueError(f"{shown(host)} is neither an IP address nor a valid host name") from None
    return host, port


def check_semantics(doc: SpecDocument) -> list[Problem]:
    spec = doc.spec
    p: list[Problem] = []
    if not DNS_LABEL.fullmatch(spec.name):
        p.append(doc.problem(("name",), f"{shown(spec.name)} is not a DNS-1123 label", "use lowercase letters, digits and '-', at most 63 characters"))

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
            p.append(doc.problem(loc + ("name",), f"{shown(name)} is not a valid name (DNS-1123 label)", "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"))
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
            addr = ip_address(ip)
        except ValueError:
            p.append(doc.problem(loc + ("vpn_ip",), f"{shown(ip)} is not an IP address", f"pick an address inside vpn.cidr {vpn}"))
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
    if len(cps) not in (0, 1, 3, 5):
        # etcd needs a majority: 2 survive no loss (like 1, with twice the hardware to fail), 4 survive
        # one (like 3); more than 5 only slows every write (etcd FAQ, "What is failure tolerance?").
        at = cps[-1] if len(cps) % 2 == 0 else cps[5]
        n = len(cps)
        why = (f"etcd needs a majority of them up, so {n} survive no more failures than {n - 1} do, with more machines to fail"
               if n % 2 == 0 else "each etcd write waits for a majority of them: more than 5 only slows every write")
        p.append(doc.problem(("nodes", at, "role"), f"{n} control-plane nodes: {why}",
                             "use 1, 3 or 5 control planes (make this node a worker" + (", or add one)" if n < 5 else ")")))
    if spec.etcd is not None and spec.etcd.election_ms < 5 * spec.etcd.heartbeat_ms:
        p.append(doc.problem(("etcd", "election_ms"), f"election timeout {spec.etcd.election_ms} ms is under 5x the heartbeat ({spec.etcd.heartbeat_ms} ms): members would call elections while the leader is alive",
                             f"set election_ms to at least {5 * spec.etcd.heartbeat_ms} (10x, {10 * spec.etcd.heartbeat_ms}, is usual; at most 50000)"))

    for i, n in enumerate(spec.nodes):
        if n.endpoint is not None:
            try:
                parse_endpoint(n.endpoint, spec.vpn.port)
            except ValueError as exc:
                p.append(doc.problem(("nodes", i, "endpoint"), f"bad endpoint {shown(n.endpoint)}: {exc}", "write host, IP, host:port or [IPv6]:port"))
        for j, item in enumerate(n.expose):
            m = EXPOSE.fullmatch(item)
            if not m or not 1 <= int(m.group(1)) <= 65535 or (m.group(2) and not int(m.group(1)) < int(m.group(2)) <= 65535):
                p.append(doc.problem(("nodes", i, "expose", j), f"bad port {shown(item)}", "write PORT/tcp, PORT/udp or FIRST-LAST/tcp with ports 1-65535"))
            elif m.group(3) == "udp" and int(m.group(1)) <= spec.vpn.port <= int(m.group(2) or m.group(1)):
                p.append(doc.problem(("nodes", i, "expose", j), f"{item} includes the WireGuard port", "the WireGuard port is opened already; remove it here"))
        if n.network is not None and n.network.gateway is not None:
            net = ipaddress.ip_interface(n.network.address).network
            if ipaddress.ip_address(n.network.gateway) not in net:
                p.append(doc.problem(("nodes", i, "network", "gateway"), f"gateway {n.network.gateway} is not inside {net}", "the gateway must be on the node's own subnet"))
    p += _check_relays(doc)
    p += addons_spec.check(doc)
    return p


def _check_relays(doc: SpecDocument) -> list[Problem]:
    """Issue 13: vpn.relays names public nodes, once each, and only for a mesh."""
    spec, p = doc.spec, []
    relays = spec.vpn.relays
    if relays is None:
        return p
    if spec.vpn.topology != "mesh":
        return [doc.problem(("vpn", "relays"), "relays only apply to `topology: mesh`", "set vpn.topology: mesh, or remove vpn.relays")]
    nodes = {n.name: n for n in spec.nodes}
    seen: set[str] = set()
    for j, name in enumerate(relays):
        loc = ("vpn", "relays", j)
        if name in seen:
            p.append(doc.problem(loc, f"relay {shown(name)} is listed twice", "name each relay once, in order of preference"))
        elif name not in nodes:
            p.append(doc.problem(loc, f"relay {shown(name)} is not a node of the spec", "name a node with an endpoint"))
        elif nodes[name].endpoint is None:
            p.append(doc.problem(loc, f"relay {shown(name)} has no endpoint: members behind NAT could not dial it", "relays must be public nodes (with `endpoint:`)"))
        seen.add(name)
    behind = [n for n in spec.nodes if n.endpoint is None] + list(spec.admins)
    if not relays and len(behind) >= 2:
        p.append(doc.problem(("vpn", "relays"), f"no relay: the {len(behind)} members behind NAT could never reach each other",
                             "name at least one public node (two, so one can fail), or drop the key for the default"))
    return p
