"""`wgkube render`: everything every node needs (the main job)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import Progress
from rich.table import Table

from .. import pipeline
from ..spec import load_spec
from ..errors import Problem, UserError
from .common import AgeIdentityOpt, AgeRecipientOpt, SecretsOpt, SpecArg, age_options, err, out


def register(app: typer.Typer, user_errors) -> None:
    @app.command()
    @user_errors
    def render(spec: Path = SpecArg,
               output: Path = typer.Option(Path("out"), "-o", "--output", help="output folder; the cluster goes in <output>/<name>/"),
               secrets: Optional[Path] = SecretsOpt,
               provider: Optional[str] = typer.Option(None, "--provider", help="fit every node's user-data to this provider (aws, hetzner, digitalocean, linode, azure, openstack, gcp, none)"),
               iso: bool = typer.Option(True, "--iso/--no-iso", help="write NoCloud seed ISOs"),
               packer: bool = typer.Option(True, "--packer/--no-packer", help="write Packer templates"),
               age_identity: List[Path] = AgeIdentityOpt,
               age_recipient: List[str] = AgeRecipientOpt,
               quiet: bool = typer.Option(False, "-q", "--quiet", help="no table")) -> None:
        """Render everything every node needs (the main job)."""
        from ..artifacts.providers import PROVIDERS
        if provider is not None and provider not in PROVIDERS:
            raise UserError(Problem("--provider", f"unknown provider {provider!r}", f"one of: {', '.join(PROVIDERS)}"))
        doc = load_spec(spec)  # a refused spec leaves nothing behind, not even the lock file
        with pipeline.locked(spec, secrets):
            prepared = pipeline.prepare(spec, secrets, age=age_options(age_recipient, age_identity), doc=doc)
            for warning in prepared.warnings:
                err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
            n = len(prepared.plan.nodes)
            with Progress(console=err, transient=True, disable=quiet or n < 20) as progress:
                task = progress.add_task("rendering", total=n)
                rendered = pipeline.render_all(prepared.plan, prepared.bundle, provider=provider, iso=iso, packer=packer,
                                               progress=lambda _name: progress.advance(task))
            cluster_dir = pipeline.write(prepared, rendered, output)
        if quiet:
            for note in prepared.notes:  # what a running member needs is never silenced
                err.print(f"by hand: {note}", highlight=False, soft_wrap=True)
            return
        if prepared.added:
            out.print(f"secrets: {prepared.bundle_path} (0600): added {', '.join(prepared.added)}", highlight=False)
        else:
            out.print(f"secrets: {prepared.bundle_path}: reused, nothing new", highlight=False)
        table = Table(title=f"{prepared.plan.cluster}: {cluster_dir}")
        for col in ("node", "role", "VPN IP", "endpoint", "user-data (plain / gzip)", "provider: encoding", "artifacts"):
            table.add_column(col)
        for r in rendered.nodes:
            table.add_row(r.name, r.role, r.vpn_ip, r.endpoint, f"{r.sizes['plain']} / {r.sizes['gzip']} B",
                          f"{r.provider}: {r.encoding}", ", ".join(r.artifacts))
        out.print(table)
        for a in prepared.plan.admins:
            out.print(f"admin {a.name}: {cluster_dir}/admins/{a.name}/ ({prepared.plan.interface}.conf, kubeconfig)", highlight=False)
        for note in prepared.notes:
            out.print(f"by hand: {note}", highlight=False, soft_wrap=True)
