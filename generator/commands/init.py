"""`wgkube init` (write the example spec) and `wgkube hash-password`."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

EXAMPLE = Path(__file__).resolve().parent.parent / "example-cluster.yaml"


def register(app: typer.Typer, user_errors) -> None:
    @app.command(short_help="write the commented example spec (- for stdout)")
    @user_errors
    def init(path: Path = typer.Argument(Path("cluster.yaml"), help="where to write the example spec; - for stdout"),
             force: bool = typer.Option(False, "--force", help="overwrite an existing file")) -> None:
        """Write a commented example spec: a hub control plane, a public worker, a worker behind NAT, a laptop."""
        if str(path) == "-":
            sys.stdout.write(EXAMPLE.read_text())
            return
        from ..errors import Problem, UserError
        if path.exists() and not force:
            raise UserError(Problem("", f"{path} exists", "pick another path or pass --force"))
        from ..fsutil import atomic_write
        atomic_write(path, EXAMPLE.read_bytes())
        sys.stdout.write(f"wrote {path}; replace the placeholder SSH key under login:, then: wgkube render {path}\n")

    @app.command("hash-password", short_help="SHA-512 crypt hash for login.password_hash")
    def hash_password(password: str = typer.Option(None, prompt=True, hide_input=True, confirmation_prompt=True,
                                                   show_default=False,
                                                   help="the console password (asked for when not given; better not on the command line)")) -> None:
        """Hash a console password (SHA-512 crypt via libpass) for `login.password_hash`."""
        from passlib.hash import sha512_crypt
        sys.stdout.write(sha512_crypt.using(rounds=656000).hash(password) + "\n")
