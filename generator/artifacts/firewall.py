"""nftables ruleset: one table of our own; public side sees the WireGuard port and nothing else.

On the VPN side by role (docs/node-contract.md): nodes reach each other's cluster ports; admins
reach the API on the control planes (the hub, or with several every one) and SSH, nothing else; nothing opens a connection to an admin. Every
packet between two members passes the hub (hub and spoke), so the admin rules live in the hub's
ruleset only: a worker's ruleset does not change when admins come and go. Forwarding only between
the VPN and the pod interfaces (the hub relays VPN to VPN); SYNs into the tunnel get their MSS
clamped to the route's MTU, so a smaller path MTU cannot black-hole TLS.

Mesh (issue 13): relays forward wg0 -> wg0 between VPN addresses (counted), every other member
drops wg0 -> wg0; the admin rules are on every node, with an output chain so that no node opens
a connection to an admin (there is no hub in the path to stop it).
"""
from __future__ import annotations

from ..facts import API_PORT, METADATA_ADDRESS, METADATA_DNS_PORT, POD_INTERFACES, STATUS_PORT
from ..plan import Member, Plan
from .templates import render


def ruleset(plan: Plan, member: Member) -> str:
    # Hub and spoke: every packet passes the hub, so the admin rules live there only. Mesh (issue
    # 13): admins reach public nodes directly and the others through a relay, so every node holds
    # them (input: API and SSH only; output: nothing opens a connection to an admin).
    admins = [a.vpn_ip for a in plan.admins] if member.name == plan.hub or plan.mesh is not None else []
    return render("firewall.nft.j2", plan=plan, member=member, listen_port=plan.listen_port(member),
                  metadata=METADATA_ADDRESS, metadata_dns_port=METADATA_DNS_PORT,
                  admins=", ".join(admins), admin_ports=", ".join(str(p) for p in sorted({*plan.admin_ports, API_PORT} if member.role == "control-plane" else plan.admin_ports)),
                  api_port=API_PORT, admin_api_via=admin_api_via(plan, member),
                  status_port=STATUS_PORT if plan.status_endpoint else None,
                  relay_admin_ports=", ".join(str(p) for p in sorted(plan.admin_ports)), mesh_forward=mesh_forward(plan, member),
                  pod_ifaces=", ".join(f'"{i}"' for i in POD_INTERFACES), service_admins=service_admins(plan, member))


def service_admins(plan: Plan, member: Member) -> str:
    """Issue 17 (docs/laptops.md): on the node admins with `routes: services` send the service range
    to (the control plane), their VPN addresses; "" elsewhere and when nobody opted in (ruleset
    unchanged). That node accepts from them only connections whose ORIGINAL destination is in
    service_cidr and that kube-proxy DNAT'ed (`ct status dnat`): a ClusterIP with no Service stays
    undelivered instead of leaving by the default route, and a pod IP dialled directly is dropped."""
    if member.name != plan.services_via:
        return ""
    return ", ".join(a.vpn_ip for a in plan.admins if plan.routes_services(a))


def mesh_forward(plan: Plan, member: Member) -> str | None:
    """Issue 13: in a mesh, relays forward wg -> wg between VPN addresses and every other member
    drops wg -> wg; None in hub mode (the hub's ruleset stays as it was)."""
    if plan.mesh is None:
        return None
    return "relay" if plan.is_relay(member) else "none"


def admin_api_via(plan: Plan, member: Member) -> str:
    """Issue 14: with several control planes an admin's kubeconfig has a context per control plane,
    so a node that forwards admin traffic (the hub; in a mesh a relay) lets it through to the API
    of the other control planes, and to nothing else of theirs. "" with one control plane."""
    if not plan.several_control_planes:
        return ""
    return ", ".join(m.vpn_ip for m in plan.control_planes if m.name != member.name)
