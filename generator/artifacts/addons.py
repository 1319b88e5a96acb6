"""Issue 18: what the control plane gets for add-ons and registry pull secrets (docs/addons.md).

Files on the control plane only: the add-on script (cloudinit/addons.sh.j2, run by the first-boot
phase "addons"), each embedded manifest, each Helm values file, and one .dockerconfigjson per
registry (0600: it holds the password, which comes from the secrets bundle). Workers get none.
"""
from __future__ import annotations

import base64
import json

from .. import versions
from ..plan import Member, Plan
from ..secrets import Bundle
from .templates import render

FILES_DIR = "/etc/wgkube/addons"
SCRIPT_PATH = "/usr/local/sbin/wgkube-addons"


def wanted(plan: Plan, member: Member) -> bool:
    """The control plane of a plan with add-ons or registries; nothing anywhere else."""
    return plan.initialises(member) and bool(plan.addons or plan.registries)


def _go_json(value: object) -> str:
    """JSON as Go's encoding/json writes it (what kubectl's create secret docker-registry uses):
    compact, UTF-8 as is, and <, >, & and U+2028/U+2029 escaped as \\u003c ... (HTMLEscape)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def dockerconfigjson(server: str, username: str, password: str) -> str:
    """The .dockerconfigjson of one registry, byte for byte what `kubectl create secret docker-registry
    --docker-server S --docker-username U --docker-password P` stores (checked against kubectl in
    tests/test_addons.py): {"auths":{S:{"username","password","auth": base64(U:P)}}}, no email."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return _go_json({"auths": {server: {"username": username, "password": password, "auth": auth}}})


def step_names(plan: Plan) -> list[str]:
    """The add-on script's steps in the order it runs them: each names its state files
    (/var/lib/wgkube/addons/<step>.applied | .failed | .log), which `wgkube status` reads."""
    return ([f"registry-{i}-{ns}" for i, r in enumerate(plan.registries) for ns in r.namespaces]
            + [f"addon-{a.name}" for a in plan.addons])


def registry_file(index: int) -> str:
    return f"registry-{index}.dockerconfigjson"


def script(plan: Plan) -> str:
    pulls: dict[str, list[str]] = {}
    for r in plan.registries:
        if r.patch_default_service_account:
            for ns in r.namespaces:
                pulls.setdefault(ns, []).append(_go_json({"name": r.secret_name}))
    kinds = {a.kind for a in plan.addons}
    return render("addons.sh.j2", cluster=plan.cluster, addons=plan.addons, registries=plan.registries,
                  files_dir=FILES_DIR, registry_files={r.server: registry_file(i) for i, r in enumerate(plan.registries)},
                  pulls={ns: ",".join(items) for ns, items in pulls.items()} | {ns: "" for r in plan.registries
                                                                                for ns in r.namespaces if ns not in pulls},
                  manifests="manifest" in kinds, urls="url" in kinds, helm="helm" in kinds,
                  helm_version=versions.HELM_VERSION,
                  helm_urls={a: versions.HELM_URL.format(version=versions.HELM_VERSION, arch=a) for a in versions.HELM_SHA256},
                  helm_sha256=versions.HELM_SHA256)


def node_files(plan: Plan, bundle: Bundle) -> list[tuple[str, str, int]]:
    """(path, content, mode) for the control plane. Manifests and values may hold secrets of their own: 0600."""
    files = [(SCRIPT_PATH, script(plan), 0o755)]
    for i, r in enumerate(plan.registries):
        # Exactly kubectl's bytes, no final newline (so write_files carries it as base64): the secret
        # made from it at boot holds what `kubectl create secret docker-registry` would have stored.
        files.append((f"{FILES_DIR}/{registry_file(i)}", dockerconfigjson(r.server, r.username, bundle.registries[r.server]), 0o600))
    for a in plan.addons:
        if a.kind == "manifest":
            files.append((f"{FILES_DIR}/{a.name}.yaml", a.content, 0o600))
        elif a.kind == "helm" and a.content:
            files.append((f"{FILES_DIR}/{a.name}.values.yaml", a.content, 0o600))
    return files


def apply_command(plan: Plan, step, kubeconfig: str, out_hint: str) -> str:
    """The one line that applies a changed add-on to a running cluster over the VPN (`wgkube plan`)."""
    from .encode import sh_dq
    kc = f"kubectl --kubeconfig {sh_dq(kubeconfig)}"
    if step.kind == "manifest":
        return f"{kc} apply -f {sh_dq(f'{out_hint}/addons/{step.name}.yaml')}"
    if step.kind == "url":
        tmp = f"/tmp/wgkube-addon-{step.name}.yaml"
        return (f"curl -fsSL --proto '=https' -o {tmp} {sh_dq(step.url)} && echo {sh_dq(step.sha256 + '  ' + tmp)} | sha256sum -c - "
                f"&& {kc} apply -f {tmp}")
    values = f" --values {sh_dq(f'{out_hint}/addons/{step.name}.values.yaml')}" if step.content else ""
    return (f"helm upgrade --install {step.name} {step.chart} --repo {sh_dq(step.repository)} --version {sh_dq(step.version)} "
            f"--namespace {step.namespace} --create-namespace --kubeconfig {sh_dq(kubeconfig)}{values}")
