"""nftables ruleset: one table of our own; public side sees the WireGuard port and nothing else."""
from __future__ import annotations

from .. import versions
from ..plan import Member, Plan
from ..templates import render

# Interfaces pod traffic arrives on (flannel's bridge and VXLAN device). Pod sources are only
# trusted there: a spoofed pod address from the public side must not reach VXLAN or the host.
POD_INTERFACES = ("cni0", "flannel.1")


def ruleset(plan: Plan, member: Member) -> str:
    return render("firewall.nft.j2", plan=plan, member=member, listen_port=plan.listen_port(member),
                  metadata=versions.METADATA_ADDRESS,
                  pod_ifaces=", ".join(f'"{i}"' for i in POD_INTERFACES))
