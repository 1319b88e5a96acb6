"""Day two: add, remove and re-key members without breaking the running cluster (issue 5,
docs/day-two.md, docs/join-window.md). Crash safety, locking, corrupt bundles and age are in
test_bundle.py.

Renders go through the real CLI (in-process through Typer's runner where many renders are
needed, as a subprocess where exit codes and stderr matter). WireGuard facts are checked with
real `wg`/`wg-quick` on wireguard-go in network namespaces, and with `wgkube lab` (issue 4)."""
from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import need, need_root, wgkube
from generator import secrets as secrets_mod
from generator.secrets import bundle as secrets_bundle
from generator.artifacts import kubeadm
from generator.artifacts.cloudinit import extract_files
from generator.cli import app
from generator.secrets.pki import wg_public_from_private

BASE = {
    "name": "d2",
    "vpn": {"cidr": "10.77.0.0/24"},
    "login": {"user": "ops"},
    "nodes": [
        {"name": "hub", "role": "control-plane", "endpoint": "203.0.113.10"},
        {"name": "worker-1", "role": "worker", "endpoint": "198.51.100.20"},
        {"name": "homelab-1", "role": "worker"},
    ],
    "admins": [{"name": "laptop"}],
}
WG_KEY = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
runner = CliRunner()


def spec_doc(*, add=(), drop=(), spares=None, window=None, admins=()) -> dict:
    doc = copy.deepcopy(BASE)
    doc["nodes"] = [n for n in doc["nodes"] if n["name"] not in drop] + [dict(n) for n in add]
    doc["admins"] += [{"name": a} for a in admins]
    if spares is not None:
        doc["vpn"]["spares"] = spares
    if window is not None:
        doc["join"] = {"window_days": window}
    return doc


def write_spec(work: Path, doc: dict) -> Path:
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli(*args: str, ok: bool = True):
    """The real CLI, in-process (fast); exit codes as a user sees them."""
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    if ok and result.exit_code != 0:
        raise AssertionError(f"wgkube {' '.join(map(str, args))} exited {result.exit_code}\n{result.output}\n{result.exception!r}")
    return result


def render(work: Path, doc: dict, *extra: str):
    spec = write_spec(work, doc)
    return cli("render", spec, "-o", work / "out", "-q", "--no-packer", *extra)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def changes(before: dict[str, bytes], after: dict[str, bytes]) -> dict[str, set[str]]:
    return {
        "new": set(after) - set(before),
        "removed": set(before) - set(after),
        "changed": {p for p in set(before) & set(after) if before[p] != after[p]},
    }


def bundle(work: Path) -> dict:
    return yaml.safe_load((work / "cluster.secrets.yaml").read_text())


def wg_of(out: Path, member: str) -> str:
    path = out / "wireguard" / member / "wg0.conf"
    if not path.exists():
        path = out / "admins" / member / "wg0.conf"
    return path.read_text()


def hub_peers(out: Path) -> dict[str, str]:
    """label (the comment line) -> public key, for every [Peer] of the hub's rendered config."""
    blocks = wg_of(out, "hub").split("[Peer]")[1:]
    return {re.search(r"^# (.+)$", b, re.M).group(1): re.search(r"^PublicKey = (\S+)$", b, re.M).group(1) for b in blocks}


def node_files(out: Path, node: str) -> dict[str, tuple[bytes, int]]:
    return extract_files((out / "nodes" / node / "user-data").read_bytes())


# --------------------------------------------------------------------------- 1. stable identity


def test_adding_a_member_changes_exactly_the_new_members_files_and_the_hubs(tmp_path):
    render(tmp_path, spec_doc())
    out = tmp_path / "out" / "d2"
    before, keys_before = tree(out), bundle(tmp_path)["members"]
    render(tmp_path, spec_doc(add=[{"name": "worker-2", "endpoint": "198.51.100.30"}]))
    after, keys_after = tree(out), bundle(tmp_path)["members"]
    diff = changes(before, after)
    # The design says: a new member gets its own files; the hub's peer list gains one entry,
    # which lives in its wg0.conf, so its user-data and the seed ISO built from it change, and so
    # does its live-update script; workers and admins peer only with the hub, so nothing of
    # theirs changes. plan.json and the manifest describe the whole cluster.
    assert diff["new"] == {"nodes/worker-2/user-data", "nodes/worker-2/meta-data", "nodes/worker-2/seed.iso",
                           "wireguard/worker-2/wg0.conf"}
    assert diff["changed"] == {"nodes/hub/user-data", "nodes/hub/seed.iso", "wireguard/hub/wg0.conf",
                               "hub-update/wg0.sh", "plan.json", "manifest.json"}
    assert diff["removed"] == set()
    # Identity of existing members: keys and addresses are exactly what they were.
    for name, entry in keys_before.items():
        assert keys_after[name] == entry
    assert bundle(tmp_path)["token"] and bundle(tmp_path)["pki"]
    # Inside the hub's user-data only the WireGuard config changed.
    old_hub = extract_files(before["nodes/hub/user-data"])
    new_hub = extract_files(after["nodes/hub/user-data"])
    assert {p for p in new_hub if new_hub[p] != old_hub.get(p)} == {"/etc/wireguard/wg0.conf"}


def test_reordering_the_spec_changes_nothing(tmp_path):
    doc = spec_doc()
    render(tmp_path, doc)
    out = tmp_path / "out" / "d2"
    before = tree(out)
    doc["nodes"] = [doc["nodes"][0], doc["nodes"][2], doc["nodes"][1]]
    render(tmp_path, doc)
    diff = changes(before, tree(out))
    # Only the cluster summary lists members in spec order; no member's file changes.
    assert diff["changed"] <= {"plan.json", "manifest.json"} and not diff["new"] and not diff["removed"]


# --------------------------------------------------------------------------- 2. spare slots


def test_a_new_member_takes_a_spare_slot_and_the_hub_does_not_change(tmp_path):
    render(tmp_path, spec_doc(spares=2))
    out = tmp_path / "out" / "d2"
    before, b0 = tree(out), bundle(tmp_path)
    assert set(b0["spares"]["free"]) == {"spare.1", "spare.2"}
    assert {"spare.1", "spare.2"} <= set(hub_peers(out))
    slot = b0["spares"]["free"]["spare.1"]

    plan = cli("plan", write_spec(tmp_path, spec_doc(spares=2, add=[{"name": "worker-2", "endpoint": "198.51.100.30"}])),
               "-o", tmp_path / "out", "--json")
    predicted = json.loads(plan.stdout)
    assert predicted["members"]["hub"]["status"] == "unchanged" and not predicted["hub_must_update"]
    assert predicted["members"]["worker-2"]["status"] == "new"

    render(tmp_path, spec_doc(spares=2, add=[{"name": "worker-2", "endpoint": "198.51.100.30"}]))
    after, b1 = tree(out), bundle(tmp_path)
    diff = changes(before, after)
    hub_files = {p for p in before if p.startswith(("nodes/hub/", "wireguard/hub/", "hub-update/"))}
    assert not hub_files & (diff["changed"] | diff["removed"]), "the hub's files must stay byte-identical"
    assert diff["changed"] == {"plan.json", "manifest.json"}
    assert diff["new"] == {"nodes/worker-2/user-data", "nodes/worker-2/meta-data", "nodes/worker-2/seed.iso", "wireguard/worker-2/wg0.conf"}
    # worker-2 is the slot: its key and address are the slot's, which the hub already lists.
    w2 = b1["members"]["worker-2"]
    assert (w2["private_key"], w2["public_key"], w2["vpn_ip"], w2["slot"]) == (slot["private_key"], slot["public_key"], slot["vpn_ip"], "spare.1")
    assert f"PrivateKey = {slot['private_key']}" in wg_of(out, "worker-2")
    assert f"Address = {slot['vpn_ip']}/24" in wg_of(out, "worker-2")
    assert hub_peers(out)["spare.1"] == slot["public_key"]
    assert set(b1["spares"]["free"]) == {"spare.2"}  # not refilled: that would change the hub

    # Past the spares the hub changes anyway: then the slots are refilled to 2 and the member
    # in a slot shows under its own name.
    more = spec_doc(spares=2, add=[{"name": "worker-2", "endpoint": "198.51.100.30"}, {"name": "worker-3"}, {"name": "worker-4"}])
    render(tmp_path, more)
    b2 = bundle(tmp_path)
    assert b2["members"]["worker-3"]["public_key"] == b1["spares"]["free"]["spare.2"]["public_key"]
    assert set(b2["spares"]["free"]) == {"spare.3", "spare.4"} and b2["spares"]["target"] == 2
    peers = hub_peers(out)
    assert peers["worker-2"] == w2["public_key"] and "spare.1" not in peers and {"spare.3", "spare.4"} <= set(peers)
    assert "slot" not in b2["members"]["worker-2"]
    ips = [m["vpn_ip"] for m in b2["members"].values()] + [s["vpn_ip"] for s in b2["spares"]["free"].values()]
    assert len(ips) == len(set(ips))
    # And a re-render is still a no-op.
    again = tree(out)
    render(tmp_path, more)
    assert tree(out) == again


def test_a_spec_that_cannot_fit_its_spares_is_refused(tmp_path):
    doc = spec_doc(spares=123)  # 4 members + 123 slots: one more than a /25 holds
    doc["vpn"]["cidr"] = "10.77.0.0/25"
    result = cli("check", write_spec(tmp_path, doc), ok=False)
    assert result.exit_code == 2 and "4 members and 123 spare slots" in " ".join(result.output.split()), result.output
    doc["vpn"]["spares"] = 122
    assert cli("check", write_spec(tmp_path, doc), ok=False).exit_code == 0


# --------------------------------------------------------------------------- 4. remove + rekey


def test_removing_a_member_retires_its_key_and_drops_it_from_every_peer_list(tmp_path):
    render(tmp_path, spec_doc(add=[{"name": "worker-2"}], window=5))
    out = tmp_path / "out" / "d2"
    before, b0 = tree(out), bundle(tmp_path)
    gone = b0["members"]["worker-2"]
    plan = cli("plan", write_spec(tmp_path, spec_doc(window=5)), "-o", tmp_path / "out")
    assert "kubectl delete node worker-2" in plan.stdout
    assert "hub-update/wg0.sh" in plan.stdout and re.search(r"worker-2 +removed", plan.stdout)
    render(tmp_path, spec_doc(window=5))
    b1 = bundle(tmp_path)
    assert "worker-2" not in b1["members"] and "worker-2" not in b1["joins"]
    retired = b1["retired"]["worker-2"]
    assert retired["private_key"] == gone["private_key"] and retired["reason"] == "removed from the spec"
    assert retired["join"] == b0["joins"]["worker-2"]  # the join credential is kept too (still valid)
    assert gone["public_key"] not in wg_of(out, "hub")
    diff = changes(before, tree(out))
    assert diff["removed"] == {p for p in before if "/worker-2/" in p}
    assert diff["changed"] == {"nodes/hub/user-data", "nodes/hub/seed.iso", "wireguard/hub/wg0.conf", "hub-update/wg0.sh",
                               "plan.json", "manifest.json"}
    # The name coming back gets a fresh key, never the retired one.
    render(tmp_path, spec_doc(add=[{"name": "worker-2"}], window=5))
    b2 = bundle(tmp_path)
    assert b2["members"]["worker-2"]["private_key"] != gone["private_key"]
    assert b2["retired"]["worker-2"]["private_key"] == gone["private_key"]


def test_render_prints_the_kubernetes_step_when_a_node_leaves(tmp_path):
    spec = write_spec(tmp_path, spec_doc(add=[{"name": "worker-2"}]))
    cli("render", spec, "-o", tmp_path / "out", "--no-iso", "--no-packer")
    write_spec(tmp_path, spec_doc())
    result = cli("render", spec, "-o", tmp_path / "out", "--no-iso", "--no-packer")
    assert "kubectl delete node worker-2" in " ".join(result.stdout.split())


def test_rekey_a_worker_changes_its_key_only_and_says_worker_first_then_hub(tmp_path):
    render(tmp_path, spec_doc())
    out = tmp_path / "out" / "d2"
    before, b0 = tree(out), bundle(tmp_path)
    result = cli("rekey", "--yes", "worker-1", tmp_path / "cluster.yaml", "-o", tmp_path / "out")
    b1 = bundle(tmp_path)
    old, new = b0["members"]["worker-1"], b1["members"]["worker-1"]
    assert new["private_key"] != old["private_key"] and new["vpn_ip"] == old["vpn_ip"]
    assert b1["retired"]["worker-1"]["private_key"] == old["private_key"] and b1["retired"]["worker-1"]["reason"] == "rekeyed"
    for name in ("hub", "homelab-1", "laptop"):
        assert b1["members"][name] == b0["members"][name]
    diff = changes(before, tree(out))
    assert diff["changed"] == {"nodes/worker-1/user-data", "nodes/worker-1/seed.iso", "wireguard/worker-1/wg0.conf",
                               "nodes/hub/user-data", "nodes/hub/seed.iso", "wireguard/hub/wg0.conf", "hub-update/wg0.sh",
                               "manifest.json"}
    assert hub_peers(out)["worker-1"] == new["public_key"]
    text = " ".join(result.stdout.split())
    first, second = text.index("1. worker-1 first"), text.index("2. then the hub")
    assert first < second and "sudo bash -s <" in text and "cut off" in text
    assert not WG_KEY.search(result.stdout.replace(b1["members"]["hub"]["public_key"], ""))
    # Rekeying an admin: the hub first (from the admin device, while its old key works).
    admin = cli("rekey", "--yes", "laptop", tmp_path / "cluster.yaml", "-o", tmp_path / "out")
    assert "1. the hub first" in " ".join(admin.stdout.split())


def test_rekey_refuses_unknown_members_cleanly(tmp_path):
    spec = write_spec(tmp_path, spec_doc())
    proc = wgkube("rekey", "--yes", "nobody", str(spec), "-o", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "no secrets bundle" in proc.stderr and "Traceback" not in proc.stderr
    render(tmp_path, spec_doc())
    proc = wgkube("rekey", "--yes", "nobody", str(spec), "-o", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "'nobody' is not in the spec" in proc.stderr


# --------------------------------------------------------------------------- 5. plan


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (b"" if p.is_dir() else p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_plan_writes_nothing_shows_no_keys_and_predicts_the_render(tmp_path):
    render(tmp_path, spec_doc(window=3))
    (tmp_path / "cluster.secrets.yaml.lock").unlink()
    changed = spec_doc(window=3, drop=["homelab-1"], add=[{"name": "worker-2"}], admins=["phone"])
    spec = write_spec(tmp_path, changed)
    state = snapshot(tmp_path)
    proc = wgkube("plan", str(spec), "-o", str(tmp_path / "out"))
    assert snapshot(tmp_path) == state, "plan must not write anything (bundle, out/, lock)"
    assert not WG_KEY.search(proc.stdout + proc.stderr) and "PRIVATE KEY" not in proc.stdout
    for secret in (bundle(tmp_path)["token"], bundle(tmp_path)["pki"]["ca"]["key"], bundle(tmp_path)["joins"]["worker-1"]["token"]):
        assert secret not in proc.stdout
    text = proc.stdout
    assert "+ WireGuard key for worker-2" in text and "+ retired homelab-1" in text and "+ admin certificate for phone" in text
    assert "kubectl delete node homelab-1" in text and "hub-update/wg0.sh" in text
    predicted = json.loads(wgkube("plan", str(spec), "-o", str(tmp_path / "out"), "--json").stdout)
    before = tree(tmp_path / "out" / "d2")
    render(tmp_path, changed)
    actual = changes(before, tree(tmp_path / "out" / "d2"))
    for name, member in predicted["members"].items():
        for rel, f in member["files"].items():
            expect = {"new": "new", "removed": "removed", "changed": "changed"}.get(f["status"])
            assert (rel in actual[expect]) if expect else (rel not in set().union(*actual.values())), (name, rel, f)
    # The hub's ruleset names the admins (issue 11: they reach only the API and SSH): adding one
    # changes it too, a file read at boot.
    inner = predicted["members"]["hub"]["files"]["nodes/hub/user-data"]["inner"]
    # With a join window its kubeadm config changes too (worker-2's token in, homelab-1's out):
    # used once, at its first boot; the running hub gets the token from its live update.
    # The new admin's certificate is of the revocable form (issue 17 item 2): its ClusterRoleBinding
    # joins the control plane's bindings file, which its live update applies.
    assert sorted(inner, key=lambda f: f["path"]) == [
        {"path": "/etc/wgkube/admin-bindings.yaml", "status": "changed", "category": "admins"},
        {"path": "/etc/wgkube/firewall.nft", "status": "changed", "category": "boot"},
        {"path": "/etc/wgkube/kubeadm.yaml", "status": "changed", "category": "first-boot"},
        {"path": "/etc/wireguard/wg0.conf", "status": "changed", "category": "live"}]
    assert "the hub (hub): files read at boot change (/etc/wgkube/firewall.nft)" in text
    flat = " ".join(text.split())
    retired = bundle(tmp_path)["retired"]["homelab-1"]["join"]["token"]  # (the render above retired it)
    assert "creates new workers' join tokens" in flat and f"kubeadm token delete {retired.split('.')[0]}" in flat
    assert retired not in text
    assert predicted["hub_must_update"]


def test_plan_on_a_fresh_spec_says_everything_is_new(tmp_path):
    spec = write_spec(tmp_path, spec_doc())
    proc = wgkube("plan", str(spec), "-o", str(tmp_path / "out"), "--no-iso")
    assert re.search(r"hub +new", proc.stdout) and "first render" in proc.stdout
    assert not (tmp_path / "cluster.secrets.yaml").exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 3. join window
# Per-node join tokens (issue 11 item 12): tests/test_join_tokens.py.


def test_without_a_window_workers_keep_the_token_join(tmp_path):
    render(tmp_path, spec_doc(), "--no-iso")
    join = yaml.safe_load(node_files(tmp_path / "out" / "d2", "worker-1")["/etc/wgkube/kubeadm.yaml"][0])
    assert join["discovery"]["bootstrapToken"]["token"] == bundle(tmp_path)["token"]
    assert bundle(tmp_path)["joins"] == {}


@pytest.mark.tools
def test_hub_update_script_is_shellcheck_clean(tmp_path):
    shellcheck = need("shellcheck")
    render(tmp_path, spec_doc(spares=1), "--no-iso")
    script = tmp_path / "out" / "d2" / "hub-update" / "wg0.sh"
    proc = subprocess.run([shellcheck, "-S", "style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    text = script.read_text()
    assert "PrivateKey = " not in text.replace("printf 'PrivateKey = %s", "")
    assert not any(e["private_key"] in text for e in bundle(tmp_path)["members"].values())


# --------------------------------------------------------------------------- running members


class Bed:
    """A small WireGuard test bed: one namespace per member on a shared bridge, wireguard-go
    under wg-quick, and a private /etc/wireguard and /run/wireguard per member (a mount
    namespace held open by a sleeping process), so every member's interface is wg0 as on a node."""

    def __init__(self, tmp: Path):
        self.tag = uuid.uuid4().hex[:5]
        self.tmp = tmp
        self.pids: dict[str, int] = {}
        self.namespaces: list[str] = []
        self.holders: list[subprocess.Popen] = []
        self.br = self._ns("br")
        self._ip("-n", self.br, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.br, "link", "set", "br0", "up")

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def _ns(self, suffix: str) -> str:
        name = f"d5{self.tag}{suffix}"
        self._ip("netns", "add", name)
        self.namespaces.append(name)
        return name

    def add(self, member: str, address: str, other_net: str) -> None:
        i = len(self.pids)
        ns = self._ns(f"m{i}")
        outer = f"d5{self.tag}v{i}"
        self._ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._ip("link", "set", outer, "netns", self.br)
        self._ip("-n", self.br, "link", "set", outer, "master", "br0", "up")
        self._ip("-n", ns, "addr", "add", address, "dev", "eth0")
        self._ip("-n", ns, "link", "set", "eth0", "up")
        self._ip("-n", ns, "link", "set", "lo", "up")
        self._ip("-n", ns, "route", "add", other_net, "dev", "eth0")  # the other "public" range, on-link
        etc, run, ready = self.tmp / member / "etc", self.tmp / member / "run", self.tmp / member / "ready"
        etc.mkdir(parents=True)
        run.mkdir()
        holder = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private", "sh", "-c",
                                   f"mount --bind {run} /run/wireguard && mount --bind {etc} /etc/wireguard && touch {ready} && exec sleep 900"])
        self.holders.append(holder)
        for _ in range(100):
            if ready.exists():
                break
            time.sleep(0.05)
        assert ready.exists(), f"{member}: namespace holder did not start"
        self.pids[member] = holder.pid

    def sh(self, member: str, script: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["nsenter", "-t", str(self.pids[member]), "-m", "-n", "bash", "-c", script],
                              input=input, capture_output=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{member}: {script}: {proc.stdout.decode()} {proc.stderr.decode()}")
        return proc

    def conf(self, member: str) -> Path:
        return self.tmp / member / "etc" / "wg0.conf"

    def up(self, member: str, conf: bytes) -> None:
        self.conf(member).write_bytes(conf)
        self.conf(member).chmod(0o600)
        self.sh(member, "wg-quick up wg0")

    def ping(self, member: str, address: str, tries: int = 8) -> bool:
        for _ in range(tries):
            if self.sh(member, f"ping -c 1 -W 1 {address}", check=False).returncode == 0:
                return True
        return False

    def peers(self, member: str) -> dict[str, tuple[int, int]]:
        """public key -> (latest handshake, bytes received) on member's wg0."""
        lines = self.sh(member, "wg show wg0 dump").stdout.decode().strip().splitlines()[1:]
        return {f[0]: (int(f[4]), int(f[5])) for f in (line.split("\t") for line in lines)}

    def close(self) -> None:
        # Every process in these namespaces was started here (holders, wireguard-go): end them by PID.
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for holder in self.holders:
            holder.wait(timeout=10)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def netns_tools():
    need_root("network namespaces")
    for tool in ("ip", "wg", "wg-quick", "nsenter", "unshare", "ping", "nft", "sysctl"):
        need(tool)
    need("wireguard-go", "userspace WireGuard (this kernel has no module)")


@pytest.fixture
def bed(tmp_path, netns_tools):
    b = Bed(tmp_path / "bed")
    try:
        yield b
    finally:
        b.close()


def run_printed(bed: Bed, member: str, command: str) -> subprocess.CompletedProcess:
    """Run a command wgkube printed for the user (`ssh USER@IP CMD < FILE`) inside member's
    namespace, as ssh would run it there: what the user is told is what is tested."""
    m = re.fullmatch(r"ssh \S+@\S+ (?:'(?P<quoted>.+)'|(?P<plain>sudo bash -s)) < (?P<file>\S+)", command.strip())
    assert m, command
    inner = (m.group("quoted") or m.group("plain")).removeprefix("sudo ")
    return bed.sh(member, inner, input=Path(m.group("file")).read_bytes(), check=False)


def printed(text: str, start: str) -> str:
    line = next(line for line in text.splitlines() if start in line)
    return line[line.index("ssh "):]


@pytest.mark.lab
def test_running_members_keep_working_through_add_spare_hub_update_remove_and_rekey(tmp_path, bed):
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out" / "d2"
    hub_ip, w1_ip, lab_ip, laptop_ip = "10.77.0.1", "10.77.0.2", "10.77.0.3", "10.77.0.4"
    render(work, spec_doc(spares=1), "--no-iso")
    first = tree(out)
    bed.add("hub", "203.0.113.10/24", "198.51.100.0/24")
    bed.add("worker-1", "198.51.100.20/24", "203.0.113.0/24")
    bed.add("homelab-1", "198.51.100.77/24", "203.0.113.0/24")
    bed.add("laptop", "198.51.100.78/24", "203.0.113.0/24")
    bed.sh("hub", "sysctl -qw net.ipv4.ip_forward=1")  # the node's sysctl file does this on a real hub
    for name in ("hub", "worker-1", "homelab-1"):
        bed.up(name, first[f"wireguard/{name}/wg0.conf"])
    bed.up("laptop", first["admins/laptop/wg0.conf"])
    assert bed.ping("worker-1", hub_ip) and bed.ping("homelab-1", hub_ip)
    assert bed.ping("laptop", w1_ip) and bed.ping("laptop", lab_ip), "spokes reach each other through the hub"

    def untouched_still_work(*members: str) -> None:
        for name in members:
            assert bed.ping(name, hub_ip, tries=3), f"{name} (never touched) lost the hub"

    # 1. A new worker takes the spare slot: the running hub is not touched at all.
    render(work, spec_doc(spares=1, add=[{"name": "worker-2"}]), "--no-iso")
    second = tree(out)
    assert second["wireguard/hub/wg0.conf"] == first["wireguard/hub/wg0.conf"]
    bed.add("worker-2", "198.51.100.79/24", "203.0.113.0/24")
    bed.up("worker-2", second["wireguard/worker-2/wg0.conf"])
    assert bed.ping("worker-2", hub_ip) and bed.ping("laptop", "10.77.0.5")
    untouched_still_work("worker-1", "homelab-1", "laptop")

    # 2. One more worker, past the spares: the hub needs its live update, applied as printed.
    spec = write_spec(work, spec_doc(spares=1, add=[{"name": "worker-2"}, {"name": "worker-3"}]))
    plan_text = cli("plan", spec, "-o", work / "out").stdout
    render(work, spec_doc(spares=1, add=[{"name": "worker-2"}, {"name": "worker-3"}]), "--no-iso")
    third = tree(out)
    before = bed.peers("hub")
    assert sum(1 for handshake, _ in before.values() if handshake) == 4, before  # four live sessions to keep
    command = printed(plan_text, "ssh ")
    wrong = run_printed(bed, "worker-1", command)
    assert wrong.returncode == 1 and b"not the one of hub" in wrong.stderr, "the script only runs on the hub"
    applied = run_printed(bed, "hub", command)
    assert applied.returncode == 0, applied.stderr
    assert bed.conf("hub").read_bytes() == third["wireguard/hub/wg0.conf"], "the hub's file is the rendered one, its key kept"
    after = bed.peers("hub")
    for pub, (handshake, rx) in before.items():
        if handshake:
            assert after[pub][0] == handshake and after[pub][1] >= rx, "an unchanged peer kept its session"
    again = run_printed(bed, "hub", command)
    assert again.returncode == 0 and b"already up to date" in again.stderr
    bed.add("worker-3", "198.51.100.80/24", "203.0.113.0/24")
    bed.up("worker-3", third["wireguard/worker-3/wg0.conf"])
    w3_ip = re.search(r"^Address = ([\d.]+)/", third["wireguard/worker-3/wg0.conf"].decode(), re.M).group(1)
    assert bed.ping("worker-3", hub_ip) and bed.ping("laptop", w3_ip)
    untouched_still_work("worker-1", "homelab-1", "laptop", "worker-2")
    # No new handshake was needed for the untouched peers (sessions survived the syncconf).
    assert bed.peers("hub")[bed_pub(third, "worker-1")][0] == before[bed_pub(third, "worker-1")][0]

    # 3. homelab-1 leaves: after the hub update it is out; everyone else carries on.
    spec = write_spec(work, spec_doc(spares=1, drop=["homelab-1"], add=[{"name": "worker-2"}, {"name": "worker-3"}]))
    cli("render", spec, "-o", work / "out", "-q", "--no-packer", "--no-iso")
    plan_after = cli("plan", spec, "-o", work / "out").stdout
    assert "by hand: nothing" in plan_after
    assert run_printed(bed, "hub", command).returncode == 0
    assert not bed.ping("homelab-1", hub_ip, tries=2), "a removed member's key no longer opens the tunnel"
    untouched_still_work("worker-1", "laptop", "worker-2", "worker-3")

    # 4. worker-1 is rekeyed, rolled out in the printed order: in between only worker-1 is cut off.
    rekey = cli("rekey", "--yes", "worker-1", spec, "-o", work / "out")
    steps = [printed(rekey.stdout, "1. worker-1 first"), printed(rekey.stdout, "2. then the hub")]
    assert run_printed(bed, "worker-1", steps[0]).returncode == 0
    assert not bed.ping("worker-1", hub_ip, tries=2), "worker-1 is cut off until the hub has its new key"
    untouched_still_work("laptop", "worker-2", "worker-3")
    assert run_printed(bed, "hub", steps[1]).returncode == 0
    assert bed.ping("worker-1", hub_ip) and bed.ping("laptop", w1_ip)
    untouched_still_work("laptop", "worker-2", "worker-3")


def bed_pub(files: dict[str, bytes], member: str) -> str:
    conf = files[f"wireguard/{member}/wg0.conf"].decode()
    return wg_public_from_private(re.search(r"^PrivateKey = (\S+)$", conf, re.M).group(1))


@pytest.mark.lab
def test_wgkube_lab_passes_after_each_change_with_untouched_members_on_their_old_files(tmp_path, netns_tools):
    """The full lab (issue 4: underlay, NAT, firewall, pods, real packets) after each day-two
    change. Members a change did not touch run their previous files: byte-identical, asserted."""
    from generator.proof.lab.run import run_lab
    out = tmp_path / "out" / "d2"
    render(tmp_path, spec_doc(spares=1), "--no-iso")
    steps = [
        ("worker-2 takes the spare slot", spec_doc(spares=1, add=[{"name": "worker-2"}]), {"worker-2"}),
        ("worker-3 past the spares, homelab-1 leaves", spec_doc(spares=1, drop=["homelab-1"], add=[{"name": "worker-2"}, {"name": "worker-3"}]),
         {"hub", "worker-3", "homelab-1"}),
        ("worker-1 rekeyed", None, {"hub", "worker-1"}),
    ]
    for what, doc, touched in steps:
        before = tree(out)
        if doc is None:
            cli("rekey", "--yes", "worker-1", tmp_path / "cluster.yaml", "-o", tmp_path / "out")
        else:
            render(tmp_path, doc, "--no-iso")
        after = tree(out)
        owners = {rel.split("/")[1] for rel in set(before) | set(after) if rel.startswith(("nodes/", "admins/", "wireguard/"))}
        for member in owners - touched:
            mine = {rel for rel in set(before) | set(after) if rel.split("/")[1:2] == [member]}
            assert {rel: after.get(rel) for rel in mine} == {rel: before.get(rel) for rel in mine}, f"{what}: {member} was touched"
        result = run_lab(out)
        failed = [(c.group, c.subject, c.expected, c.got) for c in result.checks if not c.ok]
        assert result.ok and not failed, (what, failed)
        print(f"lab after '{what}': {len(result.checks)} checks passed in {result.total_seconds:.1f} s")
