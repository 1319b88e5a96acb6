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
from ..secrets import Bundle
from .encode import Block
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


def update_path(member: Member) -> str:
    """Day two: the node's live update of its local endpoint, under out/<cluster>/."""
    return f"apiproxy-update/{member.name}.sh"


def update_command(plan: Plan, member: Member, cluster_dir: str) -> str:
    import shlex
    return f"ssh {plan.login_user}@{member.vpn_ip} sudo bash -s < {shlex.quote(f'{cluster_dir}/{update_path(member)}')}"


def update_script(plan: Plan, bundle: Bundle, member: Member) -> str:
    """A control plane added or removed changes every node's haproxy.cfg: this installs it on a
    running node (`wgkube plan` says which nodes need it)."""
    text = config(plan, member)
    if "WGKUBE_EOF" in text or not text.endswith("\n"):
        raise ValueError("the config cannot be embedded in the update script")  # cannot happen with haproxy.cfg.j2
    return render("apiproxy-update.sh.j2", plan=plan, member=member, public_key=bundle.public_key(member.name),
                  config_path=CONFIG_PATH, unit=UNIT, config=Block(text),
                  apply=update_command(plan, member, "."),
                  servers=", ".join(f"{s.name}{' (backup)' if s.backup else ''}" for s in servers(plan, member)))


def update_files(plan: Plan, bundle: Bundle) -> dict[str, tuple[bytes, int]]:
    """out/<cluster>/apiproxy-update/<node>.sh for every node; none with one control plane."""
    if not plan.several_control_planes:
        return {}
    return {update_path(m): (update_script(plan, bundle, m).encode(), 0o644) for m in plan.nodes}
