"""The three ways onto a machine, each checked with the real tool.

- provider user-data: sizes against limits, the encoding chosen, gzip'd == plain, schema-valid
- Packer golden images: `packer validate` + `packer fmt -check` on every rendered template
- NoCloud seed ISOs: read back with xorriso and with cloud-init's own NoCloud datasource
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLE, need, need_root, render_spec, wgkube, HUB_EXAMPLE
from generator.artifacts import cloudinit

# Debian's python3 carries cloud-init's own modules (the pyenv python does not).
SYSTEM_PYTHON = "/usr/bin/python3"
EXAMPLE_NODES = ("hub", "worker-1", "homelab-1")
# Full `packer validate` offline: tokens and a checksum that needs no download (a real build
# takes the checksum file URL from the template's default).
PACKER_VARS = ("-var", "hcloud_token=dummy", "-var", "digitalocean_token=dummy",
               "-var", "base_image_checksum=sha256:" + "0" * 64)
# Red Hat has no anonymous image anywhere: its template asks for these.
RHEL_VARS = ("-var", "base_image=/images/rhel-9.qcow2", "-var", "hcloud_image=rhel-9-snapshot",
             "-var", "digitalocean_image=rhel-9-custom")


def spec_text(base: Path = EXAMPLE, **changes) -> str:
    doc = yaml.safe_load(base.read_text())
    doc.update(changes)
    return yaml.safe_dump(doc, sort_keys=False)


def crowded_spec(admins: int, cidr: str = "10.88.0.0/20") -> str:
    """The example with many admins: every admin is a peer in the hub's wg0.conf."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["vpn"]["cidr"] = cidr
    doc["admins"] = [{"name": f"admin-{i}"} for i in range(admins)]
    return yaml.safe_dump(doc, sort_keys=False)


def every_os_spec() -> str:
    """One worker per supported OS, and one node with static addressing (network-config)."""
    from generator.spec import OS_FAMILIES
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["nodes"] = doc["nodes"][:1] + [{"name": f"w-{os_name.replace('.', '')}", "role": "worker", "os": os_name}
                                       for os_name in OS_FAMILIES]
    doc["nodes"][1]["network"] = {"address": "198.51.100.30/24", "gateway": "198.51.100.1", "nameservers": ["198.51.100.53"]}
    doc["nodes"][1]["endpoint"] = "198.51.100.30"
    return yaml.safe_dump(doc, sort_keys=False)


def render_again(workdir: Path, out: str, *extra: str) -> Path:
    """Render workdir/cluster.yaml again (same secrets bundle) into workdir/<out>; keep the table."""
    spec = workdir / "cluster.yaml"
    proc = wgkube("render", str(spec), "-o", str(workdir / out), *extra)
    name = yaml.safe_load(spec.read_text())["name"]
    (workdir / out / f"{name}.table").write_text(proc.stdout)
    return workdir / out / name


def template_dirs(cluster: Path) -> list[Path]:
    return sorted(p.parent for p in cluster.rglob("wgkube.pkr.hcl"))


def packer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # CHECKPOINT_DISABLE: packer must not phone home for version checks. Real tokens stay out.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN") and not k.startswith("PKR_VAR_")}
    env.update(CHECKPOINT_DISABLE="1", PACKER_CACHE_DIR=str(cwd / ".packer_cache"))
    return subprocess.run([need("packer"), *args], cwd=cwd, capture_output=True, text=True, env=env)


def secrets_of(user_data: bytes) -> set[str]:
    """The private material a node's user-data carries: WireGuard key, PEM keys, the token."""
    found = set()
    for content, _mode in cloudinit.extract_files(user_data).values():
        text = content.decode()
        found.update(re.findall(r"PrivateKey\s*=\s*(\S+)", text))
        found.update(re.findall(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b", text))
        for block in re.findall(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n(.*?)-----END", text, re.S):
            found.update(line for line in block.splitlines() if len(line) > 40)
    return found


def iso_read(iso: Path, dest: Path) -> dict[str, bytes]:
    """Extract an ISO with xorriso; return {name: bytes}."""
    xorriso = need("xorriso")
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([xorriso, "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}


def iso_info(iso: Path) -> str:
    proc = subprocess.run([need("xorriso"), "-indev", str(iso), "-toc", "-pvd_info", "-lsl", "/"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


NOCLOUD_READER = r"""
import json, sys
from cloudinit import helpers
from cloudinit.sources.DataSourceNoCloud import DataSourceNoCloud

root = sys.argv[1]
paths = helpers.Paths({"cloud_dir": root, "run_dir": root + "/run"})
# fs_label None: read only the seed dir (<cloud_dir>/seed/nocloud, where a baked image keeps it).
ds = DataSourceNoCloud({"datasource": {"NoCloud": {"fs_label": None}}}, None, paths)
ok = ds.get_data()
parts = [p.get_payload(decode=True).decode() for p in ds.get_userdata().walk()
         if p.get_content_maintype() != "multipart"] if ok else []
print(json.dumps({"ok": ok, "seed": ds.seed, "instance_id": ds.get_instance_id() if ok else None,
                  "metadata": ds.metadata, "network_config": ds.network_config if ok else None,
                  "cloud_config_parts": parts}))
"""


def nocloud_read(seed_files: dict[str, bytes], root: Path) -> dict:
    """cloud-init's NoCloud datasource on a seed dir laid out as /var/lib/cloud/seed/nocloud."""
    if not Path(SYSTEM_PYTHON).exists():
        need("cloud-init-python3", "Debian's /usr/bin/python3 with the cloudinit package")
    seed = root / "seed" / "nocloud"
    seed.mkdir(parents=True)
    for name, data in seed_files.items():
        (seed / name).write_bytes(data)
    proc = subprocess.run([SYSTEM_PYTHON, "-c", NOCLOUD_READER, str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def table_row(cluster: Path, node: str) -> str:
    table = cluster.with_name(cluster.name + ".table").read_text()
    rows = [line for line in table.splitlines() if re.match(rf"^\W*{re.escape(node)}\s", line)]
    assert rows, table
    return rows[0]


# --------------------------------------------------------------------------- Packer


@pytest.mark.tools
def test_packer_templates_validate_and_are_formatted(example_out: Path, tmp_path: Path):
    dirs = template_dirs(example_out)
    assert [d.relative_to(example_out).as_posix() for d in dirs] == sorted(
        [f"nodes/{n}/packer" for n in EXAMPLE_NODES] + ["packer-base/control-plane", "packer-base/worker"])
    for d in dirs:
        fmt = packer("fmt", "-check", "-diff", str(d), cwd=tmp_path)
        assert fmt.returncode == 0, f"{d}: not in packer fmt form:\n{fmt.stdout}{fmt.stderr}"
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda d: (d, packer("validate", *PACKER_VARS, str(d), cwd=tmp_path)), dirs))
    elapsed = time.monotonic() - started
    for d, proc in results:
        assert proc.returncode == 0, f"{d}:\n{proc.stdout}{proc.stderr}"
    print(f"packer validate: {len(dirs)} templates in {elapsed:.2f}s")


@pytest.mark.tools
def test_packer_templates_for_the_other_oses_and_static_network(tmp_path: Path):
    cluster = render_spec(every_os_spec(), tmp_path)
    assert len(template_dirs(cluster)) == 1 + 6 + 2
    # The example covers ubuntu-24.04, debian-12 and the base templates; the RHEL-likes and a
    # node with static addressing (it uploads network-config) are left.
    dirs = [cluster / "nodes" / name / "packer" for name in ("w-ubuntu-2204", "w-rocky-9", "w-almalinux-9", "w-rhel-9")]

    def check(d: Path):
        extra = RHEL_VARS if "rhel" in d.as_posix() else ()
        return d, packer("fmt", "-check", str(d), cwd=tmp_path), packer("validate", *PACKER_VARS, *extra, str(d), cwd=tmp_path)

    with ThreadPoolExecutor(4) as pool:
        for d, fmt, val in pool.map(check, dirs):
            assert fmt.returncode == 0, f"{d}: {fmt.stdout}"
            assert val.returncode == 0, f"{d}:\n{val.stdout}{val.stderr}"
    # Only the node with static addressing puts a network-config into its seed.
    static = cluster / "nodes" / "w-ubuntu-2204" / "packer"
    assert '"${path.root}/../network-config"' in (static / "wgkube.pkr.hcl").read_text()
    assert '"$STAGE/network-config" "$SEED/network-config"' in (static / "provision.sh").read_text()
    assert "network-config" not in (cluster / "nodes" / "hub" / "packer" / "wgkube.pkr.hcl").read_text()


@pytest.mark.tools
def test_packer_validate_fails_without_the_rendered_seed_files(example_out: Path, tmp_path: Path):
    """The template really points at ../user-data: without it, packer refuses the template."""
    node = tmp_path / "hub"
    shutil.copytree(example_out / "nodes" / "hub", node, symlinks=False)
    # One source, as a user builds it: no cloud token needed.
    qemu_only = ("-only=qemu.wgkube", "-var", PACKER_VARS[-1], str(node / "packer"))
    ok = packer("validate", *qemu_only, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (node / "user-data").unlink()
    proc = packer("validate", *qemu_only, cwd=tmp_path)
    assert proc.returncode != 0
    assert "user-data" in proc.stdout + proc.stderr


def test_packer_templates_reference_seed_files_and_hold_no_secrets(example_out: Path):
    all_secrets = set()
    for node in EXAMPLE_NODES:
        base = example_out / "nodes" / node
        secrets = secrets_of((base / "user-data").read_bytes())
        assert len(secrets) >= 2, f"{node}: expected a WireGuard key and a token at least"
        all_secrets |= secrets
        hcl = (base / "packer" / "wgkube.pkr.hcl").read_text()
        for name in ("user-data", "meta-data"):
            assert f'source      = "${{path.root}}/../{name}"' in hcl
            assert f'"$STAGE/{name}" "$SEED/{name}"' in (base / "packer" / "provision.sh").read_text()
    for path in sorted(example_out.glob("nodes/*/packer/*")) + sorted(example_out.glob("packer-base/*/*")):
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data and b"PrivateKey" not in data, path
        leaked = [s for s in all_secrets if s.encode() in data]
        assert not leaked, f"{path} contains secret material"


def test_bake_script_is_the_first_boot_script_of_the_node(tmp_path: Path):
    # Also when user-data is gzip'd (AWS): the copy beside the template is the same script.
    cluster = render_spec(spec_text(), tmp_path, "--provider", "aws")
    for node in EXAMPLE_NODES:
        base = cluster / "nodes" / node
        files = cloudinit.extract_files((base / "user-data").read_bytes())
        script = (base / "packer" / "wgkube-firstboot").read_bytes()
        assert script == files["/usr/local/sbin/wgkube-firstboot"][0]
        assert b"--bake" in script
        assert (base / "packer" / "wgkube-firstboot").stat().st_mode & 0o777 == 0o755
    for role in ("control-plane", "worker"):
        for family in ("apt", "dnf"):
            text = (cluster / "packer-base" / role / f"wgkube-firstboot-{family}").read_text()
            assert f'ROLE="{role}"' in text and f'PKG="{family}"' in text


@pytest.mark.tools
def test_provision_scripts_pass_shellcheck(example_out: Path):
    scripts = sorted(example_out.glob("nodes/*/packer/provision.sh")) + sorted(example_out.glob("packer-base/*/provision.sh"))
    assert len(scripts) == 5
    proc = subprocess.run([need("shellcheck"), "-s", "sh", *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.tools
def test_qemu_build_seed_only_creates_the_login_user(example_out: Path, tmp_path: Path):
    files = iso_read(example_out / "nodes" / "hub" / "packer" / "qemu-build-seed.iso", tmp_path / "x")
    config = yaml.safe_load(files["user-data"])
    key = yaml.safe_load(EXAMPLE.read_text())["login"]["ssh_authorized_keys"][0]
    assert config == {"users": [{"name": "ops", "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                                 "ssh_authorized_keys": [key]}], "ssh_pwauth": False}
    assert yaml.safe_load(files["meta-data"])["instance-id"] != "wgkube-demo-hub"


# --------------------------------------------------------------------------- seed ISO


@pytest.mark.tools
@pytest.mark.parametrize("node", EXAMPLE_NODES)
def test_seed_iso_reads_back_with_xorriso_and_cloud_init(example_out: Path, tmp_path: Path, node: str):
    base = example_out / "nodes" / node
    info = iso_info(base / "seed.iso")
    assert re.search(r"Volume Id\s*:\s*cidata\s*$", info, re.M), info
    assert re.search(r"ISO offers\s*:.*Rock_Ridge.*Joliet", info), info
    files = iso_read(base / "seed.iso", tmp_path / "iso")
    assert sorted(files) == ["meta-data", "user-data"]
    for name, data in files.items():
        assert data == (base / name).read_bytes(), name

    seen = nocloud_read(files, tmp_path / "cloud")
    assert seen["ok"] and seen["seed"].endswith("seed/nocloud")
    assert seen["instance_id"] == f"wgkube-demo-{node}"
    assert seen["metadata"]["local-hostname"] == node
    assert seen["cloud_config_parts"] == [cloudinit.decode_user_data(files["user-data"])]


@pytest.mark.tools
def test_seed_iso_carries_network_config_for_static_addressing(tmp_path: Path):
    cluster = render_spec(every_os_spec(), tmp_path)
    base = cluster / "nodes" / "w-ubuntu-2204"
    files = iso_read(base / "seed.iso", tmp_path / "iso")
    assert sorted(files) == ["meta-data", "network-config", "user-data"]
    assert files["network-config"] == (base / "network-config").read_bytes()
    seen = nocloud_read(files, tmp_path / "cloud")
    eth = seen["network_config"]["ethernets"]["uplink"]
    assert seen["network_config"]["version"] == 2
    assert eth["addresses"] == ["198.51.100.30/24"]
    assert eth["nameservers"]["addresses"] == ["198.51.100.53"]


@pytest.mark.tools
def test_seed_iso_and_templates_are_byte_reproducible(tmp_path: Path, monkeypatch):
    first = render_spec(spec_text(), tmp_path)
    # Another render, in another time zone (pycdlib reads local time): the same bytes.
    time.sleep(1.1)
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    second = render_again(tmp_path, "again", "-q")
    compared = 0
    for path in sorted(first.rglob("*")):
        rel = path.relative_to(first)
        if path.is_file() and rel.parts[0] in ("nodes", "packer-base"):
            assert path.read_bytes() == (second / rel).read_bytes(), rel
            compared += 1
    assert compared >= 3 * 7 + 2 * 5
    info = iso_info(first / "nodes" / "hub" / "seed.iso")
    assert re.search(r"Creation Time:\s*2000010100000000", info), info
    dates = re.findall(r"^-\S+\s+\d+\s+\d+\s+\d+\s+\d+\s+(\w+\s+\d+\s+\d+)\s+'", info, re.M)
    assert dates and set(dates) == {"Jan  1  2000"}, info


def test_patched_seed_iso_equals_what_pycdlib_builds():
    """seed_iso writes each node's files into a cached pycdlib image of the same layout: the
    result must be exactly the image pycdlib builds from scratch, at sector boundaries and
    across them, with and without network-config, with equal files."""
    import random
    from generator.artifacts import iso
    rng = random.Random(19)
    cases = [[1, 1], [2047, 2048], [2048, 2049, 1], [4096, 1, 6143]]
    cases += [[rng.randint(1, 40000) for _ in range(rng.choice((2, 3)))] for _ in range(40)]
    for sizes in cases:
        datas = [rng.randbytes(n) for n in sizes]
        assert iso.seed_iso(*datas) == iso.build_with_pycdlib(datas), sizes
        # Another node with the same layout, from the cache: other bytes, other lengths.
        other = [rng.randbytes(max(1, n - rng.randint(0, (n - 1) % iso.SECTOR))) for n in sizes]
        assert iso.seed_iso(*other) == iso.build_with_pycdlib(other), sizes
    same = rng.randbytes(3000)
    assert iso.seed_iso(same, same) == iso.build_with_pycdlib([same, same])


# --------------------------------------------------------------------------- provider user-data


@pytest.mark.tools
def test_hub_fits_aws_only_gzipd_and_decompresses_to_the_plain_version(tmp_path: Path):
    # Hub and spoke (the pre-mesh example): its workers fit AWS plain. In the mesh example every
    # node carries more (peers, relay and admin rules, the failover loop): tests/test_mesh.py.
    (tmp_path / "cluster.yaml").write_text(spec_text(HUB_EXAMPLE))
    aws = render_again(tmp_path, "aws", "--provider", "aws", "--no-packer")
    plain = render_again(tmp_path, "plain", "--provider", "none", "-q", "--no-iso", "--no-packer")
    hub_aws = (aws / "nodes" / "hub" / "user-data").read_bytes()
    hub_plain = (plain / "nodes" / "hub" / "user-data").read_bytes()
    assert len(hub_plain) > 16 * 1024, "the example hub no longer needs compression for AWS; grow this test"
    assert hub_aws[:2] == b"\x1f\x8b" and len(hub_aws) <= 16 * 1024
    assert gzip.decompress(hub_aws) == hub_plain
    assert re.search(r"\d+ gzip\s+aws$", table_row(aws, "hub"))
    # Workers fit as they are: plain, readable in the panel (this spec predates the status
    # endpoint, which is opt-in; with it, ~2.4 KB per node, they go gzip'd: tests/test_status.py).
    assert (aws / "nodes" / "worker-1" / "user-data").read_bytes() == (plain / "nodes" / "worker-1" / "user-data").read_bytes()
    assert re.search(r"\d+ plain\s+aws$", table_row(aws, "worker-1"))
    # The seed ISO carries the encoded user-data as it is.
    assert iso_read(aws / "nodes" / "hub" / "seed.iso", tmp_path / "iso")["user-data"] == hub_aws
    # The plain version is valid cloud-config.
    checked = subprocess.run([need("cloud-init"), "schema", "-c", str(plain / "nodes" / "hub" / "user-data")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # And cloud-init's NoCloud reader takes the gzip'd user-data from a seed dir as it is.
    seen = nocloud_read({"user-data": hub_aws, "meta-data": (aws / "nodes" / "hub" / "meta-data").read_bytes()},
                        tmp_path / "cloud")
    assert seen["cloud_config_parts"] == [hub_plain.decode()]


@pytest.mark.tools
def test_per_file_gz_b64_where_the_provider_takes_text_only(tmp_path: Path):
    # Hetzner: 32 KiB, no whole-file gzip. 110 admins push the hub's plain user-data past it.
    cluster = render_spec(crowded_spec(110), tmp_path, "--provider", "hetzner", "--no-iso", "--no-packer")
    plain = render_again(tmp_path, "plain", "--provider", "none", "--no-iso", "--no-packer")
    packed = (cluster / "nodes" / "hub" / "user-data").read_bytes()
    unpacked = (plain / "nodes" / "hub" / "user-data").read_bytes()
    assert len(unpacked) > 32 * 1024 >= len(packed), "plain no longer exceeds 32 KiB; add admins"
    assert packed.startswith(b"#cloud-config\n") and b"encoding: gz+b64" in packed
    assert cloudinit.extract_files(packed) == cloudinit.extract_files(unpacked)
    for path in (cluster / "nodes" / "hub" / "user-data", plain / "nodes" / "hub" / "user-data"):
        checked = subprocess.run([need("cloud-init"), "schema", "-c", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_hub_that_cannot_fit_aws_fails_clearly(tmp_path: Path):
    (tmp_path / "cluster.yaml").write_text(crowded_spec(600))
    proc = wgkube("render", str(tmp_path / "cluster.yaml"), "-o", str(tmp_path / "out"), "--provider", "aws", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert "nodes.hub" in message
    sizes = [int(n) for n in re.findall(r"\b(\d{5,})\b", message)]
    assert any(n > 16384 for n in sizes), message  # its size
    assert "16384" in message and "AWS" in message  # the limit
    assert "seed ISO" in message and "Packer" in message  # the alternatives
    assert not (tmp_path / "out" / "demo").exists()


# --------------------------------------------------------------------------- flags


def test_no_iso_and_no_packer_omit_those_artifacts(example_out: Path, tmp_path: Path):
    no_iso = render_spec(spec_text(), tmp_path, "--no-iso")
    neither = render_again(tmp_path, "neither", "-q", "--no-iso", "--no-packer")
    for node in EXAMPLE_NODES:
        assert (example_out / "nodes" / node / "seed.iso").is_file()
        assert (example_out / "nodes" / node / "packer" / "wgkube.pkr.hcl").is_file()
        assert not (no_iso / "nodes" / node / "seed.iso").exists()
        assert (no_iso / "nodes" / node / "packer" / "wgkube.pkr.hcl").is_file()
        assert sorted(p.name for p in (neither / "nodes" / node).iterdir()) == ["meta-data", "user-data"]
    assert (example_out / "packer-base" / "worker" / "wgkube.pkr.hcl").is_file()
    assert (no_iso / "packer-base" / "worker" / "wgkube.pkr.hcl").is_file()
    assert not (neither / "packer-base").exists()


# --------------------------------------------------------------------------- golden image, provisioned for real

SANDBOX = r"""
# Inside `unshare --mount`: provision.sh runs chrooted in an overlay of the VM test image
# (Debian 12 with its cloud-init); the image file is read-only, the host is not touched.
set -euo pipefail
work=$1 rootfs=$2 node=$3
mkdir -p "$work/lower" "$work/rw" "$work/root"
mount --make-rprivate /
mount -o loop,ro "$rootfs" "$work/lower"
mount -t tmpfs tmpfs "$work/rw"
mkdir "$work/rw/upper" "$work/rw/work"
mount -t overlay overlay -o "lowerdir=$work/lower,upperdir=$work/rw/upper,workdir=$work/rw/work" "$work/root"
r=$work/root
mount -t proc proc "$r/proc"
# What a build leaves before provision.sh: cloud-init ran (build instance), SSH keys.
mkdir -p "$r/run/cloud-init" "$r/var/lib/cloud/instances/build" "$r/root/.ssh" "$r/home/ops/.ssh" "$r/home/admin/.ssh"
echo '{"v1": {"stage": null, "datasource": "DataSourceNoCloud", "init": {"start": 1, "finished": 2, "errors": []}}}' >"$r/run/cloud-init/status.json"
echo '{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}' >"$r/run/cloud-init/result.json"
ln -sfn /var/lib/cloud/instances/build "$r/var/lib/cloud/instance"
for d in root home/ops home/admin; do echo "ssh-ed25519 AAAA build" >"$r/$d/.ssh/authorized_keys"; done
echo 0123456789abcdef0123456789abcdef >"$r/etc/machine-id"
# What the template's file provisioners upload. The bake step is stood in: it downloads.
install -d -m 0700 "$r/tmp/wgkube"
for f in user-data meta-data network-config; do [ ! -e "$node/$f" ] || cp "$node/$f" "$r/tmp/wgkube/"; done
printf '#!/bin/sh\necho "$@" >/baked\n' >"$r/tmp/wgkube/wgkube-firstboot"
cp "$node/packer/provision.sh" "$r/provision.sh"
chroot "$r" sh /provision.sh >&2
chroot "$r" python3 - <<'PY'
import hashlib, json, os
from cloudinit.stages import Init
from cloudinit.sources.DataSourceNoCloud import DataSourceNoCloud
init = Init(ds_deps=[])
init.read_cfg()
ds = DataSourceNoCloud({"datasource": {"NoCloud": {"fs_label": None}}}, None, init.paths)
ok = ds.get_data()
seed = "/var/lib/cloud/seed/nocloud"
files = sorted(os.listdir(seed))
print(json.dumps({
    "datasource_list": init.cfg.get("datasource_list"), "ok": ok, "seed": ds.seed,
    "instance_id": ds.get_instance_id() if ok else None, "local_hostname": ds.metadata.get("local-hostname"),
    "seed_dir_mode": oct(os.stat(seed).st_mode & 0o777),
    "seed_files": {n: [oct(os.stat(f"{seed}/{n}").st_mode & 0o777), hashlib.sha256(open(f"{seed}/{n}", "rb").read()).hexdigest()] for n in files},
    "cloud_dir": sorted(os.listdir("/var/lib/cloud")), "machine_id_left": os.path.exists("/etc/machine-id"),
    "keys_left": [p for p in ("/root/.ssh/authorized_keys", "/home/ops/.ssh/authorized_keys", "/home/admin/.ssh/authorized_keys") if os.path.exists(p)],
    "stage_left": os.path.exists("/tmp/wgkube"), "baked": open("/baked").read().strip() if os.path.exists("/baked") else None,
}))
PY
"""


@pytest.mark.vm
def test_provision_script_leaves_a_seed_that_cloud_init_clean_keeps(example_out: Path, tmp_path: Path):
    """provision.sh for real, in the Debian 12 test image: the seed survives `cloud-init clean`
    and cloud-init's NoCloud finds it where a booted instance would look."""
    need_root("loop-mounts the VM test image and chroots into an overlay of it")
    for tool in ("unshare", "chroot", "debootstrap"):
        need(tool)
    sys.path.insert(0, str(Path(__file__).parent / "vm"))
    import qemu as vm_harness
    image = vm_harness.build_image()
    node = example_out / "nodes" / "hub"
    script = tmp_path / "sandbox.sh"
    script.write_text(SANDBOX)
    proc = subprocess.run(["unshare", "--mount", "bash", str(script), str(tmp_path / "sbx"), str(image.rootfs), str(node)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["baked"] == "--bake"
    assert seen["datasource_list"] == ["NoCloud", "None"]
    assert seen["ok"] and seen["seed"] == "/var/lib/cloud/seed/nocloud"
    assert seen["instance_id"] == "wgkube-demo-hub" and seen["local_hostname"] == "hub"
    assert seen["seed_dir_mode"] == "0o700"
    assert seen["seed_files"] == {n: ["0o600", hashlib.sha256((node / n).read_bytes()).hexdigest()]
                                  for n in ("meta-data", "user-data")}
    assert seen["cloud_dir"] == ["seed"], "cloud-init clean must leave only the seed"
    assert not seen["machine_id_left"]
    assert seen["keys_left"] == ["/home/ops/.ssh/authorized_keys"]
    assert not seen["stage_left"]
