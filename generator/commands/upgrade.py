"""`wgkube upgrade SPEC`: move a running cluster to the next Kubernetes minor (issue 17).

The user bumps `kubernetes:` by one minor and runs it: the bundle records the upgrade, the render
adds one script per node under upgrade/, and the order is printed. `--control-plane-done` (after
the control plane's scripts ran) lets new nodes install the new minor; `--workers-done` ends it.
State and rules: daytwo/upgrade.py; skew rules: skew.py; docs/day-two.md."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import AgeIdentityOpt, OutputOpt, SecretsOpt, SpecArg, out, output_dir, print_rerendered, rerender


def register(app: typer.Typer, user_errors) -> None:
    @app.command("upgrade", short_help="move the cluster to the next Kubernetes minor (scripts, in order)")
    @user_errors
    def upgrade_cmd(spec: Path = SpecArg,
                    output: Optional[Path] = OutputOpt,
                    secrets: Optional[Path] = SecretsOpt,
                    control_plane_done: bool = typer.Option(False, "--control-plane-done", help="the control plane's scripts ran: new nodes install the new minor; workers next"),
                    workers_done: bool = typer.Option(False, "--workers-done", help="every worker's script ran: the upgrade is finished"),
                    age_identity: List[Path] = AgeIdentityOpt) -> None:
        """Upgrade the running cluster to the minor `kubernetes:` names (one minor at a time): render one
        script per node under upgrade/ and print the order (kubeadm's: control plane, then workers)."""
        from ..artifacts import upgrade as upgrade_art
        from ..errors import Problem, UserError
        from ..secrets import Age
        from ..spec import load_spec
        if control_plane_done and workers_done:
            raise UserError(Problem("--control-plane-done", "give one step at a time",
                                    "first --control-plane-done (after the control plane's script), later --workers-done"))
        step = "control-plane-done" if control_plane_done else "workers-done" if workers_done else "start"
        output = output_dir(spec, output)
        doc = load_spec(spec)
        prepared, cluster_dir = rerender(spec, secrets, output, Age.from_env(identities=age_identity), doc, upgrade_step=step)
        plan = prepared.plan
        print_rerendered(prepared, cluster_dir)
        if plan.upgrade_to is None:
            out.print(f"{plan.cluster} runs Kubernetes {plan.kubernetes}: the upgrade is finished; new nodes install "
                      f"{plan.kubernetes} and upgrade/ is gone from {cluster_dir}.", soft_wrap=True)
            return
        commands = upgrade_art.stage_steps(plan, str(cluster_dir))
        if plan.upgrade_to != plan.kubernetes:
            out.print(f"upgrade {plan.cluster} to Kubernetes {plan.upgrade_to}, stage 1 of 2: the control plane. New nodes "
                      f"still install {plan.kubernetes} until it is done. Run, from a VPN member:", soft_wrap=True)
            for c in commands:
                out.print(f"  {c}", soft_wrap=True)
            out.print(f"then: wgkube upgrade {spec} --control-plane-done", soft_wrap=True)
            if any(m.role != "control-plane" for m in plan.nodes):
                out.print(f"(the workers' scripts are in {cluster_dir}/upgrade/ already; they refuse to run before the "
                          f"API server runs {plan.upgrade_to})", soft_wrap=True)
            return
        out.print(f"upgrade {plan.cluster} to Kubernetes {plan.upgrade_to}, stage 2 of 2: the workers, one at a time "
                  f"(new nodes install {plan.upgrade_to} now). For each: drain, its script, uncordon:", soft_wrap=True)
        for c in commands:
            out.print(f"  {c}", soft_wrap=True)
        out.print(f"then: wgkube upgrade {spec} --workers-done", soft_wrap=True)
