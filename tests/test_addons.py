"""Issue 18: add-ons and registry credentials from the spec, applied once on the control plane.

Spec errors (field, line, fix, exit 2, nothing written); `wgkube secret set` (stdin or --file, never
argv, never printed, 0600, older bundles still load); secrets by role (no worker, Packer file or
seed ISO of a worker holds the password); the rendered script through shellcheck and run for real
against a stand-in kubectl and an https server in a network namespace (a wrong sha256 is refused, a step runs once,
a failed one runs again); the dockerconfigjson against kubectl's own."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import sys
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import need, need_root, wgkube
from generator import pipeline
from generator.artifacts import addons as addons_art
from generator.artifacts.cloudinit import extract_files

PASSWORD = 'glpat-S3cr3t"<&>x'
BASE = textwrap.dedent("""\
    name: demo
    vpn:
      cidr: 10.88.0.0/24
    nodes:
      - name: hub
        role: control-plane
        endpoint: 203.0.113.10
      - name: w1
        role: worker
      - name: w2
        role: worker
        endpoint: 203.0.113.20
    admins:
      - name: laptop
""")
MANIFEST = textwrap.dedent("""\
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: hello
      namespace: default
    data:
      greeting: hi
""")
FULL = BASE + textwrap.dedent("""\
    registries:
      - server: registry.gitlab.com
        username: deploy-token
        namespaces: [gitlab-runner]
        patch_default_service_account: true
    addons:
      - name: hello
        manifest: addons/hello.yaml
      - name: gitlab-runner
        helm:
          chart: gitlab-runner
          repository: https://charts.gitlab.io
          version: "0.71.0"
          namespace: gitlab-runner
          values:
            gitlabUrl: https://gitlab.com/
            runnerToken: REPLACE-WITH-YOUR-RUNNER-TOKEN
""")


def write_spec(tmp_path: Path, text: str) -> Path:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    (tmp_path / "addons").mkdir(exist_ok=True)
    (tmp_path / "addons" / "hello.yaml").write_text(MANIFEST)
    return spec


def set_password(spec: Path, server: str = "registry.gitlab.com", value: str = PASSWORD) -> subprocess.CompletedProcess:
    return wgkube("secret", "set", f"registry.{server}", str(spec), input=value + "\n")


@pytest.fixture(scope="module")
def full_out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("addons")
    spec = write_spec(tmp, FULL)
    set_password(spec)
    wgkube("render", str(spec), "-o", str(tmp / "out"), "-q")
    return tmp / "out" / "demo"


def files_of(out: Path, node: str) -> dict:
    return extract_files((out / "nodes" / node / "user-data").read_bytes())


# --------------------------------------------------------------------------- spec errors


def run_bad(tmp_path: Path, text: str) -> str:
    spec = write_spec(tmp_path, text)
    proc = wgkube("render", str(spec), "-o", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith("cluster.secrets") for p in tmp_path.iterdir()), "nothing written, not even the lock"
    assert wgkube("check", str(spec), check=False).returncode == 2
    return proc.stderr


BAD = [
    ("url-without-sha", "addons:\n  - name: a\n    manifest: https://example.com/a.yaml\n", "addons[0].manifest", 17, "needs its sha256"),
    ("http-url", "addons:\n  - name: a\n    manifest: http://example.com/a.yaml\n    sha256: " + "0" * 64 + "\n",
     "addons[0].manifest", 17, "not an https URL"),
    ("unquoted-digits-sha", "addons:\n  - name: a\n    manifest: https://example.com/a.yaml\n    sha256: 1234\n",
     "addons[0].sha256", 18, "quote it"),
    ("bad-sha", "addons:\n  - name: a\n    manifest: https://example.com/a.yaml\n    sha256: abc\n", "addons[0].sha256", 18, "64 lowercase hex"),
    ("both-kinds", "addons:\n  - name: a\n    manifest: addons/hello.yaml\n    helm: {chart: c, repository: 'https://x.example', version: 1.0.0}\n",
     "addons[0]", 16, "exactly one of manifest or helm"),
    ("latest", "addons:\n  - name: r\n    helm: {chart: c, repository: 'https://x.example', version: latest}\n",
     "addons[0].helm.version", 17, "exact chart version"),
    ("empty-version", "addons:\n  - name: r\n    helm: {chart: c, repository: 'https://x.example', version: ''}\n",
     "addons[0].helm.version", 17, "exact chart version"),
    ("range", "addons:\n  - name: r\n    helm: {chart: c, repository: 'https://x.example', version: '^1.2.0'}\n",
     "addons[0].helm.version", 17, "SemVer"),
    ("missing-file", "addons:\n  - name: a\n    manifest: addons/nope.yaml\n", "addons[0].manifest", 17, "cannot read"),
    ("bad-name", "addons:\n  - name: A_b\n    manifest: addons/hello.yaml\n", "addons[0].name", 16, "DNS-1123"),
    ("dup-name", "addons:\n  - name: a\n    manifest: addons/hello.yaml\n  - name: a\n    manifest: addons/hello.yaml\n",
     "addons[1].name", 18, "duplicate add-on name"),
    ("inject-ns", "addons:\n  - name: r\n    helm: {chart: c, repository: 'https://x.example', version: 1.0.0, namespace: 'a$(reboot)'}\n",
     "addons[0].helm.namespace", 17, "namespace"),
    ("inject-url", "addons:\n  - name: a\n    manifest: \"https://x.example/a'$(id)\"\n    sha256: " + "0" * 64 + "\n",
     "addons[0].manifest", 17, "not an https URL"),
    ("newline-chart", "addons:\n  - name: r\n    helm: {chart: \"c\\nrm -rf /\", repository: 'https://x.example', version: 1.0.0}\n",
     "addons[0].helm.chart", 17, "not a chart name"),
    ("bad-server", "registries:\n  - server: 'reg;id'\n    username: u\n    namespaces: [default]\n", "registries[0].server", 16, "not a registry server"),
    ("bad-port", "registries:\n  - server: 'reg.example:99999'\n    username: u\n    namespaces: [default]\n", "registries[0].server", 16, "not a registry server"),
    ("bad-ns", "registries:\n  - server: reg.example\n    username: u\n    namespaces: ['Kube System']\n", "registries[0].namespaces", 18, "namespace"),
    ("no-ns", "registries:\n  - server: reg.example\n    username: u\n    namespaces: []\n", "registries[0].namespaces", 18, "at least one namespace"),
    ("password-in-spec", "registries:\n  - server: reg.example\n    username: u\n    password: hunter2\n    namespaces: [default]\n",
     "registries[0].password", 18, "unknown field"),
    ("no-password", "registries:\n  - server: reg.example:5050\n    username: u\n    namespaces: [default]\n",
     "registries[0].server", 16, "no password for registry 'reg.example:5050'"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_addon_specs_are_refused_clearly(tmp_path, case):
    _id, extra, path, line, words = case
    err = run_bad(tmp_path, BASE + extra)
    assert f"cluster.yaml:{line}: {path}" in err, err
    assert words in err, err
    assert "hint:" in err


def test_missing_password_names_the_command(tmp_path):
    err = run_bad(tmp_path, BASE + "registries:\n  - server: reg.example\n    username: u\n    namespaces: [default]\n")
    assert "wgkube secret set registry.reg.example" in err and "stdin" in err


# --------------------------------------------------------------------------- wgkube secret set


def test_secret_set_reads_stdin_never_prints_and_keeps_0600(tmp_path):
    spec = write_spec(tmp_path, FULL)
    proc = set_password(spec)
    assert PASSWORD not in proc.stdout + proc.stderr
    bundle = tmp_path / "cluster.secrets.yaml"
    assert bundle.stat().st_mode & 0o777 == 0o600
    data = yaml.safe_load(bundle.read_text())
    assert data["registries"] == {"registry.gitlab.com": PASSWORD}
    again = set_password(spec)
    assert "unchanged" in again.stdout
    token = tmp_path / "token"
    token.write_text("other-token\n")
    replaced = wgkube("secret", "set", "registry.registry.gitlab.com", str(spec), "--file", str(token))
    assert "replaced" in replaced.stdout and "other-token" not in replaced.stdout
    assert yaml.safe_load(bundle.read_text())["registries"]["registry.gitlab.com"] == "other-token"


def test_secret_set_refuses_what_it_cannot_use(tmp_path):
    spec = write_spec(tmp_path, FULL)
    for args, stdin, words in [
        (["registry.other.example"], PASSWORD, "is not a registry of the spec"),
        (["token.x"], PASSWORD, "unknown secret"),
        (["registry.registry.gitlab.com"], "", "empty"),
        (["registry.registry.gitlab.com"], "two\nlines", "not one line"),
    ]:
        proc = wgkube("secret", "set", *args, str(spec), input=stdin, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert words in proc.stderr and "Traceback" not in proc.stderr
        assert "lines" not in proc.stderr.replace("not one line", "")
    assert not (tmp_path / "cluster.secrets.yaml").exists()


def test_bundle_without_registries_is_unchanged_and_older_bundles_load(tmp_path):
    from generator.secrets import load, populate
    from generator.spec import load_spec
    from generator.daytwo.planning import plan_for
    spec = write_spec(tmp_path, BASE)
    doc = load_spec(spec)
    bundle, _ = populate(None, plan_for(doc.spec, None), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    text = bundle.to_yaml()
    assert "registries" not in text, "a bundle without registries is written as before"
    path = tmp_path / "cluster.secrets.yaml"
    path.write_text(text)
    assert load(path, "demo").registries == {}
    bad = yaml.safe_load(text)
    bad["registries"] = {"reg.example": "two\nlines"}
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(Exception, match="registries.reg.example"):
        load(path, "demo")


# --------------------------------------------------------------------------- rendering, secrets by role


def test_control_plane_gets_the_addons_and_the_credential_0600(full_out):
    files = files_of(full_out, "hub")
    script, mode = files[addons_art.SCRIPT_PATH]
    assert mode == 0o755
    cfg, mode = files["/etc/wgkube/addons/registry-0.dockerconfigjson"]
    assert mode == 0o600
    assert cfg.decode() == addons_art.dockerconfigjson("registry.gitlab.com", "deploy-token", PASSWORD), "kubectl's bytes, no newline"
    auths = json.loads(cfg)["auths"]["registry.gitlab.com"]
    assert auths["password"] == PASSWORD and base64.b64decode(auths["auth"]).decode() == f"deploy-token:{PASSWORD}"
    assert files["/etc/wgkube/addons/hello.yaml"] == (MANIFEST.encode(), 0o600)
    values = yaml.safe_load(files["/etc/wgkube/addons/gitlab-runner.values.yaml"][0])
    assert values["runnerToken"] == "REPLACE-WITH-YOUR-RUNNER-TOKEN"
    first_boot = files["/usr/local/sbin/wgkube-firstboot"][0].decode()
    # (admins: the revocable admins' ClusterRoleBindings, issue 17 item 2, before the add-ons)
    assert "kubeadm cni admins addons \"done\"" in first_boot and addons_art.SCRIPT_PATH in first_boot
    # In order: registry secrets first (a chart's pods pull with them), then the add-ons as listed.
    steps = [line.split()[1] for line in script.decode().splitlines() if line.startswith("step ")]
    assert steps == ['"registry-0-gitlab-runner"', '"addon-hello"', '"addon-gitlab-runner"']


def test_no_worker_artifact_holds_the_password(full_out):
    secret_forms = [PASSWORD.encode(), base64.b64encode(f"deploy-token:{PASSWORD}".encode()),
                    json.dumps(PASSWORD)[1:-1].encode(), b"S3cr3t"]
    for node in ("w1", "w2"):
        files = files_of(full_out, node)
        assert not any(p.startswith(addons_art.FILES_DIR) or p == addons_art.SCRIPT_PATH for p in files), node
        assert "addons" not in files["/usr/local/sbin/wgkube-firstboot"][0].decode().split("for phase in", 1)[1]
        for path in (full_out / "nodes" / node).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for form in secret_forms:
                    assert form not in data, f"{path} holds the registry password"
        for path in (full_out / "wireguard" / node).rglob("*"):
            assert all(form not in path.read_bytes() for form in secret_forms)
    # Nothing outside the control plane's own files (and the bundle) holds it.
    for path in full_out.rglob("*"):
        if path.is_file() and not str(path).startswith(str(full_out / "nodes" / "hub")):
            assert all(form not in path.read_bytes() for form in secret_forms), path


def test_spec_without_addons_renders_no_addon_files(tmp_path):
    spec = write_spec(tmp_path, BASE)
    wgkube("render", str(spec), "-o", str(tmp_path / "out"), "-q")
    files = files_of(tmp_path / "out" / "demo", "hub")
    assert addons_art.SCRIPT_PATH not in files
    assert "addons" not in files["/usr/local/sbin/wgkube-firstboot"][0].decode()
    assert not (tmp_path / "out" / "demo" / "addons").exists()


def test_too_big_manifest_is_named_in_the_size_error(tmp_path):
    spec = write_spec(tmp_path, FULL)
    # Random text does not compress: 40 KB of it cannot fit AWS's 16 KB, whatever the encoding.
    big = base64.b64encode(os.urandom(30000)).decode()
    (tmp_path / "addons" / "hello.yaml").write_text("data: " + big + "\n")
    set_password(spec)
    proc = wgkube("render", str(spec), "-o", str(tmp_path / "out"), "--provider", "aws", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "/etc/wgkube/addons/hello.yaml (40007 bytes)" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_dockerconfigjson_escapes_as_go_does():
    text = addons_art.dockerconfigjson("reg.example:5000", "u", "a<b>&c\"d\\é")
    assert text == ('{"auths":{"reg.example:5000":{"username":"u","password":"a\\u003cb\\u003e\\u0026c\\"d\\\\é",'
                    '"auth":"' + base64.b64encode("u:a<b>&c\"d\\é".encode()).decode() + '"}}}')


@pytest.mark.tools
@pytest.mark.parametrize("password", [PASSWORD, "plain", "ünïcode-&-<>-\\-'", "x" * 300])
def test_dockerconfigjson_matches_kubectl(password, tmp_path):
    """Byte for byte what `kubectl create secret docker-registry --dry-run=client -o yaml` stores."""
    kubectl = need("kubectl", "Debian: kubernetes-client")
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    proc = subprocess.run([kubectl, "create", "secret", "docker-registry", "x", "--docker-server=registry.example.com:5050",
                           "--docker-username=deploy-token", f"--docker-password={password}", "--dry-run=client", "-o", "yaml"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    secret = yaml.safe_load(proc.stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    theirs = base64.b64decode(secret["data"][".dockerconfigjson"]).decode()
    ours = addons_art.dockerconfigjson("registry.example.com:5050", "deploy-token", password)
    assert ours == theirs
    assert json.loads(ours)["auths"]["registry.example.com:5050"]["password"] == password


@pytest.mark.tools
def test_addon_scripts_are_shellcheck_clean(full_out, tmp_path):
    shellcheck = need("shellcheck")
    files = files_of(full_out, "hub")
    for path in (addons_art.SCRIPT_PATH, "/usr/local/sbin/wgkube-firstboot"):
        script = tmp_path / Path(path).name
        script.write_bytes(files[path][0])
        proc = subprocess.run([shellcheck, "-S", "style", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


@pytest.mark.tools
def test_user_data_with_addons_passes_cloud_init_schema(full_out):
    need("cloud-init")
    proc = subprocess.run(["cloud-init", "schema", "-c", str(full_out / "nodes" / "hub" / "user-data")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- the script, run for real


def _self_signed(tmp_path: Path) -> None:
    """A throwaway certificate for 127.0.0.1 (cert.pem, key.pem): the script's curl trusts only it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))


# An https file server, run inside the test's own network namespace (nothing else is reachable
# from there: the script under test can only get the manifest from this server).
TLS_SERVER = """
import functools, http.server, ssl, sys
root, cert, key, portfile = sys.argv[1:5]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=root))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(portfile + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os; os.rename(portfile + ".tmp", portfile)
server.serve_forever()
"""


STANDIN_KUBECTL = """#!/bin/bash
# stand-in kubectl: records each call; `apply -f FILE` records the file's sha256; fails on demand.
echo "$*" >>"$KUBECTL_LOG"
[ -e "$KUBECTL_FAIL" ] && { echo "error: the server is not ready" >&2; exit 1; }
args=("$@")
for i in "${!args[@]}"; do
    if [ "${args[$i]}" = -f ] && [ "${args[$((i+1))]}" != - ]; then
        sha256sum "${args[$((i+1))]}" | cut -d ' ' -f 1 >>"$KUBECTL_LOG"
    fi
done
exit 0
"""


def _script_for(tmp_path: Path, addons_yaml: str) -> str:
    spec = write_spec(tmp_path, BASE + addons_yaml)
    prepared = pipeline.prepare(spec)
    return addons_art.script(prepared.plan)


@pytest.mark.lab
def test_url_addon_refuses_a_wrong_sha256_and_applies_the_right_one_once(tmp_path):
    """The rendered add-on script and an https file server in a network namespace of their own:
    a wrong sha256 is refused twice with nothing applied, the right one is applied once."""
    need_root("a network namespace for the file server")
    for tool in ("ip", "curl"):
        need(tool)
    root = tmp_path / "www"
    root.mkdir()
    (root / "m.yaml").write_text(MANIFEST)
    right = hashlib.sha256(MANIFEST.encode()).hexdigest()
    _self_signed(tmp_path)
    ns = f"wgkaddons{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    server = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        (tmp_path / "server.py").write_text(TLS_SERVER)
        portfile = tmp_path / "port"
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(tmp_path / "server.py"), str(root),
                                   str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), str(portfile)])
        while not portfile.exists():   # progress, not a wall: the server writes its port when it listens
            assert server.poll() is None, "the https server in the namespace exited"
            time.sleep(0.05)
        url = f"https://127.0.0.1:{portfile.read_text()}/m.yaml"
        results = {}
        for label, sha in (("wrong", "0" * 64), ("right", right)):
            work = tmp_path / label
            (work / "bin").mkdir(parents=True)
            kubectl = work / "bin" / "kubectl"
            kubectl.write_text(STANDIN_KUBECTL)
            kubectl.chmod(0o755)
            script = work / "wgkube-addons"
            script.write_text(_script_for(work, f"addons:\n  - name: remote\n    manifest: {url}\n    sha256: \"{sha}\"\n"))
            env = {**os.environ, "PATH": f"{work / 'bin'}:{os.environ['PATH']}", "CURL_CA_BUNDLE": str(tmp_path / "cert.pem"),
                   "KUBECTL_LOG": str(work / "kubectl.log"), "KUBECTL_FAIL": str(work / "fail"),
                   "WGKUBE_ADDONS_STATE": str(work / "state"), "WGKUBE_ADDONS_FILES": str(work / "files"),
                   "WGKUBE_ADDONS_KUBECONFIG": str(work / "admin.conf")}
            runs = [subprocess.run(["ip", "netns", "exec", ns, "bash", str(script)], capture_output=True, text=True,
                                   env=env, timeout=120) for _ in range(2)]
            results[label] = (runs, work)
        (wrong_runs, wrong), (right_runs, good) = results["wrong"], results["right"]
        for run in wrong_runs:  # refused both times: the next boot retries, and is refused again
            assert run.returncode != 0
            assert "sha256 mismatch" in run.stdout and "refused, nothing applied" in run.stdout
        assert not (wrong / "kubectl.log").exists(), "nothing may be applied after a wrong hash"
        assert (wrong / "state" / "addon-remote.failed").exists() and not (wrong / "state" / "addon-remote.applied").exists()
        assert "sha256 mismatch" in (wrong / "state" / "addon-remote.failed").read_text()
        assert [r.returncode for r in right_runs] == [0, 0], right_runs[0].stdout + right_runs[0].stderr
        log = (good / "kubectl.log").read_text().splitlines()
        assert log == [f"--kubeconfig {good / 'admin.conf'} apply -f {good / 'state' / 'remote.download.yaml'}", right], log
        assert "applied already, skipped" in right_runs[1].stdout
        assert not (good / "state" / "addon-remote.failed").exists()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_manifest_addons_run_once_in_order_and_a_failure_is_retried(tmp_path):
    script = tmp_path / "wgkube-addons"
    script.write_text(_script_for(tmp_path, "addons:\n  - name: one\n    manifest: addons/hello.yaml\n"
                                            "  - name: two\n    manifest: addons/hello.yaml\n"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubectl").write_text(STANDIN_KUBECTL)
    (tmp_path / "bin" / "kubectl").chmod(0o755)
    (tmp_path / "files").mkdir()
    for name in ("one", "two"):
        (tmp_path / "files" / f"{name}.yaml").write_text(MANIFEST)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "KUBECTL_LOG": str(tmp_path / "kubectl.log"),
           "KUBECTL_FAIL": str(tmp_path / "fail"), "WGKUBE_ADDONS_STATE": str(tmp_path / "state"),
           "WGKUBE_ADDONS_FILES": str(tmp_path / "files"), "WGKUBE_ADDONS_KUBECONFIG": "/nonexistent/admin.conf"}
    run = lambda: subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)  # noqa: E731
    (tmp_path / "fail").touch()
    first = run()
    assert first.returncode != 0 and "one: FAILED" in first.stdout
    assert "the server is not ready" in (tmp_path / "state" / "addon-one.failed").read_text()
    assert not (tmp_path / "state" / "addon-two.applied").exists(), "a failed step stops the run: order holds"
    (tmp_path / "fail").unlink()
    second, third = run(), run()
    assert second.returncode == 0 and third.returncode == 0, second.stdout + second.stderr
    applies = [line for line in (tmp_path / "kubectl.log").read_text().splitlines() if " apply -f " in line]
    assert applies == [f"--kubeconfig /nonexistent/admin.conf apply -f {tmp_path / 'files' / n}.yaml" for n in ("one", "one", "two")]
    assert not (tmp_path / "state" / "addon-one.failed").exists()
    assert third.stdout.count("applied already, skipped") == 2


# --------------------------------------------------------------------------- day two: wgkube plan


def test_plan_shows_added_changed_removed_addons_with_one_line_apply_commands(tmp_path):
    spec = write_spec(tmp_path, FULL)
    set_password(spec)
    wgkube("render", str(spec), "-o", str(tmp_path / "out"), "-q")
    quiet = wgkube("plan", str(spec), "-o", str(tmp_path / "out"))
    assert "by hand: nothing" in quiet.stdout and "hello  " in quiet.stdout and "unchanged" in quiet.stdout
    (tmp_path / "addons" / "hello.yaml").write_text(MANIFEST.replace("hi", "hello"))
    text = FULL.replace('version: "0.71.0"', 'version: "0.72.0"').replace(
        "  - name: hello\n", "  - name: extra\n    manifest: addons/hello.yaml\n  - name: hello\n")
    spec.write_text(text.split("  - name: gitlab-runner\n")[0])  # gitlab-runner removed
    proc = wgkube("plan", str(spec), "-o", str(tmp_path / "out"))
    out = proc.stdout
    assert PASSWORD not in out
    kubeconfig = f"{tmp_path / 'out' / 'demo'}/admins/laptop/kubeconfig"
    assert f'add-on extra is added' in out and f'add-on hello is changed' in out
    assert f'kubectl --kubeconfig "{kubeconfig}" apply -f "{tmp_path / "out" / "demo"}/addons/hello.yaml"' in out
    assert "add-on gitlab-runner left the spec" in out and "helm uninstall gitlab-runner" in out
    assert "/etc/wgkube/addons/hello.yaml  (addon)" in out
    data = json.loads(wgkube("plan", str(spec), "-o", str(tmp_path / "out"), "--json").stdout)
    assert {a["name"]: a["status"] for a in data["addons"]} == {
        "extra": "added", "hello": "changed", "gitlab-runner": "removed", "registry registry.gitlab.com": "unchanged"}
    # A changed chart version on a running cluster: one helm line, never a silent re-render.
    spec.write_text(FULL.replace('version: "0.71.0"', 'version: "0.72.0"'))
    out = wgkube("plan", str(spec), "-o", str(tmp_path / "out")).stdout
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("helm upgrade --install gitlab-runner"))
    assert '--version "0.72.0"' in line and f'--kubeconfig "{kubeconfig}"' in line


# --------------------------------------------------------------------------- status


def test_status_reports_each_step_pending_applied_or_failed(tmp_path):
    """The control plane's status reply lists every add-on step; `wgkube status` reads it back."""
    from test_status import SCRIPT, log_of, make_state
    from generator.proof import status as st
    spec = write_spec(tmp_path, FULL + "status_endpoint: true\n")
    set_password(spec)
    wgkube("render", str(spec), "-o", str(tmp_path / "out"), "-q")
    out = tmp_path / "out" / "demo"
    assert "addons" not in files_of(out, "w1")[SCRIPT][0].decode(), "workers report no add-ons"
    script = files_of(out, "hub")[SCRIPT][0].decode()
    root = make_state(tmp_path / "node", ["preflight", "cni"], log_of(["preflight", "cni"], failed=("addons", "add-on step failed")),
                      {"wgkube-firstboot": "failed"})
    state = root / "addons"
    state.mkdir()
    (state / "registry-0-gitlab-runner.applied").write_text("2026-12-05T07:00:00Z\n")
    (state / "addon-hello.failed").write_text('addon-hello: exit 1: error: "bad" \\ \x1b[31m manifest\n')
    text = (script.replace("/var/lib/wgkube/phases", str(root / "phases")).replace("/var/log/wgkube-firstboot.log", str(root / "log"))
            .replace("/var/lib/wgkube/addons", str(state)))
    proc = subprocess.run(["sh", "-c", text], capture_output=True, text=True, env={**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["addons"] == [
        {"step": "registry-0-gitlab-runner", "state": "applied", "message": None},
        {"step": "addon-hello", "state": "failed", "message": 'addon-hello: exit 1: error: "bad" \\ ?[31m manifest'},
        {"step": "addon-gitlab-runner", "state": "pending", "message": None}]
    row = st.Row("hub", "node", "control-plane", "10.88.0.1")
    st.interpret(row, reply, {}, {}, "10.88.0.0/24")
    assert (row.state, row.phase) == ("failed", "addons")
    assert "addon-hello failed (addon-hello: exit 1" in row.addons_text and "addon-gitlab-runner pending" in row.addons_text
    assert st._row_json(row)["addons"][2]["state"] == "pending"
    plain = st.Row("w1", "node", "worker", "10.88.0.2")
    assert "addons" not in st._row_json(plain), "rows without add-ons keep the JSON shape they had"


@pytest.mark.tools
def test_status_script_with_addons_is_shellcheck_clean(tmp_path):
    shellcheck = need("shellcheck")
    spec = write_spec(tmp_path, FULL + "status_endpoint: true\n")
    set_password(spec)
    wgkube("render", str(spec), "-o", str(tmp_path / "out"), "-q")
    script = tmp_path / "wgkube-status"
    script.write_bytes(files_of(tmp_path / "out" / "demo", "hub")["/usr/local/sbin/wgkube-status"][0])
    proc = subprocess.run([shellcheck, "-s", "sh", "-S", "style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_step_names_match_the_script():
    from generator.plan import AddonStep, RegistryStep
    from generator.daytwo.planning import plan_for
    from generator.spec import parse_spec
    import dataclasses
    plan = plan_for(parse_spec(BASE).spec, None)
    plan = dataclasses.replace(plan, _index={}, registries=(RegistryStep("r.example", "u", ("a", "b"), True, "wgkube-registry-r.example"),),
                               addons=(AddonStep("x", "url", "https://e.example/x", url="https://e.example/x", sha256="0" * 64),))
    script = addons_art.script(plan)
    assert [ln.split()[1].strip('"') for ln in script.splitlines() if ln.startswith("step ")] == addons_art.step_names(plan)
