"""Read a wg-quick config back (the text a member receives), for `verify` and `lab`.

Parses what wg-quick and `wg setconf` would read: an [Interface] section and any number of
[Peer] sections, keys case-insensitive, comma-separated lists. Lines it cannot read are kept
as problems instead of raising, so a broken file becomes a finding, not a crash.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass
class WgPeer:
    public_key: str = ""
    allowed_ips: list[IPNetwork] = field(default_factory=list)
    endpoint: str | None = None
    keepalive: int | None = None
    label: str = ""          # the "# name" comment wgkube writes under [Peer]; for messages only
    line: int = 0

    @property
    def endpoint_host_port(self) -> tuple[str, int] | None:
        if not self.endpoint:
            return None
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", self.endpoint)
        if not m:
            return None
        host = m.group(1) or m.group(3)
        return host, int(m.group(2) or m.group(4))


@dataclass
class WgConfig:
    addresses: list[IPInterface] = field(default_factory=list)
    private_key: str | None = None
    listen_port: int | None = None
    mtu: int | None = None
    peers: list[WgPeer] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def address4(self) -> ipaddress.IPv4Interface | None:
        return next((a for a in self.addresses if a.version == 4), None)


def _int(value: str, lo: int, hi: int) -> int:
    n = int(value)
    if not lo <= n <= hi:
        raise ValueError(f"{n} is outside {lo}-{hi}")
    return n


def parse_wg_quick(text: str) -> WgConfig:
    cfg = WgConfig()
    section = None
    peer: WgPeer | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            if peer is not None and not peer.label and not peer.public_key:
                peer.label = line.lstrip("#").strip()
            continue
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.lower()
            if section == "[peer]":
                peer = WgPeer(line=lineno)
                cfg.peers.append(peer)
            elif section == "[interface]":
                peer = None
            else:
                cfg.problems.append(f"line {lineno}: unknown section {line}")
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq:
            cfg.problems.append(f"line {lineno}: not a 'Key = value' line: {line!r}")
            continue
        try:
            if section == "[interface]":
                _interface_key(cfg, key, value)
            elif section == "[peer]" and peer is not None:
                _peer_key(peer, key, value)
            else:
                cfg.problems.append(f"line {lineno}: {key} outside any section")
        except ValueError as exc:
            cfg.problems.append(f"line {lineno}: bad {key}: {exc}")
    for p in cfg.peers:
        if not p.public_key:
            cfg.problems.append(f"line {p.line}: [Peer] without PublicKey")
    return cfg


def _interface_key(cfg: WgConfig, key: str, value: str) -> None:
    if key == "address":
        cfg.addresses += [ipaddress.ip_interface(v.strip()) for v in value.split(",") if v.strip()]
    elif key == "privatekey":
        cfg.private_key = value
    elif key == "listenport":
        cfg.listen_port = _int(value, 1, 65535)
    elif key == "mtu":
        cfg.mtu = _int(value, 576, 65535)
    elif key in ("dns", "table", "preup", "postup", "predown", "postdown", "saveconfig", "fwmark"):
        pass  # wg-quick extras with no bearing on reachability between members
    else:
        raise ValueError("unknown key")


def _peer_key(peer: WgPeer, key: str, value: str) -> None:
    if key == "publickey":
        peer.public_key = value
    elif key == "allowedips":
        # WireGuard masks host bits itself (10.88.0.5/24 means 10.88.0.0/24): do the same.
        peer.allowed_ips += [_network(v.strip()) for v in value.split(",") if v.strip()]
    elif key == "endpoint":
        peer.endpoint = value
        if peer.endpoint_host_port is None:
            raise ValueError(f"{value!r} is not host:port")
    elif key == "persistentkeepalive":
        peer.keepalive = 0 if value == "off" else _int(value, 0, 65535)
    elif key == "presharedkey":
        pass
    else:
        raise ValueError("unknown key")


@lru_cache(maxsize=1 << 16)
def _network(text: str) -> IPNetwork:
    """One parse per distinct range: in a mesh the same /32 appears in every public member's file.
    (Networks are immutable, so sharing them is safe.)"""
    return ipaddress.ip_network(text, strict=False)
