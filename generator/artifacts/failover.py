"""Issue 13, mesh: the relay failover a member behind NAT runs (nodes: a systemd service started
with the tunnel; admin laptops: the same script, run by hand or by their own service manager).

Four node files, all the same on every member behind NAT (the relay order must be the same
everywhere, see topology.py): the loop (POSIX sh), its settings, its unit, and a drop-in that
makes wg-quick@<iface> want it, so nothing has to be enabled (systemd.unit(5): a drop-in's
Wants= adds to the unit's own)."""
from __future__ import annotations

from functools import lru_cache

from ..plan import Member, Plan
from ..secrets import Bundle
from .templates import render

SCRIPT_PATH = "/usr/local/sbin/wgkube-failover"
CONF_PATH = "/etc/wgkube/failover.conf"
UNIT_PATH = "/etc/systemd/system/wgkube-failover.service"


def dropin_path(interface: str) -> str:
    return f"/etc/systemd/system/wg-quick@{interface}.service.d/20-wgkube-failover.conf"


def wanted(plan: Plan, member: Member) -> bool:
    """Mesh members behind NAT run the failover (there is something to fail over to: a relay)."""
    return plan.mesh is not None and member.behind_nat and bool(plan.mesh.relays)


@lru_cache(maxsize=8)
def script(services: bool = False) -> str:
    """services (issue 17, an admin with `routes: services`): the peer holding the service range
    keeps it when the catch-all moves (`wg set ... allowed-ips` replaces the whole list, wg(8)).
    Without it the text is exactly what it was (every node's copy)."""
    return render("wgkube-failover.sh.j2", services=services)


def conf(plan: Plan, bundle: Bundle, member: Member) -> str:
    interval, timeout, misses, return_after = plan.failover
    relays = [f"{r.name},{r.vpn_ip},{bundle.public_key(r.name)}" for r in plan.relays_for(member)]
    # An admin's tunnel is named after its file (wg-<cluster> when vpn.admin_conf is cluster).
    iface = plan.interface if member.is_node else plan.admin_interface
    return render("wgkube-failover.conf.j2", plan=plan, iface=iface, interval=interval, timeout=timeout, misses=misses,
                  return_after=return_after, relays=relays,
                  service_key=bundle.public_key(plan.services_via) if plan.routes_services(member) else "")


def unit(interface: str) -> str:
    return render("wgkube-failover.service.j2", interface=interface)


def dropin() -> str:
    return render("wg-wants-failover.conf.j2")
