"""Live peer updates: a script, fed to a running member over SSH, that applies its rendered peer
list with `wg syncconf` (sessions kept). Public keys only; the member's private key stays on it.

Hub topology: one script, for the hub (hub-update/<iface>.sh). Mesh (issue 13): one per node
(peer-update/<node>.sh), since adding or removing a public member changes every member's peers."""
from __future__ import annotations

import shlex

from ..plan import Member, Plan
from ..secrets import Bundle, is_token_join, join_expires, token_id
from . import admin_rbac
from .encode import Block
from .kubeadm import worker_tokens
from .templates import render

# The words that differ between the hub's script and a mesh member's (the hub's stay as they were).
_HUB_WORDS = {"title": "the hub", "the": "the hub", "noun": "hub", "var": "HUB_PUBLIC_KEY", "tag": "wgkube-hub-update"}
_MEMBER_WORDS = {"title": "a member", "the": "the member", "noun": "member", "var": "MEMBER_PUBLIC_KEY", "tag": "wgkube-peer-update"}


def hub_update_script(plan: Plan, bundle: Bundle, hub_conf: str) -> str:
    """A bash script, fed to the hub over SSH, that makes its WireGuard config equal the rendered
    one while keeping the hub's own private key on the hub, then applies it with `wg syncconf`
    (peers that did not change keep their sessions). Holds public keys only. Idempotent."""
    return _script(plan, bundle, plan.hub_member, hub_conf, _HUB_WORDS,
                   hub_update_command(plan, "hub-update/" + hub_update_name(plan)))


def member_update_script(plan: Plan, bundle: Bundle, member: Member, conf: str) -> str:
    """Mesh: the same live update for any node (its own key checked, its private key kept)."""
    from . import failover  # the failover settings travel with the peers (they hold the relays' keys)
    fo = failover.conf(plan, bundle, member) if failover.wanted(plan, member) else None
    return _script(plan, bundle, member, conf, _MEMBER_WORDS,
                   member_update_command(plan, member, member_update_path(member)), fo)


def _script(plan: Plan, bundle: Bundle, member: Member, conf: str, words: dict, apply: str,
            failover_conf: str | None = None) -> str:
    before, _, after = conf.partition("\nPrivateKey = ")
    after = after.split("\n", 1)[1] if "\n" in after else ""
    if "WGKUBE_EOF" in conf or not conf.endswith("\n") or "WGKUBE_EOF" in (failover_conf or ""):
        raise ValueError("the config cannot be embedded in the update script")  # cannot happen with wg.conf.j2
    return render("hub-update.sh.j2", plan=plan, hub=member, hub_public_key=bundle.public_key(member.name),
                  conf_before=Block(before + "\n"), conf_after=Block(after), apply=apply, words=words,
                  failover_conf=Block(failover_conf) if failover_conf else None,
                  join_tokens=join_tokens(plan, bundle, member),
                  admin_access=admin_rbac.live_update(plan, bundle, member))


def join_tokens(plan: Plan, bundle: Bundle, member: Member) -> dict | None:
    """The control plane's part of a live update when workers join with their own tokens: every
    current worker token (created when missing) and every retired one (deleted when present).
    None without a join window, or on a member that is not the control plane: then the script is
    exactly what it was before (tests/test_hub_unchanged.py). No clock is read: each token's
    absolute expiry travels as a Unix time, and the script computes the remaining TTL on the hub
    (`kubeadm token create` takes --ttl only)."""
    if not plan.initialises(member) or not plan.join_window_days:
        return None
    current = [t | {"until": int(join_expires(bundle.joins[t["name"]]).timestamp())} for t in worker_tokens(plan, bundle)]
    live = {t["id"] for t in current}
    retired = []
    for key, entry in sorted(bundle.retired.items()):
        join = entry.get("join") if isinstance(entry, dict) else None
        if is_token_join(join) and token_id(join["token"]) not in live:
            retired.append({"id": token_id(join["token"]), "name": key.partition("@")[0]})
    if not current and not retired:
        return None
    return {"current": current, "retired": retired}


def hub_update_name(plan: Plan) -> str:
    return f"{plan.interface}.sh"


def hub_update_command(plan: Plan, script_path: str) -> str:
    return f"ssh {plan.login_user}@{plan.api_address} sudo bash -s < {shlex.quote(script_path)}"


def member_update_path(member: Member) -> str:
    return f"peer-update/{member.name}.sh"


def member_update_command(plan: Plan, member: Member, script_path: str) -> str:
    return f"ssh {plan.login_user}@{member.vpn_ip} sudo bash -s < {shlex.quote(script_path)}"


def control_plane_update_path(plan: Plan) -> str:
    """The control plane's live update under out/<cluster>/: the hub's, or its own in a mesh."""
    return member_update_path(plan.hub_member) if plan.mesh is not None else f"hub-update/{hub_update_name(plan)}"


def control_plane_update_command(plan: Plan, cluster_dir: str) -> str:
    """The command that runs the control plane's live update (join tokens, admin bindings)."""
    path = f"{cluster_dir}/{control_plane_update_path(plan)}"
    if plan.mesh is not None:
        return member_update_command(plan, plan.hub_member, path)
    return hub_update_command(plan, path)
