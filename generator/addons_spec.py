"""Issue 18, the spec side of add-ons and registry credentials: what `addons:` and `registries:`
take, and the rules that span fields (unique names, a file that exists). docs/addons.md

Every value here ends up in the control plane's add-on script (artifacts/addons.py writes it
shell-quoted as well), so each is checked against an allow-list first: names are DNS-1123
labels, servers host names with an optional port, URLs https with no quote, space or control
character, versions a semantic version. A password never appears in the spec: it lives in the
secrets bundle (`wgkube secret set registry.<server>`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import Problem, shown

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOST = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
SERVER = re.compile(rf"^(?=[^:]{{1,253}}(:|$)){_HOST}(:[0-9]{{1,5}})?$")
# An https URL as curl and helm read it: host[:port] and a path of unreserved characters,
# percent escapes and a few sub-delimiters; never a quote, space, backslash or control character.
HTTPS_URL = re.compile(rf"^https://{_HOST}(:[0-9]{{1,5}})?(/[A-Za-z0-9._~%/+=@,-]*)?(\?[A-Za-z0-9._~%/+=&@,-]*)?$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A chart name as Helm takes it from a repository (lowercase letters, digits, '-', '.', '_').
CHART = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
# Helm requires SemVer 2 chart versions; "latest" or a range would make a re-render mean another chart.
SEMVER = re.compile(r"^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]{1,64})?(\+[0-9A-Za-z.-]{1,64})?$")
USERNAME = re.compile(r"^[A-Za-z0-9._@+=-]{1,256}$")
# A relative or absolute file path in the spec: printable, no control characters, no '..' games needed.
_FILE = re.compile(r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]{1,1024}$")
MAX_ADDON_BYTES = 1024 * 1024  # one embedded manifest or values file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _label(v: str, what: str) -> str:
    if not DNS_LABEL.fullmatch(v):
        raise ValueError(f"{shown(v)} is not a valid {what} (DNS-1123 label: lowercase letters, digits and '-', "
                         "starting and ending with a letter or digit, at most 63 characters)")
    return v


class Helm(_Strict):
    chart: str = Field(description="chart name in the repository, e.g. gitlab-runner")
    repository: str = Field(description="https URL of the chart repository, e.g. https://charts.gitlab.io")
    version: str = Field(description="exact chart version (SemVer), e.g. 0.71.0; never latest or a range")
    namespace: str = Field("default", description="namespace the release goes to (created when missing)")
    values: dict[str, Any] | None = Field(None, description="chart values, inline")
    values_file: str | None = Field(None, description="chart values from a YAML file (relative to the spec)")

    @field_validator("chart")
    @classmethod
    def _chart(cls, v: str) -> str:
        if not CHART.fullmatch(v):
            raise ValueError(f"{shown(v)} is not a chart name (lowercase letters, digits, '.', '_', '-')")
        return v

    @field_validator("repository")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not HTTPS_URL.fullmatch(v):
            raise ValueError(f"{shown(v)} is not an https URL (https://host[:port]/path, no spaces or quotes)")
        return v

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> str:
        if not isinstance(v, str) or not v.strip() or v.strip().lower() in ("latest", "*"):
            raise ValueError(f"needs an exact chart version, not {shown(v if v is not None else '')}: "
                             "a re-render must mean the same chart (quote it, version: \"0.71.0\")")
        if not SEMVER.fullmatch(v):
            raise ValueError(f"{shown(v)} is not an exact SemVer version such as 0.71.0 (no ranges, no latest)")
        return v

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return _label(v, "namespace")

    @field_validator("values_file")
    @classmethod
    def _vf(cls, v: str | None) -> str | None:
        if v is not None and not _FILE.fullmatch(v):
            raise ValueError("must be a file path on one line")
        return v

    @model_validator(mode="after")
    def _one_values(self) -> "Helm":
        if self.values is not None and self.values_file is not None:
            raise ValueError("give values or values_file, not both")
        return self


class Addon(_Strict):
    name: str = Field(description="DNS-1123 label naming the add-on: its state, its file on the control plane, the helm release")
    manifest: str | None = Field(None, description="Kubernetes manifest: a file (relative to the spec; embedded in the control plane's user-data) or an https URL with sha256")
    sha256: str | None = Field(None, description="sha256 of the manifest at the https URL (required for a URL; checked at boot)")
    helm: Helm | None = Field(None, description="a Helm chart installed with a pinned Helm (docs/addons.md)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _label(v, "add-on name")

    @field_validator("manifest")
    @classmethod
    def _manifest(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "://" in v:
            if not HTTPS_URL.fullmatch(v):
                raise ValueError(f"{shown(v)} is not an https URL (https://host[:port]/path, no spaces or quotes; http is refused)")
        elif not _FILE.fullmatch(v):
            raise ValueError("must be a file path on one line, or an https URL")
        return v

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha(cls, v: Any) -> str | None:
        if v is not None and not isinstance(v, str):
            raise ValueError(f"YAML read {shown(v)} as a {type(v).__name__}: quote it, sha256: \"<64 hex digits>\"")
        if v is not None and not SHA256.fullmatch(v):
            raise ValueError(f"{shown(v)} is not a sha256 (64 lowercase hex digits; `sha256sum FILE` prints it)")
        return v

    @model_validator(mode="after")
    def _kind(self) -> "Addon":
        if (self.manifest is None) == (self.helm is None):
            raise ValueError("give exactly one of manifest or helm")
        return self  # manifest and sha256 together: check() below, at the manifest's line

    @property
    def is_url(self) -> bool:
        return self.manifest is not None and self.manifest.startswith("https://")


class Registry(_Strict):
    server: str = Field(description="registry host[:port], e.g. registry.gitlab.com; the password is in the secrets bundle (wgkube secret set registry.<server>)")
    username: str = Field(description="user name or deploy-token name")
    namespaces: list[str] = Field(description="namespaces that get the pull secret (created when missing)")
    patch_default_service_account: bool = Field(False, description="also add the secret to each namespace's default service account imagePullSecrets")

    @field_validator("server")
    @classmethod
    def _server(cls, v: str) -> str:
        m = SERVER.fullmatch(v)
        if m is None or (":" in v and not 1 <= int(v.rpartition(":")[2]) <= 65535):
            raise ValueError(f"{shown(v)} is not a registry server (host name with an optional :port, e.g. registry.example.com:5050)")
        return v

    @field_validator("username")
    @classmethod
    def _user(cls, v: str) -> str:
        if not USERNAME.fullmatch(v):
            raise ValueError(f"{shown(v)} is not a registry user name (letters, digits and . _ @ + = -)")
        return v

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one namespace")
        for item in v:
            _label(item, "namespace")
        return v

    @property
    def secret_name(self) -> str:
        """The pull secret's name in each namespace (a DNS-1123 subdomain: dots kept, ':' -> '-')."""
        return "wgkube-registry-" + self.server.lower().replace(":", "-")


def check(doc) -> list[Problem]:
    """Rules across add-ons and registries: unique names and servers, a namespace listed once."""
    spec, p = doc.spec, []
    seen: dict[str, int] = {}
    for i, a in enumerate(spec.addons):
        if a.name in seen:
            p.append(doc.problem(("addons", i, "name"), f"duplicate add-on name {a.name!r} (also at addons[{seen[a.name]}])",
                                 "every add-on needs its own name: it names its state on the control plane"))
        seen.setdefault(a.name, i)
        if a.is_url and a.sha256 is None:
            p.append(doc.problem(("addons", i, "manifest"), "a manifest URL needs its sha256",
                                 "download it once, check it, and add sha256: \"$(sha256sum FILE)\" (the boot refuses any other content)"))
        elif a.sha256 is not None and not a.is_url:
            p.append(doc.problem(("addons", i, "manifest"), f"{shown(a.manifest or '')} is not an https URL, but sha256 is given",
                                 "sha256 is only for a manifest URL; a local file (relative to the spec) is embedded as it is: drop sha256"))
    servers: dict[str, int] = {}
    for i, r in enumerate(spec.registries):
        key = r.server.lower()
        if key in servers:
            p.append(doc.problem(("registries", i, "server"), f"registry {r.server!r} is listed twice (also at registries[{servers[key]}])",
                                 "one entry per server; list every namespace in its namespaces:"))
        servers.setdefault(key, i)
        dup = {n for n in r.namespaces if r.namespaces.count(n) > 1}
        if dup:
            p.append(doc.problem(("registries", i, "namespaces"), f"namespace {sorted(dup)[0]!r} is listed twice", "name each namespace once"))
    return p


# --------------------------------------------------------------------------- local files


def read_local(doc, base: Path) -> dict[tuple, str]:
    """The local files add-ons name (manifests, values files), read relative to the spec's folder:
    {spec path of the field: text}. A missing, unreadable, non-UTF-8 or too large file is a
    problem at that field's line."""
    from .errors import UserError
    out: dict[tuple, str] = {}
    problems: list[Problem] = []
    for i, a in enumerate(doc.spec.addons):
        wanted = []
        if a.manifest is not None and not a.is_url:
            wanted.append((("addons", i, "manifest"), a.manifest))
        if a.helm is not None and a.helm.values_file is not None:
            wanted.append((("addons", i, "helm", "values_file"), a.helm.values_file))
        for loc, rel in wanted:
            path = base / rel
            try:
                if not path.is_file():
                    raise FileNotFoundError
                data = path.read_bytes()
            except OSError:
                problems.append(doc.problem(loc, f"cannot read {shown(rel)} (looked for {shown(str(path), 200)})",
                                            "paths are relative to the spec's folder; check the name"))
                continue
            if len(data) > MAX_ADDON_BYTES:
                problems.append(doc.problem(loc, f"{shown(rel)} is {len(data):,} bytes; at most {MAX_ADDON_BYTES:,} are embedded",
                                            "serve it over https and give manifest: <URL> with sha256:"))
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(doc.problem(loc, f"{shown(rel)} is not UTF-8 text", "save it as UTF-8"))
                continue
            if not text.strip():
                problems.append(doc.problem(loc, f"{shown(rel)} is empty", "point it at the manifest you mean"))
                continue
            out[loc] = text
    if problems:
        raise UserError(problems, doc.source)
    return out
