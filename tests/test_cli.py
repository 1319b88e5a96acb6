"""The command line as a person and a script meet it (issue 16) and how fast it starts (issue 19):
80-column terminals and pipes, --json, hints that name real commands, warnings about logins that
cannot work, confirmation before a rekey, where out/ goes, what --help imports."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import EXAMPLE, REPO, wgkube
from generator.commands.common import matrix, table
from test_daytwo import BASE, spec_doc, write_spec

REAL_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f bench@laptop"


def run(*args: str, cwd: Path | None = None, columns: int = 80, input: str | None = None) -> subprocess.CompletedProcess:
    """The CLI piped, as a script or CI log sees it."""
    return subprocess.run([sys.executable, "-m", "generator", *args], cwd=cwd, capture_output=True, text=True, input=input,
                          env={**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(REPO)})


def run_tty(*args: str, cwd: Path | None = None, columns: int = 80) -> str:
    """The CLI on a terminal of that many columns (a pseudo-terminal)."""
    main, child = pty.openpty()
    import fcntl
    import struct
    import termios
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "generator", *args], cwd=cwd, stdin=child, stdout=child, stderr=child,
                            env={**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, "PYTHONPATH": str(REPO), "TERM": "xterm"},
                            close_fds=True)
    os.close(child)
    chunks = []
    while True:
        r, _, _ = select.select([main], [], [], 60)
        if not r:
            break
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(main)
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def spec_with_key(tmp_path: Path, **kw) -> Path:
    doc = spec_doc(**kw)
    doc["login"] = {"user": "ops", "ssh_authorized_keys": [REAL_KEY]}
    return write_spec(tmp_path, doc)


# ------------------------------------------------------------------------ 1: tables, 80 columns and pipes


def test_render_table_keeps_every_value_whole_on_80_columns_and_in_a_pipe(tmp_path):
    spec = spec_with_key(tmp_path)
    doc = yaml.safe_load(spec.read_text())
    doc["nodes"][1]["name"] = "worker-with-a-rather-long-name-1"
    spec.write_text(yaml.safe_dump(doc))
    piped = run("render", str(spec), "--no-packer")
    assert piped.returncode == 0, piped.stderr
    values = ["worker-with-a-rather-long-name-1", "control-plane", "10.77.0.1", "10.77.0.2", "203.0.113.10:51820",
              "198.51.100.20:51820", "(behind NAT)", str(tmp_path / "out" / "d2")]
    lines = piped.stdout.splitlines()
    for v in values:
        assert v in piped.stdout, v
    # In a pipe: one row per node on one line (awk-able), no box characters, nothing cut.
    row = next(line for line in lines if line.startswith("worker-with-a-rather-long-name-1 "))
    assert row.split()[:3] == ["worker-with-a-rather-long-name-1", "worker", "10.77.0.2"]
    assert not re.search("[│┃…]", piped.stdout)
    # On an 80-column terminal: nothing wider than 80 but what cannot be split, every value whole.
    tty = run_tty("render", str(spec), "--no-packer")
    assert "worker-with-a-rather-long-name-1" in tty and "203.0.113.10:51820" in tty and "…" not in tty
    table_lines = tty[tty.index("d2: 3 nodes"):tty.index("each node:")].splitlines()[1:]  # the title holds a path
    assert all(len(line) <= 80 for line in table_lines), table_lines


def test_table_and_matrix_layouts():
    rows = [("hub", "control-plane", "10.88.0.1", "203.0.113.10:51820"), ("w", "worker", "10.88.0.2", "(behind NAT)")]
    wide = table("t", ("node", "role", "VPN IP", "endpoint"), rows, width=200, terminal=True)
    assert wide.splitlines()[2].split() == list(rows[0])
    narrow = table("t", ("node", "role", "VPN IP", "endpoint"), rows, width=30, terminal=True)
    assert "  endpoint: 203.0.113.10:51820" in narrow and all(len(line) <= 30 for line in narrow.splitlines())
    piped = table("t", ("node", "role", "VPN IP", "endpoint"), rows, width=30, terminal=False)
    assert piped.splitlines()[2].split() == list(rows[0])
    names = [f"member-{i}" for i in range(12)]
    cell = lambda i, j: "via hub"  # noqa: E731
    for width in (80, 40):
        text = matrix("m", names, cell, width=width, terminal=True)
        assert all(len(line) <= width for line in text.splitlines()), text
        assert all(n in text for n in names)
    assert "member-3: reaches all 11" in matrix("m", names, cell, width=40, terminal=True)


def test_verify_fits_80_columns_and_its_json_parses(tmp_path):
    spec = spec_with_key(tmp_path)
    tty = run_tty("verify", str(spec))
    assert "ok: every member reaches every other" in tty
    body = [line for line in tty.splitlines() if "via" in line or "direct" in line]
    assert body and all(len(line) <= 80 for line in body), body
    data = json.loads(run("verify", str(spec), "--json").stdout)
    assert data["ok"] is True and data["pairs"] == 12 and set(data["matrix"]) == {"hub", "worker-1", "homelab-1", "laptop"}


def test_lab_json_and_print_fit_80_columns(capsys, monkeypatch):
    from types import SimpleNamespace as NS
    from generator.commands import lab
    sites = [NS(name=n, address=f"198.18.0.{i}", prefixlen=24, nat=(0 if i > 2 else None), pod_address=None)
             for i, n in enumerate(["hub", "worker-with-a-long-name", "homelab-1", "laptop"], 1)]
    topo = NS(prefix="wgkl1", sites=sites, nats=[NS(wan="198.19.0.1")])
    checks = [NS(group="ping", subject=f"{a.name} -> {b.name}", expected="reply", got="reply", ok=True)
              for a in sites for b in sites if a is not b]
    checks.append(NS(group="public", subject="worker-with-a-long-name :6443", expected="timeout", got="timeout", ok=True))
    result = NS(topology=topo, checks=checks, setup_seconds=1, check_seconds=2, total_seconds=3, ok=True)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr("generator.commands.common.is_terminal", lambda stream=None: True)
    lab._print(result)
    text = capsys.readouterr().out
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "worker-with-a-long-name :6443" in text
    data = json.loads(json.dumps(lab._json(result)))
    assert data["ok"] and data["failed"] == 0 and data["members"][2]["nat_gateway"]["wan"] == "198.19.0.1"


# ------------------------------------------------------------------------ 2: --json


def test_json_of_render_check_and_plan(tmp_path):
    spec = spec_with_key(tmp_path)
    check = json.loads(run("check", str(spec), "--json").stdout)
    assert check["ok"] and check["cluster"] == "d2" and check["nodes"] == 3 and check["warnings"] == []
    rendered = json.loads(run("render", str(spec), "--json", "--no-iso", "--no-packer").stdout)
    assert rendered["out_dir"] == str(tmp_path / "out" / "d2")
    hub = next(n for n in rendered["nodes"] if n["name"] == "hub")
    assert hub["vpn_ip"] == "10.77.0.1" and hub["sizes"]["plain"] > 1000 and Path(hub["user_data"]).exists()
    plan = json.loads(run("plan", str(spec), "--json").stdout)
    assert plan["baseline"] and plan["members"]["hub"]["status"] == "unchanged"


# ------------------------------------------------------------------------ 4, 5: hints and logins


def test_password_hint_names_the_real_command(tmp_path):
    schema = json.loads(run("schema").stdout)
    text = json.dumps(schema)
    assert "wgkube hash-password" in text and "render --password" not in text


def test_logins_that_cannot_work_are_warned_about(tmp_path):
    cases = {
        "placeholder": yaml.safe_load(EXAMPLE.read_text())["login"],
        "malformed": {"user": "ops", "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAB you@x"]},
        "empty": {"user": "ops", "ssh_authorized_keys": []},
        "none": None,
    }
    for name, login in cases.items():
        doc = spec_doc()
        if login is None:
            doc.pop("login")
        else:
            doc["login"] = login
        spec = write_spec(tmp_path, doc)
        proc = run("check", str(spec))
        assert proc.returncode == 0, proc.stderr
        assert "nobody can log in over SSH as ops" in proc.stderr and "hash-password" in proc.stderr, (name, proc.stderr)
        if name == "placeholder":
            assert "placeholder key from `wgkube init`" in proc.stderr
            rendered = run("render", str(spec), "--no-iso", "--no-packer")
            assert rendered.returncode == 0 and "warning: nobody can log in" in rendered.stderr
    ok = run("check", str(spec_with_key(tmp_path)))
    assert "warning" not in ok.stderr


# ------------------------------------------------------------------------ 6, 7: version bumps, rekey


def test_a_kubernetes_minor_change_is_not_nothing_to_do(tmp_path):
    """Issue 17: plan refuses what render would refuse (a downgrade here; tests/test_upgrade.py has the rest)."""
    spec = spec_with_key(tmp_path)
    assert run("render", str(spec), "-q", "--no-iso", "--no-packer").returncode == 0
    doc = yaml.safe_load(spec.read_text())
    doc["kubernetes"] = "1.36"
    spec.write_text(yaml.safe_dump(doc))
    plan = run("plan", str(spec))
    text = " ".join(plan.stderr.split())
    assert plan.returncode == 2 and "kubernetes:" in text and "no downgrade" in text and "Traceback" not in text


def test_rekey_shows_the_rollout_and_asks_first(tmp_path):
    spec = spec_with_key(tmp_path)
    assert run("render", str(spec), "-q", "--no-iso", "--no-packer").returncode == 0
    bundle = (tmp_path / "cluster.secrets.yaml").read_bytes()
    refused = run("rekey", "worker-1", str(spec))
    assert refused.returncode == 1 and "pass --yes" in refused.stderr and "worker-1 first" in refused.stdout
    assert (tmp_path / "cluster.secrets.yaml").read_bytes() == bundle
    done = run("rekey", "worker-1", str(spec), "--yes")
    assert done.returncode == 0 and (tmp_path / "cluster.secrets.yaml").read_bytes() != bundle


# ------------------------------------------------------------------------ 8, 10: providers, out/, addresses


def test_provider_override_and_binary_user_data_are_said(tmp_path):
    spec = spec_with_key(tmp_path)
    doc = yaml.safe_load(spec.read_text())
    doc["nodes"][0]["provider"] = "hetzner"
    for i in range(40):
        doc["nodes"].append({"name": f"w{i}", "role": "worker"})
    doc["vpn"]["cidr"] = "10.77.0.0/24"
    spec.write_text(yaml.safe_dump(doc))
    proc = run("render", str(spec), "--provider", "aws", "--no-packer")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "--provider aws overrides the nodes' own provider: hub (hetzner)" in text
    assert "upload it as a file, never paste it" in text and "fileb://" in text


def test_out_goes_beside_the_spec_wherever_you_run_from(tmp_path):
    (tmp_path / "project").mkdir()
    spec = spec_with_key(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run("render", str(spec), "--no-iso", "--no-packer", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "project" / "out" / "d2" / "plan.json").exists() and not (elsewhere / "out").exists()
    assert str(tmp_path / "project" / "out" / "d2") in proc.stdout


def test_a_removed_members_address_is_kept_out_of_circulation(tmp_path):
    spec = spec_with_key(tmp_path, spares=1)
    assert run("render", str(spec), "-q", "--no-iso", "--no-packer").returncode == 0
    plan = json.loads((tmp_path / "out" / "d2" / "plan.json").read_text())
    gone = next(m["vpn_ip"] for m in plan["members"] if m["name"] == "homelab-1")
    # homelab-1 leaves and two newcomers arrive: neither they nor the refilled spare get its address.
    doc = yaml.safe_load(spec.read_text())
    doc["nodes"] = [n for n in doc["nodes"] if n["name"] != "homelab-1"] + [{"name": "n1", "role": "worker"}, {"name": "n2", "role": "worker"}]
    spec.write_text(yaml.safe_dump(doc))
    assert run("render", str(spec), "-q", "--no-iso", "--no-packer").returncode == 0
    after = json.loads((tmp_path / "out" / "d2" / "plan.json").read_text())
    used = [m["vpn_ip"] for m in after["members"]] + [s["vpn_ip"] for s in after.get("spares") or []]
    assert gone not in used, (gone, used)


# ------------------------------------------------------------------------ 9: small things


def test_version_short_help_completion_init_to_stdout_and_no_bool_metavars(tmp_path):
    assert re.fullmatch(r"wgkube \S+\n", run("--version").stdout)
    helped = run("-h")
    assert "--install-completion" in helped.stdout and "render" in helped.stdout
    commands = helped.stdout[helped.stdout.index("Commands:"):]
    assert "..." not in commands  # command summaries are not cut
    for cmd in ("render", "plan", "rekey", "check", "verify"):
        h = run(cmd, "--help").stdout
        assert "<bool>" not in h and "BOOLEAN" not in h, (cmd, h)
    hp = run("hash-password", "--help").stdout
    assert "required" not in hp.lower()
    init = run("init", "-", cwd=tmp_path)
    assert init.stdout == EXAMPLE.read_text() and not (tmp_path / "-").exists()


def test_errors_are_labelled_by_what_they_are_about(tmp_path):
    spec = spec_with_key(tmp_path)
    doc = yaml.safe_load(spec.read_text())
    doc["kubernetes"] = 1.30
    doc["nodes"][0]["endpont"] = "203.0.113.10"
    spec.write_text(yaml.safe_dump(doc))
    bad = run("check", str(spec))
    assert bad.returncode == 2
    assert "did you mean 'endpoint'?" in bad.stderr and 'kubernetes: "1.30"' in bad.stderr
    assert bad.stderr.startswith("error: 2 problems")
    good = spec_with_key(tmp_path)
    proc = run("render", str(good), "--provider", "nope")
    assert "(spec)" not in proc.stderr and "unknown provider 'nope'" in proc.stderr
    check = run("check", str(good))
    assert "1 admin;" in check.stdout and "hub: hub" in check.stdout


# ------------------------------------------------------------------------ 11, 12: progress, README


def test_a_long_render_in_a_pipe_prints_progress_lines(tmp_path):
    doc = spec_doc()
    doc["login"] = {"user": "ops", "ssh_authorized_keys": [REAL_KEY]}
    doc["nodes"] += [{"name": f"w{i}", "role": "worker"} for i in range(30)]
    spec = write_spec(tmp_path, doc)
    proc = run("render", str(spec), "--no-iso", "--no-packer")
    progress = [line for line in proc.stderr.splitlines() if re.match(r"render(ing|ed): \d+/33 nodes", line)]
    assert len(progress) >= 5 and progress[-1] == "rendered: 33/33 nodes", proc.stderr


def test_readme_tree_lists_every_folder_render_writes(example_out):
    readme = (REPO / "README.md").read_text()
    tree = readme[readme.index("out/demo/\n"):readme.index("```", readme.index("out/demo/\n"))]
    top = {p.relative_to(example_out).parts[0] for p in example_out.rglob("*")}
    for part in top:
        assert part in tree, part
    assert "cluster.secrets.yaml.lock" in readme


# ------------------------------------------------------------------------ issue 19: start-up


def test_help_check_schema_init_do_not_load_the_renderer():
    probe = ("import sys, runpy; sys.argv = ['wgkube'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('generator', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "heavy = sorted(m for m in ('cryptography', 'pycdlib', 'jinja2', 'generator.artifacts.cloudinit', "
             "'generator.artifacts.iso', 'generator.artifacts.packer', 'generator.secrets.pki', 'rich.markdown', 'pygments') "
             "if m in sys.modules)\nprint('HEAVY', heavy, file=sys.stderr)\n")
    for args in (["--help"], ["check", str(EXAMPLE)], ["schema"], ["init", "-"], ["render", "--help"]):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        heavy = re.search(r"HEAVY (\[.*\])", proc.stderr).group(1)
        allowed = "[]"
        assert heavy == allowed, (args, heavy)


def test_cached_first_boot_script_equals_a_direct_render(tmp_path):
    """first_boot_script renders once per role and OS family with a stand-in name: byte for byte
    what a direct render per node gives, for every OS and both roles."""
    from generator import pipeline
    from generator.artifacts import cloudinit
    doc = spec_doc()
    doc["login"] = {"user": "ops", "ssh_authorized_keys": [REAL_KEY]}
    oses = ["debian-12", "ubuntu-22.04", "ubuntu-24.04", "rocky-9", "almalinux-9", "rhel-9"]
    doc["nodes"] += [{"name": f"n{i}", "role": "worker", "os": os_name} for i, os_name in enumerate(oses)]
    prepared = pipeline.prepare(write_spec(tmp_path, doc))
    for m in prepared.plan.nodes:
        assert cloudinit.first_boot_script(prepared.plan, m) == cloudinit.render_first_boot(prepared.plan, m), m.name
