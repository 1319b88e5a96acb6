"""The pipeline: spec -> plan -> secrets -> artifacts -> files. Only the last step writes."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import secrets as secrets_mod
from .artifacts import admin as admin_art
from .artifacts import cloudinit, providers
from .errors import Problem, UserError
from .output import lock, write_tree
from .plan import Member, Plan, build_plan, plan_summary
from .secrets import Bundle
from .spec import SpecDocument, load_spec


@dataclass
class Prepared:
    doc: SpecDocument
    plan: Plan
    bundle: Bundle
    bundle_path: Path
    added: list[str]


@dataclass
class NodeReport:
    name: str
    role: str
    vpn_ip: str
    endpoint: str
    provider: str
    encoding: str
    sizes: dict[str, int]
    artifacts: list[str] = field(default_factory=list)


@dataclass
class Rendered:
    files: dict[str, tuple[bytes, int]]
    nodes: list[NodeReport]


def prepare(spec_path: Path, secrets_path: Path | None = None) -> Prepared:
    """Everything up to (not including) writing. Raises UserError on any problem."""
    doc = load_spec(spec_path)
    bundle_path = secrets_path or secrets_mod.bundle_path_for(spec_path)
    existing = secrets_mod.load(bundle_path, doc.spec.name)
    plan = build_plan(doc.spec, existing.addresses() if existing else None)
    bundle, added = secrets_mod.populate(existing, plan)
    return Prepared(doc, plan, bundle, bundle_path, added)


def node_user_data(plan: Plan, bundle: Bundle, member: Member, provider: str | None) -> tuple[bytes, NodeReport]:
    files = cloudinit.node_files(plan, bundle, member)
    variants = {enc: cloudinit.user_data(plan, member, files, enc) for enc in cloudinit.ENCODINGS}
    sizes = {enc: len(data) for enc, data in variants.items()}
    prov = providers.PROVIDERS[provider or member.provider or "none"]
    try:
        encoding = providers.choose(prov, sizes)
    except providers.DoesNotFit as exc:
        raise UserError(Problem(
            f"nodes.{member.name}", f"user-data is {sizes['plain']} bytes plain, {min(exc.sizes.values())} at best "
            f"({', '.join(f'{k} {v}' for k, v in exc.sizes.items())}); {prov.title} accepts at most {prov.limit}",
            "deliver this node with its seed ISO or a Packer image (`--provider none`), or pick a provider with a larger limit")) from None
    report = NodeReport(member.name, member.role, member.vpn_ip, member.endpoint or "(behind NAT)", prov.name, encoding, sizes)
    return variants[encoding], report


def render_all(plan: Plan, bundle: Bundle, provider: str | None = None, iso: bool = True, packer: bool = True,
               progress: Callable[[str], None] | None = None) -> Rendered:
    files: dict[str, tuple[bytes, int]] = {}
    reports = []
    for member in plan.nodes:
        base = f"nodes/{member.name}"
        ud, report = node_user_data(plan, bundle, member, provider)
        files[f"{base}/user-data"] = (ud, 0o600)
        files[f"{base}/meta-data"] = (cloudinit.meta_data(plan, member), 0o644)
        report.artifacts.append("user-data")
        net = cloudinit.network_config(member)
        if net is not None:
            files[f"{base}/network-config"] = (net, 0o644)
            report.artifacts.append("network-config")
        if iso:
            from .artifacts import iso as iso_art
            files[f"{base}/seed.iso"] = (iso_art.seed_iso(files[f"{base}/user-data"][0], files[f"{base}/meta-data"][0], net), 0o600)
            report.artifacts.append("seed.iso")
        if packer:
            from .artifacts import packer as packer_art
            for rel, item in packer_art.node_templates(plan, member).items():
                files[f"{base}/packer/{rel}"] = item
            report.artifacts.append("packer")
        reports.append(report)
        if progress:
            progress(member.name)
    if packer:
        from .artifacts import packer as packer_art
        for rel, item in packer_art.base_templates(plan).items():
            files[f"packer-base/{rel}"] = item
    for member in plan.admins:
        files.update(admin_art.files(plan, bundle, member))
    files["plan.json"] = (json.dumps(plan_summary(plan), indent=1, sort_keys=True).encode() + b"\n", 0o644)
    return Rendered(files, reports)


def write(prepared: Prepared, rendered: Rendered, out_dir: Path) -> Path:
    """Call inside ``locked``. Secrets first: outputs can be re-rendered from the bundle, never the reverse."""
    cluster_dir = out_dir / prepared.plan.cluster
    if prepared.added:
        secrets_mod.save(prepared.bundle, prepared.bundle_path)
    write_tree(cluster_dir, rendered.files)
    return cluster_dir


def locked(spec_path: Path, secrets_path: Path | None = None):
    """One run at a time per cluster: held from loading the bundle to the last write."""
    bundle_path = secrets_path or secrets_mod.bundle_path_for(spec_path)
    return lock(bundle_path.with_name(bundle_path.name + ".lock"))
