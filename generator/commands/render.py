"""`wgkube render`: everything every node needs (the main job)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from .common import (AgeIdentityOpt, AgeRecipientOpt, JsonOpt, OutputOpt, SecretsOpt, SpecArg, age_options,
                     is_terminal, output_dir, print_text, table, write_json)


class _Progress:
    """A bar on a terminal (stderr); in a pipe or a CI log, a line every 10% and at least every
    5 s, so a long render is never silent."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled and total >= 20
        self.bar = None
        self.next_line, self.last = 0, time.monotonic()

    def __enter__(self):
        if self.enabled and is_terminal(sys.stderr):
            from rich.console import Console
            from rich.progress import Progress
            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("rendering", total=self.total)
        elif self.enabled:
            self.line("rendering")
        return self

    def line(self, what: str) -> None:
        sys.stderr.write(f"{what}: {self.done}/{self.total} nodes\n")
        sys.stderr.flush()
        self.last = time.monotonic()

    def advance(self, _name: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.advance(self.task)
        elif self.enabled and (self.done * 10 // self.total > self.next_line or time.monotonic() - self.last > 5):
            self.next_line = self.done * 10 // self.total
            self.line("rendered")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def register(app: typer.Typer, user_errors) -> None:
    @app.command(short_help="render everything every node needs (the main job)")
    @user_errors
    def render(spec: Path = SpecArg,
               output: Optional[Path] = OutputOpt,
               secrets: Optional[Path] = SecretsOpt,
               provider: Optional[str] = typer.Option(None, "--provider", help="fit every node's user-data to this provider, also nodes with their own `provider:` (aws, hetzner, digitalocean, linode, azure, openstack, gcp, none)"),
               iso: bool = typer.Option(True, "--iso/--no-iso", help="write NoCloud seed ISOs"),
               packer: bool = typer.Option(True, "--packer/--no-packer", help="write Packer templates"),
               age_identity: List[Path] = AgeIdentityOpt,
               age_recipient: List[str] = AgeRecipientOpt,
               quiet: bool = typer.Option(False, "-q", "--quiet", help="print only what must be done by hand (stderr)"),
               as_json: bool = JsonOpt) -> None:
        """Render everything every node needs (the main job)."""
        from .. import pipeline
        from ..artifacts.providers import PROVIDERS
        from ..errors import Problem, UserError
        if provider is not None and provider not in PROVIDERS:
            raise UserError(Problem("--provider", f"unknown provider {provider!r}", f"one of: {', '.join(PROVIDERS)}"))
        out_root = output_dir(spec, output)
        from ..spec import load_spec
        doc = load_spec(spec)  # a refused spec leaves nothing behind, not even the lock file
        age = age_options(age_recipient, age_identity)
        pipeline.precheck(spec, secrets, age, doc)
        with pipeline.locked(spec, secrets):
            prepared = pipeline.prepare(spec, secrets, age=age, doc=doc, out_root=out_root)
            n = len(prepared.plan.nodes)
            with _Progress(n, not quiet and not as_json) as progress:
                rendered = pipeline.render_all(prepared.plan, prepared.bundle, provider=provider, iso=iso, packer=packer,
                                               progress=progress.advance, measure=not quiet)
            cluster_dir = pipeline.write(prepared, rendered, out_root)
        overridden = [(m.name, m.provider) for m in prepared.plan.nodes if provider and m.provider and m.provider != provider]
        binary = [r for r in rendered.nodes if r.encoding == "gzip"]
        notes = []
        if overridden:
            notes.append(f"--provider {provider} overrides the nodes' own provider: "
                         + ", ".join(f"{name} ({own})" for name, own in overridden))
        for r in binary:
            notes.append(f"{r.name}: user-data is gzip'd (binary, {r.sizes['gzip']} B) to fit {r.provider}: upload it as a file, "
                         f"never paste it: aws ec2 run-instances ... --user-data fileb://{cluster_dir}/nodes/{r.name}/user-data")
        from .advice import login_warnings
        warnings = prepared.warnings + login_warnings(prepared.plan)
        for w in warnings:
            sys.stderr.write(f"warning: {w}\n")
        if as_json:
            write_json(render_json(prepared, rendered, cluster_dir, notes) | {"warnings": warnings})
            return
        if quiet:
            for note in prepared.notes:  # what a running member needs is never silenced
                sys.stderr.write(f"by hand: {note}\n")
            return
        if prepared.added:
            print_text(f"secrets: {prepared.bundle_path} (0600): added {', '.join(prepared.added)}", prose=True)
        else:
            print_text(f"secrets: {prepared.bundle_path}: reused, nothing new")
        rows = [(r.name, r.role, r.vpn_ip, r.endpoint, f"{r.sizes[r.encoding]} {r.encoding}", r.provider) for r in rendered.nodes]
        print_text(table(f"{prepared.plan.cluster}: {len(rows)} nodes in {cluster_dir}/ (user-data in bytes, as delivered)",
                         ("node", "role", "VPN IP", "endpoint", "user-data", "provider"), rows))
        kinds = sorted({a for r in rendered.nodes for a in r.artifacts}, key=["user-data", "network-config", "seed.iso", "packer"].index)
        print_text(f"each node: nodes/<node>/{{{', '.join(kinds)}}}, wireguard/<node>/{prepared.plan.interface}.conf"
                   + (f"; network-config only for {', '.join(r.name for r in rendered.nodes if 'network-config' in r.artifacts)}"
                      if "network-config" in kinds else ""), prose=True)
        for a in prepared.plan.admins:
            print_text(f"admin {a.name}: {cluster_dir}/admins/{a.name}/ ({prepared.plan.admin_wg_file}, kubeconfig)", prose=True)
        for note in notes:
            print_text(f"note: {note}", prose=True)
        for note in prepared.notes:
            print_text(f"by hand: {note}", prose=True)


def render_json(prepared, rendered, cluster_dir: Path, notes: list[str]) -> dict:
    """The documented shape of `wgkube render --json` (docs/cli-json.md)."""
    return {
        "cluster": prepared.plan.cluster,
        "out_dir": str(cluster_dir),
        "secrets": {"path": str(prepared.bundle_path), "added": list(prepared.added)},
        "nodes": [{"name": r.name, "role": r.role, "vpn_ip": r.vpn_ip, "endpoint": r.endpoint if r.endpoint != "(behind NAT)" else None,
                   "provider": r.provider, "encoding": r.encoding, "user_data": f"{cluster_dir}/nodes/{r.name}/user-data",
                   "sizes": dict(r.sizes), "artifacts": list(r.artifacts)} for r in rendered.nodes],
        "admins": [{"name": a.name, "dir": f"{cluster_dir}/admins/{a.name}"} for a in prepared.plan.admins],
        "notes": notes,
        "by_hand": list(prepared.notes),
    }
