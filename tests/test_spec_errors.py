"""Bad input: one clear message per problem, naming the field and its line; exit 2; no
traceback; nothing written (no out/, no secrets bundle)."""
from __future__ import annotations

import re
import textwrap

import pytest

from conftest import wgkube

GOOD = textwrap.dedent("""\
    name: demo
    vpn:
      cidr: 10.88.0.0/24
    nodes:
      - name: hub
        role: control-plane
        endpoint: 203.0.113.10
      - name: w1
        role: worker
    admins:
      - name: laptop
""")


def run_bad(tmp_path, text: str):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    proc = wgkube("render", str(spec), "-o", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists(), "nothing may be written on bad input"
    assert not (tmp_path / "cluster.secrets.yaml").exists(), "no secrets bundle on bad input"
    # `check` must agree with `render`.
    chk = wgkube("check", str(spec), check=False)
    assert chk.returncode == 2
    return proc.stderr


def test_good_spec_passes(tmp_path):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(GOOD)
    proc = wgkube("check", str(spec))
    assert "hub: hub" in proc.stdout and "10.88.0.1:6443" in proc.stdout
    assert not (tmp_path / "cluster.secrets.yaml").exists(), "check writes nothing"


CASES = [
    # (id, edit of GOOD, expected field path, line, words in the message)
    ("malformed-yaml", lambda s: s.replace("  cidr: 10.88.0.0/24", "  cidr: [10.88.0.0/24"), "", 4, "malformed YAML"),
    ("unknown-key", lambda s: s.replace("    role: worker", "    role: worker\n    endpiont: 1.2.3.4"), "nodes[1].endpiont", 10, "unknown field"),
    ("duplicate-name", lambda s: s.replace("name: w1", "name: hub"), "nodes[1].name", 8, "duplicate name 'hub'"),
    ("duplicate-vpn-ip", lambda s: s.replace("endpoint: 203.0.113.10", "endpoint: 203.0.113.10\n    vpn_ip: 10.88.0.5").replace("role: worker", "role: worker\n    vpn_ip: 10.88.0.5"),
     "nodes[1].vpn_ip", 11, "duplicate VPN address"),
    ("vpn-ip-out-of-range", lambda s: s.replace("role: worker", "role: worker\n    vpn_ip: 10.99.0.5"), "nodes[1].vpn_ip", 10, "outside vpn.cidr"),
    ("vpn-ip-broadcast", lambda s: s.replace("role: worker", "role: worker\n    vpn_ip: 10.88.0.255"), "nodes[1].vpn_ip", 10, "broadcast"),
    ("pod-overlaps-vpn", lambda s: s + "pod_cidr: 10.88.0.0/16\n", "pod_cidr", 12, "overlaps vpn.cidr"),
    ("service-overlaps-pod", lambda s: s + "service_cidr: 10.244.0.0/20\n", "service_cidr", 12, "overlaps pod_cidr"),
    ("vpn-too-small", lambda s: s.replace("10.88.0.0/24", "10.88.0.0/30"), "vpn.cidr", 3, "usable addresses"),
    ("no-control-plane", lambda s: s.replace("role: control-plane", "role: worker"), "nodes", 4, "no node has role control-plane"),
    ("no-endpoint", lambda s: s.replace("    endpoint: 203.0.113.10\n", ""), "nodes", 4, "no node has a public endpoint"),
    ("invalid-node-name", lambda s: s.replace("name: w1", "name: Worker_1"), "nodes[1].name", 8, "not a valid name"),
    ("bad-vpn-port", lambda s: s.replace("  cidr: 10.88.0.0/24", "  cidr: 10.88.0.0/24\n  port: 70000"), "vpn.port", 4, "less than or equal to 65535"),
    ("bad-endpoint-port", lambda s: s.replace("endpoint: 203.0.113.10", "endpoint: 203.0.113.10:99999"), "nodes[0].endpoint", 7, "out of range"),
    ("bad-endpoint-host", lambda s: s.replace("endpoint: 203.0.113.10", "endpoint: 'not a host!'"), "nodes[0].endpoint", 7, "neither an IP address nor a valid host name"),
    ("bad-expose", lambda s: s.replace("role: worker", "role: worker\n    expose: ['443/icmp']"), "nodes[1].expose[0]", 10, "bad port"),
    ("unsupported-kubernetes", lambda s: "kubernetes: '1.20'\n" + s, "kubernetes", 1, "unsupported Kubernetes version"),
    ("bad-cidr", lambda s: s.replace("10.88.0.0/24", "10.88.0.1/24"), "vpn.cidr", 3, "not a network in CIDR form"),
    ("missing-nodes", lambda s: s.split("nodes:")[0], "nodes", None, "Field required"),
    ("plain-password", lambda s: s + "login:\n  password_hash: hunter2\n", "login.password_hash", 13, "never a plain password"),
]


@pytest.mark.parametrize("case_id,edit,path,line,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, case_id, edit, path, line, words):
    stderr = run_bad(tmp_path, edit(GOOD))
    assert words in stderr, stderr
    if path:
        assert re.search(rf"(^|: ){re.escape(path)}: ", stderr, re.M), f"message must name {path}:\n{stderr}"
    if line is not None:
        assert f"cluster.yaml:{line}:" in stderr, f"message must give line {line}:\n{stderr}"
    assert "hint:" in stderr or case_id == "missing-nodes"


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace("name: w1", "name: hub").replace("10.88.0.0/24", "10.88.0.0/24\n  mtu: 1400")
    stderr = run_bad(tmp_path, text)
    assert "unknown field 'mtu'" in stderr
    # Semantic checks run only on a well-typed spec; the type error comes first.
    text = GOOD.replace("name: w1", "name: hub").replace("name: laptop", "name: -bad")
    stderr = run_bad(tmp_path, text)
    assert "duplicate name" in stderr and "'-bad' is not a valid name" in stderr


def test_bundle_for_another_cluster_is_refused(tmp_path):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(GOOD)
    wgkube("render", str(spec), "-o", str(tmp_path / "out"), "-q", "--no-iso", "--no-packer")
    bundle = (tmp_path / "cluster.secrets.yaml").read_bytes()
    spec.write_text(GOOD.replace("name: demo", "name: other"))
    proc = wgkube("render", str(spec), "-o", str(tmp_path / "out2"), check=False)
    assert proc.returncode == 2 and "belongs to cluster 'demo'" in proc.stderr, proc.stderr
    assert not (tmp_path / "out2").exists()
    assert (tmp_path / "cluster.secrets.yaml").read_bytes() == bundle, "a refused bundle is never overwritten"


def test_missing_spec_file(tmp_path):
    proc = wgkube("check", str(tmp_path / "nope.yaml"), check=False)
    assert proc.returncode == 2 and "cannot read the spec" in proc.stderr and "Traceback" not in proc.stderr
