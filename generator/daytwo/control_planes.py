"""Issue 14: what a spec may change about its control planes once the cluster has been rendered.

kubeadm writes the controlPlaneEndpoint into every kubelet.conf, kube-proxy's kubeconfig and the
cluster-info ConfigMap at init, and does not support changing it afterwards: "Turning a single
control plane cluster created without --control-plane-endpoint into a highly available cluster
is not supported by kubeadm" (kubeadm's "Creating a cluster with kubeadm", and its HA guide). One
control plane uses the hub's VPN address as that endpoint; several use the local endpoint
(127.0.0.1:7445). So a rendered cluster keeps its kind: going from one control plane to several,
or back, is refused; three to five and five to three are fine (`wgkube plan` lists the steps).
"""
from __future__ import annotations

from ..errors import UserError
from ..spec import SpecDocument


def check_kind_kept(doc: SpecDocument, last_plan: dict | None) -> None:
    """Raise UserError when the spec turns a rendered single-control-plane cluster into one with
    several, or back. last_plan: the last render's plan.json (None: nothing rendered yet)."""
    if not isinstance(last_plan, dict) or not isinstance(last_plan.get("members"), list):
        return
    before = sum(1 for m in last_plan["members"] if isinstance(m, dict) and m.get("role") == "control-plane")
    cps = [i for i, n in enumerate(doc.spec.nodes) if n.role == "control-plane"]
    if before == 0 or (before > 1) == (len(cps) > 1):
        return
    cluster = doc.spec.name
    if len(cps) > 1:
        raise UserError(doc.problem(
            ("nodes", cps[1], "role"),
            f"{cluster} was rendered with one control plane, whose API address every node's kubelet and kube-proxy "
            f"were given at first boot; kubeadm cannot move a running cluster to the shared endpoint several control "
            f"planes need",
            f"keep one control plane here and build the HA cluster as a new one (another name); if no node of {cluster} "
            f"has booted yet, move out/{cluster}/ aside and render again"), doc.source)
    raise UserError(doc.problem(
        ("nodes", cps[0], "role") if cps else ("nodes",),
        f"{cluster} was rendered with {before} control planes; its nodes reach the API through their local endpoint "
        f"(127.0.0.1:7445), which one control plane would no longer have",
        "keep 3 (or 5) control planes; to shrink from 5, go to 3 (`wgkube plan` lists the etcd steps)"), doc.source)
