"""The cluster PKI, made before any node boots, so the join command is known at render time.

kubeadm uses an existing CA it finds in /etc/kubernetes/pki (ca, front-proxy-ca, etcd/ca,
sa.key/sa.pub) and signs every leaf certificate itself. We only make the CAs, the
service-account key pair and admin client certificates. Everything that involves a random
signature happens here, once, when the secrets bundle is populated: rendering never signs,
which keeps outputs byte-identical across runs.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_YEARS = 10
ADMIN_CERT_DAYS = 365
# The group wgkube's admin certificates carried before issue 17 item 2. kubeadm init (1.29+, KEP-4214,
# kubernetes/kubeadm#2414) binds it to the ClusterRole cluster-admin, so such a certificate is an
# admin for as long as it is valid: Kubernetes checks no revocation list for client certificates
# (kubernetes/kubernetes#18982, still open), and the group cannot be unbound without locking out
# /etc/kubernetes/admin.conf, which is in the same group.
LEGACY_ADMIN_GROUP = "kubeadm:cluster-admins"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def new_ca(common_name: str, now: dt.datetime) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return {"cert": _cert_pem(cert), "key": _key_pem(key)}


def new_client_cert(ca: dict[str, str], common_name: str, groups: list[str], now: dt.datetime,
                    days: int = ADMIN_CERT_DAYS, not_before: dt.datetime | None = None) -> dict[str, str]:
    ca_key = serialization.load_pem_private_key(ca["key"].encode(), None)
    ca_cert = x509.load_pem_x509_certificate(ca["cert"].encode())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
                        + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = not_before or (now - dt.timedelta(minutes=5))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return {"cert": _cert_pem(cert), "key": _key_pem(key)}


def new_admin_cert(ca: dict[str, str], name: str, now: dt.datetime, days: int = ADMIN_CERT_DAYS) -> dict[str, str]:
    """An admin's client certificate of the revocable form (issue 17 item 2): user
    `wgkube-admin:<name>` (the API server takes the CN as the user name and each O as a group,
    kubernetes.io/docs/reference/access-authn-authz/authentication/#x509-client-certificates) and
    NO group at all. Its rights come only from the ClusterRoleBinding wgkube-admin-<name> the
    control plane holds; deleting that binding revokes it. No group on purpose: a group that
    nothing binds today is one somebody may bind tomorrow, and that would hand cluster-admin back
    to every certificate ever issued, retired ones included."""
    return new_client_cert(ca, admin_user(name), [], now, days=days)


def admin_user(name: str) -> str:
    """The Kubernetes user name of an admin's certificate (its CN)."""
    return f"wgkube-admin:{name}"


@lru_cache(maxsize=256)
def cert_facts(cert_pem: str) -> tuple[str, tuple[str, ...], dt.datetime]:
    """(common name, groups (O), notAfter in UTC) of a PEM certificate. Raises ValueError when unreadable."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    groups = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return (str(cn[0].value) if cn else "", groups, cert.not_valid_after_utc)


def admin_cert_revocable(cert_pem: str) -> bool:
    """False for a certificate of the old form (group kubeadm:cluster-admins, made before issue 17
    item 2): it stays an admin until it expires, whatever the cluster's bindings say."""
    return LEGACY_ADMIN_GROUP not in cert_facts(cert_pem)[1]


def new_sa_keypair() -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {"key": _key_pem(key), "pub": pub}


@lru_cache(maxsize=16)
def ca_cert_hash(cert_pem: str) -> str:
    """kubeadm's discovery hash: sha256 over the CA's SubjectPublicKeyInfo (DER).
    A pure function of the certificate, asked for by every worker: computed once per CA."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def check_pair(pair: dict[str, str]) -> str | None:
    """None when the key matches the certificate, else what is wrong."""
    try:
        cert = x509.load_pem_x509_certificate(pair["cert"].encode())
        key = serialization.load_pem_private_key(pair["key"].encode(), None)
    except (KeyError, ValueError, TypeError) as exc:
        return f"unreadable certificate or key ({exc.__class__.__name__})"
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, pub) != key.public_key().public_bytes(serialization.Encoding.DER, pub):
        return "the private key does not match the certificate"
    return None


# --------------------------------------------------------------------------- WireGuard keys


def wg_keypair() -> tuple[str, str]:
    key = x25519.X25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(priv).decode(), base64.b64encode(pub).decode()


def wg_public_from_private(private_b64: str) -> str:
    raw = base64.b64decode(private_b64, validate=True)
    if len(raw) != 32:
        raise ValueError("a WireGuard key is 32 bytes")
    key = x25519.X25519PrivateKey.from_private_bytes(raw)
    return base64.b64encode(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
