"""Issue 17 item 2: admin access that can be revoked. One ClusterRoleBinding per admin whose
certificate is of the revocable form (pki.new_admin_cert: user wgkube-admin:<name>, no group).

Kubernetes checks no revocation list for client certificates (kubernetes/kubernetes#18982, open
since 2016): a certificate authenticates until it expires. What can be taken away is what it is
allowed to do. RBAC grants nothing by default ("permissions are purely additive, there are no deny
rules", kubernetes.io/docs/reference/access-authn-authz/rbac/), so an admin certificate without a
group is allowed only what a binding naming its user grants: wgkube-admin-<name>, roleRef
ClusterRole cluster-admin, subject User wgkube-admin:<name>. Deleting that binding revokes the
certificate at once, whatever its notAfter (docs/day-two.md, "Admin access: renew and revoke").

The control plane applies the bindings at first boot (phase "admins", after the CNI) and in its
live update (hub-update.sh.j2), which also deletes the bindings of admins that left the spec, by
label selector: only bindings wgkube labelled as its own are ever deleted.

Certificates of the old form (group kubeadm:cluster-admins, which kubeadm binds to cluster-admin)
need no binding and cannot be revoked by one: a bundle that holds only those renders exactly as
before (tests/golden). `wgkube admin renew NAME SPEC` moves an admin to the revocable form.
"""
from __future__ import annotations

from ..plan import Member, Plan
from ..secrets import Bundle
from ..secrets import pki
from .encode import Block
from .templates import render

BINDINGS_PATH = "/etc/wgkube/admin-bindings.yaml"
MANAGED_BY = ("app.kubernetes.io/managed-by", "wgkube")   # the well-known label, kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/
ADMIN_LABEL = "wgkube.io/admin"                          # the admin's name (a DNS-1123 label: a valid label value)
CLUSTER_ROLE = "cluster-admin"


def binding_name(name: str) -> str:
    return f"wgkube-admin-{name}"


def selector(name: str) -> str:
    """The label selector of one admin's binding: a delete by it never touches a binding wgkube did not make."""
    return f"{MANAGED_BY[0]}={MANAGED_BY[1]},{ADMIN_LABEL}={name}"


def revocable(plan: Plan, bundle: Bundle) -> list[str]:
    """Admins of the plan whose certificate is of the revocable form: each needs its binding."""
    return [m.name for m in plan.admins
            if m.name in bundle.admins and pki.admin_cert_revocable(bundle.admins[m.name]["cert"])]


def legacy(plan: Plan, bundle: Bundle) -> list[str]:
    """Admins of the plan that still hold a certificate of the old, unrevocable form."""
    return [m.name for m in plan.admins
            if m.name in bundle.admins and not pki.admin_cert_revocable(bundle.admins[m.name]["cert"])]


def revoked(plan: Plan, bundle: Bundle) -> list[str]:
    """Admins no longer in the plan that once held a revocable certificate (retired with them):
    their bindings may exist on the cluster and must go."""
    current = {m.name for m in plan.admins}
    names = set()
    for key, entry in bundle.retired.items():
        pair = entry.get("admin_cert") if isinstance(entry, dict) else None
        name = key.partition("@")[0]
        if name not in current and revocable_pair(pair):
            names.add(name)
    return sorted(names)


def revocable_pair(pair: object) -> bool:
    """A (retired) admin certificate pair of the revocable form: its binding may exist and must go."""
    try:
        return isinstance(pair, dict) and pki.admin_cert_revocable(pair["cert"])
    except (KeyError, ValueError, TypeError):
        return False


def manifest(plan: Plan, bundle: Bundle) -> str | None:
    """The bindings of the revocable admins as one multi-document YAML, or None when there is none."""
    names = revocable(plan, bundle)
    if not names:
        return None
    return render("admin-bindings.yaml.j2", cluster=plan.cluster, admins=[
        {"name": n, "binding": binding_name(n), "user": pki.admin_user(n)} for n in names],
        managed_by=MANAGED_BY, admin_label=ADMIN_LABEL, cluster_role=CLUSTER_ROLE)


def wanted(plan: Plan, bundle: Bundle, member: Member) -> bool:
    """The control plane gets the bindings file (and the first-boot phase that applies it)."""
    return plan.initialises(member) and bool(revocable(plan, bundle))


def live_update(plan: Plan, bundle: Bundle, member: Member) -> dict | None:
    """The control plane's live-update part: apply the current bindings, delete the revoked ones.
    None (the script exactly as before) on other members and for a bundle with no revocable
    certificate, current or retired."""
    if not plan.initialises(member):
        return None
    text, gone = manifest(plan, bundle), revoked(plan, bundle)
    if text is None and not gone:
        return None
    if text is not None and "WGKUBE_EOF" in text:
        raise ValueError("the bindings cannot be embedded in the update script")  # cannot happen: names are DNS labels
    return {"manifest": Block(text) if text else None,
            "revoked": [{"name": n, "binding": binding_name(n), "selector": selector(n)} for n in gone]}
