"""Day two: changing a running cluster without breaking it (docs/day-two.md).

Three pure parts:
- ``plan_for``: the plan for a spec given the secrets bundle: existing members keep their
  addresses, new members take free spare slots, and spare slots are refilled only when the
  hub's peer list changes anyway (so taking a slot never touches the hub).
- artifacts that only exist for running clusters: the hub's live peer update script and the
  per-node join kubeconfig (join window).
- ``diff``: what a render changes against out/<cluster>/manifest.json, per member and per
  file, and what must be done by hand on running members.
"""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from cryptography import x509

from .errors import Problem, UserError
from .plan import Member, Plan, build_plan
from .secrets import SLOT_RE, Bundle
from .secrets import rekey as secrets_rekey
from .spec import ClusterSpec, SpecDocument
from .templates import render

JOIN_KUBECONFIG = "/etc/wgkube/join.kubeconfig"


# --------------------------------------------------------------------------- plan


def _slot_number(name: str) -> int:
    m = SLOT_RE.fullmatch(name)
    return int(m.group(1)) if m else 0


def plan_for(spec: ClusterSpec, existing: Bundle | None, hub_changes: bool = False) -> Plan:
    """The plan for spec, given what the bundle already holds.

    hub_changes: the caller already knows the hub's peer list changes (rekey)."""
    target = spec.vpn.spares
    if existing is None:  # first render: nothing is running yet
        return build_plan(spec, None, new_spares=[f"spare.{i}" for i in range(1, target + 1)], spares_target=target)
    names = [n.name for n in spec.nodes] + [a.name for a in spec.admins]
    hub = next((n.name for n in spec.nodes if n.role == "control-plane" and n.endpoint), None)
    fixed = {n.name: n.vpn_ip for n in spec.nodes if n.vpn_ip} | {a.name: a.vpn_ip for a in spec.admins if a.vpn_ip}
    net = ipaddress.ip_network(spec.vpn.cidr)
    free = dict(sorted(existing.spares.items(), key=lambda kv: _slot_number(kv[0])))
    claimed = set(fixed.values())

    takes: dict[str, str] = {}
    for name in names:
        if name in existing.members or name == hub:
            continue
        want = fixed.get(name)
        for slot, entry in free.items():
            if slot in takes.values() or ipaddress.ip_address(entry["vpn_ip"]) not in net:
                continue
            if (want is None and entry["vpn_ip"] not in claimed) or want == entry["vpn_ip"]:
                takes[name] = slot
                break
    new_without_slot = [n for n in names if n not in existing.members and n not in takes]
    removed = set(existing.members) - set(names)
    moved = [n for n in names if n in existing.members and n in fixed and fixed[n] != existing.members[n].get("vpn_ip")]
    remaining = [s for s in free if s not in takes.values()]
    # A slot whose address a fixed vpn_ip now claims, or that fell outside a changed vpn.cidr, goes.
    dropped = [s for s in remaining if free[s]["vpn_ip"] in claimed or ipaddress.ip_address(free[s]["vpn_ip"]) not in net]
    remaining = [s for s in remaining if s not in dropped]
    # (a changed `spares` counts: the user asked for a different peer list on the hub)
    hub_touched = bool(hub_changes or new_without_slot or removed or moved or dropped
                       or existing.spare_state.get("target", 0) != target)

    new_spares: list[str] = []
    if hub_touched:
        # The hub gets a new file anyway: refill (or trim) the spare slots to the spec's number,
        # and let members that sat in a slot appear under their own names.
        remaining = remaining[:target]
        start = existing.spare_state.get("next", 1)
        new_spares = [f"spare.{start + i}" for i in range(max(0, target - len(remaining)))]
        labels: dict[str, str] = {}
    else:
        labels = {n: e["slot"] for n, e in existing.members.items() if e.get("slot") and n in names}
        labels.update(takes)
    pinned = existing.addresses() | {n: free[s]["vpn_ip"] for n, s in takes.items()}
    return build_plan(spec, pinned, reserved={s: free[s]["vpn_ip"] for s in remaining}, new_spares=new_spares,
                      slot_takes=takes, slot_labels=labels, spares_target=target)


def rekey_bundle(doc: SpecDocument, existing: Bundle | None, name: str, join: bool, now: dt.datetime,
                 bundle_path: Path) -> tuple[Bundle, list[str]]:
    """`wgkube rekey`: checks, then a new WireGuard key (or join credential) for one member."""
    spec = doc.spec
    if existing is None:
        raise UserError(Problem("", f"no secrets bundle at {bundle_path}: nothing to rekey", "render the cluster first"))
    if name not in {n.name for n in spec.nodes} | {a.name for a in spec.admins}:
        raise UserError(Problem("", f"{name!r} is not in the spec", "name a node or admin of the spec"), doc.source)
    days = spec.join.window_days if join else None
    if join and not days:
        raise UserError(Problem("join.window_days", "the spec sets no join window, so there is no join credential to reissue",
                                "set join.window_days (docs/join-window.md); or create a bootstrap token on the hub: kubeadm token create"),
                        doc.source)
    if join and any(n.name == name and n.role == "control-plane" for n in spec.nodes):
        raise UserError(Problem("", f"{name} is the control plane: it does not join, it runs `kubeadm init`", "rekey --join a worker"))
    return secrets_rekey(existing, name, now, days)


# --------------------------------------------------------------------------- artifacts


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def join_kubeconfig(plan: Plan, bundle: Bundle, member: Member) -> str:
    """kubeadm's discovery file with credentials: the API on the hub's VPN address, the pinned
    CA, and the node's own short-lived client certificate (docs/join-window.md)."""
    pair = bundle.joins[member.name]
    user = SimpleNamespace(name=f"join-{member.name}")
    text = render("kubeconfig.yaml.j2", plan=plan, admin=user, ca_b64=_b64(bundle.pki["ca"]["cert"]),
                  cert_b64=_b64(pair["cert"]), key_b64=_b64(pair["key"]))
    start, end = join_window(pair["cert"])
    return (f"# wgkube join credential for {member.name}: kubeadm join reads it once (discovery.file).\n"
            f"# Valid {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC; `wgkube rekey {member.name} SPEC --join` issues a new one.\n"
            + text)


def join_window(cert_pem: str) -> tuple[dt.datetime, dt.datetime]:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def hub_update_script(plan: Plan, bundle: Bundle, hub_conf: str) -> str:
    """A bash script, fed to the hub over SSH, that makes its WireGuard config equal the rendered
    one while keeping the hub's own private key on the hub, then applies it with `wg syncconf`
    (peers that did not change keep their sessions). Holds public keys only. Idempotent."""
    before, _, after = hub_conf.partition("\nPrivateKey = ")
    after = after.split("\n", 1)[1] if "\n" in after else ""
    if "WGKUBE_EOF" in hub_conf or not hub_conf.endswith("\n"):
        raise ValueError("the hub's config cannot be embedded in the update script")  # cannot happen with wg.conf.j2
    return render("hub-update.sh.j2", plan=plan, hub=plan.hub_member, hub_public_key=bundle.public_key(plan.hub),
                  conf_before=before + "\n", conf_after=after, apply=hub_update_command(plan, "hub-update/" + hub_update_name(plan)))


def hub_update_name(plan: Plan) -> str:
    return f"{plan.interface}.sh"


def hub_update_command(plan: Plan, script_path: str) -> str:
    return f"ssh {plan.login_user}@{plan.api_address} sudo bash -s < {shlex.quote(script_path)}"


# --------------------------------------------------------------------------- diff


# Paths inside a node's user-data, by what a running member needs when they change.
def _category(path: str, iface: str) -> str:
    if path == f"/etc/wireguard/{iface}.conf":
        return "live"       # the running tunnel: apply by hand (hub-update script, or the node's new conf)
    if path in ("/etc/wgkube/firewall.nft", "/etc/sysctl.d/90-wgkube.conf", "/etc/modules-load.d/wgkube.conf") \
            or path.startswith("/etc/systemd/") or path.startswith("/etc/udev/"):
        return "boot"       # read at boot: copy it over and restart the unit (or reboot)
    return "first-boot"     # kubeadm config, PKI, join credential, first-boot script: used once


@dataclass
class FileChange:
    path: str
    status: str  # new | changed | removed | unchanged
    inner: list[tuple[str, str, str]] = field(default_factory=list)  # (path on the node, status, category)


@dataclass
class MemberChange:
    name: str
    kind: str
    status: str
    files: list[FileChange] = field(default_factory=list)

    def changed(self) -> list[FileChange]:
        return [f for f in self.files if f.status != "unchanged"]


@dataclass
class Report:
    cluster: str
    baseline: bool  # False: nothing rendered before (everything is new)
    members: list[MemberChange]
    cluster_files: list[FileChange]
    actions: list[str]
    secrets: list[str]

    @property
    def hub_must_update(self) -> bool:
        return any("hub-update" in a for a in self.actions)


def _owner(rel: str) -> tuple[str, str] | None:
    parts = rel.split("/")
    kinds = {"nodes": "node", "admins": "admin", "wireguard": "node"}
    if len(parts) >= 3 and parts[0] in kinds:
        return parts[1], kinds[parts[0]]
    return None


def _status(old: str | None, new: str | None) -> str:
    if old is None:
        return "new"
    if new is None:
        return "removed"
    return "unchanged" if old == new else "changed"


def diff(old: dict | None, new: dict, plan: Plan, bundle: Bundle, out_hint: str, secrets_added: list[str],
         old_plan: dict | None = None) -> Report:
    """Compare manifests (old may be None) and say what running members need."""
    old_files = (old or {}).get("files", {})
    new_files = new["files"]
    old_inner = (old or {}).get("node_files", {})
    new_inner = new.get("node_files", {})
    per_member: dict[str, MemberChange] = {}
    cluster_files: list[FileChange] = []
    old_kinds = {m["name"]: m["kind"] for m in (old_plan or {}).get("members", [])}
    for rel in sorted(set(old_files) | set(new_files)):
        before, after = old_files.get(rel), new_files.get(rel)
        change = FileChange(rel, _status(before and before["sha256"], after and after["sha256"]))
        owner = _owner(rel)
        if owner is None:
            cluster_files.append(change)
            continue
        name, kind = owner
        if change.status == "changed" and rel.endswith("/user-data"):
            a, b = old_inner.get(name, {}), new_inner.get(name, {})
            for path in sorted(set(a) | set(b)):
                st = "new" if path not in a else "removed" if path not in b else ("unchanged" if a[path] == b[path] else "changed")
                if st != "unchanged":
                    change.inner.append((path, st, _category(path, plan.interface)))
        per_member.setdefault(name, MemberChange(name, kind, "")).files.append(change)
    for mc in per_member.values():
        states = {f.status for f in mc.files}
        mc.status = ("new" if states == {"new"} else "removed" if states == {"removed"}
                     else "unchanged" if states == {"unchanged"} else "changed")
    for m in plan.members:  # a member with no files of its own yet (never happens today) still shows
        per_member.setdefault(m.name, MemberChange(m.name, m.kind, "new" if old is None else "unchanged"))
    order = {m.name: i for i, m in enumerate(plan.members)}
    members = sorted(per_member.values(), key=lambda mc: (order.get(mc.name, len(order)), mc.name))
    actions = _actions(members, plan, bundle, out_hint, old is not None, "node_files" in (old or {}), old_kinds)
    return Report(plan.cluster, old is not None, members, cluster_files, actions, secrets_added)


def latest_retired(bundle: Bundle, name: str) -> dict:
    """The most recent retired entry of a member (name, name@2, name@3, ...)."""
    keys = [k for k in bundle.retired if k == name or k.startswith(name + "@")]
    if not keys:
        return {}
    return bundle.retired[max(keys, key=lambda k: (str(bundle.retired[k].get("retired", "")), int(k.partition("@")[2] or 1)))]


def _actions(members: list[MemberChange], plan: Plan, bundle: Bundle, out_hint: str, baseline: bool,
             detail: bool, old_kinds: dict[str, str]) -> list[str]:
    if not baseline:
        return ["first render: boot the nodes with their files (nothing is running yet)"]
    actions: list[str] = []
    iface = plan.interface
    by_name = {mc.name: mc for mc in members}
    hub = by_name.get(plan.hub)
    live = f"/etc/wireguard/{iface}.conf"

    def inner_changes(mc: MemberChange, category: str) -> list[str]:
        return [p for f in mc.changed() for (p, st, cat) in f.inner if cat == category]

    def tunnel_changes(mc: MemberChange) -> bool:
        if live in inner_changes(mc, "live"):
            return True
        own = (f"wireguard/{mc.name}/{iface}.conf", f"admins/{mc.name}/{iface}.conf")
        if any(f.path in own and f.status == "changed" for f in mc.files):
            return True
        # A manifest from an older wgkube has no per-file detail: assume the worst for the hub.
        return not detail and any(f.path.endswith("/user-data") and f.status == "changed" for f in mc.files)

    if hub is not None and hub.status == "changed" and tunnel_changes(hub):
        actions.append(f"hub {plan.hub}: its WireGuard peer list changes; apply it over the VPN "
                       f"(peers that did not change keep their sessions):\n    "
                       + hub_update_command(plan, f"{out_hint}/hub-update/{hub_update_name(plan)}"))
    for mc in members:
        if mc.status == "removed":
            if old_kinds.get(mc.name, mc.kind) == "node":
                actions.append(f"{mc.name} left the cluster: its VPN key is retired and dropped from the hub; remove it from Kubernetes:\n"
                               f"    kubectl delete node {mc.name}")
            else:
                actions.append(f"admin {mc.name} left: its VPN key is retired; its kubeconfig certificate stays valid until it expires "
                               f"but only reaches the API from inside the VPN")
            retired = latest_retired(bundle, mc.name)
            if "join" in retired:
                _, end = join_window(retired["join"]["cert"])
                actions.append(f"{mc.name}'s join credential stays valid until {end:%Y-%m-%d %H:%M} UTC (certificates cannot be revoked); "
                               f"it only works from inside the VPN, where {mc.name} no longer is")
            continue
        if mc.status != "changed" or mc.name == plan.hub:
            continue
        if tunnel_changes(mc) and mc.status == "changed":
            where = f"{out_hint}/{'wireguard' if mc.kind == 'node' else 'admins'}/{mc.name}/{iface}.conf"
            actions.append(f"{mc.name}: its own WireGuard config changes (new key?); install {where} on it "
                           "(see `wgkube rekey` for the order)")
        boot = inner_changes(mc, "boot")
        if boot and mc.kind == "node":
            actions.append(f"{mc.name}: files read at boot change ({', '.join(boot)}); copy them from its user-data and restart "
                           "the unit, or re-provision; running as is keeps the old ones")
    now = dt.datetime.now(dt.timezone.utc)
    for name in sorted(bundle.joins):
        _, end = join_window(bundle.joins[name]["cert"])
        if end < now and name in by_name:
            actions.append(f"{name}'s join credential expired on {end:%Y-%m-%d %H:%M} UTC; if {name} has not joined yet, "
                           f"give it a new window: wgkube rekey {name} SPEC --join")
    if hub is not None and hub.status == "changed":
        boot = inner_changes(hub, "boot")
        if boot:
            actions.append(f"hub {plan.hub}: files read at boot change ({', '.join(boot)}); copy them over and restart the unit")
    return actions


def format_report(report: Report, title: str) -> str:
    """Plain text, stable, no key material (manifests hold hashes only)."""
    lines = [title]
    if report.secrets:
        lines.append("secrets (made when you render; no key material is shown):")
        lines += [f"  + {item}" for item in report.secrets]
    else:
        lines.append("secrets: nothing new")
    lines.append("members:")
    width = max([len(m.name) for m in report.members] + [9])
    for mc in report.members:
        head = f"  {mc.name:<{width}}  {mc.status}"
        lines.append(head)
        for f in mc.changed():
            lines.append(f"  {'':<{width}}    {f.status:<8} {f.path}")
            for path, st, cat in f.inner:
                lines.append(f"  {'':<{width}}        {st:<8} {path}  ({cat})")
    cl = [f for f in report.cluster_files if f.status != "unchanged"]
    lines.append(f"  {'(cluster)':<{width}}  {'changed' if cl else 'unchanged'}")
    for f in cl:
        lines.append(f"  {'':<{width}}    {f.status:<8} {f.path}")
    if report.actions:
        lines.append("by hand:")
        lines += [f"  - {a}" for a in report.actions]
    else:
        lines.append("by hand: nothing; no running member needs a change")
    return "\n".join(lines)


def report_json(report: Report) -> dict:
    return {
        "cluster": report.cluster,
        "baseline": report.baseline,
        "hub_must_update": report.hub_must_update,
        "members": {mc.name: {"kind": mc.kind, "status": mc.status,
                              "files": {f.path: {"status": f.status, "inner": [{"path": p, "status": s, "category": c} for p, s, c in f.inner]}
                                        for f in mc.files}} for mc in report.members},
        "cluster_files": {f.path: f.status for f in report.cluster_files},
        "actions": report.actions,
        "secrets": report.secrets,
    }


# --------------------------------------------------------------------------- rekey rollout


def rollout(plan: Plan, name: str, out_hint: str) -> list[str]:
    """The order to roll a new WireGuard key out, and what is cut off in between."""
    iface = plan.interface
    hub_cmd = hub_update_command(plan, f"{out_hint}/hub-update/{hub_update_name(plan)}")
    m = plan.member(name)
    ssh = f"ssh {plan.login_user}@{{ip}}"
    install = ("'sudo sh -c \"umask 077; cat >/etc/wireguard/{iface}.conf.new && mv /etc/wireguard/{iface}.conf.new "
               "/etc/wireguard/{iface}.conf && wg-quick strip {iface} | wg syncconf {iface} /dev/stdin\"'")
    if name == plan.hub:
        steps = [f"rekeying the hub changes EVERY member's config (they all pin the hub's public key). Until a member has "
                 f"its new config, it cannot reach the hub; the cluster is split while you roll out:"]
        n = 1
        for o in plan.members:
            if o.name == plan.hub or not o.is_node:
                continue
            steps.append(f"{n}. {o.name}: " + ssh.format(ip=o.vpn_ip) + " " + install.format(iface=iface)
                         + f" < {out_hint}/wireguard/{o.name}/{iface}.conf   (it drops off until the hub has its new key)")
            n += 1
        steps.append(f"{n}. the hub last, over the VPN while your laptop still reaches it: " + ssh.format(ip=plan.api_address) + " "
                     + install.format(iface=iface) + f" < {out_hint}/wireguard/{plan.hub}/{iface}.conf")
        steps.append(f"{n + 1}. each admin device: install {out_hint}/admins/<name>/{iface}.conf locally")
        return steps
    if m.is_node:
        return [
            f"1. {name} first, over the VPN: " + ssh.format(ip=m.vpn_ip) + " " + install.format(iface=iface)
            + f" < {out_hint}/wireguard/{name}/{iface}.conf",
            f"   from here {name} is cut off (the hub still has its old key); nothing else is affected.",
            f"2. then the hub: {hub_cmd}",
            f"   {name} handshakes again within {plan.keepalive or 'a few'} s (its keepalive). If you did the hub first, "
            f"you could no longer reach {name} over the VPN to give it its new key.",
        ]
    return [
        f"1. the hub first, from this admin device while its old key still works: {hub_cmd}",
        f"   from here this device ({name}) is cut off; nothing else is affected.",
        f"2. then locally on {name}: install {out_hint}/admins/{name}/{iface}.conf and restart its tunnel "
        f"(e.g. wg-quick down {iface}; wg-quick up {iface}).",
    ]

