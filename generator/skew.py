"""The Kubernetes version skew rules wgkube enforces, in one place (issue 17).

Sources, read for this module:
- the Kubernetes version skew policy (kubernetes.io/releases/version-skew-policy): "kubelet must
  not be newer than kube-apiserver" and "may be up to three minor versions older" (kubelet >= 1.25);
  the control plane is upgraded before the kubelets;
- kubeadm's upgrade policy (kubernetes/kubernetes cmd/kubeadm/app/phases/upgrade/policy.go,
  EnforceVersionPolicies): "Specified version to upgrade to ... is equal to or lower than the
  cluster version ... Downgrades are not supported yet" and "... is too high; kubeadm can upgrade
  only 1 minor version at a time".
Minors are strings "1.36"; patch versions never enter a spec (the package repository of a minor
serves its newest patch).
"""
from __future__ import annotations

import re

# A minor as the bundle records it and plan.json says it ("1.36"); anything else is not ours.
MINOR_RE = re.compile(r"1\.[0-9]{1,3}")
KUBELET_MAX_OLDER = 3   # kubelet may trail kube-apiserver by up to three minors, never lead it
UPGRADE_STEP = 1        # kubeadm upgrades the control plane one minor at a time


def minor_number(minor: str) -> tuple[int, int]:
    major, _, rest = minor.lstrip("v").partition(".")
    return int(major), int(rest.split(".", 1)[0])


def _gap(newer: str, older: str) -> int:
    (a, b), (c, d) = minor_number(newer), minor_number(older)
    if a != c:
        raise ValueError(f"a change of major version ({older} -> {newer}) is not a Kubernetes upgrade wgkube knows")
    return b - d


def next_minor(minor: str) -> str:
    major, m = minor_number(minor)
    return f"{major}.{m + 1}"


def previous_minor(minor: str) -> str:
    major, m = minor_number(minor)
    return f"{major}.{m - 1}"


def upgrade_problem(running: str, target: str) -> str | None:
    """Why the control plane cannot go from `running` to `target` in one kubeadm upgrade, or None."""
    gap = _gap(target, running)
    if gap <= 0:
        return (f"{target} is not newer than the {running} the control plane runs: Kubernetes has no downgrade "
                f"(kubeadm refuses it)") if gap < 0 else None
    if gap > UPGRADE_STEP:
        return (f"{target} is {gap} minors past the {running} the control plane runs; kubeadm upgrades one minor at a "
                f"time: go to {next_minor(running)} first")
    return None


def kubelet_problem(kubelet: str, apiserver: str) -> str | None:
    """Why a kubelet of this minor may not run against this API server, or None."""
    gap = _gap(apiserver, kubelet)
    if gap < 0:
        return f"a {kubelet} kubelet would be newer than the {apiserver} API server"
    if gap > KUBELET_MAX_OLDER:
        return f"a {kubelet} kubelet is {gap} minors behind the {apiserver} API server (at most {KUBELET_MAX_OLDER})"
    return None
