"""Warnings about a spec that is valid but will not do what its author wants (printed by
`check` and `render` on stderr, and in their --json): today, a cluster nobody can log in to."""
from __future__ import annotations

import base64
import binascii
import struct
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "example-cluster.yaml"
FIX = ("put your own public key under login.ssh_authorized_keys (cat ~/.ssh/id_ed25519.pub), "
       "or set login.password_hash (wgkube hash-password) for the console")


def _placeholder_blobs() -> set[str]:
    blobs = set()
    for line in EXAMPLE.read_text().splitlines():
        parts = line.strip().lstrip("- ").split()
        if len(parts) >= 2 and (parts[0].startswith("ssh-") or parts[0].startswith("ecdsa-")):
            blobs.add(parts[1])
    return blobs


def key_problem(key: str) -> str | None:
    """Why an authorized_keys line cannot work, or None. Checks the wire format: the base64
    blob must decode and start with the key type named in front of it."""
    parts = key.split()
    if len(parts) < 2:
        return "it has no key data after the type"
    kind, blob = parts[0], parts[1]
    try:
        raw = base64.b64decode(blob, validate=True)
        (n,) = struct.unpack(">I", raw[:4])
        inner = raw[4:4 + n].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        return "its key data is not valid base64 of an OpenSSH public key"
    if inner != kind:
        return f"its key data is a {inner or 'malformed'!s} key, not {kind}"
    if kind == "ssh-ed25519" and len(raw) != 4 + n + 4 + 32:
        return "its key data has the wrong length for an ed25519 key (cut or padded?)"
    return None


def login_warnings(plan) -> list[str]:
    """What stops every login: no key and no password, the example's placeholder key, keys that
    cannot work. The user-data disables password SSH, so these leave only the console (if any)."""
    keys = list(plan.ssh_keys)
    placeholders = _placeholder_blobs()
    usable = []
    warnings = []
    for i, key in enumerate(keys):
        parts = key.split()
        if len(parts) >= 2 and parts[1] in placeholders:
            warnings.append(f"login.ssh_authorized_keys[{i}] is the placeholder key from `wgkube init`: nobody holds its private half")
            continue
        why = key_problem(key)
        if why:
            warnings.append(f"login.ssh_authorized_keys[{i}] cannot work: {why}")
            continue
        usable.append(key)
    if not usable:
        where = "no SSH key" if not keys else "no usable SSH key"
        console = " (the console password still works)" if plan.password_hash else "; password SSH is off, and there is no console password either"
        warnings.append(f"nobody can log in over SSH as {plan.login_user}: {where}{console}. Fix: {FIX}")
    return warnings
