"""Issue 11 item 12: the join window with per-node bootstrap tokens (docs/join-window.md).

Each worker gets its own token, made once in the bundle with an absolute expiry; the control
plane's InitConfiguration lists them all (kubeadm init creates them), each worker carries only
its own; the live update creates the tokens a running control plane does not know and deletes
retired ones; bundles from before (join certificates) keep rendering byte for byte and are told
how to move."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import need, wgkube
from generator import secrets as secrets_mod
from generator.artifacts import kubeadm
from generator.secrets import bundle as secrets_bundle
from test_daytwo import bundle, changes, cli, node_files, render, spec_doc, tree, write_spec

GOLDEN = Path(__file__).resolve().parent / "golden"
TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
GROUP = "system:bootstrappers:kubeadm:default-node-token"


def kubeadm_docs(out: Path, node: str) -> list[dict]:
    return list(yaml.safe_load_all(node_files(out, node)["/etc/wgkube/kubeadm.yaml"][0]))


def init_tokens(out: Path) -> dict[str, dict]:
    """The hub's InitConfiguration bootstrapTokens by token."""
    init = kubeadm_docs(out, "hub")[0]
    return {t["token"]: t for t in init["bootstrapTokens"]}


# --------------------------------------------------------------------------- the tokens


def test_each_worker_joins_with_its_own_token_that_the_hub_creates(tmp_path):
    t0 = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    render(tmp_path, spec_doc(window=3), "--no-iso")
    out = tmp_path / "out" / "d2"
    b = bundle(tmp_path)
    joins = b["joins"]
    assert set(joins) == {"worker-1", "homelab-1"}
    assert len({j["token"] for j in joins.values()} | {b["token"]}) == 3, "every token differs"
    listed = init_tokens(out)
    for node, j in joins.items():
        assert TOKEN.fullmatch(j["token"])
        # Absolute expiry: when the worker was added to the bundle + the window.
        expires = dt.datetime.strptime(j["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        assert t0 + dt.timedelta(days=3) <= expires <= t0 + dt.timedelta(days=3, minutes=5)
        # The hub lists it with `expires` (not ttl: they are mutually exclusive), usages, group, its name.
        entry = listed[j["token"]]
        assert entry == {"token": j["token"], "description": f"wgkube join token for node {node} (cluster d2)",
                         "expires": j["expires"], "usages": ["signing", "authentication"], "groups": [GROUP]}
        # The worker: bootstrap-token discovery pinned to the CA, the TLS bootstrap with the same token.
        docs = kubeadm.validate_documents(node_files(out, node)["/etc/wgkube/kubeadm.yaml"][0].decode())
        disc = docs[0].discovery
        assert disc.bootstrapToken.token == j["token"] == disc.tlsBootstrapToken
        assert disc.bootstrapToken.caCertHashes == [secrets_mod.load(tmp_path / "cluster.secrets.yaml", "d2").ca_hash]
        assert disc.bootstrapToken.apiServerEndpoint == "10.77.0.1:6443" and disc.file is None
        raw = (out / "nodes" / node / "user-data").read_bytes()
        others = [o["token"] for n, o in joins.items() if n != node] + [b["token"]]
        assert not any(t.encode() in raw for t in others), f"{node} carries a token that is not its own"
        assert b"BEGIN CERTIFICATE" not in node_files(out, node)["/etc/wgkube/kubeadm.yaml"][0]
        assert "/etc/wgkube/join.kubeconfig" not in node_files(out, node)
    assert listed[b["token"]]["ttl"] == "24h", "the shared token stays as it was (hub only)"
    kubeadm.validate_documents(node_files(out, "hub")["/etc/wgkube/kubeadm.yaml"][0].decode())
    # Deterministic: rendering again (a day later, say) changes no byte and no token.
    before = tree(out)
    render(tmp_path, spec_doc(window=3), "--no-iso")
    assert tree(out) == before and bundle(tmp_path)["joins"] == joins


def test_the_strict_model_refuses_ttl_and_expires_together():
    doc = {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
           "bootstrapTokens": [{"token": "abcdef.0123456789abcdef", "ttl": "24h", "expires": "2030-01-01T00:00:00Z"}]}
    with pytest.raises(ValueError, match="not both"):
        kubeadm.validate_documents(yaml.safe_dump(doc))
    doc["bootstrapTokens"][0].pop("ttl")
    kubeadm.validate_documents(yaml.safe_dump(doc))
    doc["bootstrapTokens"][0]["expires"] = "in a week"
    with pytest.raises(ValueError, match="RFC3339"):
        kubeadm.validate_documents(yaml.safe_dump(doc))


def test_a_bundle_with_a_bad_join_token_is_refused(tmp_path):
    render(tmp_path, spec_doc(window=3), "--no-iso")
    path = tmp_path / "cluster.secrets.yaml"
    good = path.read_text()
    b = yaml.safe_load(good)
    for edit, message in [
        (lambda d: d["joins"]["worker-1"].update(token="ABCDEF.0123456789abcdef"), "joins.worker-1: the join token is not of the form"),
        (lambda d: d["joins"]["worker-1"].update(expires="next week"), "joins.worker-1: expires is not a UTC time"),
        (lambda d: d["joins"]["homelab-1"].update(token=d["joins"]["worker-1"]["token"].split(".")[0] + ".0123456789abcdef"),
         "its token ID is also used by"),
    ]:
        data = yaml.safe_load(good)
        edit(data)
        path.write_text(yaml.safe_dump(data))
        proc = wgkube("check", str(tmp_path / "cluster.yaml"), check=False)
        assert proc.returncode == 2 and message in " ".join(proc.stderr.split()), proc.stderr
    assert b["joins"]


# --------------------------------------------------------------------------- day two


def test_rekey_join_issues_a_new_token_and_says_how_to_revoke_the_old_one(tmp_path):
    render(tmp_path, spec_doc(window=2), "--no-iso")
    out = tmp_path / "out" / "d2"
    # worker-1 was added three days ago and never booted: its two-day token has expired.
    path = tmp_path / "cluster.secrets.yaml"
    b = secrets_mod.load(path, "d2")
    b.joins["worker-1"] = secrets_bundle.new_join_token(b, 2, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    secrets_mod.save(b, path)
    render(tmp_path, spec_doc(window=2), "--no-iso")
    plan = cli("plan", tmp_path / "cluster.yaml", "-o", tmp_path / "out")
    assert "worker-1's join credential expired" in plan.stdout and "wgkube rekey worker-1 SPEC --join" in plan.stdout
    before, b0 = tree(out), bundle(tmp_path)
    old = b0["joins"]["worker-1"]["token"]
    result = cli("rekey", "--yes", "worker-1", tmp_path / "cluster.yaml", "-o", tmp_path / "out", "--join")
    text = " ".join(result.stdout.split())
    assert f"kubeadm token delete {old.split('.')[0]}" in text and "hub-update/wg0.sh" in text
    assert old not in text, "the secret half is never printed"
    b1 = bundle(tmp_path)
    new = b1["joins"]["worker-1"]
    assert new["token"] != old and b1["retired"]["worker-1"]["join"]["token"] == old
    assert b1["members"] == b0["members"] and b1["joins"]["homelab-1"] == b0["joins"]["homelab-1"]
    expires = dt.datetime.strptime(new["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert expires > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1, hours=23)
    diff = changes(before, tree(out))
    # The worker (its token), the hub (its init config lists the token; its live update creates it).
    assert diff["changed"] == {"nodes/worker-1/user-data", "nodes/hub/user-data", "hub-update/wg0.sh", "manifest.json"}
    assert not diff["new"] and not diff["removed"]
    assert kubeadm_docs(out, "worker-1")[0]["discovery"]["bootstrapToken"]["token"] == new["token"]
    assert old not in init_tokens(out) and new["token"] in init_tokens(out)
    script = (out / "hub-update" / "wg0.sh").read_text()
    assert f"retire_token \"{old.split('.')[0]}\" \"worker-1\"" in script and old not in script
    proc = wgkube("rekey", "--yes", "hub", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"), "--join", check=False)
    assert proc.returncode == 2 and "does not join" in proc.stderr


def test_a_worker_added_later_tells_the_hub_to_create_its_token(tmp_path):
    render(tmp_path, spec_doc(window=14, spares=1), "--no-iso")
    out = tmp_path / "out" / "d2"
    spec = write_spec(tmp_path, spec_doc(window=14, spares=1, add=[{"name": "worker-2", "role": "worker"}]))
    plan = wgkube("plan", str(spec), "-o", str(tmp_path / "out"))
    text = " ".join(plan.stdout.split())
    assert "+ join token for worker-2" in text and "creates new workers' join tokens" in text and "hub-update/wg0.sh" in text
    cli("render", spec, "-o", tmp_path / "out", "-q", "--no-packer", "--no-iso")
    token = bundle(tmp_path)["joins"]["worker-2"]["token"]
    assert token in init_tokens(out) and token in (out / "hub-update" / "wg0.sh").read_text()
    # Removing it retires its token; the live update deletes it.
    cli("render", write_spec(tmp_path, spec_doc(window=14, spares=1)), "-o", tmp_path / "out", "-q", "--no-packer", "--no-iso")
    b = bundle(tmp_path)
    assert b["retired"]["worker-2"]["join"]["token"] == token and "worker-2" not in b["joins"]
    assert f"retire_token \"{token.split('.')[0]}\" \"worker-2\"" in (out / "hub-update" / "wg0.sh").read_text()


# --------------------------------------------------------------------------- the live update on a control plane

STUB_KUBEADM = r'''#!/usr/bin/env python3
# Test stub: bootstrap tokens kept in $STUB_DIR/tokens (one "token expires-epoch description" a line).
import os, re, sys, time
d = os.environ["STUB_DIR"]; store = os.path.join(d, "tokens")
with open(os.path.join(d, "calls"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
lines = open(store).read().splitlines() if os.path.exists(store) else []
args = sys.argv[1:]
def opt(name):
    return args[args.index(name) + 1] if name in args else None
if args[:2] == ["token", "list"]:
    print("TOKEN                     TTL         EXPIRES                USAGES                   DESCRIPTION   EXTRA GROUPS")
    for l in lines:
        print(l.split(" ")[0] + "   23h   2030-01-01T00:00:00Z   authentication,signing   x   " + "g")
elif args[:2] == ["token", "create"]:
    tok = args[2]
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", tok), tok  # kubeadm's BootstrapTokenPattern
    ttl = opt("--ttl"); assert ttl.endswith("s") and int(ttl[:-1]) > 0, ttl
    lines.append("%s %d %s" % (tok, time.time() + int(ttl[:-1]), opt("--description")))
    print(tok)
elif args[:2] == ["token", "delete"]:
    lines = [l for l in lines if not l.startswith(args[2] + ".")]
open(store, "w").write("".join(l + "\n" for l in lines))
'''
STUB_KUBECTL = r'''#!/bin/sh
# Test stub: `kubectl get node NAME` succeeds for the names in $STUB_DIR/nodes; the admin
# bindings' apply (issue 17 item 2, read from stdin) and delete succeed.
[ "$3" = apply ] && { cat >/dev/null; exit 0; }
[ "$3" = delete ] && exit 0
[ "$3" = get ] && [ "$4" = node ] && grep -qx "$5" "$STUB_DIR/nodes"
'''


def _stub_env(tmp: Path, hub_key: str, hub_pub: str) -> dict:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubeadm").write_text(STUB_KUBEADM)
    (bin_dir / "kubectl").write_text(STUB_KUBECTL)
    (bin_dir / "wg").write_text(f"#!/bin/sh\n[ \"$1\" = pubkey ] && cat >/dev/null && echo '{hub_pub}'\n")
    (bin_dir / "ip").write_text("#!/bin/sh\nexit 1\n")  # the interface is not up: only the file is written
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    wg_dir = tmp / "wg"
    wg_dir.mkdir()
    (wg_dir / "wg0.conf").write_text(f"[Interface]\nPrivateKey = {hub_key}\n")
    (tmp / "admin.conf").write_text("stub\n")
    (tmp / "nodes").write_text("")
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_DIR": str(tmp), "WGKUBE_WG_DIR": str(wg_dir),
            "WGKUBE_ADMIN_CONF": str(tmp / "admin.conf")}


def test_the_live_update_creates_missing_tokens_once_and_deletes_retired_ones(tmp_path):
    bash = need("bash")
    work, stub = tmp_path / "w", tmp_path / "stub"
    work.mkdir()
    stub.mkdir()
    render(work, spec_doc(window=14), "--no-iso")
    b = bundle(work)
    env = _stub_env(stub, b["members"]["hub"]["private_key"], b["members"]["hub"]["public_key"])
    script = work / "out" / "d2" / "hub-update" / "wg0.sh"

    def run() -> str:
        proc = subprocess.run([bash, str(script)], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    def stored() -> dict[str, str]:
        return {l.split(" ")[0]: l for l in (stub / "tokens").read_text().splitlines()}

    # A hub whose kubeadm init made them all already (here: created by the first run).
    first = run()
    tokens = {n: j["token"] for n, j in b["joins"].items()}
    assert set(stored()) == set(tokens.values()) and "created join token" in first
    for node, token in tokens.items():
        line = stored()[token]
        # --ttl is what is left of the absolute expiry, computed on the hub at run time.
        expires = dt.datetime.strptime(b["joins"][node]["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        assert abs(int(line.split(" ")[1]) - expires.timestamp()) < 120 and f"node {node}" in line
    calls = (stub / "calls").read_text()
    assert calls.count("token create") == 2
    # Idempotent: a second run creates nothing.
    second = run()
    assert (stub / "calls").read_text().count("token create") == 2 and second.count("exists") == 2
    # rekey --join: the old token is deleted, the new one created; a worker that has joined gets none.
    cli("rekey", "--yes", "worker-1", work / "cluster.yaml", "-o", work / "out", "--join")
    (stub / "nodes").write_text("homelab-1\n")
    (stub / "tokens").write_text("".join(l + "\n" for t, l in stored().items() if t != tokens["homelab-1"]))
    third = run()
    new = bundle(work)["joins"]["worker-1"]["token"]
    assert set(stored()) == {new}, third
    assert f"deleted retired join token {tokens['worker-1'].split('.')[0]}" in third and "homelab-1 has joined" in third
    # Expired: not created, and the message says what to do.
    path = work / "cluster.secrets.yaml"
    bb = secrets_mod.load(path, "d2")
    bb.joins["homelab-1"] = secrets_bundle.new_join_token(bb, 1, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    secrets_mod.save(bb, path)
    render(work, spec_doc(window=14), "--no-iso")
    (stub / "nodes").write_text("")
    fourth = run()
    assert "expired" in fourth and "wgkube rekey homelab-1 SPEC --join" in fourth and set(stored()) == {new}
    # Not a control plane yet (no admin.conf): nothing is touched, and it says why.
    (stub / "admin.conf").unlink()
    assert "join tokens not checked" in run()


def test_the_live_update_with_tokens_is_shellcheck_clean(tmp_path):
    shellcheck = need("shellcheck")
    render(tmp_path, spec_doc(window=14, spares=1), "--no-iso")
    cli("rekey", "--yes", "worker-1", tmp_path / "cluster.yaml", "-o", tmp_path / "out", "--join")
    script = tmp_path / "out" / "d2" / "hub-update" / "wg0.sh"
    assert "retire_token" in script.read_text()
    proc = subprocess.run([shellcheck, "-S", "style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --------------------------------------------------------------------------- bundles from before: join certificates


def _legacy(tmp: Path) -> Path:
    shutil.copy(GOLDEN / "legacy-join-certs.yaml", tmp / "cluster.yaml")
    shutil.copy(GOLDEN / "legacy-join-certs.secrets.yaml", tmp / "cluster.secrets.yaml")
    return tmp / "cluster.yaml"


def test_a_bundle_with_join_certificates_renders_byte_for_byte_and_says_how_to_move(tmp_path):
    """tests/golden/legacy-join-certs.*: a spec with join.window_days rendered by wgkube before this
    change (be5f50b), whose bundle holds a join certificate per worker."""
    spec = _legacy(tmp_path)
    before = (tmp_path / "cluster.secrets.yaml").read_bytes()
    proc = wgkube("render", str(spec), "-o", str(tmp_path / "out"), "-q")
    assert (tmp_path / "cluster.secrets.yaml").read_bytes() == before, "the bundle must not change"
    cluster = tmp_path / "out" / "legacy"
    got = {str(p.relative_to(cluster)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(cluster.rglob("*")) if p.is_file()}
    want = {rel: digest for digest, _, rel in (l.partition("  ") for l in (GOLDEN / "legacy-join-certs.sha256").read_text().splitlines())}
    assert sorted(got) == sorted(want)
    assert [rel for rel in want if got[rel] != want[rel]] == []
    warning = " ".join(proc.stderr.split())
    assert "2 workers still join with a client certificate made by an older wgkube (worker-1, homelab-1)" in warning
    assert "wgkube rekey worker-1 SPEC --join" in warning and "cannot be revoked" in warning
    check = wgkube("check", str(spec))
    assert " ".join(check.stderr.split()).count("still join with a client certificate") == 1


def test_a_bundle_with_join_certificates_gives_new_workers_tokens_and_rekey_moves_the_others(tmp_path):
    spec = _legacy(tmp_path)
    text = spec.read_text().replace("admins:", "  - name: worker-2\n    role: worker\n\nadmins:", 1)
    spec.write_text(text)
    wgkube("render", str(spec), "-o", str(tmp_path / "out"), "-q", "--no-iso", "--no-packer")
    out = tmp_path / "out" / "legacy"
    b = bundle(tmp_path)
    assert "cert" in b["joins"]["worker-1"] and "cert" in b["joins"]["homelab-1"] and "token" in b["joins"]["worker-2"]
    listed = init_tokens(out)
    assert b["joins"]["worker-2"]["token"] in listed and len(listed) == 2, "the shared token and worker-2's"
    assert "/etc/wgkube/join.kubeconfig" in node_files(out, "worker-1")
    assert "/etc/wgkube/join.kubeconfig" not in node_files(out, "worker-2")
    old_cert = b["joins"]["worker-1"]["cert"]
    result = cli("rekey", "--yes", "worker-1", spec, "-o", tmp_path / "out", "--join")
    assert "join certificate" in " ".join(result.stdout.split())
    b = bundle(tmp_path)
    assert "token" in b["joins"]["worker-1"] and b["retired"]["worker-1"]["join"]["cert"] == old_cert
    assert "/etc/wgkube/join.kubeconfig" not in node_files(out, "worker-1")
    assert kubeadm_docs(out, "worker-1")[0]["discovery"]["bootstrapToken"]["token"] == b["joins"]["worker-1"]["token"]
    check = wgkube("check", str(spec))
    warning = " ".join(check.stderr.split())
    assert "1 worker still joins with a client certificate made by an older wgkube (homelab-1)" in warning
    assert "wgkube rekey homelab-1 SPEC --join" in warning
