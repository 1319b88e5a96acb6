"""What several commands share: the consoles, the spec/secrets/age options, the age settings."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

SpecArg = typer.Argument(..., help="cluster spec (YAML)", exists=False)
SecretsOpt = typer.Option(None, "--secrets", help="secrets bundle (default: <spec>.secrets.yaml beside the spec)")
AgeIdentityOpt = typer.Option([], "--age-identity", help="age identity file to decrypt the bundle (or $WGKUBE_AGE_IDENTITY)")
AgeRecipientOpt = typer.Option([], "--age-recipient", help="encrypt the bundle to this age recipient (or $WGKUBE_AGE_RECIPIENTS)")


def age_options(recipients: list[str], identities: list[Path]):
    from ..secrets import Age
    return Age.from_env(recipients, identities)
