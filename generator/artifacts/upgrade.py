"""Issue 17: the scripts that move a running cluster to the next Kubernetes minor, one per node,
in kubeadm's order (kubernetes.io "Upgrading kubeadm clusters"): the first control plane
(`kubeadm upgrade apply`), the other control planes (`kubeadm upgrade node`), then the workers
one at a time (drained from the control plane, `kubeadm upgrade node`, new kubelet, uncordoned).
Rendered only while an upgrade is under way (plan.upgrade_to); the state lives in the bundle
(daytwo/upgrade.py). Pure: plan + bundle -> text."""
from __future__ import annotations

from .. import versions
from ..plan import Member, Plan
from ..secrets import Bundle
from ..skew import previous_minor
from . import kubeadm
from .hub_update import member_update_command
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
    """Fed to the node's bash over ssh, as its live peer update is."""
    return member_update_command(plan, member, f"{cluster_dir}/{script_path(member)}")


def kubectl_on_control_plane(plan: Plan, verb: str, node: str) -> str:
    """Drain and uncordon need cluster rights: run them on the first control plane, with its admin.conf."""
    cp = order(plan)[0]
    extra = " --ignore-daemonsets --delete-emptydir-data" if verb == "drain" else ""
    return f"ssh {plan.login_user}@{cp.vpn_ip} sudo kubectl --kubeconfig {ADMIN_CONF} {verb} {node}{extra}"


def stage_steps(plan: Plan, cluster_dir: str) -> list[str]:
    """The commands of the stage under way, in order (printed by `wgkube upgrade` and `wgkube plan`):
    the control planes' scripts, or once they are done, each worker's drain, script, uncordon."""
    workers_stage = plan.upgrade_to == plan.kubernetes
    out = []
    for m in order(plan):
        if m.role == "control-plane" and not workers_stage:
            out.append(run_command(plan, m, cluster_dir))
        elif m.role != "control-plane" and workers_stage:
            out += [kubectl_on_control_plane(plan, "drain", m.name), run_command(plan, m, cluster_dir),
                    kubectl_on_control_plane(plan, "uncordon", m.name)]
    return out


def files(plan: Plan, bundle: Bundle) -> dict[str, tuple[bytes, int]]:
    """Every node's script (the workers' too in the control planes' stage: they refuse until it is done)."""
    nodes = order(plan)
    return {script_path(m): (script(plan, bundle, m, i == 1, i, len(nodes)).encode(), 0o644)
            for i, m in enumerate(nodes, start=1)}


def script(plan: Plan, bundle: Bundle, member: Member, first: bool, number: int, total: int) -> str:
    """first: the control plane that runs `kubeadm upgrade apply`; every other node runs `upgrade node`."""
    to = plan.upgrade_to
    assert to is not None
    apt = member.package_family == "apt"
    return render("upgrade-node.sh.j2", plan=plan, member=member, public_key=bundle.public_key(member.name),
                  step="apply" if first else "node", from_minor=previous_minor(to), to_minor=to, number=number, total=total,
                  apply=member_update_command(plan, member, script_path(member)),  # from out/<cluster>/
                  drain=kubectl_on_control_plane(plan, "drain", member.name),
                  uncordon=kubectl_on_control_plane(plan, "uncordon", member.name),
                  k8s_repo=(versions.PKGS_K8S_DEB if apt else versions.PKGS_K8S_RPM).format(minor=to),
                  crio_repo=(versions.CRIO_DEB if apt else versions.CRIO_RPM).format(minor=to),
                  crio_package=versions.CRIO_PACKAGE, crio_service=versions.CRIO_SERVICE, crio_dropin=versions.CRIO_DROPIN,
                  # held as the first boot holds them (apt-mark hold / dnf exclude=); kubeadm goes first, alone
                  held_packages=" ".join(p for p in versions.K8S_HELD if p != "kubeadm"),
                  unheld_packages=" ".join(p for p in versions.K8S_PACKAGES if p not in versions.K8S_HELD),
                  apt_lock_timeout=versions.APT_LOCK_TIMEOUT, runtime=kubeadm.runtime_for(member),
                  # issue 14: with several, each control plane is asked by its own address
                  several=plan.several_control_planes, control_planes=plan.control_planes)
