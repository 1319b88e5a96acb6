"""`wgkube encrypt-secrets SPEC --age-recipient age1...`: encrypt the secrets bundle with age
(pyrage), so it can be committed to git. Also re-encrypts an encrypted bundle to a new set of
recipients. Every command then works on it given `--age-identity FILE` or $WGKUBE_AGE_IDENTITY."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import out


def register(app: typer.Typer, user_errors) -> None:
    @app.command("encrypt-secrets", short_help="encrypt the secrets bundle with age")
    @user_errors
    def encrypt_secrets(spec: Path = typer.Argument(..., help="cluster spec (YAML)"),
                        age_recipient: List[str] = typer.Option([], "--age-recipient", help="age1... or ssh-ed25519 public key; repeat for several"),
                        age_identity: List[Path] = typer.Option([], "--age-identity", help="identity to decrypt the bundle if it is encrypted already"),
                        secrets: Optional[Path] = typer.Option(None, "--secrets", help="secrets bundle (default: beside the spec)")) -> None:
        """Encrypt the secrets bundle to age recipients (<spec>.secrets.yaml.age); the plain file is removed."""
        from .. import pipeline
        from .. import secrets as secrets_mod
        from ..errors import Problem, UserError
        from ..secrets import Age
        from ..spec import load_spec
        age = Age.from_env(age_recipient, age_identity)
        if not age.recipients:
            raise UserError(Problem("--age-recipient", "no recipient given", "pass --age-recipient age1... (age-keygen -y KEYFILE prints it)"))
        doc = load_spec(spec)
        with pipeline.locked(spec, secrets):
            path = secrets_mod.locate(spec, secrets, age)
            bundle = secrets_mod.load(path, doc.spec.name, age)
            if bundle is None:
                raise UserError(Problem("", f"no secrets bundle at {path}", "render once first (or give --age-recipient to render)"))
            written = secrets_mod.save(bundle, path, age)
        out.print(f"secrets: {written} (0600): encrypted to {len(age.recipients)} recipient(s); "
                  f"decrypt with --age-identity FILE or WGKUBE_AGE_IDENTITY=FILE")
