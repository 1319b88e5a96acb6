"""`wgkube rekey NODE SPEC`: a new WireGuard key for one member (the old one is retired), a
re-render, and the order to roll it out in. `--join` instead issues a new join token (a worker
whose join window ran out before it first booted, or a worker moving off an old join certificate)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import LastIsoOpt, LastPackerOpt, LastProviderOpt, OutputOpt, confirm_or_exit, out, output_dir, print_rerendered, rerender
from .plan import check_provider


def _confirm(node: str, steps: list[str]) -> None:
    confirm_or_exit(f"rekey {node}: a new WireGuard key; nothing is written until you agree. The rollout will be:",
                    steps, "rekey", f"rekey {node} now?")


def register(app: typer.Typer, user_errors) -> None:
    @app.command("rekey", short_help="new key (or --join token) for one member")
    @user_errors
    def rekey_cmd(node: str = typer.Argument(..., help="the member (node or admin) that gets a new key"),
                  spec: Path = typer.Argument(..., help="cluster spec (YAML)"),
                  output: Optional[Path] = OutputOpt,
                  secrets: Optional[Path] = typer.Option(None, "--secrets", help="secrets bundle (default: beside the spec)"),
                  join: bool = typer.Option(False, "--join", help="issue a new join token (fresh join window; the old one is retired) instead of a WireGuard key"),
                  provider: Optional[str] = LastProviderOpt,
                  iso: Optional[bool] = LastIsoOpt,
                  packer: Optional[bool] = LastPackerOpt,
                  age_identity: List[Path] = typer.Option([], "--age-identity", help="age identity file (encrypted bundle), or $WGKUBE_AGE_IDENTITY"),
                  age_recipient: List[str] = typer.Option([], "--age-recipient", help="encrypt the bundle to this age recipient, or $WGKUBE_AGE_RECIPIENTS"),
                  yes: bool = typer.Option(False, "--yes", "-y", help="do not ask: scripts (a WireGuard rekey splits the member off until rolled out)")) -> None:
        """Give one member a new WireGuard key (or, with --join, a new join token), re-render, print the rollout order."""
        from ..artifacts.hub_update import control_plane_update_command
        from ..daytwo.diff import latest_retired
        from ..secrets import is_token_join, join_expires, token_id
        from ..daytwo.rollout import rollout
        from ..secrets import Age
        from ..spec import load_spec
        check_provider(provider)
        output = output_dir(spec, output)
        age = Age.from_env(age_recipient, age_identity)
        doc = load_spec(spec)  # a refused spec leaves nothing behind, not even the lock file

        def confirm(prepared, cluster_dir):
            if not join and not yes:
                _confirm(node, rollout(prepared.plan, node, str(cluster_dir)))

        prepared, cluster_dir = rerender(spec, secrets, output, age, doc, (provider, iso, packer), confirm,
                                         rekey=node, rekey_join=join)
        print_rerendered(prepared, cluster_dir)
        if join:
            plan = prepared.plan
            end = join_expires(prepared.bundle.joins[node])
            cp = plan.hub_member  # the control plane that holds the tokens (the first, with several)
            command = control_plane_update_command(plan, str(cluster_dir))
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
