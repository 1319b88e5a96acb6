"""Per-node cloud-init: the files a node gets, user-data, meta-data and network-config.

``node_files`` decides what a node receives (secrets by role: the PKI only on the control
plane; workers get their own key, their join token and the CA hash). ``user_data`` packs them as
#cloud-config in one of three encodings; ``extract_files`` reads any of them back, for the lab
and the tests, so they check exactly what a node would get.
"""
from __future__ import annotations

import base64
import gzip
import io
import re
from functools import lru_cache
from dataclasses import dataclass

import yaml

from .. import facts, versions
from ..plan import Member, Plan
from ..secrets import Bundle
from .encode import comment, yaml_scalar
from .templates import render
from . import addons, admin_rbac, apiproxy, failover, firewall, join, kubeadm, status, wireguard

ENCODINGS = ("plain", "gz+b64", "gzip")


@dataclass(frozen=True)
class NodeFile:
    path: str
    content: str
    mode: int = 0o644


def first_boot_script(plan: Plan, member: Member, admin_bindings: bool = False) -> str:
    """Same for every node of one role and package family but for the node's name: rendered once
    per kind with a stand-in name, which is then replaced (tests compare with a direct render).
    admin_bindings: the control plane applies the admins' ClusterRoleBindings (admin_rbac.py)."""
    text = _first_boot_for_kind(member.role, member.package_family, member.os, plan.kubernetes, plan.cluster,
                                plan.api_address, plan.api_port, plan.interface, plan.port, addons.wanted(plan, member),
                                admin_bindings, plan.initialises(member), plan.api_endpoint, plan.several_control_planes)
    return text.replace(_NAME_STANDIN, member.name)


_NAME_STANDIN = "@@wgkube-node-name@@"


@lru_cache(maxsize=64)
def _first_boot_for_kind(role: str, family: str | None, os_name: str | None, kubernetes: str, cluster: str, api_address: str,
                         api_port: int, interface: str, port: int, with_addons: bool = False,
                         admin_bindings: bool = False, init: bool = False, api_endpoint: str = "",
                         several_control_planes: bool = False) -> str:
    from types import SimpleNamespace
    plan = SimpleNamespace(kubernetes=kubernetes, cluster=cluster, api_address=api_address, api_port=api_port,
                           interface=interface, port=port, api_endpoint=api_endpoint,
                           several_control_planes=several_control_planes)
    member = SimpleNamespace(name=_NAME_STANDIN, role=role, package_family=family, os=os_name)
    return render_first_boot(plan, member, with_addons, admin_bindings, init)


def render_first_boot(plan, member, with_addons: bool = False, admin_bindings: bool = False,
                      init: bool | None = None) -> str:
    """The first-boot script rendered directly (the reference for first_boot_script). Every URL,
    package name and version in it comes from generator/versions.py. init: this node runs
    `kubeadm init` (default: it is a control plane and the only one)."""
    apt = member.package_family == "apt"
    minor = plan.kubernetes
    if init is None:
        init = plan.initialises(member)
    return render("first-boot.sh.j2", plan=plan, member=member, runtime=kubeadm.runtime_for(member),
                  init=init, apiproxy=plan.several_control_planes,
                  k8s_repo=(versions.PKGS_K8S_DEB if apt else versions.PKGS_K8S_RPM).format(minor=minor),
                  crio_repo=(versions.CRIO_DEB if apt else versions.CRIO_RPM).format(minor=minor),
                  crio_package=versions.CRIO_PACKAGE, crio_service=versions.CRIO_SERVICE,
                  crio_dropin=versions.CRIO_DROPIN, k8s_packages=" ".join(versions.K8S_PACKAGES), k8s_held=" ".join(versions.K8S_HELD),
                  apt_packages=" ".join(versions.APT_PACKAGES), dnf_packages=" ".join(versions.DNF_PACKAGES),
                  apt_lock_timeout=versions.APT_LOCK_TIMEOUT,
                  cri_socket=kubeadm.CRI_SOCKETS[kubeadm.runtime_for(member)],
                  flannel_image=versions.FLANNEL_IMAGE, cni_plugin_image=versions.FLANNEL_CNI_PLUGIN_IMAGE,
                  addons=with_addons, addons_script=addons.SCRIPT_PATH,
                  admin_bindings=admin_bindings, admin_bindings_path=admin_rbac.BINDINGS_PATH)


def flannel_manifest(plan: Plan) -> str:
    return render("flannel.yaml.j2", plan=plan, flannel_version=versions.FLANNEL_VERSION,
                  flannel_image=versions.FLANNEL_IMAGE, cni_plugin_image=versions.FLANNEL_CNI_PLUGIN_IMAGE,
                  vxlan_port=facts.FLANNEL_VXLAN_PORT)


@lru_cache(maxsize=32)
def _same_everywhere(template: str, interface: str) -> str:
    """Templates that depend on nothing but the interface name: rendered once per run."""
    return render(template, interface=interface)


def node_files(plan: Plan, bundle: Bundle, member: Member) -> list[NodeFile]:
    iface = plan.interface
    same = lambda t: _same_everywhere(t, iface)  # noqa: E731
    bindings = admin_rbac.manifest(plan, bundle) if admin_rbac.wanted(plan, bundle, member) else None
    files = [
        NodeFile(f"/etc/wireguard/{iface}.conf", wireguard.wg_conf(plan, bundle, member), 0o600),
        NodeFile("/etc/wgkube/firewall.nft", firewall.ruleset(plan, member), 0o600),
        NodeFile("/etc/systemd/system/wgkube-firewall.service", same("wgkube-firewall.service.j2")),
        NodeFile(f"/etc/systemd/system/wg-quick@{iface}.service.d/10-wgkube.conf", same("wg-after-firewall.conf.j2")),
        NodeFile("/etc/sysctl.d/90-wgkube.conf", same("sysctl.conf.j2")),
        NodeFile("/etc/modules-load.d/wgkube.conf", same("modules.conf.j2")),
        NodeFile("/etc/wgkube/kubeadm.yaml", kubeadm.config(plan, bundle, member), 0o600),
        NodeFile("/etc/systemd/system/kubelet.service.d/20-wgkube.conf", same("kubelet-after-wg.conf.j2")),
        NodeFile("/etc/udev/rules.d/90-wgkube-flannel.rules", same("flannel-offload.rules.j2")),
        NodeFile("/usr/local/sbin/wgkube-firstboot", first_boot_script(plan, member, bindings is not None), 0o755),
        NodeFile("/etc/systemd/system/wgkube-firstboot.service", same("wgkube-firstboot.service.j2")),
    ]
    if member.role == "control-plane":
        # Every control plane holds the pre-made CAs and SA keys: the first runs kubeadm init with
        # them, the others kubeadm join --control-plane (issue 14; kubeadm's "static workflow" of
        # the join --control-plane KEP: shared certificates copied in before the join).
        p = bundle.pki
        files += [
            NodeFile("/etc/kubernetes/pki/ca.crt", p["ca"]["cert"]),
            NodeFile("/etc/kubernetes/pki/ca.key", p["ca"]["key"], 0o600),
            NodeFile("/etc/kubernetes/pki/front-proxy-ca.crt", p["front_proxy_ca"]["cert"]),
            NodeFile("/etc/kubernetes/pki/front-proxy-ca.key", p["front_proxy_ca"]["key"], 0o600),
            NodeFile("/etc/kubernetes/pki/etcd/ca.crt", p["etcd_ca"]["cert"]),
            NodeFile("/etc/kubernetes/pki/etcd/ca.key", p["etcd_ca"]["key"], 0o600),
            NodeFile("/etc/kubernetes/pki/sa.key", p["sa"]["key"], 0o600),
            NodeFile("/etc/kubernetes/pki/sa.pub", p["sa"]["pub"]),
        ]
    if plan.initialises(member):
        files.append(NodeFile("/etc/wgkube/flannel.yaml", flannel_manifest(plan)))
        if bindings is not None:
            # issue 17 item 2: one ClusterRoleBinding per admin of the revocable form (none for a
            # bundle of old-form certificates only: its files stay byte for byte).
            files.append(NodeFile(admin_rbac.BINDINGS_PATH, bindings))
    else:
        # The public CA certificate: lets a joining node check the API before it joins.
        files.append(NodeFile("/etc/wgkube/ca.crt", bundle.pki["ca"]["cert"]))
        if kubeadm.join_mode(plan, bundle, member) == "certificate":
            # A join certificate an older wgkube made (kubeadm-join.yaml.j2 points discovery.file
            # here): kept as it was. A worker with its own token gets it in kubeadm.yaml only.
            files.append(NodeFile(join.JOIN_KUBECONFIG, join.join_kubeconfig(plan, bundle, member), 0o600))
    # issue 14: the local API endpoint (haproxy on loopback to every control plane); none with one.
    files += [NodeFile(path, content, mode) for path, content, mode in apiproxy.node_files(plan, member)]
    if failover.wanted(plan, member):
        # issue 13, mesh: a member behind NAT keeps its catch-all on a relay that answers.
        files += [
            NodeFile(failover.CONF_PATH, failover.conf(plan, bundle, member)),
            NodeFile(failover.SCRIPT_PATH, failover.script(), 0o755),
            NodeFile(failover.UNIT_PATH, failover.unit(iface)),
            NodeFile(failover.dropin_path(iface), failover.dropin()),
        ]
    # Add-ons and registry pull secrets (issue 18): the control plane only, and only when the spec has them.
    if addons.wanted(plan, member):
        files += [NodeFile(path, content, mode) for path, content, mode in addons.node_files(plan, bundle)]
    # Status endpoint (issue 15, spec status_endpoint): the reply script, a socket on the VPN
    # address, its per-connection service.
    if plan.status_endpoint:
        files += [NodeFile(path, content, mode) for path, content, mode in status.node_files(plan, member)]
    return files


# --------------------------------------------------------------------------- YAML output


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=4096, default_flow_style=False)


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no name, mtime 0): whole-file gzip'd user-data and gz+b64 entries."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0, filename="") as f:
        f.write(data)
    return buf.getvalue()


@lru_cache(maxsize=64)
def _users_block(name: str, ssh_keys: tuple[str, ...], password_hash: str | None) -> str:
    """The login user, the same on every node of a cluster: dumped once, not once per node."""
    user: dict = {"name": name, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL"}
    if ssh_keys:
        user["ssh_authorized_keys"] = list(ssh_keys)
    if password_hash:
        user["lock_passwd"] = False
        user["passwd"] = password_hash
    return _dump({"users": [user], "ssh_pwauth": False})


RUNCMD = [
    ["systemctl", "daemon-reload"],
    ["systemctl", "enable", "wgkube-firstboot.service"],
    ["systemctl", "start", "--no-block", "wgkube-firstboot.service"],
]
_STATUS_RUNCMD = ["systemctl", "enable", "--now", "--no-block", *status.UNITS_ENABLED]  # issue 15: status endpoint


_RUNCMD_BLOCK = _dump({"runcmd": RUNCMD})
_RUNCMD_STATUS_BLOCK = _dump({"runcmd": [*RUNCMD, _STATUS_RUNCMD]})


# write_files content is emitted by hand as YAML literal blocks: PyYAML's pure-Python emitter
# dominated render time (40 s for 1,000 nodes) and refuses literal style for text with tabs.

# Whitespace-only lines would not survive a plain `|` block (YAML folds them into empty lines).
_BLANKISH_LINE = re.compile(r"\n[ \t]+\n")
_INDENT_LINE = re.compile(r"^(?=.)", re.M)  # start of every non-empty line
_INDENT = "      "
_BLANK = "\n" + _INDENT + "\n"


def _indent(content: str) -> str:
    """_INDENT_LINE.sub(_INDENT, content) for content that _literal_ok accepts (it starts with a
    non-blank line and ends with one newline), with str.replace: several times faster on a mesh's
    long peer lists (tests/test_mesh.py compares both)."""
    out = _INDENT + content.replace("\n", "\n" + _INDENT)
    while _BLANK in out:          # empty lines stay empty (one pass per run of consecutive ones)
        out = out.replace(_BLANK, "\n\n")
    return out[: -len(_INDENT)]   # nothing after the final newline


def _literal_ok(content: str) -> bool:
    """Templates meet this; anything else (say, a file without a final newline) goes base64."""
    return (content.endswith("\n") and not content.endswith("\n\n") and content[0] not in " \t\n"
            and content.isascii() and content.replace("\t", " ").replace("\n", " ").isprintable()
            and _BLANKISH_LINE.search(content) is None)


def _write_file_entry(f: NodeFile, per_file_gzip: bool) -> str:
    head = f"  - path: {f.path}\n    owner: root:root\n    permissions: '0{f.mode:o}'\n"
    if per_file_gzip:
        return head + f"    encoding: gz+b64\n    content: {base64.b64encode(gzip_bytes(f.content.encode())).decode()}\n"
    if not _literal_ok(f.content):
        return head + f"    encoding: b64\n    content: '{base64.b64encode(f.content.encode()).decode()}'\n"
    return head + "    content: |\n" + _indent(f.content)


def user_data(plan: Plan, member: Member, files: list[NodeFile], encoding: str = "plain") -> bytes:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding}")
    header = (f"#cloud-config\n# wgkube: {comment(member.name)} ({comment(member.role)}) of cluster {comment(plan.cluster)}. "
              "Holds private keys: treat as a secret.\n")
    # Node names are DNS-1123 labels: safe as plain YAML scalars.
    top = f"hostname: {yaml_scalar(member.name)}\npreserve_hostname: false\n" + _users_block(plan.login_user, plan.ssh_keys, plan.password_hash)
    per_file_gzip = encoding == "gz+b64"
    body = "write_files:\n" + "".join(_write_file_entry(f, per_file_gzip) for f in files)
    tail = _RUNCMD_STATUS_BLOCK if plan.status_endpoint else _RUNCMD_BLOCK
    data = (header + top + body + tail).encode()
    return gzip_bytes(data) if encoding == "gzip" else data


def meta_data(plan: Plan, member: Member) -> bytes:
    # A stable instance-id: a re-rendered seed must not make cloud-init treat the box as new.
    instance = yaml_scalar(f"wgkube-{plan.cluster}-{member.name}")
    return f"instance-id: {instance}\nlocal-hostname: {yaml_scalar(member.name)}\n".encode()


def network_config(member: Member) -> bytes | None:
    net = member.static_network
    if not net:
        return None
    eth: dict = {"match": {"name": "e*"}, "addresses": [net["address"]]}
    if net.get("gateway"):
        # The default route of the gateway's own family (an IPv6 gateway for 0.0.0.0/0 fails
        # in networkd and ifupdown alike).
        default = "::/0" if ":" in net["gateway"] else "0.0.0.0/0"
        eth["routes"] = [{"to": default, "via": net["gateway"]}]
    if net.get("nameservers"):
        eth["nameservers"] = {"addresses": list(net["nameservers"])}
    return _dump({"version": 2, "ethernets": {"uplink": eth}}).encode()


# --------------------------------------------------------------------------- reading back


def decode_user_data(data: bytes) -> str:
    """Plain #cloud-config text of any encoding we produce (whole-file gzip included)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode()


def extract_files(data: bytes) -> dict[str, tuple[bytes, int]]:
    """write_files of a user-data as {path: (content, mode)}, decoding gz+b64 entries."""
    # libyaml's parser when present: reading only, several times faster on a 1,000-node hub.
    doc = yaml.load(decode_user_data(data), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    out = {}
    for entry in doc.get("write_files", []):
        content = entry.get("content", "")
        enc = entry.get("encoding", "text/plain")
        if enc in ("gz+b64", "gzip+base64", "gz+base64"):
            raw = gzip.decompress(base64.b64decode(content))
        elif enc in ("b64", "base64"):
            raw = base64.b64decode(content)
        else:
            raw = content.encode()
        out[entry["path"]] = (raw, int(str(entry.get("permissions", "0644")), 8))
    return out
