"""Issue 17 item 2: admin access that can be renewed and revoked.

New admin certificates carry no kubeadm:cluster-admins group; the control plane holds one
ClusterRoleBinding per admin (first boot, live update), deletes those of admins that left, and
`wgkube admin renew` moves an admin to a new certificate. Bundles of the old form render as before."""
from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from conftest import HUB_EXAMPLE, need, wgkube
from generator import facts
from generator.artifacts.cloudinit import extract_files
from generator.daytwo import admins as daytwo_admins
from generator.secrets import pki

GOLDEN = Path(__file__).resolve().parent / "golden"
BINDINGS = "/etc/wgkube/admin-bindings.yaml"
FIRSTBOOT = "/usr/local/sbin/wgkube-firstboot"


def spec_text(admins=("laptop",)) -> str:
    doc = {"name": "aa", "vpn": {"cidr": "10.66.0.0/24"}, "login": {"user": "ops"},
           "nodes": [{"name": "hub", "role": "control-plane", "endpoint": "203.0.113.10"},
                     {"name": "worker-1", "role": "worker", "endpoint": "198.51.100.20"}],
           "admins": [{"name": a} for a in admins]}
    return yaml.safe_dump(doc, sort_keys=False)


def render(work: Path, text: str, *extra: str) -> Path:
    (work / "cluster.yaml").write_text(text)
    wgkube("render", str(work / "cluster.yaml"), "-o", str(work / "out"), "-q", "--no-iso", "--no-packer", *extra)
    return work / "out" / yaml.safe_load(text)["name"]


def bundle(work: Path) -> dict:
    return yaml.safe_load((work / "cluster.secrets.yaml").read_text())


def files_of(out: Path, node: str) -> dict[str, tuple[bytes, int]]:
    return extract_files((out / "nodes" / node / "user-data").read_bytes())


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def subject(cert_pem: str) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return ([a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)],
            [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)])


def kubeconfig_cert(out: Path, admin: str) -> str:
    kc = yaml.safe_load((out / "admins" / admin / "kubeconfig").read_text())
    return base64.b64decode(kc["users"][0]["user"]["client-certificate-data"]).decode()


def check_bindings(text: str, admins: list[str]) -> None:
    """A parsed look at the manifest: one ClusterRoleBinding per admin, to cluster-admin, for its user only."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert [d["metadata"]["name"] for d in docs] == [f"wgkube-admin-{a}" for a in admins]
    for d, a in zip(docs, admins):
        assert d["apiVersion"] == "rbac.authorization.k8s.io/v1" and d["kind"] == "ClusterRoleBinding"
        assert d["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}
        assert d["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"wgkube-admin:{a}"}]
        assert d["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "wgkube", "wgkube.io/admin": a}


def shellcheck(path: Path) -> None:
    tool = need("shellcheck")
    proc = subprocess.run([tool, "-S", "style", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def copy_golden(work: Path, name: str = "hub-example") -> Path:
    spec = work / "cluster.yaml"
    shutil.copy(GOLDEN / f"{name}.yaml", spec)
    shutil.copy(GOLDEN / f"{name}.secrets.yaml", work / "cluster.secrets.yaml")
    os.chmod(work / "cluster.secrets.yaml", 0o600)
    return spec


# --------------------------------------------------------------------------- the revocable form


def test_new_admin_certificates_carry_no_cluster_admins_group(tmp_path):
    out = render(tmp_path, spec_text(("laptop", "phone")))
    for name in ("laptop", "phone"):
        pem = bundle(tmp_path)["admins"][name]["cert"]
        assert subject(pem) == ([f"wgkube-admin:{name}"], [])  # CN only: no group at all
        assert kubeconfig_cert(out, name) == pem
        assert pki.admin_cert_revocable(pem)
    # The old form, as wgkube made it before: group kubeadm:cluster-admins, not revocable.
    old = yaml.safe_load((GOLDEN / "hub-example.secrets.yaml").read_text())["admins"]["laptop"]["cert"]
    assert subject(old)[1] == ["kubeadm:cluster-admins"] and not pki.admin_cert_revocable(old)


def test_the_control_plane_applies_one_binding_per_admin_at_first_boot_and_in_its_live_update(tmp_path):
    out = render(tmp_path, spec_text(("laptop", "phone")))
    hub = files_of(out, "hub")
    text, mode = hub[BINDINGS]
    assert mode == 0o644
    check_bindings(text.decode(), ["laptop", "phone"])
    script = hub[FIRSTBOOT][0].decode()
    assert "phase_admins()" in script and f"apply -f {BINDINGS}" in script
    assert " cni admins " in script  # after the CNI, in the phase loop
    assert BINDINGS not in files_of(out, "worker-1")  # workers get nothing of it
    assert "phase_admins" not in files_of(out, "worker-1")[FIRSTBOOT][0].decode()
    update = (out / "hub-update" / "wg0.sh").read_text()
    start = update.index("apply -f - <<'WGKUBE_EOF'\n") + len("apply -f - <<'WGKUBE_EOF'\n")
    assert update[start:update.index("WGKUBE_EOF", start)] == text.decode()  # the same manifest
    for name, content in (("fb.sh", script), ("update.sh", update)):
        (tmp_path / name).write_text(content)
        shellcheck(tmp_path / name)


STUB_KUBECTL = r'''#!/bin/sh
# Test stub: records each call (and what apply reads) in $STUB_DIR/calls.
echo "$*" >>"$STUB_DIR/calls"
[ "$3" = apply ] && cat >>"$STUB_DIR/applied"
exit 0
'''


def run_update(tmp_path: Path, work: Path, out: Path) -> tuple[str, str]:
    """Run the hub's live update against stubs (wg, ip, kubectl): (kubectl calls, stderr)."""
    stub = tmp_path / "stub"
    shutil.rmtree(stub, ignore_errors=True)
    (stub / "bin").mkdir(parents=True)
    hub = bundle(work)["members"]["hub"]
    (stub / "bin" / "kubectl").write_text(STUB_KUBECTL)
    (stub / "bin" / "wg").write_text(f"#!/bin/sh\n[ \"$1\" = pubkey ] && cat >/dev/null && echo '{hub['public_key']}'\n")
    (stub / "bin" / "ip").write_text("#!/bin/sh\nexit 1\n")
    for f in (stub / "bin").iterdir():
        f.chmod(0o755)
    (stub / "wg").mkdir()
    (stub / "wg" / "wg0.conf").write_text(f"[Interface]\nPrivateKey = {hub['private_key']}\n")
    (stub / "admin.conf").write_text("stub\n")
    env = {**os.environ, "PATH": f"{stub / 'bin'}:{os.environ['PATH']}", "STUB_DIR": str(stub),
           "WGKUBE_WG_DIR": str(stub / "wg"), "WGKUBE_ADMIN_CONF": str(stub / "admin.conf")}
    proc = subprocess.run(["bash", str(out / "hub-update" / "wg0.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = (stub / "calls").read_text() if (stub / "calls").exists() else ""
    return calls, proc.stderr


def test_removing_an_admin_makes_the_live_update_delete_its_binding(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    render(work, spec_text(("laptop", "phone")))
    out = render(work, spec_text(("laptop",)))
    assert bundle(work)["retired"]["phone"]["reason"] == "removed from the spec"
    check_bindings(files_of(out, "hub")[BINDINGS][0].decode(), ["laptop"])
    calls, stderr = run_update(tmp_path, work, out)
    # Only a binding labelled as wgkube's, for that admin, is deleted; laptop's is applied.
    assert ("delete clusterrolebinding -l app.kubernetes.io/managed-by=wgkube,wgkube.io/admin=phone --ignore-not-found"
            in calls)
    assert "admin=laptop" not in calls and calls.count(" apply -f -") == 1
    check_bindings((tmp_path / "stub" / "applied").read_text(), ["laptop"])
    assert "binding \"wgkube-admin-phone\" deleted" in stderr or "wgkube-admin-phone" in stderr
    (tmp_path / "u.sh").write_text((out / "hub-update" / "wg0.sh").read_text())
    shellcheck(tmp_path / "u.sh")
    # plan on the same change says to run it (its binding goes with the live update)
    work2 = tmp_path / "w2"
    work2.mkdir()
    render(work2, spec_text(("laptop", "phone")))
    (work2 / "cluster.yaml").write_text(spec_text(("laptop",)))
    text = " ".join(wgkube("plan", str(work2 / "cluster.yaml"), "-o", str(work2 / "out")).stdout.split())
    assert "admin phone left" in text and "deletes its binding wgkube-admin-phone" in text and "hub-update/wg0.sh" in text


def test_the_last_revocable_admin_leaving_still_deletes_its_binding(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    render(work, spec_text(("laptop",)))
    out = render(work, spec_text(()))
    assert BINDINGS not in files_of(out, "hub")  # nothing to apply at a first boot
    calls, _ = run_update(tmp_path, work, out)
    assert "wgkube.io/admin=laptop" in calls and "apply" not in calls


# --------------------------------------------------------------------------- renew


def test_renew_an_old_form_admin(tmp_path):
    spec = copy_golden(tmp_path)
    out_root = tmp_path / "out"
    wgkube("render", str(spec), "-o", str(out_root), "-q", "--no-iso", "--no-packer")
    out = out_root / "demo"
    before, old = tree(out), bundle(tmp_path)
    proc = wgkube("admin", "renew", "laptop", str(spec), "-o", str(out_root), "--yes")
    after, new = tree(out), bundle(tmp_path)
    # A new certificate and key of the revocable form; the old pair retired, never deleted.
    pem = new["admins"]["laptop"]["cert"]
    assert subject(pem) == (["wgkube-admin:laptop"], []) and pem != old["admins"]["laptop"]["cert"]
    assert new["admins"]["laptop"]["key"] != old["admins"]["laptop"]["key"]
    retired = new["retired"]["laptop"]
    assert retired["reason"] == "renewed" and retired["admin_cert"] == old["admins"]["laptop"]
    assert retired["retired"].endswith("Z")
    assert {k: v for k, v in new.items() if k not in ("admins", "retired")} == {k: v for k, v in old.items() if k not in ("admins", "retired")}
    # Only the admin's kubeconfig and the control plane's files change (its bindings are new).
    changed = {p for p in before if before[p] != after.get(p)} | (set(after) - set(before))
    assert changed == {"admins/laptop/kubeconfig", "nodes/hub/user-data", "hub-update/wg0.sh", "manifest.json"}
    assert kubeconfig_cert(out, "laptop") == pem
    check_bindings(files_of(out, "hub")[BINDINGS][0].decode(), ["laptop"])
    # The order: the hub's live update (the binding) BEFORE the new kubeconfig is used.
    text = " ".join(proc.stdout.split())
    assert text.index("hub-update/wg0.sh") < text.index("admins/laptop/kubeconfig on laptop's device")
    assert "FIRST" in text and "cannot be revoked" in text
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr and pem.splitlines()[1] not in proc.stdout


def test_renew_a_revocable_admin_changes_only_its_kubeconfig(tmp_path):
    out = render(tmp_path, spec_text(("laptop", "phone")))
    before = tree(out)
    proc = wgkube("admin", "renew", "phone", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"), "-y")
    after = tree(out)
    changed = {p for p in before if before[p] != after.get(p)} | (set(after) - set(before))
    assert changed == {"admins/phone/kubeconfig", "manifest.json"}
    assert bundle(tmp_path)["retired"]["phone"]["reason"] == "renewed"
    assert "exists already" in proc.stdout and "FIRST" not in proc.stdout
    # renewed twice: the second old certificate is kept too
    wgkube("admin", "renew", "phone", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"), "-y")
    assert bundle(tmp_path)["retired"]["phone@2"]["reason"] == "renewed"


@pytest.mark.parametrize("name", ["nobody", "worker-1"])
def test_renew_an_unknown_admin_exits_2_and_writes_nothing(tmp_path, name):
    render(tmp_path, spec_text())
    state = tree(tmp_path)
    proc = wgkube("admin", "renew", name, str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"), "--yes", check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{name!r} is" in proc.stderr and "admins: laptop" in proc.stderr and "cluster.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree(tmp_path) == state


def test_renew_without_yes_asks_and_a_script_is_refused(tmp_path):
    render(tmp_path, spec_text())
    state = tree(tmp_path)
    proc = wgkube("admin", "renew", "laptop", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"), check=False, input="")
    assert proc.returncode == 1 and "pass --yes" in proc.stderr
    lock = "cluster.secrets.yaml.lock"  # the lock file holds the pid of the last run, nothing else
    assert {k: v for k, v in tree(tmp_path).items() if k != lock} == {k: v for k, v in state.items() if k != lock}


# --------------------------------------------------------------------------- expiry warnings


NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)


def test_expiry_warning_names_the_admin_the_date_and_the_fix():
    ca = pki.new_ca("kubernetes", NOW - dt.timedelta(days=400))
    # issued 355 days before NOW, valid 365: expires in 10 days
    pair = pki.new_admin_cert(ca, "laptop", NOW - dt.timedelta(days=355), days=365)
    end = pki.cert_facts(pair["cert"])[2]
    w = daytwo_admins.expiry_warning("laptop", end, NOW, "c.yaml")
    assert w is not None and "admin laptop's certificate expires in 10 days" in w and f"{end:%Y-%m-%d}" in w
    assert "wgkube admin renew laptop c.yaml" in w
    assert daytwo_admins.expiry_warning("laptop", end, NOW - dt.timedelta(days=30)) is None  # 40 days to go
    assert "expired" in daytwo_admins.expiry_warning("laptop", end, NOW + dt.timedelta(days=11))
    assert facts.ADMIN_CERT_WARN_DAYS == 30


def test_plan_and_status_warn_about_a_certificate_that_expires_in_10_days(tmp_path):
    out = render(tmp_path, spec_text(("laptop", "phone")))
    b = bundle(tmp_path)
    real_now = dt.datetime.now(dt.timezone.utc)
    b["admins"]["laptop"] = pki.new_admin_cert(b["pki"]["ca"], "laptop", real_now - dt.timedelta(days=355), days=365)
    end = pki.cert_facts(b["admins"]["laptop"]["cert"])[2]
    (tmp_path / "cluster.secrets.yaml").write_text(yaml.safe_dump(b))
    proc = wgkube("plan", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"))
    text = " ".join(proc.stdout.split())
    assert f"admin laptop's certificate expires in" in text and f"{end:%Y-%m-%d}" in text
    assert f"wgkube admin renew laptop {tmp_path / 'cluster.yaml'}" in text and "phone's certificate" not in text
    js = yaml.safe_load(wgkube("plan", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"), "--json").stdout)
    assert len(js["warnings"]) == 1 and "laptop" in js["warnings"][0]
    # status reads the rendered folder: render with the short-lived certificate, then ask it.
    wgkube("render", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"), "-q", "--no-iso", "--no-packer")
    from generator.commands.status import admin_cert_warnings
    found = admin_cert_warnings(out)
    assert len(found) == 1 and "admin laptop's certificate expires in" in found[0] and f"{end:%Y-%m-%d}" in found[0]
    assert admin_cert_warnings(out, now=end + dt.timedelta(days=1))[0].startswith("admin laptop's certificate expired")
    assert len(admin_cert_warnings(out, now=end + dt.timedelta(days=366))) == 2  # phone's too, a year on


def test_plan_on_an_old_form_bundle_says_renew(tmp_path):
    spec = copy_golden(tmp_path)
    text = " ".join(wgkube("plan", str(spec), "-o", str(tmp_path / "out")).stdout.split())
    assert "admin laptop still holds a certificate of the old form" in text and f"wgkube admin renew laptop {spec}" in text


# --------------------------------------------------------------------------- the old form renders as before


@pytest.mark.parametrize("name", ["hub-example", "hub-lab6-spares", "legacy-join-certs"])
def test_old_form_bundles_get_no_bindings(tmp_path, name):
    """The byte-for-byte check is tests/test_hub_unchanged.py (and the legacy join golden); here: why."""
    spec = copy_golden(tmp_path, name)
    cluster = yaml.safe_load(spec.read_text())["name"]
    wgkube("render", str(spec), "-o", str(tmp_path / "out"), "-q", "--no-iso", "--no-packer")
    out = tmp_path / "out" / cluster
    for node in (p.name for p in (out / "nodes").iterdir()):
        files = files_of(out, node)
        assert BINDINGS not in files and "phase_admins" not in files[FIRSTBOOT][0].decode()
    for script in out.glob("hub-update/*.sh"):
        assert "ClusterRoleBinding" not in script.read_text()


def test_a_hub_with_many_revocable_admins_still_fits_aws(tmp_path):
    out = render(tmp_path, spec_text(tuple(f"admin-{i}" for i in range(20))), "--provider", "aws")
    data = (out / "nodes" / "hub" / "user-data").read_bytes()
    assert len(data) <= 16 * 1024, len(data)
    check_bindings(files_of(out, "hub")[BINDINGS][0].decode(), [f"admin-{i}" for i in range(20)])


def test_plan_warns_when_a_removed_admin_comes_back_under_the_same_name(tmp_path):
    render(tmp_path, spec_text(("laptop", "phone")))
    render(tmp_path, spec_text(("laptop",)))                    # phone removed: its binding goes
    (tmp_path / "cluster.yaml").write_text(spec_text(("laptop", "phone")))
    text = " ".join(wgkube("plan", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out")).stdout.split())
    assert "admin phone was removed on" in text and "access again" in text and "use another name" in text
    assert "admin laptop was removed" not in text


def test_status_prints_the_expiry_warning_after_its_table(tmp_path):
    """`wgkube status OUTDIR` end to end: no member answers here (no tunnel), the warning still shows;
    with --json it goes to stderr and stdout stays one JSON object."""
    import json
    text = spec_text() + "status_endpoint: true\n"
    out = render(tmp_path, text)
    b = bundle(tmp_path)
    b["admins"]["laptop"] = pki.new_admin_cert(b["pki"]["ca"], "laptop", dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=355))
    (tmp_path / "cluster.secrets.yaml").write_text(yaml.safe_dump(b))
    render(tmp_path, text)
    proc = wgkube("status", str(out), "--no-api", "--timeout", "0.3", check=False)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr
    assert "warning: admin laptop's certificate expires in 10 days" in " ".join(proc.stdout.split())
    js = wgkube("status", str(out), "--no-api", "--timeout", "0.3", "--json", check=False)
    json.loads(js.stdout)
    assert "admin laptop's certificate expires in 10 days" in js.stderr
