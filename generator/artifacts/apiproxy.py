"""The local API endpoint every node runs when the spec has several control planes (issue 14).

haproxy from the distribution (not a proxy of ours), on 127.0.0.1:7445 only, with one server per
control plane's VPN address:6443 and a TCP health check (Talos KubePrism's design: every node its
own endpoint, no VIP, no cloud load balancer). kubeadm's controlPlaneEndpoint names it, so
kubelet, kube-proxy, and nodes joining later survive losing any one control plane. On a control
plane its own API server is the server and the others are backups (a control plane keeps its
traffic local while it can); a worker spreads connections over all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import facts
from ..plan import Member, Plan
from .templates import render

CONFIG_PATH = "/etc/wgkube/haproxy.cfg"
UNIT = "wgkube-apiproxy.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
KUBELET_DROPIN = "/etc/systemd/system/kubelet.service.d/21-wgkube-apiproxy.conf"


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    backup: bool


def servers(plan: Plan, member: Member) -> list[Server]:
    """Every control plane, in the order haproxy tries them: on a control plane itself first."""
    cps = list(plan.control_planes)
    if member.role == "control-plane":
        cps.sort(key=lambda m: m.name != member.name)
        return [Server(m.name, m.vpn_ip, m.name != member.name) for m in cps]
    return [Server(m.name, m.vpn_ip, False) for m in cps]


def config(plan: Plan, member: Member) -> str:
    return render("haproxy.cfg.j2", plan=plan, member=member, servers=servers(plan, member),
                  local=member.role == "control-plane", address=facts.LOCAL_API_ADDRESS,
                  port=facts.LOCAL_API_PORT, api_port=plan.api_port,
                  interval_ms=facts.LOCAL_API_CHECK_INTERVAL_MS, fall=facts.LOCAL_API_CHECK_FALL,
                  rise=facts.LOCAL_API_CHECK_RISE)


def unit(plan: Plan) -> str:
    return render("wgkube-apiproxy.service.j2", endpoint=plan.api_endpoint, interface=plan.interface,
                  config=CONFIG_PATH)


def node_files(plan: Plan, member: Member) -> list[tuple[str, str, int]]:
    """(path, content, mode) of the local endpoint's files; none with a single control plane."""
    if not plan.several_control_planes:
        return []
    return [
        (CONFIG_PATH, config(plan, member), 0o644),
        (UNIT_PATH, unit(plan), 0o644),
        (KUBELET_DROPIN, render("kubelet-after-apiproxy.conf.j2"), 0o644),
    ]
