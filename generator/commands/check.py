"""`wgkube check` (validate the spec and its bundle, write nothing) and `wgkube schema`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import AgeIdentityOpt, JsonOpt, SecretsOpt, SpecArg, age_options, print_text, write_json


def register(app: typer.Typer, user_errors) -> None:
    @app.command(short_help="validate spec and secrets bundle; writes nothing")
    @user_errors
    def check(spec: Path = SpecArg, secrets: Optional[Path] = SecretsOpt, age_identity: List[Path] = AgeIdentityOpt,
              as_json: bool = JsonOpt) -> None:
        """Validate the spec (and its secrets bundle, if one exists). Writes nothing."""
        from .. import pipeline
        from .advice import login_warnings
        prepared = pipeline.inspect(spec, secrets, age=age_options([], age_identity))
        plan = prepared.plan
        warnings = prepared.warnings + login_warnings(plan)
        if plan.mesh is not None:  # issue 13
            warnings += plan.mesh.warnings()
        if as_json:
            write_json({"ok": True, "spec": str(spec), "cluster": plan.cluster, "nodes": len(plan.nodes), "admins": len(plan.admins),
                        "hub": {"name": plan.hub, "endpoint": plan.hub_member.endpoint},
                        "api": f"{plan.api_address}:{plan.api_port}", "bundle": str(prepared.bundle_path),
                        "bundle_exists": prepared.bundle_path.exists(), "warnings": warnings,
                        "mesh": None if plan.mesh is None else {"relays": list(plan.mesh.relays), "relayed_pairs": plan.mesh.relayed_count()},
                        **({"control_planes": [m.name for m in plan.control_planes], "api_endpoint": plan.api_endpoint}
                           if plan.several_control_planes else {})})
            return
        def count(n: int, what: str) -> str:
            return f"{n} {what}{'' if n == 1 else 's'}"
        print_text(f"{spec}: ok: cluster {plan.cluster}, {count(len(plan.nodes), 'node')}, {count(len(plan.admins), 'admin')}; "
                   f"hub: {plan.hub} ({plan.hub_member.endpoint}), API {plan.api_address}:{plan.api_port}", prose=True)
        if plan.several_control_planes:  # issue 14
            print_text(f"control planes: {', '.join(m.name for m in plan.control_planes)} (the first runs kubeadm init); "
                       f"every node reaches the API at {plan.api_endpoint}, its local endpoint", prose=True)
        if plan.mesh is not None:  # issue 13
            print_text(f"mesh: relays {', '.join(plan.mesh.relays) or '(none)'}; {count(plan.mesh.relayed_count(), 'pair')} behind NAT "
                       f"{'is' if plan.mesh.relayed_count() == 1 else 'are'} relayed, every other pair is direct", prose=True)
        for w in warnings:
            sys.stderr.write(f"warning: {w}\n")

    @app.command(short_help="JSON Schema of the spec (editor completion)")
    def schema() -> None:
        """Print the JSON Schema of the spec (for editor autocompletion)."""
        import json
        from ..spec import ClusterSpec
        s = ClusterSpec.model_json_schema()
        s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        s["title"] = "wgkube cluster spec"
        sys.stdout.write(json.dumps(s, indent=2, sort_keys=True) + "\n")
