"""The plan for a spec given the secrets bundle (docs/day-two.md): existing members keep their
addresses, new members take free spare slots, and spare slots are refilled only when the hub's
peer list changes anyway (so taking a slot never touches the hub). Also `wgkube rekey`'s checks."""
from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from .. import facts
from ..errors import Problem, UserError
from ..plan import Plan, build_plan
from ..secrets import SLOT_RE, Bundle
from ..secrets import rekey as secrets_rekey
from ..secrets import renew_admin
from ..spec import ClusterSpec, SpecDocument


def _slot_number(name: str) -> int:
    m = SLOT_RE.fullmatch(name)
    return int(m.group(1)) if m else 0


def quarantined(existing: Bundle, names: list[str], now: dt.datetime) -> set[str]:
    """Addresses given up by members that left (now, or less than the quarantine ago) and that no
    staying member holds: kept out of circulation for a while (facts.RETIRED_ADDRESS_QUARANTINE_DAYS)."""
    staying = {m["vpn_ip"] for n, m in existing.members.items() if n in names and m.get("vpn_ip")}
    leaving = {m["vpn_ip"] for n, m in existing.members.items() if n not in names and m.get("vpn_ip")}
    since = now - dt.timedelta(days=facts.RETIRED_ADDRESS_QUARANTINE_DAYS)
    recent = set()
    for entry in existing.retired.values():
        try:
            when = dt.datetime.strptime(str(entry.get("retired", "")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
        if entry.get("vpn_ip") and when >= since:
            recent.add(entry["vpn_ip"])
    return (leaving | recent) - staying


def plan_for(spec: ClusterSpec, existing: Bundle | None, hub_changes: bool = False, now: dt.datetime | None = None) -> Plan:
    """The plan for spec, given what the bundle already holds.

    hub_changes: the caller already knows the hub's peer list changes (rekey)."""
    target = spec.vpn.spares
    if existing is None:  # first render: nothing is running yet
        return build_plan(spec, None, new_spares=[f"spare.{i}" for i in range(1, target + 1)], spares_target=target)
    names = [n.name for n in spec.nodes] + [a.name for a in spec.admins]
    hub = spec.hub
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
    held = quarantined(existing, names, now or dt.datetime.now(dt.timezone.utc))
    return build_plan(spec, pinned, reserved={s: free[s]["vpn_ip"] for s in remaining}, new_spares=new_spares,
                      slot_takes=takes, slot_labels=labels, spares_target=target, quarantined=held)


def rekey_bundle(doc: SpecDocument, existing: Bundle | None, name: str, join: bool, now: dt.datetime,
                 bundle_path: Path) -> tuple[Bundle, list[str]]:
    """`wgkube rekey`: checks, then a new WireGuard key (or join token) for one member."""
    spec = doc.spec
    if existing is None:
        raise UserError(Problem("", f"no secrets bundle at {bundle_path}: nothing to rekey", "render the cluster first"))
    if name not in {n.name for n in spec.nodes} | {a.name for a in spec.admins}:
        raise UserError(Problem("", f"{name!r} is not in the spec", "name a node or admin of the spec"), doc.source)
    days = spec.join.window_days if join else None
    if join and not days:
        raise UserError(Problem("join.window_days", "the spec sets no join window, so there is no join token of its own to reissue",
                                "set join.window_days (docs/join-window.md); or create a bootstrap token on the hub: kubeadm token create"),
                        doc.source)
    if join and name == spec.hub:
        # issue 14: the other control planes do join (with their own token), so only this one is refused
        raise UserError(Problem("", f"{name} is the {'first ' if sum(n.role == 'control-plane' for n in spec.nodes) > 1 else ''}"
                                f"control plane: it does not join, it runs `kubeadm init`",
                                "rekey --join a worker or another control plane"))
    return secrets_rekey(existing, name, now, days)


def check_admin_name(doc: SpecDocument, name: str) -> None:
    """`wgkube admin renew NAME`: NAME must be an admin of the spec (checked before the lock is taken)."""
    admins = [a.name for a in doc.spec.admins]
    if name not in admins:
        nodes = {n.name for n in doc.spec.nodes}
        what = "a node, not an admin" if name in nodes else "not an admin of the spec"
        raise UserError(Problem("admins", f"{name!r} is {what} (admins: {', '.join(admins) or 'none'})",
                                "name an admin listed under admins: in the spec"), doc.source)


def renew_admin_bundle(doc: SpecDocument, existing: Bundle | None, name: str, now: dt.datetime,
                       bundle_path: Path) -> tuple[Bundle, list[str]]:
    """`wgkube admin renew`: checks, then a new revocable certificate for one admin (the old one retired)."""
    check_admin_name(doc, name)
    if existing is None:
        raise UserError(Problem("", f"no secrets bundle at {bundle_path}: nothing to renew", "render the cluster first"))
    return renew_admin(existing, name, now)
