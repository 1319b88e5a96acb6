"""Jinja2 environment for the templates in cloudinit/ and packer/ (shipped as package data)."""
from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from . import encode

_PACKAGE = Path(__file__).resolve().parent.parent  # generator/


def _search_path() -> list[str]:
    # From a checkout the templates sit at the repo root; installed, under generator/_cloudinit.
    # (a site-packages/cloudinit is cloud-init's own package, hence the pyproject.toml check).
    repo = _PACKAGE.parent if (_PACKAGE.parent / "pyproject.toml").is_file() else None
    candidates = ([repo / "cloudinit", repo / "packer"] if repo else []) + [_PACKAGE / "_cloudinit", _PACKAGE / "_packer"]
    return [str(p) for p in candidates if p.is_dir()]


@cache
def env() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_search_path()),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,  # templates do not change during a run; skip a stat per render
        finalize=encode.finalize,  # no line break enters a file through an interpolation
    )
    environment.filters.update(encode.FILTERS)  # an encoder per format (encode.py)
    return environment


def render(name: str, **context) -> str:
    return env().get_template(name).render(**context)
