"""The secrets bundle: the one file that cannot be regenerated.

Kept beside the spec (``cluster.yaml`` -> ``cluster.secrets.yaml``, or ``.secrets.yaml.age``
when encrypted with age), never under out/. ``load`` refuses a bundle that is corrupt,
truncated, for another cluster, or whose keys do not match their public halves.
``populate`` adds what is missing (a new member's key, the PKI on the first run, spare slots,
join tokens) and never replaces anything that exists. ``save`` writes atomically, mode
0600. Members that leave the spec, and keys that are replaced (``rekey``), are moved to
``retired``, never deleted.
"""
from __future__ import annotations

import copy
import datetime as dt
import os
import re
import secrets as _random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import Problem, UserError
from ..skew import MINOR_RE
from ..fsutil import atomic_write, remove_stale_temps
from ..plan import Plan


class _Lazy:
    """pki (and with it cryptography, ~0.1 s to import) loaded on first use: `wgkube check` of a
    spec without a bundle never needs it."""

    def __getattr__(self, name):
        from . import pki as module
        return getattr(module, name)


pki = _Lazy()
from .age import AGE_SUFFIX, ENV_IDENTITY, ENV_RECIPIENTS, Age, identities, is_encrypted, load_pyrage, recipient

KIND = "wgkube-secrets"
# libyaml when present: the same data and the same bytes as the pure-Python classes
# (tests/test_speed.py checks both ways), four to twenty times faster on a big bundle.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
VERSION = 1
# kubeadm's own pattern for a bootstrap token, BootstrapTokenPattern in kubernetes/kubernetes
# staging/src/k8s.io/cluster-bootstrap/token/api/types.go: `\A([a-z0-9]{6})\.([a-z0-9]{16})\z`
# (the ID before the dot is public, it names the Secret bootstrap-token-<id>; the rest is secret).
TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
SLOT_RE = re.compile(r"^spare\.(\d+)$")
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
CAS = {"ca": "kubernetes", "front_proxy_ca": "front-proxy-ca", "etcd_ca": "etcd-ca"}
HEADER = "# wgkube secrets bundle. Private: keep it 0600, back it up, never paste it anywhere.\n"
# kubeadm init binds this group to node-bootstrapper, CSR auto-approval and the kubeadm-config /
# kubelet-config reads that `kubeadm join` needs: what a bootstrap token authenticates as.
JOIN_GROUP = "system:bootstrappers:kubeadm:default-node-token"


def bundle_path_for(spec_path: Path) -> Path:
    """The plain bundle path beside the spec (the lock file is named after it)."""
    return spec_path.with_name(spec_path.name.removesuffix(".yaml").removesuffix(".yml") + ".secrets.yaml")


def new_token() -> str:
    pick = lambda n: "".join(_random.choice(_ALNUM) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Bundle:
    cluster: str
    token: str = ""
    members: dict[str, dict] = field(default_factory=dict)   # name -> {private_key, public_key, vpn_ip[, slot]}
    retired: dict[str, dict] = field(default_factory=dict)
    pki: dict[str, dict] = field(default_factory=dict)       # ca, front_proxy_ca, etcd_ca: {cert,key}; sa: {key,pub}
    admins: dict[str, dict] = field(default_factory=dict)    # name -> {cert, key}
    spares: dict[str, dict] = field(default_factory=dict)    # spare.N -> {private_key, public_key, vpn_ip}
    spare_state: dict[str, int] = field(default_factory=lambda: {"target": 0, "next": 1})
    # worker -> its join credential: {token, expires} (a bootstrap token of its own, join window),
    # or {cert, key} (a client certificate, made by wgkube before issue 11 item 12; still honoured)
    joins: dict[str, dict] = field(default_factory=dict)
    age_recipients: list[str] = field(default_factory=list)  # who an encrypted bundle is encrypted to
    # issue 18: registry server -> password or token (`wgkube secret set registry.<server>`); written
    # only when there is one, so a bundle without registries is byte for byte as before
    registries: dict[str, str] = field(default_factory=dict)
    # issue 17: the Kubernetes minor the control plane runs ({control_plane: "1.36"}), and while
    # `wgkube upgrade` is under way the minor it goes to ({upgrade_to: "1.37"}). Recorded on the
    # first render from the spec's `kubernetes:`; an older bundle gets it from `wgkube upgrade`.
    kubernetes: dict[str, str] = field(default_factory=dict)

    # -- what the plan and renderers need
    def addresses(self) -> dict[str, str]:
        return {n: m["vpn_ip"] for n, m in self.members.items() if m.get("vpn_ip")}

    def _entry(self, name: str) -> dict:
        if name in self.members:
            return self.members[name]
        if name in self.spares:
            return self.spares[name]
        # The hub may still know a member by the slot it took (its file did not change).
        for entry in self.members.values():
            if entry.get("slot") == name:
                return entry
        raise KeyError(name)

    def public_key(self, name: str) -> str:
        return self._entry(name)["public_key"]

    def private_key(self, name: str) -> str:
        return self.members[name]["private_key"]

    @property
    def ca_hash(self) -> str:
        return pki.ca_cert_hash(self.pki["ca"]["cert"])

    def to_yaml(self) -> str:
        data = {"kind": KIND, "version": VERSION, "cluster": self.cluster, "token": self.token,
                "members": self.members, "retired": self.retired, "pki": self.pki, "admins": self.admins,
                "spares": {"target": self.spare_state["target"], "next": self.spare_state["next"], "free": self.spares},
                "joins": self.joins}
        if self.age_recipients:
            data["age_recipients"] = list(self.age_recipients)
        if self.registries:
            data["registries"] = dict(self.registries)
        if self.kubernetes:
            data["kubernetes"] = dict(self.kubernetes)
        # sort_keys puts `version` last: a truncated file loses it and is refused.
        return HEADER + yaml.dump(data, Dumper=DUMPER, sort_keys=True, width=1000)


def _bad(path: Path, what: str, hint: str = "restore the bundle from your backup; wgkube never overwrites a bundle it cannot read") -> UserError:
    return UserError(Problem("", f"secrets bundle refused: {what}", hint), str(path))


# --------------------------------------------------------------------------- where


def locate(spec_path: Path, explicit: Path | None = None, age: Age | None = None) -> Path:
    """The bundle for a spec: --secrets when given; else the encrypted one if it exists, else
    the plain one (a new bundle is encrypted from the start when recipients are given)."""
    if explicit is not None:
        return explicit
    plain = bundle_path_for(spec_path)
    enc = plain.with_name(plain.name + AGE_SUFFIX)
    if plain.exists() and enc.exists():
        raise _bad(plain, f"both {plain.name} and {enc.name} exist, so it is unclear which one is current",
                   f"keep the one you use (check that {enc.name} decrypts), move the other away, run again")
    if enc.exists():
        return enc
    if plain.exists() or not (age and age.recipients):
        return plain
    return enc


def _read_text(path: Path, age: Age | None) -> str | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _bad(path, f"cannot read it ({exc.strerror})") from None
    if is_encrypted(path) or raw.startswith((b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----")):
        if not (age and age.identities):
            raise _bad(path, "it is encrypted with age and no identity was given",
                       f"pass --age-identity FILE (the key age-keygen wrote) or set {ENV_IDENTITY}")
        pyrage = load_pyrage()
        try:
            raw = pyrage.decrypt(raw, identities(age.identities))
        except pyrage.DecryptError as exc:
            raise _bad(path, f"it cannot be decrypted with the given identity ({exc})",
                       "use an identity whose public key is one of the bundle's recipients; a truncated .age file also fails here") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(path, "it is not text (corrupt, or an encrypted file under a plain name)") from None


# --------------------------------------------------------------------------- load + verify


def load(path: Path, cluster: str, age: Age | None = None) -> Bundle | None:
    """The bundle at path, checked; None when there is none yet."""
    text = _read_text(path, age)
    if text is None:
        return None
    try:
        data = yaml.load(text, Loader=LOADER)
    except yaml.YAMLError:
        raise _bad(path, "it is not valid YAML (corrupt or truncated)") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise _bad(path, f"it is not a wgkube secrets bundle (kind: {KIND} missing) or it is truncated")
    if data.get("version") != VERSION:
        raise _bad(path, f"unknown bundle version {data.get('version')!r} (or the file is truncated: `version` is its last line)",
                   "restore it from your backup, or upgrade wgkube if a newer one wrote it")
    if data.get("cluster") != cluster:
        raise _bad(path, f"it belongs to cluster {data.get('cluster')!r}, the spec is for {cluster!r}",
                   "pass the right bundle with --secrets, or fix `name:` in the spec")
    try:
        spares = data.get("spares") or {}
        b = Bundle(cluster=cluster, token=data["token"], members=dict(data["members"] or {}),
                   retired=dict(data.get("retired") or {}), pki=dict(data["pki"] or {}), admins=dict(data.get("admins") or {}),
                   spares=dict(spares.get("free") or {}),
                   spare_state={"target": int(spares.get("target", 0)), "next": int(spares.get("next", 1))},
                   joins=dict(data.get("joins") or {}), age_recipients=list(data.get("age_recipients") or []),
                   registries=dict(data.get("registries") or {}), kubernetes=_kubernetes_record(data.get("kubernetes")))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _bad(path, "a section is missing or malformed (token, members, pki, spares, kubernetes): truncated?") from None
    problems = verify(b)
    if problems:
        raise _bad(path, "; ".join(problems[:6]) + (f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""))
    return b


def _kubernetes_record(value: object) -> dict[str, str]:
    """The recorded minors ({control_plane, upgrade_to?}): strings "1.36" only, anything else is a damaged bundle."""
    record = dict(value or {})  # type: ignore[arg-type]
    for key, minor in record.items():
        if key not in ("control_plane", "upgrade_to") or not isinstance(minor, str) or not MINOR_RE.fullmatch(minor):
            raise ValueError(f"kubernetes.{key}")
    return record


def _check_wg(label: str, entry: object) -> str | None:
    if not isinstance(entry, dict):
        return f"{label}: not a mapping"
    try:
        if pki.wg_public_from_private(entry["private_key"]) != entry["public_key"]:
            return f"{label}: the WireGuard private key does not match its public key"
    except (KeyError, ValueError, TypeError):
        return f"{label}: the WireGuard key is missing or not 32 bytes of base64"
    return None


def _signed_by(cert_pem: str, ca_pem: str) -> bool:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True


def verify(b: Bundle) -> list[str]:
    """Internal consistency: every key matches its public half, every cert its key."""
    out = []
    for server, secret in b.registries.items():  # issue 18: older bundles have none
        if not isinstance(server, str) or not isinstance(secret, str) or not registry_secret_ok(secret):
            out.append(f"registries.{server}: not a password on one line (wgkube secret set registry.{server} writes one)")
    if not TOKEN_RE.fullmatch(str(b.token)):
        out.append("the bootstrap token is not of the form [a-z0-9]{6}.[a-z0-9]{16}")
    for name, m in b.members.items():
        if (why := _check_wg(f"members.{name}", m)) is not None:
            out.append(why)
    for name, m in b.spares.items():
        if not SLOT_RE.fullmatch(str(name)):
            out.append(f"spares.free.{name}: a slot is named spare.N")
        if (why := _check_wg(f"spares.free.{name}", m)) is not None:
            out.append(why)
    for name, m in b.retired.items():
        # A retired entry may hold only a join credential (rekey --join).
        if isinstance(m, dict) and "private_key" in m and (why := _check_wg(f"retired.{name}", m)) is not None:
            out.append(why)
    for name in CAS:
        if name not in b.pki:
            out.append(f"pki.{name} is missing")
        elif (why := pki.check_pair(b.pki[name])) is not None:
            out.append(f"pki.{name}: {why}")
    if "sa" not in b.pki or not isinstance(b.pki["sa"], dict) or not {"key", "pub"} <= set(b.pki["sa"]):
        out.append("pki.sa (service-account key pair) is missing")
    ids = {str(b.token).partition(".")[0]: "the bootstrap token"}
    for name, entry in b.joins.items():
        if not is_token_join(entry):
            continue
        if not TOKEN_RE.fullmatch(str(entry.get("token"))):
            out.append(f"joins.{name}: the join token is not of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")
        elif (other := ids.setdefault(entry["token"].partition(".")[0], f"joins.{name}")) != f"joins.{name}":
            out.append(f"joins.{name}: its token ID is also used by {other} (kubeadm names the Secret after the ID)")
        if _parse_stamp(entry.get("expires")) is None:
            out.append(f"joins.{name}: expires is not a UTC time like 2026-01-31T12:00:00Z")
    for group in ("admins", "joins"):
        for name, pair in getattr(b, group).items():
            if group == "joins" and is_token_join(pair):
                continue
            if (why := pki.check_pair(pair)) is not None:
                out.append(f"{group}.{name}: {why}")
            elif "ca" in b.pki and not _signed_by(pair["cert"], b.pki["ca"]["cert"]):
                out.append(f"{group}.{name}: the certificate is not signed by this bundle's CA")
    ips: dict[str, str] = {}
    for name, m in list(b.members.items()) + list(b.spares.items()):
        ip = m.get("vpn_ip") if isinstance(m, dict) else None
        if ip in ips:
            out.append(f"{name} and {ips[ip]} share the VPN address {ip}")
        elif ip:
            ips[ip] = name
    return out


# --------------------------------------------------------------------------- changes


def _retire(b: Bundle, name: str, entry: dict, reason: str, now: dt.datetime) -> str:
    """Keep a replaced secret under a free name (name, name@2, ...): never silently deleted."""
    key, n = name, 1
    while key in b.retired:
        n += 1
        key = f"{name}@{n}"
    b.retired[key] = dict(entry) | {"retired": _stamp(now), "reason": reason}
    return key


def new_join_credential(b: Bundle, node: str, days: int, now: dt.datetime) -> dict[str, str]:
    """The join credential of wgkube before issue 11 item 12: a client certificate in the bootstrap
    group. No longer made for new workers (it cannot be revoked); kept for tests that build a
    bundle as the old code did. Workers that have one keep it (docs/join-window.md, migration)."""
    return pki.new_client_cert(b.pki["ca"], f"wgkube-join:{node}", [JOIN_GROUP], now, days=days,
                               not_before=now - dt.timedelta(minutes=5))


def is_token_join(entry: object) -> bool:
    """A join entry that is a bootstrap token of the worker's own (else: a legacy certificate)."""
    return isinstance(entry, dict) and "token" in entry


def _parse_stamp(value: object) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def join_expires(entry: dict) -> dt.datetime:
    """When a join credential stops working: the token's absolute expiry, or the certificate's notAfter."""
    if is_token_join(entry):
        when = _parse_stamp(entry["expires"])
        assert when is not None  # load() refuses a bundle where it is not
        return when
    from cryptography import x509
    return x509.load_pem_x509_certificate(entry["cert"].encode()).not_valid_after_utc


def token_id(token: str) -> str:
    """The public half of a bootstrap token: what `kubeadm token delete` and `token list` show."""
    return token.partition(".")[0]


def _used_token_ids(b: Bundle) -> set[str]:
    used = {token_id(b.token)} if b.token else set()
    used |= {token_id(e["token"]) for e in b.joins.values() if is_token_join(e)}
    used |= {token_id(r["join"]["token"]) for r in b.retired.values()
             if isinstance(r, dict) and is_token_join(r.get("join"))}
    return used


def new_join_token(b: Bundle, days: int, now: dt.datetime) -> dict[str, str]:
    """A bootstrap token of a worker's own, with an absolute expiry `days` after now (the moment
    the worker is added to the bundle, or rekeyed). Made once and kept: a render never makes one,
    so renders stay deterministic. The ID is unique in the bundle (retired ones included): kubeadm
    stores a token as the Secret kube-system/bootstrap-token-<id>, and an old ID coming back would
    collide with, or resurrect, a token deleted on the hub (docs/join-window.md)."""
    used = _used_token_ids(b)
    while True:
        token = new_token()
        if token_id(token) not in used:
            return {"token": token, "expires": _stamp(now + dt.timedelta(days=days))}


def legacy_join_workers(b: Bundle, plan: Plan) -> list[str]:
    """Workers of the plan that still hold a join certificate (a bundle from before issue 11 item 12)."""
    if not plan.join_window_days:
        return []
    return [m.name for m in plan.nodes if not plan.initialises(m) and m.name in b.joins and not is_token_join(b.joins[m.name])]


def legacy_join_warning(b: Bundle, plan: Plan) -> str | None:
    """One warning for `check` and `render` while workers still hold join certificates."""
    names = legacy_join_workers(b, plan)
    if not names:
        return None
    first = names[0]
    many = len(names) > 1
    return (f"{len(names)} worker{'s' if many else ''} still join{'' if many else 's'} with a client certificate made by an older wgkube "
            f"({', '.join(names)}): it keeps working until it expires but cannot be revoked. Move each one that has not "
            f"joined yet to a revocable bootstrap token of its own: wgkube rekey {first} SPEC --join, then apply the hub "
            f"update (docs/join-window.md, migration)")


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
    # Members that left: keys, admin certificate and join credential go to `retired` together.
    for name in sorted(set(b.members) - wanted):
        entry = b.members.pop(name)
        entry.pop("slot", None)
        if name in b.admins:
            entry["admin_cert"] = b.admins.pop(name)
        if name in b.joins:
            entry["join"] = b.joins.pop(name)
        was_node = "admin_cert" not in entry
        _retire(b, name, entry, "removed from the spec", now)
        # The Kubernetes side is not ours to change: say what to run.
        added.append(f"retired {name}" + (f" (then run: kubectl delete node {name})" if was_node else ""))
    for name in sorted(set(b.admins) - wanted):  # an admin certificate whose member is long gone
        _retire(b, name, {"admin_cert": b.admins.pop(name)}, "removed from the spec", now)
    takes = dict(plan.slot_takes)
    labels = dict(plan.slot_labels)
    for m in plan.members:
        entry = b.members.get(m.name)
        if entry is None and m.name in takes:
            slot = takes[m.name]
            entry = b.members[m.name] = b.spares.pop(slot)
            entry["vpn_ip"] = m.vpn_ip
            added.append(f"{m.name} takes spare slot {slot} ({m.vpn_ip})")
        elif entry is None:
            priv, pub = pki.wg_keypair()
            entry = b.members[m.name] = {"private_key": priv, "public_key": pub, "vpn_ip": m.vpn_ip}
            added.append(f"WireGuard key for {m.name}")
        elif entry.get("vpn_ip") != m.vpn_ip:
            entry["vpn_ip"] = m.vpn_ip
            added.append(f"VPN address {m.vpn_ip} for {m.name}")
        # The slot name the hub knows this member by; dropped once the hub is updated anyway.
        if labels.get(m.name) != entry.get("slot"):
            if m.name in labels:
                entry["slot"] = labels[m.name]
            else:
                entry.pop("slot", None)
                if m.name not in takes:
                    added.append(f"the hub now lists {m.name} by name")
    # Spare slots: keep the planned ones, make the new ones, retire the dropped ones.
    planned = {s.name: s.vpn_ip for s in plan.spares}
    for slot in sorted(set(b.spares) - set(planned)):
        _retire(b, slot, b.spares.pop(slot), "spare slot dropped", now)
        added.append(f"dropped spare slot {slot}")
    for slot, ip in planned.items():
        if slot not in b.spares:
            priv, pub = pki.wg_keypair()
            b.spares[slot] = {"private_key": priv, "public_key": pub, "vpn_ip": ip}
            added.append(f"spare slot {slot} ({ip})")
        b.spare_state["next"] = max(b.spare_state["next"], int(SLOT_RE.fullmatch(slot).group(1)) + 1)
    if b.spare_state["target"] != plan.spares_target:
        b.spare_state["target"] = plan.spares_target
        if not added:
            added.append(f"spare slot target {plan.spares_target}")
    if existing is None:
        # What runs is what the first render asked for. A bundle from before issue 17 gets its
        # record only from `wgkube upgrade` (it must stay byte for byte on a plain render).
        b.kubernetes["control_plane"] = plan.kubernetes
    for m in plan.admins:
        if m.name not in b.admins:
            # issue 17 item 2: the revocable form (no kubeadm:cluster-admins group; a ClusterRoleBinding
            # of its own on the control plane, artifacts/admin_rbac.py). Certificates made before stay as they are.
            b.admins[m.name] = pki.new_admin_cert(b.pki["ca"], m.name, now)
            added.append(f"admin certificate for {m.name}")
    if plan.join_window_days:
        # A worker that already has a join credential keeps it, a certificate from an older wgkube
        # included (its files stay byte for byte; legacy_join_warning says how to move it).
        for m in plan.nodes:
            if not plan.initialises(m) and m.name not in b.joins:
                b.joins[m.name] = new_join_token(b, plan.join_window_days, now)
                added.append(f"join token for {m.name} (expires {b.joins[m.name]['expires']})")
    return b, added


def rekey(existing: Bundle, name: str, now: dt.datetime, join_days: int | None = None) -> tuple[Bundle, list[str]]:
    """A new WireGuard key for one member (join_days None), or a new join token expiring
    join_days from now. The old secret is retired, never dropped."""
    b = copy.deepcopy(existing)
    if name not in b.members:
        known = ", ".join(sorted(b.members)) or "none"
        raise UserError(Problem("", f"{name!r} is not a member in the secrets bundle (members: {known})",
                                "rekey a member that has been rendered; a new member just needs `wgkube render`"))
    if join_days is not None:
        old = b.joins.get(name)
        if old is not None:
            _retire(b, name, {"join": old}, "join credential reissued", now)
        b.joins[name] = new_join_token(b, join_days, now)
        note = f"new join token for {name} (expires {b.joins[name]['expires']})"
        if is_token_join(old):
            note += f"; the old one is retired: delete it on the hub with kubeadm token delete {token_id(old['token'])}"
        elif old is not None:
            note += "; it replaces its join certificate from an older wgkube"
        return b, [note]
    entry = b.members[name]
    _retire(b, name, {k: v for k, v in entry.items() if k != "slot"}, "rekeyed", now)
    priv, pub = pki.wg_keypair()
    b.members[name] = {"private_key": priv, "public_key": pub, "vpn_ip": entry["vpn_ip"]}
    return b, [f"new WireGuard key for {name} (the old one is retired)"]


def renew_admin(existing: Bundle, name: str, now: dt.datetime) -> tuple[Bundle, list[str]]:
    """`wgkube admin renew`: a new certificate (and a new key) of the revocable form for one admin;
    the old pair is retired (reason "renewed"), never dropped. A new key, not the old one: a renewal
    is also the moment to stop trusting a key that may have been copied, and the laptop gets a
    whole new kubeconfig anyway, so keeping the key saves nothing."""
    b = copy.deepcopy(existing)
    if name not in b.admins:
        known = ", ".join(sorted(b.admins)) or "none"
        raise UserError(Problem("", f"{name!r} is not an admin in the secrets bundle (admins: {known})",
                                "renew an admin of the spec that has been rendered; a new admin gets its certificate from `wgkube render`"))
    old = b.admins[name]
    _retire(b, name, {"admin_cert": old}, "renewed", now)
    b.admins[name] = pki.new_admin_cert(b.pki["ca"], name, now)
    end = pki.cert_facts(b.admins[name]["cert"])[2]
    return b, [f"new admin certificate for {name} (expires {end:%Y-%m-%d}; the old one is retired)"]


def loose_permissions(path: Path) -> str | None:
    """A warning when a plain bundle can be read by other users (a git checkout makes 0644)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if is_encrypted(path) or not mode & 0o077:
        return None
    return (f"{path} holds private keys in plain text and is readable by other users (mode {mode & 0o777:04o}): "
            f"run chmod 600 {path} (wgkube writes it 0600 on its next change)")


def save(b: Bundle, path: Path, age: Age | None = None) -> Path:
    """Write the bundle atomically (0600). Encrypted when path ends in .age or recipients are
    given; a plain bundle that gets recipients becomes <path>.age and the plain file goes.
    Returns the path written. Call under the lock."""
    recipients = list(age.recipients) if age and age.recipients else list(b.age_recipients)
    target = path
    if age and age.recipients and not is_encrypted(path):
        target = path.with_name(path.name + AGE_SUFFIX)
    if is_encrypted(target):
        if not recipients:
            raise UserError(Problem("--age-recipient", f"{target.name} is encrypted but no recipient is known",
                                    f"pass --age-recipient age1... or set {ENV_RECIPIENTS}"), str(target))
        b.age_recipients = recipients
        data = load_pyrage().encrypt(b.to_yaml().encode(), [recipient(r) for r in recipients], armored=True)
    else:
        b.age_recipients = []
        data = b.to_yaml().encode()
    if target == path and path.is_symlink():
        # A bundle kept elsewhere behind a symbolic link (an encrypted home, a secrets
        # folder): written where the link points, atomically, and the link stays a link.
        target = Path(os.path.realpath(path))
        remove_stale_temps(target)
        atomic_write(target, data, mode=0o600)
        return path
    remove_stale_temps(target)
    atomic_write(target, data, mode=0o600)
    if target != path and path.exists():
        # The encrypted copy is durable (fsync'd) before the plain one goes.
        os.unlink(path)
    return target


# --------------------------------------------------------------------------- registry passwords (issue 18)

REGISTRY_PREFIX = "registry."
MAX_REGISTRY_SECRET = 4096


def registry_secret_ok(value: str) -> bool:
    """A password or token as a registry takes it: 1-4096 printable characters, no line break
    (it goes into a JSON string and a base64 user:password; a control character is a paste error)."""
    return 0 < len(value) <= MAX_REGISTRY_SECRET and value.isprintable()


def check_registry_passwords(doc, bundle: Bundle | None) -> None:
    """Every registry the spec names has its password in the bundle, else a UserError per
    registry at its spec line, naming the command that sets it. Nothing is written before this."""
    have = bundle.registries if bundle is not None else {}
    problems = [doc.problem(("registries", i, "server"), f"no password for registry {r.server!r} in the secrets bundle",
                            f"set it (read from stdin, never from the command line): wgkube secret set {REGISTRY_PREFIX}{r.server} "
                            f"{doc.source} < token-file   (or --file token-file)")
                for i, r in enumerate(doc.spec.registries) if r.server not in have]
    if problems:
        raise UserError(problems, doc.source)
