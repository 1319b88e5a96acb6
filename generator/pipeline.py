"""Stage 7, the pipeline: spec -> plan -> secrets -> artifacts -> files. Only the last step writes.

prepare() runs the stages up to the bundle, render_all() makes every artifact in memory, write()
saves the bundle and swaps in the new out/<cluster>/ (output.py), then diffs it (daytwo/)."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import secrets as secrets_mod
from .errors import Problem, UserError
from .fsutil import lock, remove_stale_temps
from .output import check_target, discard, read_manifest, recover, sha256, stage, switch
from .plan import Member, Plan, plan_summary, with_addons, with_kubernetes
from .secrets import Age, Bundle
from .skew import MINOR_RE
from .spec import SpecDocument, load_spec
from .daytwo import control_planes, upgrade
from .daytwo.planning import plan_for, rekey_bundle, renew_admin_bundle

if TYPE_CHECKING:
    from .daytwo.diff import Report


@dataclass
class Prepared:
    doc: SpecDocument
    plan: Plan
    bundle: Bundle
    bundle_path: Path
    added: list[str]
    # day two: age options for load/save, and what the last write means for running members
    age: Age | None = None
    convert: bool = False  # save even with nothing added: the bundle is being encrypted
    notes: list[str] = field(default_factory=list)
    report: Report | None = None
    warnings: list[str] = field(default_factory=list)  # printed, never fatal (docs/day-two.md)


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
    inner: dict[str, str] = field(default_factory=dict)  # path on the node -> sha256 (manifest, `wgkube plan`)


@dataclass
class Rendered:
    files: dict[str, tuple[bytes, int]]
    nodes: list[NodeReport]
    meta: dict = field(default_factory=dict)  # goes into manifest.json: options, per-node inner hashes


def prepare(spec_path: Path, secrets_path: Path | None = None, *, age: Age | None = None,
            rekey: str | None = None, rekey_join: bool = False, now: dt.datetime | None = None,
            doc: SpecDocument | None = None, check_registries: bool = True, renew_admin: str | None = None,
            upgrade_step: str | None = None, out_root: Path | None = None) -> Prepared:
    """Everything up to (not including) writing. Raises UserError on any problem.
    rekey: a member that gets a new WireGuard key (or, with rekey_join, a new join credential).
    renew_admin: an admin that gets a new certificate of the revocable form (`wgkube admin renew`).
    upgrade_step: `wgkube upgrade` (daytwo/upgrade.py STEPS) moves the Kubernetes upgrade on.
    out_root: where out/ is (default: beside the spec); its plan.json says which minor a bundle
    from before issue 17 runs."""
    age = age if age is not None else Age.from_env()
    now = now or dt.datetime.now(dt.timezone.utc)
    doc = doc if doc is not None else load_spec(spec_path)
    bundle_path = secrets_mod.locate(spec_path, secrets_path, age)
    existing = secrets_mod.load(bundle_path, doc.spec.name, age)
    changes: list[str] = []
    if rekey is not None:  # day two: `wgkube rekey` replaces one secret before planning
        existing, changes = rekey_bundle(doc, existing, rekey, rekey_join, now, bundle_path)
    if renew_admin is not None:  # issue 17 item 2: the hub's peer list does not change
        existing, changes = renew_admin_bundle(doc, existing, renew_admin, now, bundle_path)
    last = last_rendered_plan(spec_path, out_root, doc.spec.name)
    control_planes.check_kind_kept(doc, last)  # issue 14: one control plane or several, for good
    versions = upgrade.resolve(doc, existing, upgrade_step, rendered_minor(last))
    plan = with_kubernetes(with_addons(plan_for(doc.spec, existing, hub_changes=rekey is not None and not rekey_join, now=now), doc),
                           versions.control_plane, versions.upgrade_to)
    bundle, added = secrets_mod.populate(existing, plan, now)
    if upgrade_step is not None:
        changes += upgrade.record(bundle, versions)
    if check_registries:
        secrets_mod.check_registry_passwords(doc, bundle)
    convert = bool(age.recipients) and (not secrets_mod.is_encrypted(bundle_path)
                                        or sorted(age.recipients) != sorted(bundle.age_recipients))
    warnings = [w for w in (secrets_mod.loose_permissions(bundle_path), secrets_mod.legacy_join_warning(bundle, plan)) if w]
    return Prepared(doc, plan, bundle, bundle_path, changes + added, age=age, convert=convert, warnings=warnings)


def last_rendered_plan(spec_path: Path, out_root: Path | None, cluster: str) -> dict | None:
    """The last render's plan.json of this cluster (out/ beside the spec unless out_root), or None."""
    try:
        data = json.loads(((out_root if out_root is not None else spec_path.parent / "out") / cluster / "plan.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def rendered_minor(last_plan: dict | None) -> str | None:
    """The minor a render's plan.json (last_rendered_plan) says it used, or None."""
    minor = last_plan.get("kubernetes") if isinstance(last_plan, dict) else None
    return minor if isinstance(minor, str) and MINOR_RE.fullmatch(minor) else None


def precheck(spec_path: Path, secrets_path: Path | None, age: Age | None, doc: SpecDocument) -> None:
    """What can be refused before the lock file is made (a refused run leaves nothing behind):
    issue 18, a registry whose password is not in the bundle. prepare() checks it again, locked."""
    if doc.spec.registries:
        age = age if age is not None else Age.from_env()
        path = secrets_mod.locate(spec_path, secrets_path, age)
        secrets_mod.check_registry_passwords(doc, secrets_mod.load(path, doc.spec.name, age))


def inspect(spec_path: Path, secrets_path: Path | None = None, *, age: Age | None = None) -> Prepared:
    """What `wgkube check` needs: the spec, the bundle if there is one (checked), the plan.
    Makes no secrets and renders nothing, so it loads none of the rendering code."""
    age = age if age is not None else Age.from_env()
    doc = load_spec(spec_path)
    bundle_path = secrets_mod.locate(spec_path, secrets_path, age)
    existing = secrets_mod.load(bundle_path, doc.spec.name, age)
    last = last_rendered_plan(spec_path, None, doc.spec.name)
    control_planes.check_kind_kept(doc, last)
    versions = upgrade.resolve(doc, existing, None, rendered_minor(last))
    plan = with_kubernetes(with_addons(plan_for(doc.spec, existing), doc), versions.control_plane, versions.upgrade_to)
    if doc.spec.registries:  # issue 18: the same refusal as render, before anything is rendered
        secrets_mod.check_registry_passwords(doc, existing)
    warnings = [secrets_mod.loose_permissions(bundle_path)]
    if existing is not None:  # workers still on a join certificate from an older wgkube
        warnings.append(secrets_mod.legacy_join_warning(existing, plan))
    return Prepared(doc, plan, existing, bundle_path, [], age=age, warnings=[w for w in warnings if w])


def node_user_data(plan: Plan, bundle: Bundle, member: Member, provider: str | None) -> tuple[bytes, NodeReport]:
    from .artifacts import cloudinit
    return fit_user_data(plan, member, cloudinit.node_files(plan, bundle, member), provider)


def fit_user_data(plan: Plan, member: Member, files: list["cloudinit.NodeFile"], provider: str | None,
                  measure: bool = True) -> tuple[bytes, NodeReport]:
    """The node's files as user-data in the encoding its provider takes, and the size report.
    measure=False: the gzip'd size only when it is needed to choose (nobody reads the report)."""
    from .artifacts import cloudinit, providers
    prov = providers.PROVIDERS[provider or member.provider or "none"]
    plain = cloudinit.user_data(plan, member, files, "plain")
    variants = {"plain": plain}
    too_big = prov.limit is not None and len(plain) > prov.limit
    if measure or too_big:
        variants["gzip"] = cloudinit.gzip_bytes(plain)
    if too_big:
        # Per-file gz+b64 costs a gzip per file: only worth making when plain does not fit.
        variants["gz+b64"] = cloudinit.user_data(plan, member, files, "gz+b64")
    sizes = {enc: len(data) for enc, data in variants.items()}
    try:
        encoding = providers.choose(prov, sizes)
    except providers.DoesNotFit as exc:
        raise UserError(Problem(
            f"nodes.{member.name}", f"user-data is {sizes['plain']} bytes plain, {min(exc.sizes.values())} at best "
            f"({', '.join(f'{k} {v}' for k, v in exc.sizes.items())}); {prov.title} accepts at most {prov.limit}",
            "deliver this node with its seed ISO or a Packer image (`--provider none`), or pick a provider with a larger limit"
            + _largest_addon_files(files))) from None
    report = NodeReport(member.name, member.role, member.vpn_ip, member.endpoint or "(behind NAT)", prov.name, encoding, sizes,
                        inner={f.path: sha256(f.content.encode()) for f in files})
    return variants[encoding], report


def _largest_addon_files(files) -> str:
    """Issue 18: an embedded add-on manifest or values file counts like every other file; name the
    biggest ones, so the message says what to move to an https URL."""
    from .artifacts.addons import FILES_DIR
    big = sorted((f for f in files if f.path.startswith(FILES_DIR + "/")), key=lambda f: -len(f.content))[:3]
    if not big:
        return ""
    return ("; the largest embedded add-on files are " + ", ".join(f"{f.path} ({len(f.content.encode())} bytes)" for f in big)
            + ": serve a big manifest over https (manifest: <URL> with sha256:) instead")


def render_all(plan: Plan, bundle: Bundle, provider: str | None = None, iso: bool = True, packer: bool = True,
               progress: Callable[[str], None] | None = None, measure: bool = True) -> Rendered:
    """Every artifact in memory. measure=False skips what only the size report needs (a gzip per node)."""
    # Imported here: `check`, `plan --help` and the like never load the renderers.
    from .artifacts import admin as admin_art
    from .artifacts import cloudinit, hub_update
    from .artifacts import iso as iso_art
    from .artifacts import packer as packer_art
    files: dict[str, tuple[bytes, int]] = {}
    reports = []
    for member in plan.nodes:
        base = f"nodes/{member.name}"
        node_files = cloudinit.node_files(plan, bundle, member)
        ud, report = fit_user_data(plan, member, node_files, provider, measure)
        files[f"{base}/user-data"] = (ud, 0o600)
        files[f"{base}/meta-data"] = (cloudinit.meta_data(plan, member), 0o644)
        # day two: the node's WireGuard config on its own, to install on a running node (rekey);
        # the same text as in its user-data, not rendered a second time.
        wg_path = f"/etc/wireguard/{plan.interface}.conf"
        files[f"wireguard/{member.name}/{plan.interface}.conf"] = (next(f.content for f in node_files if f.path == wg_path).encode(), 0o600)
        report.artifacts.append("user-data")
        net = cloudinit.network_config(member)
        if net is not None:
            files[f"{base}/network-config"] = (net, 0o644)
            report.artifacts.append("network-config")
        if iso:
            files[f"{base}/seed.iso"] = (iso_art.seed_iso(files[f"{base}/user-data"][0], files[f"{base}/meta-data"][0], net), 0o600)
            report.artifacts.append("seed.iso")
        if packer:
            first_boot = next(f.content for f in node_files if f.path == "/usr/local/sbin/wgkube-firstboot")
            for rel, item in packer_art.node_templates(plan, member, first_boot).items():
                files[f"{base}/packer/{rel}"] = item
            report.artifacts.append("packer")
        reports.append(report)
        if progress:
            progress(member.name)
    if packer:
        for rel, item in packer_art.base_templates(plan).items():
            files[f"packer-base/{rel}"] = item
    for member in plan.admins:
        files.update(admin_art.files(plan, bundle, member))
    # issue 18: the add-on files as the control plane has them, for `wgkube plan`'s apply command
    for step in plan.addons:
        if step.kind == "manifest":
            files[f"addons/{step.name}.yaml"] = (step.content.encode(), 0o600)
        elif step.kind == "helm" and step.content:
            files[f"addons/{step.name}.values.yaml"] = (step.content.encode(), 0o600)
    files["plan.json"] = (json.dumps(plan_summary(plan), indent=1, sort_keys=True).encode() + b"\n", 0o644)
    # day two: the hub's live peer update (public keys only), applied over the VPN
    if plan.mesh is None:
        hub_conf = files[f"wireguard/{plan.hub}/{plan.interface}.conf"][0].decode()
        files[f"hub-update/{hub_update.hub_update_name(plan)}"] = (hub_update.hub_update_script(plan, bundle, hub_conf).encode(), 0o644)
    else:
        # issue 13, mesh: every node may need a live peer update (a public member added or removed
        # changes every member's peer list); `wgkube plan` says which ones do.
        for member in plan.nodes:
            conf = files[f"wireguard/{member.name}/{plan.interface}.conf"][0].decode()
            files[hub_update.member_update_path(member)] = (hub_update.member_update_script(plan, bundle, member, conf).encode(), 0o644)
    if plan.several_control_planes:  # issue 14: every node's local API endpoint, for `wgkube plan`
        from .artifacts import apiproxy
        files.update(apiproxy.update_files(plan, bundle))
    if plan.upgrade_to is not None:  # issue 17: `wgkube upgrade` under way
        from .artifacts import upgrade as upgrade_art
        files.update(upgrade_art.files(plan, bundle))
    meta = {"options": {"provider": provider, "iso": iso, "packer": packer},
            "node_files": {r.name: r.inner for r in reports}}
    return Rendered(files, reports, meta)


def write(prepared: Prepared, rendered: Rendered, out_dir: Path) -> Path:
    """Call inside ``locked``. Order (docs/day-two.md, "Nothing lost"):
    1. refuse, touching nothing, if out/<cluster> is anything wgkube cannot prove it wrote;
    2. stage the complete new generation (every byte written and synced once, not yet visible), so
       a full disk, a read-only folder or a missing permission stops the run here;
    3. save the bundle (if anything was added): the keys in the staged files are now in it;
    4. swap the new generation in at out/<cluster> (one atomic renameat2 exchange of two
       folders; output.py) and remove the previous one.
    Outputs can be re-rendered from the bundle, never the reverse: the visible out/ never
    holds a key the bundle lacks. Afterwards prepared.notes says what running members need."""
    from .daytwo.diff import diff
    cluster_dir = out_dir / prepared.plan.cluster
    check_target(out_dir, cluster_dir)
    recover(cluster_dir)  # before reading what is there: a killed switch may have to be undone
    before = read_manifest(cluster_dir)
    old_plan = _read_json(cluster_dir / "plan.json")
    remove_stale_temps(prepared.bundle_path)  # a killed earlier run's half-written bundle copy
    gen = stage(cluster_dir, rendered.files, rendered.meta)
    if prepared.added or prepared.convert:
        try:
            prepared.bundle_path = secrets_mod.save(prepared.bundle, prepared.bundle_path, prepared.age)
        except BaseException:
            discard(gen)
            raise
    switch(cluster_dir, gen)
    after = read_manifest(cluster_dir) or {"files": {}}
    prepared.report = diff(before, after, prepared.plan, prepared.bundle, str(cluster_dir), prepared.added, old_plan)
    prepared.notes = prepared.report.actions if before is not None else []
    return cluster_dir


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def locked(spec_path: Path, secrets_path: Path | None = None):
    """One run at a time per cluster: held from loading the bundle to the last write.
    Named after the plain bundle, so the plain and the encrypted bundle share one lock."""
    bundle_path = secrets_path or secrets_mod.bundle_path_for(spec_path)
    name = bundle_path.name.removesuffix(secrets_mod.AGE_SUFFIX)
    return lock(bundle_path.with_name(name + ".lock"))
