"""Packer templates (HCL2): a golden image per node, and a secret-free base image per role.

A node's template never contains its secrets: ``file`` provisioners upload the rendered
``../user-data``, ``../meta-data`` (and ``../network-config``) by path, and ``provision.sh``
moves them into /var/lib/cloud/seed/nocloud, so an instance of the image assembles itself
with no provider user-data at all.

Packages and images come from the node's own first-boot script run with ``--bake``. It is
written beside the template as ``wgkube-firstboot`` (the same text as in user-data; it holds no
secrets), rather than dug out of user-data at build time: user-data may be gzip'd whole or per
file, and the base templates have no user-data at all.

The qemu source boots the base cloud image with ``qemu-build-seed.iso``, a NoCloud seed that
only creates the login user with the spec's public SSH keys, so Packer can log in. It is not
the node's seed (that would start kubeadm inside the build).

Everything here is a pure function of the plan: the same plan gives the same bytes.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from functools import lru_cache

import yaml

from ..plan import Member, Plan
from ..spec import OS_FAMILIES
from .templates import render
from . import cloudinit, iso

ROLES = ("control-plane", "worker")
TEMPLATE = "wgkube.pkr.hcl"
BUILD_SEED = "qemu-build-seed.iso"


@dataclass(frozen=True)
class BaseImages:
    """Where each cloud keeps a stock image of an OS. Drifts with time: bump here; every value
    is only a variable default in the template, overridable with -var."""
    qemu_url: str
    qemu_checksum: str
    hcloud: str
    digitalocean: str
    aws_name: str
    aws_owner: str
    aws_user: str


_UBUNTU = "099720109477"  # Canonical's AWS account
OS_IMAGES = {
    "ubuntu-24.04": BaseImages(
        "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
        "file:https://cloud-images.ubuntu.com/noble/current/SHA256SUMS",
        "ubuntu-24.04", "ubuntu-24-04-x64", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*", _UBUNTU, "ubuntu"),
    "ubuntu-22.04": BaseImages(
        "https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img",
        "file:https://cloud-images.ubuntu.com/jammy/current/SHA256SUMS",
        "ubuntu-22.04", "ubuntu-22-04-x64", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*", _UBUNTU, "ubuntu"),
    "debian-12": BaseImages(
        "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2",
        "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS",
        "debian-12", "debian-12-x64", "debian-12-amd64-*", "136693071363", "admin"),
    "rocky-9": BaseImages(
        "https://dl.rockylinux.org/pub/rocky/9/images/x86_64/Rocky-9-GenericCloud-Base.latest.x86_64.qcow2",
        "file:https://dl.rockylinux.org/pub/rocky/9/images/x86_64/CHECKSUM",
        "rocky-9", "rockylinux-9-x64", "Rocky-9-EC2-Base-9.*x86_64", "792107900819", "rocky"),
    "almalinux-9": BaseImages(
        "https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/AlmaLinux-9-GenericCloud-latest.x86_64.qcow2",
        "file:https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/CHECKSUM",
        "alma-9", "almalinux-9-x64", "AlmaLinux OS 9.* x86_64", "764336703387", "ec2-user"),
    # Red Hat publishes no anonymous qcow2 and neither Hetzner nor DigitalOcean offer RHEL:
    # empty defaults make Packer ask for them (-var) when that source is built.
    "rhel-9": BaseImages("", "", "", "", "RHEL-9.*_HVM-*-x86_64-*", "309956199498", "ec2-user"),
}


def hcl(value: str | bool) -> str:
    """An HCL2 literal. JSON string escapes are valid HCL; `${` and `%{` must not interpolate."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def _template(*, title: str, run_dir: str, image_name: str, image_label: str, os_name: str, plan: Plan,
              uploads: list[str], seed: bool) -> bytes:
    images = OS_IMAGES[os_name]
    return render(
        f"{TEMPLATE}.j2", title=title, run_dir=run_dir, seed=seed, uploads=uploads,
        example_source="qemu.wgkube", image_name=hcl(image_name), image_label=hcl(image_label),
        qemu_output=hcl(f"output-{image_name}"), cluster_name=plan.cluster, login_user=hcl(plan.login_user), cluster=hcl(plan.cluster),
        encrypt=hcl(seed),  # a node image holds private keys: encrypt its EBS snapshot
        os={f.name: hcl(getattr(images, f.name)) for f in dataclasses.fields(BaseImages)},
    ).encode()


def _provision(*, title: str, plan: Plan, node: str | None, seed_files: list[str]) -> bytes:
    return render("provision.sh.j2", title=title, seed=node is not None, node=node, seed_files=seed_files,
                  login_user=plan.login_user).encode()


def build_seed(plan: Plan, hostname: str) -> bytes:
    """NoCloud seed for the qemu build VM only: the login user with the spec's public keys.
    The instance-id differs from the node's, so the node's seed still counts as new."""
    return iso.seed_iso(_build_user_data(plan.login_user, tuple(plan.ssh_keys)), _build_meta_data(hostname))


@lru_cache(maxsize=8)
def _build_user_data(login_user: str, ssh_keys: tuple[str, ...]) -> bytes:
    """The same for every node of a cluster: dumped once per run."""
    user: dict = {"name": login_user, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                  "ssh_authorized_keys": list(ssh_keys)}
    config = {"users": [user], "ssh_pwauth": False}
    return ("#cloud-config\n# wgkube: Packer qemu build access only; not a node's seed.\n"
            + yaml.safe_dump(config, sort_keys=False, width=4096)).encode()


# A host name YAML prints as a plain scalar, unquoted, on one line: letters first (never a
# number, a bool or null), then only letters, digits, dots and dashes.
_PLAIN_NAME = re.compile(r"[a-z][a-z0-9.-]{0,200}")


def _build_meta_data(hostname: str) -> bytes:
    if _PLAIN_NAME.fullmatch(hostname) and hostname not in _YAML_WORDS:
        return f"instance-id: {hostname}\nlocal-hostname: {hostname}\n".encode()
    return yaml.safe_dump({"instance-id": hostname, "local-hostname": hostname}).encode()


_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def node_templates(plan: Plan, member: Member, first_boot: str | None = None) -> dict[str, tuple[bytes, int]]:
    """nodes/<node>/packer/: template, provisioning script, bake script, qemu build seed.
    first_boot: the node's first-boot script as its user-data holds it (the control plane's
    depends on the bundle: its admins' bindings phase, issue 17 item 2); else rendered here."""
    seed_files = ["user-data", "meta-data"]
    if cloudinit.network_config(member) is not None:
        seed_files.append("network-config")
    uploads = ["wgkube-firstboot"] + [f"../{name}" for name in seed_files]
    title = f"golden image of node {member.name} ({member.role}, {member.os}) of cluster {plan.cluster}"
    name = f"wgkube-{plan.cluster}-{member.name}"
    return {
        TEMPLATE: (_template(title=title, run_dir=f"nodes/{member.name}/packer", image_name=name, image_label=member.name,
                             os_name=member.os or "debian-12", plan=plan, uploads=uploads, seed=True), 0o644),
        "provision.sh": (_provision(title=title, plan=plan, node=member.name, seed_files=seed_files), 0o755),
        "wgkube-firstboot": ((first_boot if first_boot is not None else cloudinit.first_boot_script(plan, member)).encode(), 0o755),
        BUILD_SEED: (build_seed(plan, f"{name}-build"), 0o644),
    }


def _role_member(plan: Plan, role: str, family: str) -> Member:
    """A stand-in member for a role's bake script: only role, OS family and plan-wide values matter."""
    model = next((m for m in plan.nodes if m.role == role), plan.hub_member)
    os_name = next(o for o, f in OS_FAMILIES.items() if f == family)
    return dataclasses.replace(model, name=f"{role}-image", role=role, os=os_name, package_family=family,
                               static_network=None, provider=None)


def base_templates(plan: Plan) -> dict[str, tuple[bytes, int]]:
    """packer-base/<role>/: packages and images only, for any instance of that role."""
    families = sorted(set(OS_FAMILIES.values()))
    out: dict[str, tuple[bytes, int]] = {}
    for role in ROLES:
        # Default to the OS most of this role's nodes run (the first one on a tie).
        oses = [m.os for m in plan.nodes if m.role == role and m.os] or [plan.hub_member.os or "debian-12"]
        os_name = max(dict.fromkeys(oses), key=oses.count)
        title = f"base image for {role} nodes of cluster {plan.cluster} (no secrets)"
        name = f"wgkube-{plan.cluster}-{role}"
        scripts = {f"wgkube-firstboot-{fam}": cloudinit.first_boot_script(plan, _role_member(plan, role, fam)).encode()
                   for fam in families}
        out[f"{role}/{TEMPLATE}"] = (_template(title=title, run_dir=f"packer-base/{role}", image_name=name, image_label=role,
                                               os_name=os_name, plan=plan, uploads=sorted(scripts), seed=False), 0o644)
        out[f"{role}/provision.sh"] = (_provision(title=title, plan=plan, node=None, seed_files=[]), 0o755)
        out.update({f"{role}/{script}": (text, 0o755) for script, text in scripts.items()})
        out[f"{role}/{BUILD_SEED}"] = (build_seed(plan, f"{name}-build"), 0o644)
    return out
