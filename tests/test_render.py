"""Rendering the example: determinism, secrets by role, the facts that must agree
(pod CIDR, MTU, node IP, CA hash), and the strict kubeadm v1beta4 model."""
from __future__ import annotations

import base64
import re
import hashlib
import json
import os
import stat
import subprocess

import pytest
import yaml

from conftest import EXAMPLE, render_spec, wgkube
from generator.artifacts import kubeadm
from generator.artifacts.cloudinit import extract_files


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def node_files(out, node):
    return extract_files((out / "nodes" / node / "user-data").read_bytes())


def test_render_twice_is_byte_identical_and_reuses_secrets(tmp_path):
    out = render_spec(EXAMPLE, tmp_path)
    bundle = tmp_path / "cluster.secrets.yaml"
    first, first_bundle = tree(out), bundle.read_bytes()
    proc = wgkube("render", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"))
    assert "reused, nothing new" in proc.stdout
    assert bundle.read_bytes() == first_bundle
    assert tree(out) == first
    # The manifest lists every file with its hash.
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    for rel, data in first.items():
        if rel != "manifest.json":
            assert manifest[rel]["sha256"] == hashlib.sha256(data).hexdigest()


def test_secret_files_are_private(tmp_path):
    out = render_spec(EXAMPLE, tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "cluster.secrets.yaml").st_mode) == 0o600
    for rel in ("nodes/hub/user-data", "nodes/hub/seed.iso", "admins/laptop/wg-demo.conf", "admins/laptop/kubeconfig"):
        assert stat.S_IMODE(os.stat(out / rel).st_mode) == 0o600, rel
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700


def test_secrets_stay_out_of_stdout(tmp_path):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(EXAMPLE.read_text())
    proc = wgkube("render", str(spec), "-o", str(tmp_path / "out"))
    bundle = yaml.safe_load((tmp_path / "cluster.secrets.yaml").read_text())
    for m in bundle["members"].values():
        assert m["private_key"] not in proc.stdout + proc.stderr
    assert bundle["token"] not in proc.stdout + proc.stderr


def test_each_node_gets_only_the_secrets_its_role_needs(example_out):
    bundle = yaml.safe_load((example_out.parent.parent / "cluster.secrets.yaml").read_text())
    keys = {n: m["private_key"] for n, m in bundle["members"].items()}
    ca_key = bundle["pki"]["ca"]["key"]
    for node in ("hub", "worker-1", "homelab-1"):
        raw = (example_out / "nodes" / node / "user-data").read_bytes()
        files = node_files(example_out, node)
        blob = b"".join(c for c, _ in files.values()).decode() + raw.decode(errors="replace")
        others = [k for n, k in keys.items() if n != node]
        assert keys[node] in blob
        assert not any(k in blob for k in others), f"{node} carries another member's private key"
        tokens = {n: j["token"] for n, j in bundle["joins"].items()}  # init's example sets a join window
        if node == "hub":
            assert ca_key in blob and "/etc/kubernetes/pki/sa.key" in files
            # The hub creates every worker's own join token with kubeadm init.
            assert all(t in blob for t in tokens.values()) and set(tokens) == {"worker-1", "homelab-1"}
        else:
            assert ca_key not in blob and "BEGIN PRIVATE KEY" not in blob, f"worker {node} must not get PKI keys"
            # Its own join token only: not the shared one, not another worker's, no client certificate.
            assert "/etc/wgkube/ca.crt" in files and tokens[node] in blob
            assert bundle["token"] not in blob and not any(t in blob for n, t in tokens.items() if n != node)
            assert "BEGIN CERTIFICATE-----" not in files["/etc/wgkube/kubeadm.yaml"][0].decode()
            assert "/etc/wgkube/join.kubeconfig" not in files
            assert files["/etc/wireguard/wg0.conf"][1] == 0o600


def test_facts_agree_across_files(example_out):
    plan = json.loads((example_out / "plan.json").read_text())
    hub = node_files(example_out, "hub")
    init = list(yaml.safe_load_all(hub["/etc/wgkube/kubeadm.yaml"][0]))
    cluster_cfg = next(d for d in init if d["kind"] == "ClusterConfiguration")
    init_cfg = next(d for d in init if d["kind"] == "InitConfiguration")
    flannel = list(yaml.safe_load_all(hub["/etc/wgkube/flannel.yaml"][0]))
    cm = next(d for d in flannel if d and d["kind"] == "ConfigMap")
    net_conf = json.loads(cm["data"]["net-conf.json"])
    ds = next(d for d in flannel if d and d["kind"] == "DaemonSet")
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    # Trap 4: one pod CIDR, used twice. Trap 3: flannel on the WireGuard interface.
    assert cluster_cfg["networking"]["podSubnet"] == net_conf["Network"] == plan["pod_cidr"]
    assert f"--iface={plan['vpn']['interface']}" in args
    hub_ip = next(m["vpn_ip"] for m in plan["members"] if m["name"] == "hub")
    # Trap 6: the API advertises the VPN address.
    assert init_cfg["localAPIEndpoint"]["advertiseAddress"] == hub_ip
    assert cluster_cfg["controlPlaneEndpoint"] == f"{hub_ip}:6443" and hub_ip in cluster_cfg["apiServer"]["certSANs"]
    for node in ("hub", "worker-1", "homelab-1"):
        files = node_files(example_out, node)
        member = next(m for m in plan["members"] if m["name"] == node)
        cfg = next(yaml.safe_load_all(files["/etc/wgkube/kubeadm.yaml"][0]))
        # Trap 5: kubelet registers the VPN address (v1beta4 list of {name, value}).
        assert {"name": "node-ip", "value": member["vpn_ip"]} in cfg["nodeRegistration"]["kubeletExtraArgs"]
        wg = files["/etc/wireguard/wg0.conf"][0].decode()
        assert f"MTU = {plan['vpn']['mtu']}" in wg and plan["vpn"]["mtu"] == 1420 and plan["flannel_mtu"] == 1370
        # Trap 9: kubelet after the tunnel.
        dropin = files["/etc/systemd/system/kubelet.service.d/20-wgkube.conf"][0].decode()
        assert "After=wg-quick@wg0.service" in dropin
        # Trap 2: one interface name everywhere.
        assert "/etc/wireguard/wg0.conf" in files


def test_join_ca_hash_matches_openssl(example_out, tmp_path):
    hub = node_files(example_out, "hub")
    worker = node_files(example_out, "worker-1")
    ca = tmp_path / "ca.crt"
    ca.write_bytes(hub["/etc/kubernetes/pki/ca.crt"][0])
    assert worker["/etc/wgkube/ca.crt"][0] == ca.read_bytes()
    # The hash kubeadm documents: openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(ca)], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True).stdout
    join = yaml.safe_load(worker["/etc/wgkube/kubeadm.yaml"][0])
    assert join["discovery"]["bootstrapToken"]["caCertHashes"] == ["sha256:" + hashlib.sha256(der).hexdigest()]
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "10.88.0.1:6443"


def test_admin_kubeconfig_is_signed_by_the_cluster_ca(example_out, tmp_path):
    kc = yaml.safe_load((example_out / "admins/laptop/kubeconfig").read_text())
    assert kc["clusters"][0]["cluster"]["server"] == "https://10.88.0.1:6443"
    (tmp_path / "ca.pem").write_bytes(base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]))
    (tmp_path / "admin.pem").write_bytes(base64.b64decode(kc["users"][0]["user"]["client-certificate-data"]))
    proc = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "admin.pem")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    subj = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(tmp_path / "admin.pem")], capture_output=True, text=True).stdout
    # issue 17 item 2: the revocable form, user only; its rights come from its ClusterRoleBinding
    assert "CN = wgkube-admin:laptop" in subj and "kubeadm:cluster-admins" not in subj and "O = " not in subj
    wg = (example_out / "admins/laptop/wg-demo.conf").read_text()
    assert "Endpoint = 203.0.113.10:51820" in wg and "AllowedIPs = 10.88.0.1/32, 10.88.0.0/24" in wg and "PersistentKeepalive = 25" in wg


def test_kubeadm_configs_pass_the_strict_v1beta4_model(example_out):
    for node in ("hub", "worker-1", "homelab-1"):
        docs = kubeadm.validate_documents(node_files(example_out, node)["/etc/wgkube/kubeadm.yaml"][0].decode())
        assert docs


@pytest.mark.parametrize("mutation,words", [
    (lambda d: d[0]["nodeRegistration"].update(kubeletExtraArgs={"node-ip": "10.88.0.1"}), "kubeletExtraArgs"),  # v1beta3 map
    (lambda d: d[0].update(apiServerEndpoint="x"), "apiServerEndpoint"),  # unknown field
    (lambda d: d[1].update(apiVersion="kubeadm.k8s.io/v1beta3"), "v1beta4"),
    (lambda d: d[0]["bootstrapTokens"][0].update(token="NOT-A-TOKEN"), "bootstrap token"),
])
def test_strict_model_rejects_what_kubeadm_would(example_out, mutation, words):
    docs = list(yaml.safe_load_all(node_files(example_out, "hub")["/etc/wgkube/kubeadm.yaml"][0]))
    mutation(docs)
    with pytest.raises(ValueError, match=words):
        kubeadm.validate_documents(yaml.safe_dump_all(docs))


def test_example_matches_published_json_schema(tmp_path):
    import jsonschema
    schema = json.loads(wgkube("schema").stdout)
    jsonschema.validate(yaml.safe_load(EXAMPLE.read_text()), schema)
    bad = yaml.safe_load(EXAMPLE.read_text()) | {"nodez": []}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_init_writes_the_example_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "c.yaml"
    wgkube("init", str(target))
    assert target.read_text() == EXAMPLE.read_text()
    proc = wgkube("init", str(target), check=False)
    assert proc.returncode == 2 and "exists" in proc.stderr


def test_firewall_opens_only_the_wireguard_port_publicly(example_out):
    for node, port_open in (("hub", True), ("worker-1", True), ("homelab-1", False)):
        nft = node_files(example_out, node)["/etc/wgkube/firewall.nft"][0].decode()
        assert not re.search(r"^\s*flush\s+ruleset", nft, re.M) and "policy drop" in nft
        assert ("udp dport 51820 counter accept" in nft) is port_open
        assert "ip daddr 169.254.169.254 counter drop" in nft
        assert " dport 6443" not in nft and "dport 22 " not in nft


def test_exposed_ports_are_opened_in_input_and_forward(tmp_path):
    text = EXAMPLE.read_text().replace("    provider: hetzner ", "    expose: ['443/tcp', '30000-30010/tcp']\n    provider: hetzner ")
    assert "expose:" in text
    out = render_spec(text, tmp_path, "--no-iso", "--no-packer")
    nft = node_files(out, "hub")["/etc/wgkube/firewall.nft"][0].decode()
    assert "tcp dport 443 counter accept" in nft and "tcp dport 30000-30010 counter accept" in nft
    assert "ct original proto-dst 30000-30010" in nft
    assert "dport 443" not in node_files(out, "worker-1")["/etc/wgkube/firewall.nft"][0].decode()


def test_password_hash_reaches_cloud_config_never_a_plain_password(tmp_path):
    from passlib.hash import sha512_crypt
    proc = wgkube("hash-password", input="s3cret-pw\ns3cret-pw\n")
    h = re.search(r"\$6\$\S+", proc.stdout).group(0)
    assert sha512_crypt.verify("s3cret-pw", h)
    text = EXAMPLE.read_text().replace('  # password_hash: "$6$..."', f"  password_hash: '{h}'")
    out = render_spec(text, tmp_path, "--no-iso", "--no-packer")
    ud = yaml.safe_load((out / "nodes/hub/user-data").read_text())
    assert ud["users"][0]["passwd"] == h and ud["users"][0]["lock_passwd"] is False
    assert "s3cret-pw" not in (out / "nodes/hub/user-data").read_text()


def test_user_data_carries_every_file_exactly(example_out, tmp_path):
    """The hand-emitted YAML round-trips: every encoding yields the files byte for byte."""
    from generator.artifacts import cloudinit
    from generator.pipeline import prepare
    prepared = prepare(example_out.parent.parent / "cluster.yaml")
    for member in prepared.plan.nodes:
        files = cloudinit.node_files(prepared.plan, prepared.bundle, member)
        expected = {f.path: (f.content.encode(), f.mode) for f in files}
        for enc in cloudinit.ENCODINGS:
            assert cloudinit.extract_files(cloudinit.user_data(prepared.plan, member, files, enc)) == expected, (member.name, enc)


def test_literal_blocks_round_trip_awkward_text():
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from generator.artifacts.cloudinit import NodeFile, _write_file_entry
    alphabet = st.sampled_from(list(" \t\n#:|-'\"abc{}[]>%@`") + ["\r", "\x00", "é"])

    @settings(max_examples=400, deadline=None)
    @given(st.text(alphabet=alphabet, max_size=60))
    def check(text):
        doc = yaml.safe_load("write_files:\n" + _write_file_entry(NodeFile("/x", text, 0o600), False))
        entry = doc["write_files"][0]
        got = base64.b64decode(entry["content"]).decode() if entry.get("encoding") == "b64" else entry["content"]
        assert got == text
    check()
