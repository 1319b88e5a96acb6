"""`wgkube rekey`: the order to roll a new WireGuard key out, and what is cut off in between."""
from __future__ import annotations

from ..artifacts.hub_update import hub_update_command, hub_update_name, member_update_command, member_update_path
from ..plan import Plan


def rollout(plan: Plan, name: str, out_hint: str) -> list[str]:
    """The order to roll a new WireGuard key out, and what is cut off in between."""
    iface = plan.interface
    hub_cmd = hub_update_command(plan, f"{out_hint}/hub-update/{hub_update_name(plan)}")
    m = plan.member(name)
    ssh = f"ssh {plan.login_user}@{{ip}}"
    install = ("'sudo sh -c \"umask 077; cat >/etc/wireguard/{iface}.conf.new && mv /etc/wireguard/{iface}.conf.new "
               "/etc/wireguard/{iface}.conf && wg-quick strip {iface} | wg syncconf {iface} /dev/stdin\"'")
    if plan.mesh is not None:
        return _mesh(plan, name, out_hint, ssh, install.format(iface=iface))
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
        steps.append(f"{n + 1}. each admin device: install {out_hint}/admins/<name>/{plan.admin_wg_file} locally")
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
        f"2. then locally on {name}: install {out_hint}/admins/{name}/{plan.admin_wg_file} and restart its tunnel "
        f"(e.g. wg-quick down {plan.admin_interface}; wg-quick up {plan.admin_interface}).",
    ]


def _mesh(plan: Plan, name: str, out_hint: str, ssh: str, install: str) -> list[str]:
    """Issue 13, mesh: every member that lists this one must learn its new key (all members if it
    is public, the public members if it is behind NAT). The member's own side goes first for a
    node (you reach it over the VPN until then), last for an admin device (you work from it)."""
    mesh = plan.mesh
    assert mesh is not None
    m = plan.member(name)
    iface = plan.interface
    listers = [o for o in plan.members if o.name != name and mesh.direct(o.name, name)]
    updates = [f"{o.name}: " + member_update_command(plan, o, f"{out_hint}/{member_update_path(o)}") for o in listers if o.is_node]
    locally = [f"admin {o.name}: install {out_hint}/admins/{o.name}/{plan.admin_wg_file} locally" for o in listers if not o.is_node]
    relay = (f" NAT-to-NAT traffic through {name} moves to the next relay (failover) until its peers have the new key."
             if name in mesh.relays else "")
    if m.is_node:
        steps = [f"1. {name} first, over the VPN: " + ssh.format(ip=m.vpn_ip) + " " + install + f" < {out_hint}/wireguard/{name}/{iface}.conf",
                 f"   from here {name} is cut off from each peer until that peer has its new key; other pairs are not affected.{relay}"]
        steps += [f"{i}. {u}" for i, u in enumerate(updates + locally, start=2)]
        steps.append(f"   {name} handshakes with each updated peer within {plan.keepalive or 'a few'} s (keepalives).")
        return steps
    steps = [f"{i}. {u}   (from {name} while its old key still works)" for i, u in enumerate(updates, start=1)]
    steps.append(f"{len(updates) + 1}. then locally on {name}: install {out_hint}/admins/{name}/{plan.admin_wg_file} and restart its tunnel "
                 f"(e.g. wg-quick down {plan.admin_interface}; wg-quick up {plan.admin_interface}).")
    return steps
