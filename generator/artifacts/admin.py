"""What an admin device (a laptop) gets: its WireGuard config and a kubeconfig for the VPN API."""
from __future__ import annotations

import base64

from ..plan import Member, Plan
from ..secrets import Bundle
from .templates import render
from . import failover, wireguard


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kubeconfig(plan: Plan, bundle: Bundle, admin: Member) -> str:
    pair = bundle.admins[admin.name]
    return render("kubeconfig.yaml.j2", plan=plan, admin=admin, ca_b64=_b64(bundle.pki["ca"]["cert"]),
                  cert_b64=_b64(pair["cert"]), key_b64=_b64(pair["key"]),
                  # issue 14: a context per other control plane; the default stays the first.
                  extra_cps=[m for m in plan.control_planes if m.name != plan.hub])


def files(plan: Plan, bundle: Bundle, admin: Member) -> dict[str, tuple[bytes, int]]:
    base = f"admins/{admin.name}"
    return {
        f"{base}/{plan.admin_wg_file}": (wireguard.wg_conf(plan, bundle, admin).encode(), 0o600),
        f"{base}/kubeconfig": (kubeconfig(plan, bundle, admin).encode(), 0o600),
    } | (_failover(plan, bundle, admin, base) if failover.wanted(plan, admin) else {})


def _failover(plan: Plan, bundle: Bundle, admin: Member, base: str) -> dict[str, tuple[bytes, int]]:
    """Mesh: the laptop is behind NAT too; it gets the same failover loop as the nodes
    (run it as root beside its tunnel: sh wgkube-failover failover.conf)."""
    services = plan.routes_services(admin)   # issue 17: keep the service range on its peer across moves
    return {f"{base}/failover.conf": (failover.conf(plan, bundle, admin).encode(), 0o644),
            f"{base}/wgkube-failover": (failover.script(services).encode(), 0o755)}
