"""Extra CLI commands, one module each, found at start-up.

Each module defines ``register(app, user_errors)`` and adds its commands to the Typer app,
so a new command never needs an edit to cli.py.
"""
from __future__ import annotations

import importlib
import pkgutil


def register_all(app, user_errors) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(app, user_errors)
