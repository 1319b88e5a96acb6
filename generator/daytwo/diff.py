"""What a render changes against out/<cluster>/manifest.json, per member and per file, and what
must be done by hand on running members."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..artifacts.apiproxy import CONFIG_PATH as APIPROXY_CONFIG
from ..artifacts.apiproxy import update_command as apiproxy_update_command
from ..artifacts.admin_rbac import BINDINGS_PATH, binding_name, revocable_pair
from ..artifacts.hub_update import (control_plane_update_command, control_plane_update_path, hub_update_command,
                                    hub_update_name, member_update_command, member_update_path)
from ..plan import Plan
from ..secrets import Bundle, is_token_join, join_expires, token_id


# Paths inside a node's user-data, by what a running member needs when they change.
def _category(path: str, iface: str) -> str:
    if path == f"/etc/wireguard/{iface}.conf":
        return "live"       # the running tunnel: apply by hand (hub-update script, or the node's new conf)
    if path == "/etc/wgkube/failover.conf":
        return "live"       # mesh: the peer update script installs it with the peers and restarts the loop
    if path == APIPROXY_CONFIG:
        return "apiproxy"   # issue 14: the local API endpoint's control planes; its live update installs it
    if path == BINDINGS_PATH:
        return "admins"     # issue 17 item 2: the admins' ClusterRoleBindings; the control plane's live update applies them
    if path.startswith("/etc/wgkube/addons/") or path == "/usr/local/sbin/wgkube-addons":
        return "addon"      # issue 18: applied once at first boot; on a running cluster, over the VPN (`wgkube plan`)
    if path in ("/etc/wgkube/firewall.nft", "/etc/sysctl.d/90-wgkube.conf", "/etc/modules-load.d/wgkube.conf",
                "/usr/local/sbin/wgkube-failover") \
            or path.startswith("/etc/systemd/") or path.startswith("/etc/udev/"):
        return "boot"       # read at boot: copy it over and restart the unit (or reboot)
    return "first-boot"     # kubeadm config (join token), PKI, join credential, first-boot script: used once


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
    # issue 18: (name, added | changed | removed | unchanged, what the spec says) per add-on and registry
    addons: list[tuple[str, str, str]] = field(default_factory=list)
    # issue 17 item 2: admin certificates expiring or of the old form (`wgkube plan` fills it; never fatal)
    warnings: list[str] = field(default_factory=list)

    @property
    def hub_must_update(self) -> bool:
        return any("hub-update" in a for a in self.actions)


def _owner(rel: str) -> tuple[str, str] | None:
    parts = rel.split("/")
    kinds = {"nodes": "node", "admins": "admin", "wireguard": "node"}
    if len(parts) >= 3 and parts[0] in kinds:
        return parts[1], kinds[parts[0]]
    return None


def _renamed_wg_file(mc: MemberChange, plan: Plan) -> str | None:
    """Issue 17: an admin's WireGuard file took a new name (vpn.admin_conf changed): the old name."""
    if mc.kind != "admin":
        return None
    new = f"admins/{mc.name}/{plan.admin_wg_file}"
    if not any(f.path == new and f.status == "new" for f in mc.files):
        return None
    gone = [f.path.rsplit("/", 1)[1] for f in mc.files if f.status == "removed" and f.path.endswith(".conf")
            and f.path.rsplit("/", 1)[1] != "failover.conf"]
    return gone[0] if gone else None


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
    actions = _actions(members, plan, bundle, out_hint, old is not None, "node_files" in (old or {}), old_kinds, cluster_files)
    was = (old_plan or {}).get("kubernetes")
    if old is not None and was and was != plan.kubernetes:
        actions.insert(0, kubernetes_change(was, plan.kubernetes))
    if old is not None:
        actions += control_plane_actions(members, plan, old_plan, out_hint)
    if plan.upgrade_to is not None:
        actions.insert(0, upgrade_action(plan, out_hint))
    addon_changes = addon_diff(old_plan, plan) if old is not None else [(a.name, "added", a.source) for a in plan.addons]
    if old is not None:
        actions += addon_actions(addon_changes, old_plan, plan, out_hint)
    return Report(plan.cluster, old is not None, members, cluster_files, actions, secrets_added, addon_changes)


def control_plane_actions(members: list[MemberChange], plan: Plan, old_plan: dict | None, out_hint: str) -> list[str]:
    """Issue 14: a control plane added or removed. kubeadm joins a new one by itself at its first
    boot; removing one from etcd, and telling every running node's local API endpoint, are by hand."""
    old_cps = [m["name"] for m in (old_plan or {}).get("members", []) if m.get("role") == "control-plane"]
    new_cps = [m.name for m in plan.control_planes]
    added = [n for n in new_cps if n not in old_cps]
    gone = [n for n in old_cps if n not in new_cps]
    actions: list[str] = []
    for name in added:
        actions.append(f"control plane {name} added: boot it with its files; its first boot joins etcd and the control plane "
                       f"(kubeadm join --control-plane, with the CAs from its user-data) once any control plane's API answers")
    for name in gone:
        actions.append(f"control plane {name} removed: take it out of etcd before switching it off (until then etcd counts "
                       f"{len(old_cps)} members and needs {len(old_cps) // 2 + 1} of them up): on {name} run `kubeadm reset` "
                       f"(its phase remove-etcd-member leaves etcd cleanly), or on another control plane "
                       f"`etcdctl member remove <id>` (`etcdctl member list` shows it); then kubectl delete node {name}")
    changed = {mc.name for mc in members if mc.kind == "node" and mc.status == "changed"
               and any(p == APIPROXY_CONFIG for f in mc.changed() for (p, _, _) in f.inner)}
    stale = [m for m in plan.nodes if m.name in changed]
    if stale:
        # control planes first: a node then never prefers one its own etcd does not know yet
        stale.sort(key=lambda m: m.role != "control-plane")
        what = "new" if added else "current"
        actions.append(f"every running node's local API endpoint (haproxy) must learn the {what} list of control planes "
                       f"({', '.join(new_cps)}); run each live update (idempotent){' after ' + ', '.join(added) + ' answered' if added else ''}:\n    "
                       + "\n    ".join(apiproxy_update_command(plan, m, out_hint) for m in stale))
    return actions


def addon_diff(old_plan: dict | None, plan: Plan) -> list[tuple[str, str, str]]:
    """Issue 18: add-ons and registries against the last render's plan.json, in spec order, removed last."""
    from ..plan import addon_digest, plan_summary
    old = {a["name"]: a for a in (old_plan or {}).get("addons", [])}
    out = []
    for step in plan.addons:
        was = old.pop(step.name, None)
        status = "added" if was is None else "unchanged" if was.get("digest") == addon_digest(step) else "changed"
        out.append((step.name, status, step.source))
    out += [(name, "removed", str(a.get("source", ""))) for name, a in old.items()]
    old_regs = {r["server"]: r for r in (old_plan or {}).get("registries", [])}
    new_regs = {r["server"]: r for r in plan_summary(plan).get("registries", [])}
    for server, r in new_regs.items():
        was = old_regs.pop(server, None)
        status = "added" if was is None else "unchanged" if was == r else "changed"
        out.append((f"registry {server}", status, f"{r['username']} in {', '.join(r['namespaces'])}"))
    out += [(f"registry {server}", "removed", "") for server in old_regs]
    return out


def addon_actions(changes: list[tuple[str, str, str]], old_plan: dict | None, plan: Plan, out_hint: str) -> list[str]:
    """A running control plane applied its add-ons once, at first boot: wgkube never re-renders a node
    to change them. Each added or changed one gets the line that applies it over the VPN."""
    from ..artifacts.addons import apply_command
    admin = next((m.name for m in plan.admins), None)
    kubeconfig = f"{out_hint}/admins/{admin}/kubeconfig" if admin else "ADMIN-KUBECONFIG"
    steps = {a.name: a for a in plan.addons}
    regs = {f"registry {r.server}": r for r in plan.registries}
    out = []
    for name, status, _source in changes:
        if status in ("added", "changed") and name in steps:
            out.append(f"add-on {name} is {status}: the running control plane applied its add-ons once, at first boot, and does not again; after `wgkube render`, apply it over the VPN:\n    "
                       + apply_command(plan, steps[name], kubeconfig, out_hint))
        elif status in ("added", "changed") and name in regs:
            r = regs[name]
            ns = " ".join(r.namespaces)
            out.append(f"{name} is {status}: on a running cluster, make its pull secret over the VPN (the token from your file, "
                       f"never typed on the command line):\n    for ns in {ns}; do kubectl --kubeconfig {kubeconfig} -n \"$ns\" create secret "
                       f"docker-registry {r.secret_name} --docker-server={r.server} --docker-username={r.username} "
                       f"--docker-password=\"$(cat token-file)\" --dry-run=client -o yaml | kubectl --kubeconfig {kubeconfig} apply -f -; done")
        elif status == "removed" and name.startswith("registry "):
            secret = next((r.get("secret") for r in (old_plan or {}).get("registries", []) if f"registry {r.get('server')}" == name), None)
            out.append(f"{name} left the spec: wgkube deletes nothing on a running cluster; remove its pull secret by hand "
                       f"if you mean to: kubectl --kubeconfig {kubeconfig} -n NAMESPACE delete secret {secret or 'wgkube-registry-...'}")
        elif status == "removed":
            old_kind = next((a.get("kind") for a in (old_plan or {}).get("addons", []) if a.get("name") == name), "")
            how = (f"helm uninstall {name} --kubeconfig {kubeconfig} --namespace NAMESPACE" if old_kind == "helm"
                   else f"kubectl --kubeconfig {kubeconfig} delete -f <the manifest it applied>")
            out.append(f"add-on {name} left the spec: wgkube deletes nothing on a running cluster; remove it by hand if you mean to: {how}")
    return out


def latest_retired(bundle: Bundle, name: str) -> dict:
    """The most recent retired entry of a member (name, name@2, name@3, ...)."""
    keys = [k for k in bundle.retired if k == name or k.startswith(name + "@")]
    if not keys:
        return {}
    return bundle.retired[max(keys, key=lambda k: (str(bundle.retired[k].get("retired", "")), int(k.partition("@")[2] or 1)))]


def kubernetes_change(was: str, now: str) -> str:
    """The minor new nodes install moved (issue 17: only once the control plane runs it)."""
    return (f"kubernetes changes from {was} to {now}: every node's first-boot files now install {now}, so nodes "
            f"booted from now on join at {now}. Running nodes stay as they are: `wgkube upgrade` moves them "
            f"(its scripts, in kubeadm's order).")


def upgrade_action(plan: Plan, out_hint: str) -> str:
    """Issue 17: an upgrade under way; what runs next, in order."""
    from ..artifacts.upgrade import stage_steps
    commands = "\n    ".join(stage_steps(plan, out_hint))
    if plan.upgrade_to != plan.kubernetes:
        return (f"upgrade to Kubernetes {plan.upgrade_to} under way, stage 1 of 2 (the control plane; new nodes still "
                f"install {plan.kubernetes}): run\n    {commands}\n  then: wgkube upgrade SPEC --control-plane-done")
    return (f"upgrade to Kubernetes {plan.upgrade_to} under way, stage 2 of 2 (the workers, one at a time: drain, "
            f"script, uncordon):\n    {commands}\n  then: wgkube upgrade SPEC --workers-done")


def _join_token_actions(plan: Plan, bundle: Bundle, out_hint: str, mesh: bool, cluster_files: list[FileChange]) -> list[str]:
    """Join window: a running control plane knows only the tokens its `kubeadm init` created. When
    the tokens its live update carries change (a worker added, a token reissued or retired), say
    to run that update: it creates the missing tokens and deletes the retired ones (hub-update.sh.j2)."""
    cp = plan.hub_member  # the one that ran kubeadm init (the first of several control planes)
    rel = control_plane_update_path(plan)
    if not any(f.path == rel and f.status in ("changed", "new") for f in cluster_files):
        return []
    command = control_plane_update_command(plan, out_hint)
    return [f"the control plane ({cp.name}) creates new workers' join tokens and deletes retired ones only when told: "
            f"run its live update (idempotent; it skips tokens that exist and workers that have joined):\n    " + command]


def _actions(members: list[MemberChange], plan: Plan, bundle: Bundle, out_hint: str, baseline: bool,
             detail: bool, old_kinds: dict[str, str], cluster_files: list[FileChange] | None = None) -> list[str]:
    if not baseline:
        return ["first render: boot the nodes with their files (nothing is running yet)"]
    actions: list[str] = []
    iface = plan.interface
    by_name = {mc.name: mc for mc in members}
    hub = by_name.get(plan.hub)

    def inner_changes(mc: MemberChange, category: str) -> list[str]:
        return [p for f in mc.changed() for (p, st, cat) in f.inner if cat == category]

    def tunnel_changes(mc: MemberChange) -> bool:
        if inner_changes(mc, "live"):   # the tunnel, or (mesh) the failover settings that go with it
            return True
        own = (f"wireguard/{mc.name}/{iface}.conf", f"admins/{mc.name}/{plan.admin_wg_file}")
        if any(f.path in own and f.status == "changed" for f in mc.files):
            return True
        # A manifest from an older wgkube has no per-file detail: assume the worst for the hub.
        return not detail and any(f.path.endswith("/user-data") and f.status == "changed" for f in mc.files)

    mesh = plan.mesh is not None
    if mesh:
        # issue 13: every node whose peer list changes gets its own live update, member by member.
        for mc in members:
            if mc.kind == "node" and mc.status == "changed" and tunnel_changes(mc):
                m = plan.member(mc.name)
                actions.append(f"{mc.name}: its WireGuard peer list changes; apply it over the VPN (peers that did not change "
                               f"keep their sessions):\n    " + member_update_command(plan, m, f"{out_hint}/{member_update_path(m)}"))
    if not mesh and hub is not None and hub.status == "changed" and tunnel_changes(hub):
        actions.append(f"the hub ({plan.hub}): its WireGuard peer list changes; apply it over the VPN "
                       f"(peers that did not change keep their sessions):\n    "
                       + hub_update_command(plan, f"{out_hint}/hub-update/{hub_update_name(plan)}"))
    for mc in members:
        if mc.status == "removed":
            if old_kinds.get(mc.name, mc.kind) == "node":
                actions.append(f"{mc.name} left the cluster: its VPN key is retired and dropped from {'every peer list' if mesh else 'the hub'}; remove it from Kubernetes:\n"
                               f"    kubectl delete node {mc.name}")
            elif revocable_pair(latest_retired(bundle, mc.name).get("admin_cert")):
                # issue 17 item 2: its ClusterRoleBinding goes with the control plane's live update
                actions.append(f"admin {mc.name} left: its VPN key is retired; its certificate is revoked when the control plane's "
                               f"live update deletes its binding {binding_name(mc.name)}: run it now\n    "
                               + control_plane_update_command(plan, out_hint))
            else:
                actions.append(f"admin {mc.name} left: its VPN key is retired; its kubeconfig certificate stays valid until it expires "
                               f"but only reaches the API from inside the VPN")
            retired = latest_retired(bundle, mc.name)
            if is_token_join(retired.get("join")):
                actions.append(f"{mc.name}'s join token {token_id(retired['join']['token'])} is retired; the control plane's live "
                               f"update deletes it (or on the hub: kubeadm token delete {token_id(retired['join']['token'])})")
            elif "join" in retired:
                end = join_expires(retired["join"])
                actions.append(f"{mc.name}'s join credential stays valid until {end:%Y-%m-%d %H:%M} UTC (certificates cannot be revoked); "
                               f"it only works from inside the VPN, where {mc.name} no longer is")
            continue
        if mc.status != "changed" or (mc.name == plan.hub and not mesh):
            continue
        if tunnel_changes(mc) and mc.status == "changed" and not (mesh and mc.kind == "node"):
            where = (f"{out_hint}/wireguard/{mc.name}/{iface}.conf" if mc.kind == "node"
                     else f"{out_hint}/admins/{mc.name}/{plan.admin_wg_file}")
            if mesh:  # an admin device in a mesh: a public member came or went, or a key changed
                actions.append(f"{mc.name}: its WireGuard config changes; install {where} on it locally "
                               "(see `wgkube rekey` for the order when a key changed)")
            else:
                actions.append(f"{mc.name}: its own WireGuard config changes (new key?); install {where} on it "
                               "(see `wgkube rekey` for the order)")
        renamed = _renamed_wg_file(mc, plan)
        if renamed:
            actions.append(f"{mc.name}: its WireGuard config is now {out_hint}/admins/{mc.name}/{plan.admin_wg_file} "
                           f"(was {renamed}; vpn.admin_conf, docs/laptops.md): wg-quick down {renamed.removesuffix('.conf')}, "
                           f"install the new file, wg-quick up {plan.admin_interface}")
        boot = inner_changes(mc, "boot")
        if boot and mc.kind == "node":
            actions.append(f"{mc.name}: files read at boot change ({', '.join(boot)}); copy them from its user-data and restart "
                           "the unit, or re-provision; running as is keeps the old ones")
    if plan.join_window_days:
        actions += _join_token_actions(plan, bundle, out_hint, mesh, cluster_files or [])
    cp = plan.hub_member
    if cp.name in by_name and BINDINGS_PATH in {p for f in by_name[cp.name].changed() for (p, _, _) in f.inner}:
        # issue 17 item 2: an admin added, renewed to the revocable form, or gone
        command = control_plane_update_command(plan, out_hint)
        if not any(command in a for a in actions):
            actions.append(f"the admins' ClusterRoleBindings change: the running control plane ({cp.name}) applies them only when "
                           f"told; run its live update before a new or renewed admin uses its kubeconfig:\n    " + command)
    now = dt.datetime.now(dt.timezone.utc)
    for name in sorted(bundle.joins):
        end = join_expires(bundle.joins[name])
        if end < now and name in by_name:
            actions.append(f"{name}'s join credential expired on {end:%Y-%m-%d %H:%M} UTC; if {name} has not joined yet, "
                           f"give it a new window: wgkube rekey {name} SPEC --join")
    if not mesh and hub is not None and hub.status == "changed":
        boot = inner_changes(hub, "boot")
        if boot:
            actions.append(f"the hub ({plan.hub}): files read at boot change ({', '.join(boot)}); copy them over and restart the unit")
    return actions
