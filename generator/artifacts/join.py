"""The per-node join credential (join window): kubeadm's discovery file with credentials
(docs/join-window.md). Only for workers, only when the spec sets a join window."""
from __future__ import annotations

import base64
import datetime as dt
from types import SimpleNamespace

from cryptography import x509

from ..plan import Member, Plan
from ..secrets import Bundle
from .templates import render

JOIN_KUBECONFIG = "/etc/wgkube/join.kubeconfig"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def join_kubeconfig(plan: Plan, bundle: Bundle, member: Member) -> str:
    """kubeadm's discovery file with credentials: the API on the hub's VPN address, the pinned
    CA, and the node's own short-lived client certificate (docs/join-window.md)."""
    pair = bundle.joins[member.name]
    user = SimpleNamespace(name=f"join-{member.name}")
    text = render("kubeconfig.yaml.j2", plan=plan, admin=user, ca_b64=_b64(bundle.pki["ca"]["cert"]),
                  cert_b64=_b64(pair["cert"]), key_b64=_b64(pair["key"]))
    start, end = join_window(pair["cert"])
    return (f"# wgkube join credential for {member.name}: kubeadm join reads it once (discovery.file).\n"
            f"# Valid {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC; `wgkube rekey {member.name} SPEC --join` issues a new one.\n"
            + text)


def join_window(cert_pem: str) -> tuple[dt.datetime, dt.datetime]:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.not_valid_before_utc, cert.not_valid_after_utc
