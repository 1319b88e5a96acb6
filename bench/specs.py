"""Generated cluster specs: the same hub-and-spoke shape at any size, written as real spec YAML.

Member 0 is the hub (control plane, public endpoint). Every 10th worker has a public endpoint,
the rest sit behind NAT, and the OS rotates through the three package families, so the sizes
measured are those of a realistic mix rather than of one best case. Member i is the same in
every spec, whatever N is: the spec of N members is a prefix of the spec of N + k members,
which is what the marginal-bytes measurement relies on.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

HUB_ENDPOINT = "203.0.113.10"
OS_CYCLE = ("debian-12", "ubuntu-24.04", "rocky-9")
PUBLIC_EVERY = 10


def _ssh_key() -> str:
    # A real, fixed OpenSSH key line: same bytes in every run, so sizes do not wobble.
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " bench@laptop"


def vpn_cidr(n: int) -> str:
    """Smallest /24-or-larger 10.88.x range that holds n members."""
    prefix = min(24, 32 - (n + 2 - 1).bit_length())
    return f"10.88.0.0/{prefix}"


def pod_cidr(n: int) -> str:
    # Every node takes a /24 from the pod range: 1,000 nodes need a /14.
    prefix = min(16, 24 - max(0, (n - 1).bit_length()))
    return str(ipaddress.ip_network(f"10.64.0.0/{prefix}"))


def worker_name(i: int) -> str:
    return f"w{i:04d}"


def members(n: int, capacity: int | None = None) -> list[dict]:
    """Name, role, OS, VPN address and endpoint of each of n members (hub first)."""
    net = ipaddress.ip_network(vpn_cidr(max(capacity or n, 2)))
    hosts = net.hosts()
    out = []
    for i in range(n):
        ip = str(next(hosts))
        if i == 0:
            out.append({"name": "hub", "role": "control-plane", "os": "ubuntu-24.04", "vpn_ip": ip, "endpoint": HUB_ENDPOINT})
            continue
        endpoint = f"198.51.100.{(i // PUBLIC_EVERY - 1) % 254 + 1}" if i % PUBLIC_EVERY == 0 else None
        out.append({"name": worker_name(i), "role": "worker", "os": OS_CYCLE[i % len(OS_CYCLE)], "vpn_ip": ip, "endpoint": endpoint})
    return out


def hub_and_spoke(n: int, name: str = "bench", admins: int = 0, capacity: int | None = None) -> dict:
    """A spec dict for n members (nodes), plus optional admin laptops (not counted in n).

    capacity sizes the VPN and pod ranges; give the same capacity to specs that are compared
    byte for byte, so only the member count differs between them.
    """
    size = max(capacity or 0, n + admins)
    nodes = []
    for m in members(n, size):
        node = {"name": m["name"], "role": m["role"], "os": m["os"]}
        if m["endpoint"]:
            node["endpoint"] = m["endpoint"]
        nodes.append(node)
    spec = {
        "name": name,
        "vpn": {"cidr": vpn_cidr(size)},
        "pod_cidr": pod_cidr(size),
        "login": {"user": "ops", "ssh_authorized_keys": [_ssh_key()]},
        "nodes": nodes,
    }
    if admins:
        spec["admins"] = [{"name": f"laptop-{i + 1}"} for i in range(admins)]
    return spec


def write_spec(directory: Path, spec: dict, filename: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or f"{spec['name']}.yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def lab_spec(members_total: int, name: str) -> dict:
    """A lab-sized spec: hub, public workers, workers behind NAT and one laptop, members_total in all."""
    workers = members_total - 2  # minus the hub and the laptop
    public = max(1, workers // 3)
    nodes = [{"name": "hub", "role": "control-plane", "os": "debian-12", "endpoint": HUB_ENDPOINT}]
    for i in range(1, workers + 1):
        node = {"name": worker_name(i), "role": "worker", "os": "debian-12"}
        if i <= public:
            node["endpoint"] = f"198.51.100.{i + 10}"
        nodes.append(node)
    return {"name": name, "login": {"ssh_authorized_keys": [_ssh_key()]}, "nodes": nodes, "admins": [{"name": "laptop"}]}
