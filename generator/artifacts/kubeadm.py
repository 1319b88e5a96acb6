"""kubeadm configuration (kubeadm.k8s.io/v1beta4) and our own strict model of it.

The model lists the v1beta4 fields (unknown ones are rejected, like kubeadm's strict
decoding), and checks the shapes that changed from v1beta3: every extraArgs and
kubeletExtraArgs is a list of {name, value}. Every rendered config is validated before it is
written, so a template typo fails the render instead of a node's first boot.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import facts, versions
from ..plan import Member, Plan
from ..secrets import Bundle, is_token_join, token_id
from .templates import render

# One container runtime story for every package family: CRI-O from its isv:cri-o repositories,
# one minor per Kubernetes minor (generator/versions.py, docs/node-contract.md).
CRI_SOCKETS = {"crio": versions.CRIO_SOCKET}
RUNTIME_FOR = {"apt": "crio", "dnf": "crio"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arg(_Strict):
    name: str
    value: str


class EnvVar(_Strict):
    name: str
    value: str


class BootstrapToken(_Strict):
    token: str
    description: str | None = None
    ttl: str | None = None
    expires: str | None = None
    usages: list[str] | None = None
    groups: list[str] | None = None

    @field_validator("token")
    @classmethod
    def _token(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", v):
            raise ValueError("bootstrap token must match [a-z0-9]{6}.[a-z0-9]{16}")
        return v

    @field_validator("expires")
    @classmethod
    def _expires(cls, v: str | None) -> str | None:
        # metav1.Time: RFC3339. We always write UTC with a Z.
        if v is not None and not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", v):
            raise ValueError("expires must be an RFC3339 UTC time such as 2026-01-31T12:00:00Z")
        return v

    @model_validator(mode="after")
    def _one_lifetime(self):
        # "Expires and TTL are mutually exclusive" (cmd/kubeadm/app/apis/bootstraptoken/v1/types.go).
        if self.ttl is not None and self.expires is not None:
            raise ValueError("a bootstrap token takes ttl or expires, not both")
        return self


class Taint(_Strict):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeRegistration(_Strict):
    name: str | None = None
    criSocket: str | None = None
    taints: list[Taint] | None = None
    kubeletExtraArgs: list[Arg] | None = None
    ignorePreflightErrors: list[str] | None = None
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = None
    imagePullSerial: bool | None = None


class APIEndpoint(_Strict):
    advertiseAddress: str | None = None
    bindPort: int | None = Field(None, ge=1, le=65535)

    @field_validator("advertiseAddress")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v


class Timeouts(_Strict):
    controlPlaneComponentHealthCheck: str | None = None
    kubeletHealthCheck: str | None = None
    kubernetesAPICall: str | None = None
    etcdAPICall: str | None = None
    tlsBootstrap: str | None = None
    discovery: str | None = None
    upgradeManifests: str | None = None


class Patches(_Strict):
    directory: str | None = None


class InitConfiguration(_Strict):
    apiVersion: Literal["kubeadm.k8s.io/v1beta4"]
    kind: Literal["InitConfiguration"]
    bootstrapTokens: list[BootstrapToken] | None = None
    dryRun: bool | None = None
    nodeRegistration: NodeRegistration | None = None
    localAPIEndpoint: APIEndpoint | None = None
    certificateKey: str | None = None
    skipPhases: list[str] | None = None
    patches: Patches | None = None
    timeouts: Timeouts | None = None


class ControlPlaneComponent(_Strict):
    extraArgs: list[Arg] | None = None
    extraVolumes: list[dict] | None = None
    extraEnvs: list[EnvVar] | None = None


class APIServer(ControlPlaneComponent):
    certSANs: list[str] | None = None


class Networking(_Strict):
    serviceSubnet: str | None = None
    podSubnet: str | None = None
    dnsDomain: str | None = None


class LocalEtcd(_Strict):
    imageRepository: str | None = None
    imageTag: str | None = None
    dataDir: str | None = None
    extraArgs: list[Arg] | None = None
    extraEnvs: list[EnvVar] | None = None
    serverCertSANs: list[str] | None = None
    peerCertSANs: list[str] | None = None


class Etcd(_Strict):
    local: LocalEtcd | None = None
    external: dict | None = None


class DNS(_Strict):
    imageRepository: str | None = None
    imageTag: str | None = None
    disabled: bool | None = None


class Proxy(_Strict):
    disabled: bool | None = None


class ClusterConfiguration(_Strict):
    apiVersion: Literal["kubeadm.k8s.io/v1beta4"]
    kind: Literal["ClusterConfiguration"]
    etcd: Etcd | None = None
    networking: Networking | None = None
    kubernetesVersion: str | None = None
    controlPlaneEndpoint: str | None = None
    apiServer: APIServer | None = None
    controllerManager: ControlPlaneComponent | None = None
    scheduler: ControlPlaneComponent | None = None
    dns: DNS | None = None
    proxy: Proxy | None = None
    certificatesDir: str | None = None
    imageRepository: str | None = None
    featureGates: dict[str, bool] | None = None
    clusterName: str | None = None
    encryptionAlgorithm: Literal["RSA-2048", "RSA-3072", "RSA-4096", "ECDSA-P256", "ECDSA-P384"] | None = None
    certificateValidityPeriod: str | None = None
    caCertificateValidityPeriod: str | None = None


class BootstrapTokenDiscovery(_Strict):
    apiServerEndpoint: str | None = None
    token: str
    caCertHashes: list[str] | None = None
    unsafeSkipCAVerification: bool | None = None

    @field_validator("caCertHashes")
    @classmethod
    def _hashes(cls, v: list[str] | None) -> list[str] | None:
        for h in v or []:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", h):
                raise ValueError(f"CA hash {h!r} is not sha256:<64 hex>")
        return v


class FileDiscovery(_Strict):
    kubeConfigPath: str


class Discovery(_Strict):
    bootstrapToken: BootstrapTokenDiscovery | None = None
    file: FileDiscovery | None = None
    tlsBootstrapToken: str | None = None


class JoinControlPlane(_Strict):
    localAPIEndpoint: APIEndpoint | None = None
    certificateKey: str | None = None


class JoinConfiguration(_Strict):
    apiVersion: Literal["kubeadm.k8s.io/v1beta4"]
    kind: Literal["JoinConfiguration"]
    dryRun: bool | None = None
    nodeRegistration: NodeRegistration | None = None
    caCertPath: str | None = None
    discovery: Discovery
    controlPlane: JoinControlPlane | None = None
    skipPhases: list[str] | None = None
    patches: Patches | None = None
    timeouts: Timeouts | None = None


# libyaml's parser when present: parsing only, so it cannot change any output byte.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

KINDS: dict[str, type[BaseModel]] = {
    "InitConfiguration": InitConfiguration,
    "ClusterConfiguration": ClusterConfiguration,
    "JoinConfiguration": JoinConfiguration,
}


def validate_documents(text: str) -> list[BaseModel]:
    """Parse and strictly validate a multi-document kubeadm config. Raises ValueError."""
    out = []
    for doc in yaml.load_all(text, Loader=_Loader):
        if not isinstance(doc, dict):
            raise ValueError("every document must be a mapping")
        kind = doc.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        try:
            out.append(KINDS[kind].model_validate(doc))
        except ValidationError as exc:
            raise ValueError(f"{kind}: {exc}") from None
    return out


def runtime_for(member: Member) -> str:
    return RUNTIME_FOR[member.package_family or "apt"]


def token_description(plan: Plan, name: str) -> str:
    """What `kubeadm token list` shows for a worker's own token: the node it is for."""
    return f"wgkube join token for node {name} (cluster {plan.cluster})"


def worker_tokens(plan: Plan, bundle: Bundle) -> list[dict]:
    """Every joining node's own join token (join window; other control planes too, issue 14):
    the first control plane's InitConfiguration lists
    them all, since `kubeadm init` creates them (phase bootstrap-token). `expires`, not `ttl`:
    BootstrapToken in kubernetes/kubernetes cmd/kubeadm/app/apis/bootstraptoken/v1/types.go has
    both, "mutually exclusive"; a ttl counts from the moment init runs, `expires` is an absolute
    RFC3339 time that init writes as is into the token Secret's `expiration`
    (encodeTokenSecretData in .../bootstraptoken/v1/utils.go). So each token ends at its own
    time (worker added + window), whenever the hub boots, and the render reads no clock.
    Workers still on a join certificate from an older wgkube are not listed (they need none)."""
    if not plan.join_window_days:
        return []
    out = []
    for m in plan.nodes:
        entry = bundle.joins.get(m.name)
        if not plan.initialises(m) and is_token_join(entry):
            out.append({"name": m.name, "token": entry["token"], "id": token_id(entry["token"]),
                        "expires": entry["expires"], "description": token_description(plan, m.name)})
    return out


def join_mode(plan: Plan, bundle: Bundle, member: Member) -> str:
    """How a worker joins: "shared" (the cluster's token, no join window: as before issue 5),
    "own-token" (its own bootstrap token) or "certificate" (a join certificate an older wgkube
    made; kept so that worker's files do not change)."""
    if not plan.join_window_days or member.name not in bundle.joins:
        return "shared"
    return "own-token" if is_token_join(bundle.joins[member.name]) else "certificate"


def config(plan: Plan, bundle: Bundle, member: Member) -> str:
    ctx = dict(plan=plan, member=member, api=versions.KUBEADM_API, token=bundle.token,
               cri_socket=CRI_SOCKETS[runtime_for(member)],
               encryption_algorithm=versions.KUBEADM_ENCRYPTION_ALGORITHM)
    own = None
    if plan.initialises(member):
        text = render("kubeadm-init.yaml.j2", worker_tokens=worker_tokens(plan, bundle),
                      local_api_address=facts.LOCAL_API_ADDRESS, **ctx)
    else:
        mode = join_mode(plan, bundle, member)
        if mode == "own-token":
            # Only its own token: never the cluster's shared one, never another worker's.
            own = bundle.joins[member.name]
            ctx["token"] = own["token"]
        text = render("kubeadm-join.yaml.j2", ca_hash=bundle.ca_hash, join_mode=mode,
                      token_expires=own["expires"] if own else None, **ctx)
    # A template mistake fails here, not on a node. Configs differ between members only in
    # the member's name and address (and a worker's own token), so each distinct shape is
    # validated once per run. Comments are not validated (they carry the name unquoted).
    shape = _COMMENT.sub("", text).replace(member.vpn_ip, "<ip>").replace(f'"{member.name}"', "<name>")
    if own is not None:
        shape = shape.replace(own["token"], "<token>")
    if shape not in _validated:
        validate_documents(text)
        _validated.add(shape)
    return text


_validated: set[str] = set()
_COMMENT = re.compile(r"(?m)^\s*#.*$")
