"""WireGuard configs (wg-quick format), identical in shape on every member."""
from __future__ import annotations

from dataclasses import dataclass

from ..plan import Member, Plan
from ..secrets import Bundle
from . import encode
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
    if plan.mesh is not None:
        return _mesh_conf(plan, bundle, member)
    return render("wg.conf.j2", plan=plan, member=member, private_key=bundle.private_key(member.name),
                  listen_port=plan.listen_port(member), peers=peers_with_keys(plan, bundle, member))


def _mesh_conf(plan: Plan, bundle: Bundle, member: Member) -> str:
    """The same text wg.conf.j2 makes (tests/test_mesh.py compares them), built from peer blocks
    made once per plan: in a mesh each member's block recurs in every public member's file."""
    head = render("wg.conf.j2", plan=plan, member=member, private_key=bundle.private_key(member.name),
                  listen_port=plan.listen_port(member), peers=[])
    # Keyed by the Peer object: plan.peers() hands out the same objects for the whole plan (its
    # mesh lists are made once), and hashing 190,000 dataclasses would cost more than the text.
    cache = plan._index.setdefault("_wg_blocks", {})
    blocks = []
    for p in plan.peers(member):
        hit = cache.get(id(p))
        if hit is None:
            hit = cache[id(p)] = (p, peer_block(p, bundle.public_key(p.name)))   # p kept: its id stays unique
        blocks.append(hit[1])
    return head + "".join(blocks)


def peer_block(p, public_key: str) -> str:
    """One [Peer] section exactly as wg.conf.j2 lays it out."""
    out = (f"\n[Peer]\n# {encode.comment(p.name)}\nPublicKey = {encode.ini(public_key)}\n"
           f"AllowedIPs = {encode.ini(', '.join(p.allowed_ips))}\n")
    if p.endpoint:
        out += f"Endpoint = {encode.ini(p.endpoint)}\n"
    if p.keepalive:
        out += f"PersistentKeepalive = {int(p.keepalive)}\n"
    return out
