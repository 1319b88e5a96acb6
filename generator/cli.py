"""The wgkube command line. Thin: parse arguments, call the pipeline, print tables and errors."""
from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from . import render as pipeline
from .errors import Problem, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="One cluster spec in; self-assembling Kubernetes-over-WireGuard nodes out.")
out = Console()
err = Console(stderr=True)
EXAMPLE = Path(__file__).with_name("example-cluster.yaml")


def user_errors(fn):
    """Bad input: one clear message per problem, exit 2, no traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[bold red]error[/]: {len(exc.problems)} problem(s)", highlight=False)
            for p in exc.problems:
                err.print(p.render(exc.source), highlight=False, markup=False)
            raise typer.Exit(2) from None
    return wrapper


SpecArg = typer.Argument(..., help="cluster spec (YAML)", exists=False)
SecretsOpt = typer.Option(None, "--secrets", help="secrets bundle (default: <spec>.secrets.yaml beside the spec)")
AgeIdentityOpt = typer.Option([], "--age-identity", help="age identity file to decrypt the bundle (or $WGKUBE_AGE_IDENTITY)")
AgeRecipientOpt = typer.Option([], "--age-recipient", help="encrypt the bundle to this age recipient (or $WGKUBE_AGE_RECIPIENTS)")


def _age(recipients: list[str], identities: list[Path]):
    from .secrets import Age
    return Age.from_env(recipients, identities)


@app.command()
@user_errors
def init(path: Path = typer.Argument(Path("cluster.yaml"), help="where to write the example spec"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")) -> None:
    """Write a commented example spec: a hub control plane, a public worker, a worker behind NAT, a laptop."""
    if path.exists() and not force:
        raise UserError(Problem("", f"{path} exists", "pick another path or pass --force"))
    from .output import atomic_write
    atomic_write(path, EXAMPLE.read_bytes())
    out.print(f"wrote {path}; next: [bold]wgkube render {path}[/]")


@app.command()
@user_errors
def check(spec: Path = SpecArg, secrets: Optional[Path] = SecretsOpt, age_identity: List[Path] = AgeIdentityOpt) -> None:
    """Validate the spec (and its secrets bundle, if one exists). Writes nothing."""
    prepared = pipeline.prepare(spec, secrets, age=_age([], age_identity))
    plan = prepared.plan
    out.print(f"{spec}: ok: cluster {plan.cluster}, {len(plan.nodes)} nodes, {len(plan.admins)} admins, hub {plan.hub} "
              f"({plan.hub_member.endpoint}), API {plan.api_address}:6443", highlight=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec (for editor autocompletion)."""
    from .spec import ClusterSpec
    s = ClusterSpec.model_json_schema()
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["title"] = "wgkube cluster spec"
    sys.stdout.write(json.dumps(s, indent=2, sort_keys=True) + "\n")


@app.command("hash-password")
def hash_password(password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True)) -> None:
    """Hash a console password (SHA-512 crypt via libpass) for `login.password_hash`."""
    from passlib.hash import sha512_crypt
    sys.stdout.write(sha512_crypt.using(rounds=656000).hash(password) + "\n")


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
    from .artifacts.providers import PROVIDERS
    if provider is not None and provider not in PROVIDERS:
        raise UserError(Problem("--provider", f"unknown provider {provider!r}", f"one of: {', '.join(PROVIDERS)}"))
    with pipeline.locked(spec, secrets):
        prepared = pipeline.prepare(spec, secrets, age=_age(age_recipient, age_identity))
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


from .commands import register_all  # noqa: E402  (after user_errors exists)

register_all(app, user_errors)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
