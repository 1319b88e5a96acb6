"""The secrets bundle: the one file that cannot be regenerated.

Kept beside the spec (``cluster.yaml`` -> ``cluster.secrets.yaml``), never under out/.
``load`` refuses a bundle that is corrupt, for another cluster, or whose keys do not match
their public halves. ``populate`` adds what is missing (a new member's key, the PKI on the
first run) and never replaces anything that exists. ``save`` writes atomically, mode 0600.
Members that leave the spec are moved to ``retired``, never deleted.
"""
from __future__ import annotations

import copy
import datetime as dt
import re
import secrets as _random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import pki
from .errors import Problem, UserError
from .output import atomic_write
from .plan import Plan

KIND = "wgkube-secrets"
VERSION = 1
TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
CAS = {"ca": "kubernetes", "front_proxy_ca": "front-proxy-ca", "etcd_ca": "etcd-ca"}
HEADER = "# wgkube secrets bundle. Private: keep it 0600, back it up, never paste it anywhere.\n"


def bundle_path_for(spec_path: Path) -> Path:
    return spec_path.with_name(spec_path.name.removesuffix(".yaml").removesuffix(".yml") + ".secrets.yaml")


def new_token() -> str:
    pick = lambda n: "".join(_random.choice(_ALNUM) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


@dataclass
class Bundle:
    cluster: str
    token: str = ""
    members: dict[str, dict] = field(default_factory=dict)   # name -> {private_key, public_key, vpn_ip}
    retired: dict[str, dict] = field(default_factory=dict)
    pki: dict[str, dict] = field(default_factory=dict)       # ca, front_proxy_ca, etcd_ca: {cert,key}; sa: {key,pub}
    admins: dict[str, dict] = field(default_factory=dict)    # name -> {cert, key}

    # -- what the plan and renderers need
    def addresses(self) -> dict[str, str]:
        return {n: m["vpn_ip"] for n, m in self.members.items() if m.get("vpn_ip")}

    def public_key(self, name: str) -> str:
        return self.members[name]["public_key"]

    def private_key(self, name: str) -> str:
        return self.members[name]["private_key"]

    @property
    def ca_hash(self) -> str:
        return pki.ca_cert_hash(self.pki["ca"]["cert"])

    def to_yaml(self) -> str:
        data = {"kind": KIND, "version": VERSION, "cluster": self.cluster, "token": self.token,
                "members": self.members, "retired": self.retired, "pki": self.pki, "admins": self.admins}
        return HEADER + yaml.safe_dump(data, sort_keys=True, width=1000)


def _bad(path: Path, what: str, hint: str = "restore the bundle from your backup; wgkube never overwrites a bundle it cannot read") -> UserError:
    return UserError(Problem("", f"secrets bundle refused: {what}", hint), str(path))


def load(path: Path, cluster: str) -> Bundle | None:
    """The bundle at path, checked; None when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, f"cannot read it ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise _bad(path, "it is not valid YAML (corrupt or truncated)") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise _bad(path, f"it is not a wgkube secrets bundle (kind: {KIND} missing) or it is truncated")
    if data.get("version") != VERSION:
        raise _bad(path, f"unknown bundle version {data.get('version')!r}", "upgrade wgkube")
    if data.get("cluster") != cluster:
        raise _bad(path, f"it belongs to cluster {data.get('cluster')!r}, the spec is for {cluster!r}",
                   "pass the right bundle with --secrets, or fix `name:` in the spec")
    try:
        b = Bundle(cluster=cluster, token=data["token"], members=dict(data["members"] or {}),
                   retired=dict(data.get("retired") or {}), pki=dict(data["pki"] or {}), admins=dict(data.get("admins") or {}))
    except (KeyError, TypeError):
        raise _bad(path, "a section is missing (token, members or pki): truncated?") from None
    problems = verify(b)
    if problems:
        raise _bad(path, "; ".join(problems))
    return b


def verify(b: Bundle) -> list[str]:
    """Internal consistency: every key matches its public half, every cert its key."""
    out = []
    if not TOKEN_RE.fullmatch(str(b.token)):
        out.append("the bootstrap token is not of the form [a-z0-9]{6}.[a-z0-9]{16}")
    for group in ("members", "retired"):
        for name, m in getattr(b, group).items():
            try:
                if pki.wg_public_from_private(m["private_key"]) != m["public_key"]:
                    out.append(f"{group}.{name}: the WireGuard private key does not match its public key")
            except (KeyError, ValueError, TypeError):
                out.append(f"{group}.{name}: the WireGuard key is missing or not 32 bytes of base64")
    for name in CAS:
        if name not in b.pki:
            out.append(f"pki.{name} is missing")
        elif (why := pki.check_pair(b.pki[name])) is not None:
            out.append(f"pki.{name}: {why}")
    if "sa" not in b.pki or not {"key", "pub"} <= set(b.pki["sa"]):
        out.append("pki.sa (service-account key pair) is missing")
    for name, pair in b.admins.items():
        if (why := pki.check_pair(pair)) is not None:
            out.append(f"admins.{name}: {why}")
    return out


def populate(existing: Bundle | None, plan: Plan, now: dt.datetime | None = None) -> tuple[Bundle, list[str]]:
    """Return (bundle with everything the plan needs, what was added). Never replaces a secret."""
    now = now or dt.datetime.now(dt.timezone.utc)
    b = copy.deepcopy(existing) if existing else Bundle(cluster=plan.cluster)
    added: list[str] = []
    if not b.token:
        b.token = new_token()
        added.append("bootstrap token")
    for name, cn in CAS.items():
        if name not in b.pki:
            b.pki[name] = pki.new_ca(cn, now)
            added.append(f"pki.{name}")
    if "sa" not in b.pki:
        b.pki["sa"] = pki.new_sa_keypair()
        added.append("pki.sa")
    wanted = {m.name for m in plan.members}
    for m in plan.members:
        entry = b.members.get(m.name)
        if entry is None and m.name in b.retired:
            # A name that comes back gets a fresh key: the old one may have leaked with the box.
            b.retired[f"{m.name}@{len(b.retired)}"] = b.retired.pop(m.name)
        if entry is None:
            priv, pub = pki.wg_keypair()
            b.members[m.name] = {"private_key": priv, "public_key": pub, "vpn_ip": m.vpn_ip}
            added.append(f"WireGuard key for {m.name}")
        elif entry.get("vpn_ip") != m.vpn_ip:
            entry["vpn_ip"] = m.vpn_ip
            added.append(f"VPN address {m.vpn_ip} for {m.name}")
    for name in sorted(set(b.members) - wanted):
        b.retired[name] = b.members.pop(name) | {"retired": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
        added.append(f"retired {name}")
    for m in plan.admins:
        if m.name not in b.admins:
            b.admins[m.name] = pki.new_client_cert(b.pki["ca"], f"wgkube-admin:{m.name}", ["kubeadm:cluster-admins"], now)
            added.append(f"admin certificate for {m.name}")
    return b, added


def save(b: Bundle, path: Path) -> None:
    atomic_write(path, b.to_yaml().encode(), mode=0o600)
