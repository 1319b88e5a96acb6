"""`wgkube check` (validate the spec and its bundle, write nothing) and `wgkube schema`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import pipeline
from .common import AgeIdentityOpt, SecretsOpt, SpecArg, age_options, err, out


def register(app: typer.Typer, user_errors) -> None:
    @app.command()
    @user_errors
    def check(spec: Path = SpecArg, secrets: Optional[Path] = SecretsOpt, age_identity: List[Path] = AgeIdentityOpt) -> None:
        """Validate the spec (and its secrets bundle, if one exists). Writes nothing."""
        prepared = pipeline.prepare(spec, secrets, age=age_options([], age_identity))
        for warning in prepared.warnings:
            err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
        plan = prepared.plan
        out.print(f"{spec}: ok: cluster {plan.cluster}, {len(plan.nodes)} nodes, {len(plan.admins)} admins, hub {plan.hub} "
                  f"({plan.hub_member.endpoint}), API {plan.api_address}:{plan.api_port}", highlight=False)
        if plan.mesh is not None:  # issue 13
            out.print(f"mesh: relays {', '.join(plan.mesh.relays) or '(none)'}; {plan.mesh.relayed_count()} pairs behind NAT "
                      f"are relayed, every other pair is direct", highlight=False)
            for w in plan.mesh.warnings():
                out.print(f"[yellow]warning[/]: {w}", highlight=False)

    @app.command()
    def schema() -> None:
        """Print the JSON Schema of the spec (for editor autocompletion)."""
        from ..spec import ClusterSpec
        s = ClusterSpec.model_json_schema()
        s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        s["title"] = "wgkube cluster spec"
        sys.stdout.write(json.dumps(s, indent=2, sort_keys=True) + "\n")
