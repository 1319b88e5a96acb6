"""`wgkube plan SPEC`: what the next render would change, and what running members then need.

Renders in memory and compares with out/<cluster>/manifest.json. Writes nothing: not the
bundle (new keys are made in memory and thrown away; render makes its own), not out/, not
even the lock file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import JsonOpt, output_dir, write_json


def options_from(manifest: dict | None, provider: str | None, iso: bool | None, packer: bool | None) -> tuple[str | None, bool, bool]:
    """Render options: given on the command line, else what the last render used, else render's defaults."""
    last = (manifest or {}).get("options", {})
    return (provider if provider is not None else last.get("provider"),
            iso if iso is not None else last.get("iso", True),
            packer if packer is not None else last.get("packer", True))


def check_provider(provider: str | None) -> None:
    from ..artifacts.providers import PROVIDERS
    from ..errors import Problem, UserError
    if provider is not None and provider not in PROVIDERS:
        raise UserError(Problem("--provider", f"unknown provider {provider!r}", f"one of: {', '.join(PROVIDERS)}"))


def register(app: typer.Typer, user_errors) -> None:
    @app.command("plan", short_help="what the next render changes; what to do by hand")
    @user_errors
    def plan_cmd(spec: Path = typer.Argument(..., help="cluster spec (YAML)"),
                 output: Optional[Path] = typer.Option(None, "-o", "--output", help="output folder of the last render (holds <name>/manifest.json; default: out/ beside the spec)"),
                 secrets: Optional[Path] = typer.Option(None, "--secrets", help="secrets bundle (default: beside the spec)"),
                 provider: Optional[str] = typer.Option(None, "--provider", help="as for render (default: what the last render used)"),
                 iso: Optional[bool] = typer.Option(None, "--iso/--no-iso", help="as for render (default: what the last render used)"),
                 packer: Optional[bool] = typer.Option(None, "--packer/--no-packer", help="as for render (default: what the last render used)"),
                 age_identity: List[Path] = typer.Option([], "--age-identity", help="age identity file to decrypt an encrypted bundle (or $WGKUBE_AGE_IDENTITY)"),
                 rekey: Optional[str] = typer.Option(None, "--rekey", metavar="NODE", help="preview `wgkube rekey NODE SPEC`: what changes and the rollout order"),
                 as_json: bool = JsonOpt) -> None:
        """Show what the next render would change, per member and per file, and what must be done by hand. Writes nothing."""
        from .. import pipeline
        from ..daytwo import diff as daytwo_diff
        from ..daytwo import report as daytwo_report
        from ..daytwo.rollout import rollout
        from ..output import manifest_of, read_manifest
        from ..secrets import Age
        output = output_dir(spec, output)
        check_provider(provider)
        prepared = pipeline.prepare(spec, secrets, age=Age.from_env(identities=age_identity), rekey=rekey, out_root=output)
        cluster_dir = output / prepared.plan.cluster
        before = read_manifest(cluster_dir)
        provider, iso, packer = options_from(before, provider, iso, packer)
        rendered = pipeline.render_all(prepared.plan, prepared.bundle, provider=provider, iso=iso, packer=packer)
        after = manifest_of(rendered.files, rendered.meta)
        old_plan = None
        try:
            old_plan = json.loads((cluster_dir / "plan.json").read_text())
        except (OSError, ValueError):
            pass
        report = daytwo_diff.diff(before, after, prepared.plan, prepared.bundle, str(cluster_dir), prepared.added, old_plan)
        if rekey is not None and report.baseline:
            # The generic "hub changes" / "own config changes" notes become one ordered rollout.
            steps = rollout(prepared.plan, rekey, str(cluster_dir))
            report.actions = [f"rekey {rekey}, in this order:\n    " + "\n    ".join(steps)] + [
                a for a in report.actions if "hub-update" not in a and "own WireGuard config" not in a
                and "peer-update/" not in a and "its WireGuard config changes" not in a]
        # issue 17 item 2: admin certificates that expire within facts.ADMIN_CERT_WARN_DAYS, or of the old form
        import datetime as dt
        from ..daytwo.admins import warnings as admin_warnings
        report.warnings = admin_warnings(prepared.plan, prepared.bundle, dt.datetime.now(dt.timezone.utc), str(spec))
        if as_json:
            write_json(daytwo_report.report_json(report))
            return
        against = f"{cluster_dir}/manifest.json" if before is not None else f"nothing ({cluster_dir} has no manifest yet)"
        title = f"plan for {prepared.plan.cluster}: {spec} against {against}"
        sys.stdout.write(daytwo_report.format_report(report, title) + "\n")
