"""`wgkube rekey NODE SPEC`: a new WireGuard key for one member (the old one is retired), a
re-render, and the order to roll it out in. `--join` instead issues a new join token (a worker
whose join window ran out before it first booted, or a worker moving off an old join certificate)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import OutputOpt, out, output_dir, print_text
from .plan import check_provider, options_from


def _confirm(node: str, steps: list[str]) -> None:
    """Show the rollout before anything changes; ask on a terminal, refuse in a script without --yes."""
    import sys
    print_text(f"rekey {node}: a new WireGuard key; nothing is written until you agree. The rollout will be:")
    for line in steps:
        print_text(f"  {line}")
    if not sys.stdin.isatty():
        sys.stderr.write("not confirmed: stdin is not a terminal; pass --yes to rekey from a script. Nothing was changed.\n")
        raise typer.Exit(1)
    if not typer.confirm(f"rekey {node} now?", default=False):
        sys.stderr.write("not confirmed; nothing was changed.\n")
        raise typer.Exit(1)


def register(app: typer.Typer, user_errors) -> None:
    @app.command("rekey", short_help="new key (or --join token) for one member")
    @user_errors
    def rekey_cmd(node: str = typer.Argument(..., help="the member (node or admin) that gets a new key"),
                  spec: Path = typer.Argument(..., help="cluster spec (YAML)"),
                  output: Optional[Path] = OutputOpt,
                  secrets: Optional[Path] = typer.Option(None, "--secrets", help="secrets bundle (default: beside the spec)"),
                  join: bool = typer.Option(False, "--join", help="issue a new join token (fresh join window; the old one is retired) instead of a WireGuard key"),
                  provider: Optional[str] = typer.Option(None, "--provider", help="as for render (default: what the last render used)"),
                  iso: Optional[bool] = typer.Option(None, "--iso/--no-iso", help="as for render (default: what the last render used)"),
                  packer: Optional[bool] = typer.Option(None, "--packer/--no-packer", help="as for render (default: what the last render used)"),
                  age_identity: List[Path] = typer.Option([], "--age-identity", help="age identity file (encrypted bundle), or $WGKUBE_AGE_IDENTITY"),
                  age_recipient: List[str] = typer.Option([], "--age-recipient", help="encrypt the bundle to this age recipient, or $WGKUBE_AGE_RECIPIENTS"),
                  yes: bool = typer.Option(False, "--yes", "-y", help="do not ask: scripts (a WireGuard rekey splits the member off until rolled out)")) -> None:
        """Give one member a new WireGuard key (or, with --join, a new join token), re-render, print the rollout order."""
        from .. import pipeline
        from ..artifacts.hub_update import hub_update_command, hub_update_name, member_update_command, member_update_path
        from ..daytwo.diff import latest_retired
        from ..secrets import is_token_join, join_expires, token_id
        from ..daytwo.rollout import rollout
        from ..output import read_manifest
        from ..secrets import Age
        from ..spec import load_spec
        check_provider(provider)
        output = output_dir(spec, output)
        age = Age.from_env(age_recipient, age_identity)
        doc = load_spec(spec)  # a refused spec leaves nothing behind, not even the lock file
        pipeline.precheck(spec, secrets, age, doc)
        with pipeline.locked(spec, secrets):
            prepared = pipeline.prepare(spec, secrets, age=age, rekey=node, rekey_join=join, doc=doc, out_root=output)
            cluster_dir = output / prepared.plan.cluster
            if not join and not yes:
                _confirm(node, rollout(prepared.plan, node, str(cluster_dir)))
            provider, iso, packer = options_from(read_manifest(cluster_dir), provider, iso, packer)
            rendered = pipeline.render_all(prepared.plan, prepared.bundle, provider=provider, iso=iso, packer=packer)
            cluster_dir = pipeline.write(prepared, rendered, output)
        out.print(f"secrets: {prepared.bundle_path} (0600): {'; '.join(prepared.added)}")
        out.print(f"rendered {cluster_dir}")
        report = prepared.report
        if report is not None:
            changed = [f"{mc.name} ({mc.status})" for mc in report.members if mc.status != "unchanged"]
            out.print("members whose files changed: " + (", ".join(changed) or "none"))
        if join:
            plan = prepared.plan
            end = join_expires(prepared.bundle.joins[node])
            cp = next(m for m in plan.nodes if m.role == "control-plane")
            script = member_update_path(cp) if plan.mesh is not None else f"hub-update/{hub_update_name(plan)}"
            command = (member_update_command(plan, cp, f"{cluster_dir}/{script}") if plan.mesh is not None
                       else hub_update_command(plan, f"{cluster_dir}/{script}"))
            out.print(f"{node}: new join token, expires {end:%Y-%m-%d %H:%M} UTC. {node}'s files changed and so did the control "
                      f"plane's: a running {cp.name} does not know the new token yet. Run its live update (it creates the token "
                      f"and deletes retired ones, idempotently):", soft_wrap=True)
            out.print(f"  {command}", soft_wrap=True)
            old = latest_retired(prepared.bundle, node).get("join")
            if is_token_join(old):
                out.print(f"The old token is revoked by that update; by hand, on {cp.name}: kubeadm token delete {token_id(old['token'])}",
                          soft_wrap=True)
            elif old is not None:
                out.print("The old join certificate stays valid until it expires (certificates cannot be revoked); "
                          "it only works inside the VPN.", soft_wrap=True)
            out.print(f"Then boot {node} with {cluster_dir}/nodes/{node}/ (user-data or seed.iso).", soft_wrap=True)
            return
        out.print(f"rollout for {node}, in this order:")
        for line in rollout(prepared.plan, node, str(cluster_dir)):
            out.print(f"  {line}", soft_wrap=True)
        out.print(f"If {node} has not booted yet, there is nothing to roll out: boot it with its new files.", soft_wrap=True)
