"""The diff as text a person reads (`wgkube plan`, render's "by hand") and as JSON a script parses."""
from __future__ import annotations

from .diff import Report


def format_report(report: Report, title: str) -> str:
    """Plain text, stable, no key material (manifests hold hashes only)."""
    lines = [title]
    if report.secrets:
        lines.append("secrets (made when you render; no key material is shown):")
        lines += [f"  + {item}" for item in report.secrets]
    else:
        lines.append("secrets: nothing new")
    lines.append("members:")
    width = max([len(m.name) for m in report.members] + [9])
    for mc in report.members:
        head = f"  {mc.name:<{width}}  {mc.status}"
        lines.append(head)
        for f in mc.changed():
            lines.append(f"  {'':<{width}}    {f.status:<8} {f.path}")
            for path, st, cat in f.inner:
                lines.append(f"  {'':<{width}}        {st:<8} {path}  ({cat})")
    cl = [f for f in report.cluster_files if f.status != "unchanged"]
    lines.append(f"  {'(cluster)':<{width}}  {'changed' if cl else 'unchanged'}")
    for f in cl:
        lines.append(f"  {'':<{width}}    {f.status:<8} {f.path}")
    if report.addons:  # issue 18
        lines.append("add-ons:")
        width_a = max(len(n) for n, _, _ in report.addons)
        lines += [f"  {name:<{width_a}}  {status:<9} {source}" for name, status, source in report.addons]
    if report.warnings:  # issue 17 item 2: admin certificates
        lines.append("warnings:")
        lines += [f"  ! {w}" for w in report.warnings]
    if report.actions:
        lines.append("by hand:")
        lines += [f"  - {a}" for a in report.actions]
    else:
        lines.append("by hand: nothing; no running member needs a change")
    return "\n".join(lines)


def report_json(report: Report) -> dict:
    return {
        "cluster": report.cluster,
        "baseline": report.baseline,
        "hub_must_update": report.hub_must_update,
        "members": {mc.name: {"kind": mc.kind, "status": mc.status,
                              "files": {f.path: {"status": f.status, "inner": [{"path": p, "status": s, "category": c} for p, s, c in f.inner]}
                                        for f in mc.files}} for mc in report.members},
        "cluster_files": {f.path: f.status for f in report.cluster_files},
        "actions": report.actions,
        "secrets": report.secrets,
    } | ({"addons": [{"name": n, "status": st, "source": src} for n, st, src in report.addons]} if report.addons else {}) \
      | ({"warnings": list(report.warnings)} if report.warnings else {})
