"""nftables ruleset: one table of our own; public side sees the WireGuard port and nothing else."""
from __future__ import annotations

from ..facts import METADATA_ADDRESS, METADATA_DNS_PORT, POD_INTERFACES
from ..plan import Member, Plan
from .templates import render


def ruleset(plan: Plan, member: Member) -> str:
    return render("firewall.nft.j2", plan=plan, member=member, listen_port=plan.listen_port(member),
                  metadata=METADATA_ADDRESS, metadata_dns_port=METADATA_DNS_PORT,
                  pod_ifaces=", ".join(f'"{i}"' for i in POD_INTERFACES))
