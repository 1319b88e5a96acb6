"""`wgkube init` (write the example spec) and `wgkube hash-password`."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..errors import Problem, UserError
from .common import out

EXAMPLE = Path(__file__).resolve().parent.parent / "example-cluster.yaml"


def register(app: typer.Typer, user_errors) -> None:
    @app.command()
    @user_errors
    def init(path: Path = typer.Argument(Path("cluster.yaml"), help="where to write the example spec"),
             force: bool = typer.Option(False, "--force", help="overwrite an existing file")) -> None:
        """Write a commented example spec: a hub control plane, a public worker, a worker behind NAT, a laptop."""
        if path.exists() and not force:
            raise UserError(Problem("", f"{path} exists", "pick another path or pass --force"))
        from ..fsutil import atomic_write
        atomic_write(path, EXAMPLE.read_bytes())
        out.print(f"wrote {path}; next: [bold]wgkube render {path}[/]")

    @app.command("hash-password")
    def hash_password(password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True)) -> None:
        """Hash a console password (SHA-512 crypt via libpass) for `login.password_hash`."""
        from passlib.hash import sha512_crypt
        sys.stdout.write(sha512_crypt.using(rounds=656000).hash(password) + "\n")
