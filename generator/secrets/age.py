"""age encryption of the secrets bundle (optional; needs the pyrage package, imported only when used)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import Problem, UserError

AGE_SUFFIX = ".age"
ENV_IDENTITY = "WGKUBE_AGE_IDENTITY"
ENV_RECIPIENTS = "WGKUBE_AGE_RECIPIENTS"


@dataclass(frozen=True)
class Age:
    """age options: recipients to encrypt to on save, identity files to decrypt with on load.
    Empty fields fall back to $WGKUBE_AGE_RECIPIENTS (space/comma separated) and $WGKUBE_AGE_IDENTITY."""
    recipients: tuple[str, ...] = ()
    identities: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls, recipients: list[str] | None = None, identities: list[Path] | None = None) -> "Age":
        rec = list(recipients or []) or re.split(r"[\s,]+", os.environ.get(ENV_RECIPIENTS, "").strip())
        ids = list(identities or []) or ([Path(os.environ[ENV_IDENTITY])] if os.environ.get(ENV_IDENTITY) else [])
        return cls(tuple(r for r in rec if r), tuple(ids))


def load_pyrage():
    try:
        import pyrage
    except ImportError:
        raise UserError(Problem("", "age encryption needs the pyrage package", "pip install pyrage (or wgkube[age])")) from None
    return pyrage


def recipient(text: str):
    pyrage = load_pyrage()
    try:
        if text.startswith("age1"):
            return pyrage.x25519.Recipient.from_str(text)
        if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            return pyrage.ssh.Recipient.from_str(text)
    except pyrage.RecipientError as exc:
        raise UserError(Problem("--age-recipient", f"not a valid age recipient {text[:24]!r}: {exc}", "an age1... public key (age-keygen -y) or an ssh-ed25519/ssh-rsa public key")) from None
    raise UserError(Problem("--age-recipient", f"not an age recipient: {text[:24]!r}", "an age1... public key (age-keygen -y) or an ssh-ed25519/ssh-rsa public key"))


def identities(files: tuple[Path, ...]) -> list:
    pyrage = load_pyrage()
    out = []
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UserError(Problem("--age-identity", f"cannot read {path}: {exc.strerror}", "give the file age-keygen wrote, or an OpenSSH private key")) from None
        try:
            if b"PRIVATE KEY-----" in raw:
                out.append(pyrage.ssh.Identity.from_buffer(raw))
                continue
            for line in raw.decode().splitlines():
                if line.strip().startswith("AGE-SECRET-KEY-"):
                    out.append(pyrage.x25519.Identity.from_str(line.strip()))
        except (pyrage.IdentityError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(Problem("--age-identity", f"{path} holds no usable age identity ({exc})", "give the file age-keygen wrote, or an unencrypted OpenSSH private key")) from None
    if not out:
        raise UserError(Problem("--age-identity", "no AGE-SECRET-KEY-1... line in " + ", ".join(map(str, files)), "give the file age-keygen wrote"))
    return out


def is_encrypted(path: Path) -> bool:
    return path.name.endswith(AGE_SUFFIX)
