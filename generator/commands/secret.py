"""`wgkube secret set registry.<server> SPEC`: put a registry password or token into the secrets
bundle (issue 18). The value is read from stdin (or --file), never from the command line, where
`ps` and the shell history would see it, and it is never printed."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import AgeIdentityOpt, AgeRecipientOpt, SecretsOpt, out

MAX_READ = 8192


def _read_value(file: Path | None) -> str:
    """The secret from --file or stdin, one trailing line break dropped; a terminal gets a prompt without echo."""
    from ..errors import Problem, UserError
    from ..secrets import registry_secret_ok
    if file is not None:
        try:
            with open(file, "rb") as f:
                raw = f.read(MAX_READ + 1)
        except OSError as exc:
            raise UserError(Problem("--file", f"cannot read {file}: {exc.strerror}", "give a file holding the password or token")) from None
    elif sys.stdin.isatty():
        import getpass
        raw = getpass.getpass("password or token (not echoed): ").encode()
    else:
        raw = sys.stdin.buffer.read(MAX_READ + 1)
    where = "--file" if file is not None else "stdin"
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(Problem(where, "the value is not UTF-8 text", "give the token as text")) from None
    value = value.removesuffix("\n").removesuffix("\r")
    if not registry_secret_ok(value):
        why = "empty" if not value else "longer than 4096 characters" if len(value) > 4096 else "not one line of printable text"
        raise UserError(Problem(where, f"the value is {why} (it is not shown)",
                                "give the password or token alone, on one line: wgkube secret set registry.<server> SPEC < token-file"))
    return value


def register(app: typer.Typer, user_errors) -> None:
    secret_app = typer.Typer(no_args_is_help=True, help="secrets kept in the bundle beside the spec (never in the spec)")
    app.add_typer(secret_app, name="secret", short_help="set a registry password in the secrets bundle (from stdin)")

    @secret_app.command("set", short_help="set registry.<server> from stdin or --file")
    @user_errors
    def set_cmd(key: str = typer.Argument(..., metavar="registry.<server>", help="what to set: registry.<server> for a server in the spec's registries:"),
                spec: Path = typer.Argument(..., help="cluster spec (YAML)"),
                file: Optional[Path] = typer.Option(None, "--file", help="read the value from this file (default: stdin; never from the command line)"),
                secrets: Optional[Path] = SecretsOpt,
                age_identity: List[Path] = AgeIdentityOpt,
                age_recipient: List[str] = AgeRecipientOpt) -> None:
        """Store a registry password or token in the secrets bundle (0600, written atomically). The value is read
        from stdin or --file and never printed; `wgkube render` then puts it into the control plane's user-data only."""
        from .. import pipeline
        from .. import secrets as secrets_mod
        from ..errors import Problem, UserError
        from ..spec import load_spec
        if not key.startswith(secrets_mod.REGISTRY_PREFIX):
            raise UserError(Problem("KEY", f"unknown secret {key[:80]!r}", "the only kind is registry.<server>, e.g. registry.registry.gitlab.com"))
        server = key.removeprefix(secrets_mod.REGISTRY_PREFIX)
        doc = load_spec(spec)
        servers = [r.server for r in doc.spec.registries]
        if server not in servers:
            listed = ", ".join(servers) or "none"
            raise UserError(Problem("registries", f"{server[:80]!r} is not a registry of the spec (registries: {listed})",
                                    "add it under registries: (server, username, namespaces) first, then set its password"), str(spec))
        value = _read_value(file)
        with pipeline.locked(spec, secrets):
            prepared = pipeline.prepare(spec, secrets, age=secrets_mod.Age.from_env(age_recipient, age_identity), doc=doc,
                                        check_registries=False)
            bundle = prepared.bundle
            before = bundle.registries.get(server)
            bundle.registries[server] = value
            if before != value or prepared.added or prepared.convert:
                prepared.bundle_path = secrets_mod.save(bundle, prepared.bundle_path, prepared.age)
        what = "unchanged" if before == value else "replaced" if before is not None else "set"
        out.print(f"{key}: {what} in {prepared.bundle_path} (0600; the value is not shown). "
                  f"`wgkube render {spec}` puts it into the control plane's user-data only.")
