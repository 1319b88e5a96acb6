"""WireGuard configs (wg-quick format), identical in shape on every member."""
from __future__ import annotations

from dataclasses import dataclass

from ..plan import Member, Plan
from ..secrets import Bundle
from .templates import render


@dataclass(frozen=True)
class RenderedPeer:
    name: str
    public_key: str
    allowed_ips: tuple[str, ...]
    endpoint: str | None
    keepalive: int | None


def peers_with_keys(plan: Plan, bundle: Bundle, member: Member) -> list[RenderedPeer]:
    return [RenderedPeer(p.name, bundle.public_key(p.name), p.allowed_ips, p.endpoint, p.keepalive)
            for p in plan.peers(member)]


def wg_conf(plan: Plan, bundle: Bundle, member: Member) -> str:
    return render("wg.conf.j2", plan=plan, member=member, private_key=bundle.private_key(member.name),
                  listen_port=plan.listen_port(member), peers=peers_with_keys(plan, bundle, member))
