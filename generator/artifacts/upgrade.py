"""Issue 17: the scripts that move a running cluster to the next Kubernetes minor, one per node,
in kubeadm's order (kubernetes.io "Upgrading kubeadm clusters"): the first control plane
(`kubeadm upgrade apply`), the other control planes (`kubeadm upgrade node`), then the workers
one at a time (drained from the control plane, `kubeadm upgrade node`, new kubelet, uncordoned).
Rendered only while an upgrade is under way (plan.upgrade_to); the state lives in the bundle
(daytwo/upgrade.py). Pure: plan + bundle -> text."""
from __future__ import annotations

import shlex

from .. import versions
from ..plan import Member, Plan
from ..secrets import Bundle
from . import kubeadm
from .templates import render

FOLDER = "upgrade"
ADMIN_CONF = "/etc/kubernetes/admin.conf"


def order(plan: Plan) -> list[Member]:
    """Control planes first (the hub, which ran `kubeadm init`, before any other), then workers in spec order."""
    cps = sorted((m for m in plan.nodes if m.role == "control-plane"), key=lambda m: m.name != plan.hub)
    return cps + [m for m in plan.nodes if m.role != "control-plane"]


def script_path(member: Member) -> str:
    return f"{FOLDER}/{member.name}.sh"


def run_command(plan: Plan, member: Member, cluster_dir: str) -> str:
    return f"ssh {plan.login_user}@{member.vpn_ip} sudo bash -s < {shlex.quote(f'{cluster_dir}/{script_path(member)}')}"


def kubectl_on_control_plane(plan: Plan, verb: str, node: str) -> str:
    """Drain and uncordon need cluster rights: run them on the first control plane, with its admin.conf."""
    cp = order(plan)[0]
    extra = " --ignore-daemonsets --delete-emptydir-data" if verb == "drain" else ""
    return f"ssh {plan.login_user}@{cp.vpn_ip} sudo kubectl --kubeconfig {ADMIN_CONF} {verb} {node}{extra}"


def steps(plan: Plan, cluster_dir: str) -> list[str]:
    """The whole upgrade as commands, in order (printed by `wgkube upgrade` and `wgkube plan`)."""
    out = []
    for m in order(plan):
        if m.role == "control-plane":
            out.append(run_command(plan, m, cluster_dir))
        else:
            out += [kubectl_on_control_plane(plan, "drain", m.name), run_command(plan, m, cluster_dir),
                    kubectl_on_control_plane(plan, "uncordon", m.name)]
    return out


def files(plan: Plan, bundle: Bundle, from_minor: str) -> dict[str, tuple[bytes, int]]:
    if plan.upgrade_to is None:
        return {}
    nodes = order(plan)
    return {script_path(m): (script(plan, bundle, m, from_minor, i, len(nodes)).encode(), 0o644)
            for i, m in enumerate(nodes, start=1)}


def script(plan: Plan, bundle: Bundle, member: Member, from_minor: str, number: int, total: int) -> str:
    to = plan.upgrade_to
    assert to is not None
    apt = member.package_family == "apt"
    first = order(plan)[0].name == member.name
    return render("upgrade-node.sh.j2", plan=plan, member=member, public_key=bundle.public_key(member.name),
                  step="apply" if first else "node", from_minor=from_minor, to_minor=to, number=number, total=total,
                  apply=run_command(plan, member, f"out/{plan.cluster}").replace(f"out/{plan.cluster}/", "", 1),
                  drain=kubectl_on_control_plane(plan, "drain", member.name),
                  uncordon=kubectl_on_control_plane(plan, "uncordon", member.name),
                  k8s_repo=(versions.PKGS_K8S_DEB if apt else versions.PKGS_K8S_RPM).format(minor=to),
                  crio_repo=(versions.CRIO_DEB if apt else versions.CRIO_RPM).format(minor=to),
                  crio_package=versions.CRIO_PACKAGE, crio_service=versions.CRIO_SERVICE, crio_dropin=versions.CRIO_DROPIN,
                  # held as the first boot holds them (apt-mark hold / dnf exclude=); kubeadm goes first, alone
                  held_packages=" ".join(p for p in versions.K8S_HELD if p != "kubeadm"),
                  unheld_packages=" ".join(p for p in versions.K8S_PACKAGES if p not in versions.K8S_HELD),
                  apt_lock_timeout=versions.APT_LOCK_TIMEOUT, runtime=kubeadm.runtime_for(member))
