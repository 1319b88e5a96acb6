"""The secrets bundle and out/ never lose anything (issue 5, part 6; docs/day-two.md):
renders killed with SIGKILL at random moments and before every write step, two renders at
once, every kind of corrupt bundle, age encryption, and the atomically swapped out/ link.

Kills are real SIGKILLs of forked children running the real CLI code (modules imported once,
so each run is cheap); set WGKUBE_KILL_RUNS / WGKUBE_KILL_SEED to run more or other kills."""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import IN_CI, REPO, wgkube
from generator import pipeline
from generator.errors import UserError
from generator import secrets as secrets_mod
from generator.cli import app
from generator.output import read_manifest, recover
from generator.secrets.pki import wg_public_from_private
from test_daytwo import bundle, cli, hub_peers, render, spec_doc, tree, wg_of, write_spec


# Small on purpose (many renders): a hub, a worker, a laptop; B adds a worker (into the spare
# slot) and an admin (past the spares: the hub changes, slots are refilled).
KILL_A = spec_doc(spares=1, window=3, drop=["homelab-1"])
KILL_B = spec_doc(spares=1, window=3, drop=["homelab-1"], add=[{"name": "worker-9"}], admins=["phone"])
B_ONLY = {"worker-9", "phone"}


def check_consistent(work: Path) -> tuple[str, str]:
    """The bundle loads; out/d2 is one complete render; every key in out/ is the bundle's.
    Returns (which spec the bundle holds, which spec out/ holds): "A" or "B"."""
    path = work / "cluster.secrets.yaml"
    b = secrets_mod.load(path, "d2")
    assert b is not None
    out = work / "out" / "d2"
    manifest = read_manifest(out)
    assert manifest is not None, "out/d2 must always be there and complete"
    on_disk = tree(out)
    assert set(on_disk) == set(manifest["files"]) | {"manifest.json"}
    for rel, meta in manifest["files"].items():
        assert hashlib.sha256(on_disk[rel]).hexdigest() == meta["sha256"], rel
    names = {m["name"] for m in json.loads(on_disk["plan.json"])["members"]}
    out_state = "B" if names & B_ONLY else "A"
    bundle_state = "B" if set(b.members) & B_ONLY else "A"
    retired = {e["public_key"] for e in b.retired.values() if "public_key" in e}
    known = {e["public_key"] for e in b.members.values()} | {e["public_key"] for e in b.spares.values()} | retired
    for name in names:
        conf = wg_of(out, name)
        pub = wg_public_from_private(re.search(r"^PrivateKey = (\S+)$", conf, re.M).group(1))
        if out_state == bundle_state:
            assert pub == b.members[name]["public_key"], f"{name}: out/ and the bundle disagree"
        else:
            assert pub in known, f"{name}: out/ holds a key the bundle does not know"
    for pub in hub_peers(out).values():
        assert pub in known
    return bundle_state, out_state


def child_render(spec: Path, out: Path) -> int:
    """Fork; the child runs the real CLI render (modules already imported: fast). Returns pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            code = app(["render", str(spec), "-o", str(out), "-q", "--no-iso", "--no-packer"], standalone_mode=False) or 0
        finally:
            os._exit(code if isinstance(code, int) else 1)
    return pid


def covered(seen: set) -> bool:
    """The kills landed before, during and after the writes (not a test that cannot fail)."""
    return bool({("A", "A"), ("B", "B")} <= seen or {("A", "B"), ("B", "A")} & seen)


def test_render_killed_at_random_moments_never_loses_or_mixes_anything(tmp_path):
    spec = write_spec(tmp_path, KILL_A)
    cli("render", spec, "-o", tmp_path / "out", "-q", "--no-iso", "--no-packer")
    original = {n: e["public_key"] for n, e in bundle(tmp_path)["members"].items()}
    # How long one render takes here, for the kill times: the slowest of three renders of the
    # kind the kills interrupt (A to B and back, keys already made), not of the first one.
    durations = []
    for doc in (KILL_B, KILL_A, KILL_B):
        write_spec(tmp_path, doc)
        start = time.monotonic()
        _, status = os.waitpid(child_render(spec, tmp_path / "out"), 0)
        durations.append(time.monotonic() - start)
        assert os.waitstatus_to_exitcode(status) == 0, "a calibration render failed"
    duration = max(durations)
    assert check_consistent(tmp_path) == ("B", "B")
    rng = random.Random(int(os.environ.get("WGKUBE_KILL_SEED", "5")))
    seen = set()
    runs = int(os.environ.get("WGKUBE_KILL_RUNS", "50"))
    i = 0
    # At least `runs` kills; on a loaded machine (a render slower than calibrated, so every kill
    # lands before the switch) more, with the kill window stretched, until the kills have
    # landed on both sides of the switch: progress decides, not a fixed time.
    while i < runs or (not covered(seen) and i < 4 * runs):
        stretch = 1.0 if i < runs else 1.0 + (i - runs) / 10
        _, out_state = check_consistent(tmp_path)
        write_spec(tmp_path, KILL_A if out_state == "B" else KILL_B)
        # Half the kills anywhere in the run, half in its second half (where the writes are).
        delay = stretch * (rng.uniform(0, duration * 1.1) if i % 2 else rng.uniform(duration * 0.5, duration * 1.2))
        pid = child_render(spec, tmp_path / "out")
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        seen.add(check_consistent(tmp_path))
        i += 1
    assert covered(seen), seen
    # A finished render afterwards: exactly consistent, nothing stray left, identities kept.
    write_spec(tmp_path, KILL_B)
    cli("render", spec, "-o", tmp_path / "out", "-q", "--no-iso", "--no-packer")
    assert check_consistent(tmp_path) == ("B", "B")
    final = bundle(tmp_path)["members"]
    for name, pub in original.items():
        assert final[name]["public_key"] == pub, f"{name} lost its key"
    assert not list(tmp_path.glob(".cluster.secrets.yaml.*.tmp"))
    # out/d2 is a real folder and every hidden generation a killed render left (staged, cut
    # short before its manifest was named, or the previous one not yet deleted) is gone.
    assert not (tmp_path / "out" / "d2").is_symlink()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d2"]
    print(f"SIGKILL runs: {i}, render {duration * 1000:.0f} ms, (bundle, out) states seen: {sorted(seen)}")


MUTATIONS = ("replace", "rename", "symlink", "link", "unlink", "rmdir", "mkdir")
# renameat2 goes through ctypes, not os: its two wrappers are patched by name.
RENAMEAT2 = {"exchange": "rename_exchange", "noreplace": "rename_noreplace"}
SWITCHES = ("replace", "rename", "symlink", "link", "exchange", "noreplace")


def _count_and_kill(kill_at: int | None, log_fd: int) -> None:  # pragma: no cover - child
    """Patch the os calls that change what is on disk (and the renameat2 wrappers in fsutil):
    SIGKILL right before call number kill_at. Each call's name goes to log_fd, one per line."""
    from generator import fsutil
    calls = [0]

    def wrap(name, fn):
        def inner(*a, **kw):
            if kill_at is not None and calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            os.write(log_fd, name.encode() + b"\n")
            return fn(*a, **kw)
        return inner
    for name in MUTATIONS:
        setattr(os, name, wrap(name, getattr(os, name)))
    for name, attr in RENAMEAT2.items():
        setattr(fsutil, attr, wrap(name, getattr(fsutil, attr)))


def _no_exchange(*_args) -> None:  # pragma: no cover - child
    """A file system without RENAME_EXCHANGE (NFS, some FUSE): what renameat2 says there."""
    import errno
    raise OSError(errno.EINVAL, "Invalid argument")


def to_link_layout(out: Path) -> None:
    """Turn a rendered out/<cluster> into the layout of wgkube before issue 16: a relative
    symbolic link to a hidden generation folder of the same tree."""
    gen = out.parent / f".{out.name}.gen-older"
    os.rename(out, gen)
    out.symlink_to(gen.name)


def kill_points(names: list[str]) -> list[int]:
    """Every rename and link, the step right after each, and the first, middle and last of each
    run of mkdirs or of deletes (inside one run they only grow or shrink a directory nobody reads)."""
    points = set()
    for i, name in enumerate(names):
        if name in SWITCHES:
            points |= {i, i + 1}
    kinds = ["delete" if n in ("unlink", "rmdir") else n for n in names]
    i = 0
    while i < len(names):
        j = i
        while j + 1 < len(names) and kinds[j + 1] == kinds[i]:
            j += 1
        points |= {i, (i + j) // 2, j}
        i = j + 1
    return sorted(p for p in points if p < len(names))


@pytest.mark.parametrize("layout", ["folder", "older link", "no exchange", "older link, no exchange"])
def test_render_killed_before_every_single_write_step_keeps_a_usable_state(tmp_path, layout):
    """Deterministic companion of the random test: the write phase killed right before each of
    its renames, exchanges, links, unlinks and mkdirs (the distinct ones), in turn. From today's
    layout (a real folder), from the older one (a link to a hidden generation: the render
    migrates it), and both on a file system without RENAME_EXCHANGE (the two-rename fallback)."""
    from generator import fsutil
    spec = write_spec(tmp_path, KILL_A)
    cli("render", spec, "-o", tmp_path / "out", "-q", "--no-iso", "--no-packer")
    if "older link" in layout:
        to_link_layout(tmp_path / "out" / "d2")
    base = tmp_path / "base"
    shutil.copytree(tmp_path / "out", base / "out", symlinks=True)
    shutil.copy2(tmp_path / "cluster.secrets.yaml", base / "cluster.secrets.yaml")
    write_spec(tmp_path, KILL_B)
    prepared = pipeline.prepare(spec)
    rendered = pipeline.render_all(prepared.plan, prepared.bundle, iso=False, packer=False)

    def reset() -> None:
        shutil.rmtree(tmp_path / "out")
        shutil.copytree(base / "out", tmp_path / "out", symlinks=True)
        shutil.copy2(base / "cluster.secrets.yaml", tmp_path / "cluster.secrets.yaml")

    def run(kill_at: int | None) -> list[str]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            if "no exchange" in layout:
                fsutil.rename_exchange = _no_exchange
            _count_and_kill(kill_at, w)
            with pipeline.locked(spec):
                pipeline.write(prepared, rendered, tmp_path / "out")
            os._exit(0)
        os.close(w)
        log = b""
        while chunk := os.read(r, 65536):
            log += chunk
        os.close(r)
        os.waitpid(pid, 0)
        return log.decode().split()

    reset()
    steps = run(None)
    assert check_consistent(tmp_path) == ("B", "B")
    points = kill_points(steps)
    assert not (tmp_path / "out" / "d2").is_symlink(), "out/d2 is a real folder after a render"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d2"], "no hidden generation is left"
    swap = ["rename", "rename"] if "no exchange" in layout else ["exchange"]
    assert len(steps) >= 8 and "link" in steps and "replace" in steps and all(s in steps for s in swap), steps
    states = []
    windows = 0
    for n, k in enumerate(points):
        reset()
        run(k)
        if "no exchange" in layout and not os.path.lexists(tmp_path / "out" / "d2"):
            # The fallback's documented window: killed between its two renames. What the next
            # render does first (under the lock) puts the previous generation back.
            windows += 1
            with pipeline.locked(spec):
                recover(tmp_path / "out" / "d2")
        states.append(check_consistent(tmp_path))
        if n % 3:
            continue
        # The next render finishes the job from whatever the kill left (every third: time).
        with pipeline.locked(spec):
            again = pipeline.prepare(spec)
            pipeline.write(again, pipeline.render_all(again.plan, again.bundle, iso=False, packer=False), tmp_path / "out")
        assert check_consistent(tmp_path) == ("B", "B")
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d2"], "the next render removed every leftover"
    assert states[0] == ("A", "A") and states[-1] == ("B", "B") and ("B", "A") in states, states
    assert windows == (1 if "no exchange" in layout else 0), windows
    print(f"write phase ({layout}): {len(steps)} steps, killed before {len(points)} of them; "
          f"(bundle, out) states: {sorted(set(states))}")


def test_two_renders_at_once_one_waits_its_turn_or_stops_cleanly(tmp_path):
    spec = write_spec(tmp_path, spec_doc())
    cli("render", spec, "-o", tmp_path / "out", "-q", "--no-iso", "--no-packer")
    write_spec(tmp_path, spec_doc(add=[{"name": "worker-2"}]))
    before_bundle, before_out = (tmp_path / "cluster.secrets.yaml").read_bytes(), tree(tmp_path / "out" / "d2")
    # Another run holds the lock: this one stops at once, changes nothing, says why.
    fd = os.open(tmp_path / "cluster.secrets.yaml.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"4242\n", 0)
    try:
        for args in (("render", str(spec), "-o", str(tmp_path / "out"), "--no-iso", "--no-packer"),
                     ("rekey", "--yes", "worker-1", str(spec), "-o", str(tmp_path / "out"))):
            proc = wgkube(*args, check=False)
            assert proc.returncode == 2 and "another wgkube run (pid 4242) holds" in " ".join(proc.stderr.split()), proc.stderr
            assert "Traceback" not in proc.stderr
    finally:
        os.close(fd)
    assert (tmp_path / "cluster.secrets.yaml").read_bytes() == before_bundle
    assert tree(tmp_path / "out" / "d2") == before_out
    # Real races: pairs of renders started together. Each finishes or stops cleanly; the
    # bundle and out/ agree afterwards, and worker-2 got exactly one key.
    outcomes = []
    for _ in range(2):
        procs = [subprocess.Popen([sys.executable, "-m", "generator", "render", str(spec), "-o", str(tmp_path / "out"),
                                   "-q", "--no-iso", "--no-packer"], stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=60)
            outcomes.append(p.returncode)
            assert p.returncode == 0 or (p.returncode == 2 and "another wgkube run" in err), err
        b = secrets_mod.load(tmp_path / "cluster.secrets.yaml", "d2")
        wanted = "worker-2" in yaml.safe_load(spec.read_text())["nodes"][-1]["name"]
        assert ("worker-2" in b.members) == wanted
        if wanted:
            assert pub_in_out(tmp_path, "worker-2") == b.members["worker-2"]["public_key"]
        else:
            assert not (tmp_path / "out" / "d2" / "wireguard" / "worker-2").exists()
        write_spec(tmp_path, spec_doc() if wanted else spec_doc(add=[{"name": "worker-2"}]))
    assert 0 in outcomes
    print(f"concurrent render exit codes: {outcomes}")


def pub_in_out(work: Path, name: str) -> str:
    conf = wg_of(work / "out" / "d2", name)
    return wg_public_from_private(re.search(r"^PrivateKey = (\S+)$", conf, re.M).group(1))


def _swap(data: dict, a: tuple, b: tuple) -> None:
    def at(path):
        node = data
        for p in path[:-1]:
            node = node[p]
        return node, path[-1]
    na, ka = at(a)
    nb, kb = at(b)
    na[ka] = nb[kb]


CORRUPTIONS = {
    "not YAML": (lambda text: "\x00\x01{{{ garbage: [", "not valid YAML"),
    "empty": (lambda text: "", "not a wgkube secrets bundle"),
    "truncated": (lambda text: text[: len(text) // 2], "refused"),
    "another cluster": (lambda text: text.replace("cluster: d2", "cluster: prod"), "belongs to cluster 'prod'"),
    "WireGuard key mismatch": (lambda text: _edit(text, lambda d: _swap(d, ("members", "worker-1", "public_key"), ("members", "hub", "public_key"))),
                               "members.worker-1: the WireGuard private key does not match its public key"),
    "admin cert/key mismatch": (lambda text: _edit(text, lambda d: _swap(d, ("admins", "laptop", "key"), ("pki", "etcd_ca", "key"))),
                                "admins.laptop: the private key does not match the certificate"),
    "CA cert/key mismatch": (lambda text: _edit(text, lambda d: _swap(d, ("pki", "ca", "key"), ("pki", "front_proxy_ca", "key"))),
                             "pki.ca: the private key does not match the certificate"),
    "join token malformed": (lambda text: _edit(text, lambda d: d["joins"]["worker-1"].update(token="short.token")),
                             "joins.worker-1: the join token is not of the form"),
    "join cert/key mismatch": (lambda text: _edit(text, lambda d: d["joins"].update(worker_1_legacy=_foreign_pair() | {"key": d["pki"]["ca"]["key"]})),
                               "joins.worker_1_legacy: the private key does not match"),
    "spare key mismatch": (lambda text: _edit(text, lambda d: d["spares"]["free"]["spare.1"].update(public_key=d["members"]["hub"]["public_key"])),
                           "spares.free.spare.1: the WireGuard private key does not match"),
    "certificate from another CA": (lambda text: _edit(text, lambda d: d["joins"].update(worker_1_legacy=_foreign_pair())),
                                    "joins.worker_1_legacy: the certificate is not signed by this bundle's CA"),
    "bad private key": (lambda text: _edit(text, lambda d: d["members"]["hub"].update(private_key="c2hvcnQ=")), "not 32 bytes"),
}


def _foreign_pair() -> dict:
    from generator.secrets import pki
    now = dt.datetime.now(dt.timezone.utc)
    return pki.new_client_cert(pki.new_ca("someone-else", now), "x", ["y"], now)


def _edit(text: str, change) -> str:
    data = yaml.safe_load(text)
    change(data)
    return yaml.safe_dump(data, sort_keys=True, width=1000)


@pytest.fixture(scope="module")
def rendered_once(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("corrupt")
    render(work, spec_doc(spares=1, window=2), "--no-iso")
    return work


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_bundle_is_refused_clearly_and_never_overwritten(rendered_once, tmp_path, case):
    shutil.copytree(rendered_once / "out", tmp_path / "out", symlinks=True)
    spec = tmp_path / "cluster.yaml"
    shutil.copy2(rendered_once / "cluster.yaml", spec)
    mangle, words = CORRUPTIONS[case]
    bad = mangle((rendered_once / "cluster.secrets.yaml").read_text())
    (tmp_path / "cluster.secrets.yaml").write_text(bad)
    before = tree(tmp_path / "out" / "d2")
    # A new member too: a render that did not check would have something to write.
    write_spec(tmp_path, spec_doc(spares=1, window=2, add=[{"name": "worker-5"}]))
    for command in (["render", spec, "-o", tmp_path / "out", "--no-iso", "--no-packer"], ["plan", spec, "-o", tmp_path / "out"],
                    ["rekey", "--yes", "worker-1", spec, "-o", tmp_path / "out"]):
        result = cli(*command, ok=False)
        text = " ".join(result.output.split())
        assert result.exit_code == 2, (case, command[0], text)
        assert "secrets bundle refused" in text and words in text, (case, text)
        assert "Traceback" not in text
        assert (tmp_path / "cluster.secrets.yaml").read_text() == bad, "a bundle we cannot read is never overwritten"
        assert tree(tmp_path / "out" / "d2") == before
    assert not list(tmp_path.glob("cluster.secrets.yaml.age"))


def test_a_bundle_truncated_anywhere_is_refused(rendered_once, tmp_path):
    text = (rendered_once / "cluster.secrets.yaml").read_text()
    assert text.rstrip("\n").endswith("version: 1")  # what makes truncation visible
    cuts = sorted({int(len(text) * i / 200) for i in range(200)} - {len(text)})
    path = tmp_path / "cluster.secrets.yaml"
    for cut in cuts:
        path.write_text(text[:cut])
        if text[:cut].strip() == text.strip():
            continue  # only trailing whitespace lost: the same bundle
        with pytest.raises(UserError, match="secrets bundle refused"):
            secrets_mod.load(path, "d2")
    path.write_text(text)
    assert secrets_mod.load(path, "d2") is not None


# --------------------------------------------------------------------------- age


def _pyrage():
    try:
        import pyrage
    except ImportError:
        if IN_CI:
            pytest.fail("CI: pyrage is not installed (pip install pyrage)")
        pytest.skip("pyrage is not installed (pip install pyrage)")
    return pyrage


def test_encrypted_bundle_round_trip(tmp_path):
    pyrage = _pyrage()
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    key_file = tmp_path / "age.key"
    key_file.write_text(f"# created for a test\n{identity}\n")
    render(tmp_path, spec_doc(window=2), "--no-iso")
    plain = tmp_path / "cluster.secrets.yaml"
    enc = tmp_path / "cluster.secrets.yaml.age"
    original = plain.read_text()
    out_before = tree(tmp_path / "out" / "d2")
    spec = tmp_path / "cluster.yaml"

    cli("encrypt-secrets", spec, "--age-recipient", recipient)
    assert enc.exists() and not plain.exists() and oct(enc.stat().st_mode & 0o777) == "0o600"
    armored = enc.read_text()
    assert armored.startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    for m in yaml.safe_load(original)["members"].values():
        assert m["private_key"] not in armored
    assert yaml.safe_load(pyrage.decrypt(armored.encode(), [identity]))["members"] == yaml.safe_load(original)["members"]

    # Without the identity: refused, clearly, and nothing is touched.
    proc = wgkube("render", str(spec), "-o", str(tmp_path / "out"), "--no-iso", "--no-packer", check=False)
    assert proc.returncode == 2 and "encrypted with age" in " ".join(proc.stderr.split()) and "--age-identity" in proc.stderr
    wrong = tmp_path / "wrong.key"
    wrong.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    proc = wgkube("plan", str(spec), "-o", str(tmp_path / "out"), "--age-identity", str(wrong), check=False)
    assert proc.returncode == 2 and "cannot be decrypted" in proc.stderr
    assert enc.read_text() == armored

    # With it (option or environment), every command works as on a plain bundle.
    env = {"WGKUBE_AGE_IDENTITY": str(key_file)}
    assert "nothing" in cli("plan", spec, "-o", tmp_path / "out", "--age-identity", key_file).stdout
    os.environ.update(env)
    try:
        render(tmp_path, spec_doc(window=2), "--no-iso")
        assert tree(tmp_path / "out" / "d2") == out_before, "same secrets, same outputs"
        assert enc.read_text() == armored, "nothing new: the encrypted bundle is not rewritten"
        render(tmp_path, spec_doc(window=2, add=[{"name": "worker-2"}]), "--no-iso")
        cli("rekey", "--yes", "worker-1", spec, "-o", tmp_path / "out")
    finally:
        for k in env:
            os.environ.pop(k)
    assert not plain.exists()
    data = yaml.safe_load(pyrage.decrypt(enc.read_bytes(), [identity]))
    assert "worker-2" in data["members"] and data["age_recipients"] == [recipient]
    assert data["retired"]["worker-1"]["reason"] == "rekeyed"
    assert pub_in_out(tmp_path, "worker-2") == data["members"]["worker-2"]["public_key"]


def test_a_new_cluster_can_be_encrypted_from_the_first_render(tmp_path):
    pyrage = _pyrage()
    identity = pyrage.x25519.Identity.generate()
    spec = write_spec(tmp_path, spec_doc())
    proc = subprocess.run([sys.executable, "-m", "generator", "render", str(spec), "-o", str(tmp_path / "out"),
                           "-q", "--no-iso", "--no-packer"], capture_output=True, text=True,
                          env={**os.environ, "WGKUBE_AGE_RECIPIENTS": str(identity.to_public()),
                               "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "cluster.secrets.yaml").exists()
    data = yaml.safe_load(pyrage.decrypt((tmp_path / "cluster.secrets.yaml.age").read_bytes(), [identity]))
    assert set(data["members"]) == {"hub", "worker-1", "homelab-1", "laptop"}


# --------------------------------------------------------------------------- output layout


def test_out_cluster_is_a_real_folder_that_cp_and_tar_copy_whole(tmp_path):
    """Issue 16: out/<cluster> behaves like any folder: cp -r, tar and rsync copy its files, not
    a link (and no hidden generation is left beside it)."""
    render(tmp_path, spec_doc())
    out = tmp_path / "out" / "d2"
    assert out.is_dir() and not out.is_symlink()
    assert sorted(p.name for p in out.parent.iterdir()) == ["d2"]
    manifest = read_manifest(out)
    wanted = {rel: meta["sha256"] for rel, meta in manifest["files"].items()}
    wanted["manifest.json"] = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()

    def hashes(root: Path) -> dict[str, str]:
        found = {}
        for p in root.rglob("*"):
            assert not p.is_symlink(), p
            if p.is_file():
                found[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
        return found
    (tmp_path / "backup").mkdir()
    subprocess.run(["cp", "-r", str(out), str(tmp_path / "backup") + "/"], check=True)
    assert hashes(tmp_path / "backup" / "d2") == wanted
    subprocess.run(["tar", "-C", str(out.parent), "-cf", str(tmp_path / "d2.tar"), "d2"], check=True)
    (tmp_path / "untar").mkdir()
    subprocess.run(["tar", "-C", str(tmp_path / "untar"), "-xf", str(tmp_path / "d2.tar")], check=True)
    assert hashes(tmp_path / "untar" / "d2") == wanted
    if shutil.which("rsync"):
        subprocess.run(["rsync", "-a", str(out), str(tmp_path / "rsynced")], check=True)
        assert hashes(tmp_path / "rsynced" / "d2") == wanted


def test_an_older_link_layout_is_migrated_to_a_real_folder(tmp_path):
    """out/<cluster> as a link to a hidden generation (wgkube before issue 16) becomes a real
    folder on the next render (one exchange of the link and the new folder), and neither the
    link nor the generation it pointed to is left."""
    render(tmp_path, spec_doc())
    out = tmp_path / "out" / "d2"
    to_link_layout(out)
    assert out.is_symlink() and read_manifest(out) is not None
    render(tmp_path, spec_doc(add=[{"name": "worker-2"}]))
    assert out.is_dir() and not out.is_symlink()
    assert (out / "wireguard" / "worker-2" / "wg0.conf").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["d2"]
    # A render killed right after that exchange (the old link now at the hidden name): the next
    # render removes the link and the generation it pointed to.
    content = tree(out)
    hidden = out.parent / ".d2.gen-killed"
    older = out.parent / ".d2.gen-older"
    shutil.copytree(out, older)
    hidden.symlink_to(older.name)
    render(tmp_path, spec_doc(add=[{"name": "worker-2"}]))
    assert tree(out) == content and sorted(p.name for p in out.parent.iterdir()) == ["d2"]


def test_killed_leftovers_of_every_layout_are_recovered(tmp_path):
    render(tmp_path, spec_doc())
    out = tmp_path / "out" / "d2"
    content = tree(out)
    # Killed between the two renames of a layout before issue 16 (or of the fallback without
    # RENAME_EXCHANGE): out/d2 is missing and the previous tree is aside. It is put back.
    for aside in (".d2.old", ".d2.old-x1y2", ".d2.gen-legacyab12"):
        os.rename(out, out.parent / aside)
        recover(out)
        assert out.is_dir() and not out.is_symlink() and tree(out) == content, aside
        assert sorted(p.name for p in out.parent.iterdir()) == ["d2"]
    # The fallback migrating an older link, killed between its renames: the link is put back.
    to_link_layout(out)
    os.rename(out, out.parent / ".d2.old-x3")
    recover(out)
    assert out.is_symlink() and tree(out) == content
    # A staged generation is never put back (its keys may not be in the bundle), even complete;
    # it goes, and with nothing to put back out/d2 stays missing until the next render writes it.
    staged = out.parent / ".d2.gen-staged"
    os.rename(out.parent / os.readlink(out), staged)
    out.unlink()
    shutil.copytree(staged, tmp_path / "spare")
    recover(out)
    assert not os.path.lexists(out) and not list(out.parent.iterdir())
    # A generation cut short before its manifest was named (empty folder), and one cut short
    # while its files were written (manifest first, so provably ours): both go.
    (out.parent / ".d2.gen-empty").mkdir()
    shutil.copytree(tmp_path / "spare", out.parent / ".d2.gen-cut")
    shutil.rmtree(out.parent / ".d2.gen-cut" / "wireguard")
    render(tmp_path, spec_doc())
    assert tree(out) == content and sorted(p.name for p in out.parent.iterdir()) == ["d2"]
