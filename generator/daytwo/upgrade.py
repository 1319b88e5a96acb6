"""Issue 17: moving a running cluster to the next Kubernetes minor, kept as state in the bundle.

The bundle records the minor the control plane runs (`kubernetes.control_plane`) and, while an
upgrade is under way, the minor it goes to (`kubernetes.upgrade_to`). Two stages, in kubeadm's
order (kubernetes.io "Upgrading kubeadm clusters": the control plane first, then the nodes):

  control_plane 1.36, upgrade_to 1.37   the control plane goes first; new nodes still install
                                        1.36 (a kubelet must never be newer than the API server)
  control_plane 1.37, upgrade_to 1.37   the control plane is done; workers one at a time; new
                                        nodes install 1.37
  control_plane 1.37                    done

`wgkube upgrade SPEC` starts (or shows) it, `--control-plane-done` and `--workers-done` move it
on; render and plan follow whatever the bundle says. Every refusal names the spec's
`kubernetes:` field, says why (skew.py) and what to do.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from ..secrets import Bundle
from ..skew import kubelet_problem, next_minor, upgrade_problem
from ..spec import SpecDocument

STEPS = ("start", "control-plane-done", "workers-done")


@dataclass(frozen=True)
class Versions:
    control_plane: str           # what the first-boot files of every node install
    upgrade_to: str | None       # an upgrade under way (its scripts are rendered), or None

    @property
    def stage(self) -> str | None:
        if self.upgrade_to is None:
            return None
        return "control-plane" if self.upgrade_to != self.control_plane else "workers"


def recorded(bundle: Bundle | None) -> Versions | None:
    rec = bundle.kubernetes if bundle is not None else {}
    if "control_plane" not in rec:
        return None
    return Versions(rec["control_plane"], rec.get("upgrade_to"))


def resolve(doc: SpecDocument, existing: Bundle | None, step: str | None = None, last_rendered: str | None = None) -> Versions:
    """The minors a render uses, given the spec, the bundle and an upgrade step (None: a plain
    render or plan). Raises UserError, naming `kubernetes`, for anything kubeadm or the skew
    policy would refuse. last_rendered: the minor of out/<cluster>/plan.json, which stands in for
    the record of a bundle from before issue 17."""
    wanted = doc.spec.kubernetes
    now = recorded(existing)
    if now is None and existing is not None and last_rendered is not None:
        now = Versions(last_rendered, None)

    def refuse(message: str, hint: str) -> UserError:
        return UserError(doc.problem(("kubernetes",), message, hint), doc.source)

    if now is None:  # a first render, or a bundle from before issue 17: the spec is what runs
        if step in ("control-plane-done", "workers-done"):
            raise refuse("no upgrade is under way (the bundle records no control-plane minor yet)",
                         "render once, then bump kubernetes: by one minor and run `wgkube upgrade SPEC`")
        if step == "start":
            raise refuse(f"the control plane runs {wanted}, the minor the spec names: there is nothing to upgrade",
                         f"set kubernetes: \"{next_minor(wanted)}\" first, then run `wgkube upgrade SPEC`")
        return Versions(wanted, None)
    cp, to = now.control_plane, now.upgrade_to
    if to is not None and wanted != to:
        raise refuse(f"an upgrade from {cp if to != cp else 'the previous minor'} to {to} is under way "
                     f"(stage: {now.stage}), but the spec now says {wanted}",
                     f"set kubernetes: \"{to}\" back and finish it (`wgkube upgrade SPEC` shows the next step); "
                     "kubeadm has no downgrade")
    if step == "start":
        if to is None:
            if wanted == cp:
                raise refuse(f"the control plane runs {cp}, the minor the spec names: there is nothing to upgrade",
                             f"set kubernetes: \"{next_minor(cp)}\" first, then run `wgkube upgrade SPEC`")
            problem = upgrade_problem(cp, wanted)
            if problem:
                raise refuse(problem, f"set kubernetes: \"{next_minor(cp)}\" (the next minor), or back to \"{cp}\"")
        return Versions(cp, wanted)
    if step == "control-plane-done":
        if to is None:
            raise refuse("no upgrade is under way", "start one with `wgkube upgrade SPEC`")
        return Versions(to, to)
    if step == "workers-done":
        if to is None:
            raise refuse("no upgrade is under way", "start one with `wgkube upgrade SPEC`")
        if cp != to:
            raise refuse(f"the control plane has not been marked upgraded to {to} yet: workers go after it",
                         "run the control plane's script first, then `wgkube upgrade SPEC --control-plane-done`")
        return Versions(cp, None)
    if to is None and wanted != cp:
        problem = upgrade_problem(cp, wanted)
        if problem:
            raise refuse(problem, f"keep kubernetes: \"{cp}\", or upgrade one minor at a time with `wgkube upgrade SPEC`")
        raise refuse(f"the control plane runs {cp} (the secrets bundle records it): new nodes would install {wanted}, "
                     f"and {kubelet_problem(wanted, cp)} (version skew policy)",
                     "upgrade the running cluster first: `wgkube upgrade SPEC` renders the scripts, in kubeadm's order; "
                     f"or set kubernetes: \"{cp}\" back")
    return now


def record(bundle: Bundle, versions: Versions) -> list[str]:
    """Write versions into the bundle (already a copy); what changed, for the run's report."""
    before = dict(bundle.kubernetes)
    bundle.kubernetes = {"control_plane": versions.control_plane} | (
        {"upgrade_to": versions.upgrade_to} if versions.upgrade_to else {})
    if bundle.kubernetes == before:
        return []
    stage = versions.stage
    if stage == "control-plane":
        return [f"upgrade to Kubernetes {versions.upgrade_to} started: the control plane goes first"]
    if stage == "workers":
        return [f"control plane marked upgraded to {versions.control_plane}: new nodes install it; workers next"]
    return [f"upgrade to Kubernetes {versions.control_plane} finished"]
