"""`wgkube admin renew NAME SPEC`: a new admin certificate of the revocable form (issue 17 item 2).

The old certificate is retired (reason "renewed"), never deleted; the cluster is re-rendered as
`rekey` does (lock, atomic writes, the same confirmation). An admin whose old certificate was of
the old form (group kubeadm:cluster-admins) needs its ClusterRoleBinding on the cluster BEFORE
the new kubeconfig is used: the new certificate has no group, so without the binding it is
allowed nothing. The order is printed (docs/day-two.md, "Admin access: renew and revoke")."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import LastIsoOpt, LastPackerOpt, LastProviderOpt, OutputOpt, confirm_or_exit, out, output_dir, print_rerendered, rerender
from .plan import check_provider

admin_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="admin access: renew an admin's certificate")


def _steps(plan, name: str, cluster_dir: str, legacy: bool, old_end) -> list[str]:
    """What to do after a renewal, in order."""
    from ..artifacts.admin_rbac import binding_name
    from ..artifacts.hub_update import control_plane_update_command
    kubeconfig = f"{cluster_dir}/admins/{name}/kubeconfig"
    if not legacy:
        return [f"install {kubeconfig} on {name}'s device (its binding {binding_name(name)} exists already: nothing changes on the cluster)",
                f"the old certificate keeps working until {old_end:%Y-%m-%d} (the same user); to cut off a copy of it earlier, "
                f"remove {name} from the spec and add the admin back under another name"]
    command = control_plane_update_command(plan, cluster_dir)
    return [f"FIRST apply the control plane's live update, so the binding {binding_name(name)} exists before the new "
            f"certificate is used (it has no kubeadm:cluster-admins group; without the binding it may do nothing): {command}",
            f"THEN install {kubeconfig} on {name}'s device and check it: kubectl --kubeconfig {kubeconfig} auth whoami",
            f"delete the old kubeconfig there: the old certificate (group kubeadm:cluster-admins) cannot be revoked; "
            f"it stays valid until {old_end:%Y-%m-%d}, from inside the VPN only"]


def _confirm(name: str, steps: list[str]) -> None:
    confirm_or_exit(f"admin renew {name}: a new certificate and key; nothing is written until you agree. Then:",
                    [f"{i}. {line}" for i, line in enumerate(steps, 1)], "renew", f"renew {name}'s certificate now?")


def register(app: typer.Typer, user_errors) -> None:
    @admin_app.command("renew", short_help="new revocable certificate for one admin")
    @user_errors
    def renew_cmd(name: str = typer.Argument(..., help="the admin (as named under admins: in the spec)"),
                  spec: Path = typer.Argument(..., help="cluster spec (YAML)"),
                  output: Optional[Path] = OutputOpt,
                  secrets: Optional[Path] = typer.Option(None, "--secrets", help="secrets bundle (default: beside the spec)"),
                  provider: Optional[str] = LastProviderOpt,
                  iso: Optional[bool] = LastIsoOpt,
                  packer: Optional[bool] = LastPackerOpt,
                  age_identity: List[Path] = typer.Option([], "--age-identity", help="age identity file (encrypted bundle), or $WGKUBE_AGE_IDENTITY"),
                  age_recipient: List[str] = typer.Option([], "--age-recipient", help="encrypt the bundle to this age recipient, or $WGKUBE_AGE_RECIPIENTS"),
                  yes: bool = typer.Option(False, "--yes", "-y", help="do not ask (scripts)")) -> None:
        """Give one admin a new certificate (and key) that the cluster can revoke; retire the old one; re-render; print the order."""
        from ..daytwo.diff import latest_retired
        from ..daytwo.planning import check_admin_name
        from ..secrets import Age
        from ..secrets import pki
        from ..spec import load_spec
        check_provider(provider)
        output = output_dir(spec, output)
        age = Age.from_env(age_recipient, age_identity)
        doc = load_spec(spec)
        check_admin_name(doc, name)  # refused before the lock file is made

        def old_form(prepared) -> tuple[bool, object]:
            old = latest_retired(prepared.bundle, name)["admin_cert"]
            return not pki.admin_cert_revocable(old["cert"]), pki.cert_facts(old["cert"])[2]

        def confirm(prepared, cluster_dir):
            if not yes:
                _confirm(name, _steps(prepared.plan, name, str(cluster_dir), *old_form(prepared)))

        prepared, cluster_dir = rerender(spec, secrets, output, age, doc, (provider, iso, packer), confirm, renew_admin=name)
        legacy, old_end = old_form(prepared)
        print_rerendered(prepared, cluster_dir)
        out.print(f"admin {name}, in this order:")
        for i, line in enumerate(_steps(prepared.plan, name, str(cluster_dir), legacy, old_end), 1):
            out.print(f"  {i}. {line}", soft_wrap=True)

    app.add_typer(admin_app, name="admin", short_help="admin access: renew an admin's certificate")
