"""Stage 9, the CLI commands, one module each; cli.py only wires them.

Each module defines ``register(app, user_errors)`` and adds its commands to the Typer app.
COMMANDS is the order `wgkube --help` lists them in; common.py holds what several share.
"""
from __future__ import annotations

import importlib

COMMANDS = ("init", "check", "render", "plan", "verify", "lab", "status", "graph", "qr", "rekey", "admin", "upgrade", "encrypt", "secret")


def register_all(app, user_errors) -> None:
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(app, user_errors)
