"""The hub's live peer update: a script, fed to the hub over SSH, that applies the rendered peer
list with `wg syncconf` (sessions kept). Public keys only; the hub's private key stays on the hub."""
from __future__ import annotations

import shlex

from ..plan import Plan
from ..secrets import Bundle
from .encode import Block
from .templates import render


def hub_update_script(plan: Plan, bundle: Bundle, hub_conf: str) -> str:
    """A bash script, fed to the hub over SSH, that makes its WireGuard config equal the rendered
    one while keeping the hub's own private key on the hub, then applies it with `wg syncconf`
    (peers that did not change keep their sessions). Holds public keys only. Idempotent."""
    before, _, after = hub_conf.partition("\nPrivateKey = ")
    after = after.split("\n", 1)[1] if "\n" in after else ""
    if "WGKUBE_EOF" in hub_conf or not hub_conf.endswith("\n"):
        raise ValueError("the hub's config cannot be embedded in the update script")  # cannot happen with wg.conf.j2
    return render("hub-update.sh.j2", plan=plan, hub=plan.hub_member, hub_public_key=bundle.public_key(plan.hub),
                  conf_before=Block(before + "\n"), conf_after=Block(after), apply=hub_update_command(plan, "hub-update/" + hub_update_name(plan)))


def hub_update_name(plan: Plan) -> str:
    return f"{plan.interface}.sh"


def hub_update_command(plan: Plan, script_path: str) -> str:
    return f"ssh {plan.login_user}@{plan.api_address} sudo bash -s < {shlex.quote(script_path)}"
