"""The status endpoint a node carries (issue 15): read-only JSON on its VPN address.

No daemon of ours: systemd listens (wgkube-status.socket, Accept=yes, bound to the VPN address
with FreeBind) and starts one wgkube-status@.service per connection, which runs the short
POSIX-sh script wgkube-status with the connection as its stdout: it prints the first-boot
phases (sentinels and log), unit states and `wg show` peers as one JSON object and exits. The
first-boot script is not touched. Three files per node, about 2.4 KB of user-data (a timer
keeping a file current would need three more units and answer up to its period stale). The JSON
shape is in docs/status.md; `wgkube status` (proof/status.py) reads it.
"""
from __future__ import annotations

from functools import lru_cache

from ..facts import STATUS_PORT
from ..plan import Member, Plan
from .kubeadm import runtime_for
from .templates import render

SCRIPT = "/usr/local/sbin/wgkube-status"
SOCKET = "wgkube-status.socket"
UNITS_ENABLED = (SOCKET,)
_UNIT_DIR = "/etc/systemd/system"


@lru_cache(maxsize=8)
def _same_everywhere(template: str) -> str:
    return render(template)


def script(plan: Plan, member: Member) -> str:
    from . import addons  # issue 18: the control plane with add-ons reports each step's state
    steps = addons.step_names(plan) if addons.wanted(plan, member) else []
    return render("wgkube-status.sh.j2", member=member, interface=plan.interface, runtime=runtime_for(member), addon_steps=steps)


def socket_unit(plan: Plan, member: Member) -> str:
    return render("wgkube-status.socket.j2", member=member, port=STATUS_PORT)


def node_files(plan: Plan, member: Member) -> list[tuple[str, str, int]]:
    """(path, content, mode) of every status file a node receives."""
    same = _same_everywhere
    return [
        (SCRIPT, script(plan, member), 0o755),
        (f"{_UNIT_DIR}/{SOCKET}", socket_unit(plan, member), 0o644),
        (f"{_UNIT_DIR}/wgkube-status@.service", same("wgkube-status@.service.j2"), 0o644),
    ]
