"""What several commands share: the consoles, tables that fit any terminal or pipe, the
spec/secrets/age options, the age settings.

Nothing here imports the pipeline, and rich only when something is printed: `wgkube --help`
stays fast (tests/test_cli.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import typer


class _LazyConsole:
    """A rich Console made on first use (rich costs ~40 ms to import). Soft-wrapped: a long line
    is never cut or hard-wrapped; the terminal folds it, a pipe gets it whole."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr
        self._console = None

    def __getattr__(self, name):
        if self._console is None:
            from rich.console import Console
            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        return getattr(self._console, name)


out = _LazyConsole()
err = _LazyConsole(stderr=True)

SpecArg = typer.Argument(..., help="cluster spec (YAML)", exists=False)
SecretsOpt = typer.Option(None, "--secrets", help="secrets bundle (default: <spec>.secrets.yaml beside the spec)")
AgeIdentityOpt = typer.Option([], "--age-identity", help="age identity file to decrypt the bundle (or $WGKUBE_AGE_IDENTITY)")
AgeRecipientOpt = typer.Option([], "--age-recipient", help="encrypt the bundle to this age recipient (or $WGKUBE_AGE_RECIPIENTS)")
OutputOpt = typer.Option(None, "-o", "--output", help="output folder; the cluster goes in <output>/<name>/ (default: out/ beside the spec)")
JsonOpt = typer.Option(False, "--json", help="print one JSON document on stdout (shape: docs/cli-json.md); nothing else goes to stdout")
# Day-two commands that re-render (rekey, admin renew): the render options default to the last render's.
LastProviderOpt = typer.Option(None, "--provider", help="as for render (default: what the last render used)")
LastIsoOpt = typer.Option(None, "--iso/--no-iso", help="as for render (default: what the last render used)")
LastPackerOpt = typer.Option(None, "--packer/--no-packer", help="as for render (default: what the last render used)")


def rerender(spec: Path, secrets: Path | None, output: Path, age, doc, options: tuple = (None, None, None),
             before_write=None, **prepare_kw):
    """The day-two re-render (rekey, admin renew, upgrade): under the run lock, prepare with the
    change, let before_write(prepared, cluster_dir) look first (and refuse: a confirmation),
    render with the given options or the last render's, write. Returns (prepared, cluster_dir)."""
    from .. import pipeline
    from ..output import read_manifest
    from .plan import options_from
    pipeline.precheck(spec, secrets, age, doc)
    with pipeline.locked(spec, secrets):
        prepared = pipeline.prepare(spec, secrets, age=age, doc=doc, out_root=output, **prepare_kw)
        cluster_dir = output / prepared.plan.cluster
        if before_write is not None:
            before_write(prepared, cluster_dir)
        provider, iso, packer = options_from(read_manifest(cluster_dir), *options)
        rendered = pipeline.render_all(prepared.plan, prepared.bundle, provider=provider, iso=iso, packer=packer)
        return prepared, pipeline.write(prepared, rendered, output)


def confirm_or_exit(intro: str, steps: list[str], verb: str, question: str) -> None:
    """Show what follows before anything changes; ask on a terminal, refuse in a script without
    --yes (exit 1, nothing changed)."""
    print_text(intro)
    for line in steps:
        print_text(f"  {line}")
    if not sys.stdin.isatty():
        sys.stderr.write(f"not confirmed: stdin is not a terminal; pass --yes to {verb} from a script. Nothing was changed.\n")
        raise typer.Exit(1)
    if not typer.confirm(question, default=False):
        sys.stderr.write("not confirmed; nothing was changed.\n")
        raise typer.Exit(1)


def print_rerendered(prepared, cluster_dir: Path) -> None:
    """What a day-two re-render says first: what the bundle got, where, which members changed."""
    out.print(f"secrets: {prepared.bundle_path} (0600): {'; '.join(prepared.added)}", soft_wrap=True)
    out.print(f"rendered {cluster_dir}")
    report = prepared.report
    if report is not None:
        changed = [f"{mc.name} ({mc.status})" for mc in report.members if mc.status != "unchanged"]
        out.print("members whose files changed: " + (", ".join(changed) or "none"), soft_wrap=True)


def age_options(recipients: list[str], identities: list[Path]):
    from ..secrets import Age
    return Age.from_env(recipients, identities)


def output_dir(spec: Path, output: Path | None) -> Path:
    """Where out/ is: as given, else beside the spec (like the bundle), so running from another
    folder never makes a second out/."""
    return output if output is not None else spec.parent / "out"


def write_json(data) -> None:
    import json
    sys.stdout.write(json.dumps(data, indent=1, sort_keys=True) + "\n")


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None,
          terminal: bool | None = None) -> str:
    """A table that never cuts a value: columns padded with spaces, one row per line, no
    borders (kubectl style; awk and cut friendly). In a pipe, always that, however wide. On a
    terminal narrower than the table: one block per row instead, its first value on a line,
    then "  column: value" lines."""
    terminal = is_terminal() if terminal is None else terminal
    width = width or terminal_width()
    cols = [len(c) for c in columns]
    for row in rows:
        cols = [max(w, len(v)) for w, v in zip(cols, row)]
    lines = [title] if title else []
    if not terminal or sum(cols) + 2 * (len(cols) - 1) <= width:
        fmt = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, cols)).rstrip()  # noqa: E731
        return "\n".join(lines + [fmt([c.upper() for c in columns])] + [fmt(r) for r in rows])
    label = max(len(c) for c in columns[1:]) if len(columns) > 1 else 0
    for row in rows:
        lines.append(row[0])
        lines += [f"  {c + ':':<{label + 1}} {v}" for c, v in zip(columns[1:], row[1:])]
    return "\n".join(lines)


def matrix(title: str, names: Sequence[str], cell, width: int | None = None, terminal: bool | None = None) -> str:
    """Member x member results (cell(i, j) -> short text, "-" on the diagonal). Names as column
    heads when that fits (always in a pipe); else numbered columns with the names in the rows;
    else, on a narrow terminal, one line per member: what it reached and what it did not."""
    terminal = is_terminal() if terminal is None else terminal
    width = width or terminal_width()
    n = len(names)
    cells = [[("-" if i == j else cell(i, j)) for j in range(n)] for i in range(n)]
    head = "from \\ to"
    first = max([len(head)] + [len(x) for x in names])
    widths = [max([len(names[j])] + [len(cells[i][j]) for i in range(n)]) for j in range(n)]
    lines = [title]
    if not terminal or first + sum(w + 2 for w in widths) <= width:
        lines.append(head.ljust(first) + "".join("  " + names[j].ljust(widths[j]) for j in range(n)))
        lines += [names[i].ljust(first) + "".join("  " + cells[i][j].ljust(widths[j]) for j in range(n)) for i in range(n)]
        return "\n".join(l.rstrip() for l in lines)
    numbered = [max([len(str(j + 1))] + [len(cells[i][j]) for i in range(n)]) for j in range(n)]
    label = max(len(f"{i + 1} {x}") for i, x in enumerate(names))
    if label + sum(w + 1 for w in numbered) <= width:
        lines.append("".ljust(label) + "".join(" " + str(j + 1).ljust(numbered[j]) for j in range(n)))
        lines += [f"{i + 1} {names[i]}".ljust(label) + "".join(" " + cells[i][j].ljust(numbered[j]) for j in range(n))
                  for i in range(n)]
        return "\n".join(l.rstrip() for l in lines)
    for i in range(n):
        good = [j for j in range(n) if j != i and not cells[i][j].startswith("✗")]
        bad = [f"{names[j]} ({cells[i][j]})" for j in range(n) if j != i and j not in good]
        lines.append(f"{names[i]}: " + ("reaches all " + str(n - 1) if not bad else f"reaches {len(good)}; not: " + ", ".join(bad)))
    return "\n".join(lines)


def print_text(text: str, stream=None, prose: bool = False) -> None:
    """Plain text, no markup. prose=True: on a terminal, wrapped at word boundaries to its width
    (continuation lines indented); in a pipe never wrapped, one message per line."""
    stream = stream or sys.stdout
    if prose and is_terminal(stream):
        import textwrap
        # Indented lines are commands to copy: never wrapped.
        text = "\n".join(line if line.startswith(" ") else
                          textwrap.fill(line, terminal_width(), subsequent_indent="    ", break_long_words=False,
                                        break_on_hyphens=False) for line in text.split("\n"))
    stream.write(text + "\n")


def print_problems(exc) -> None:
    """A UserError on stderr: one block per problem. Problems that are not about a spec field
    (a lock held, a bundle refused, an option) carry no "(spec)" label."""
    lines = [f"error: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}"]
    for p in exc.problems:
        text = p.render(exc.source)
        if not p.path and p.line is None:
            text = text.replace("(spec): ", "", 1)
        guess = _did_you_mean(p.message)
        if guess:
            text += f"\n    did you mean {guess!r}?"
        lines.append(text)
    sys.stderr.write("\n".join(lines) + "\n")


def _did_you_mean(message: str) -> str | None:
    """For "unknown field 'nmae'": the closest field name of the spec model, if one is close."""
    import re
    m = re.match(r"unknown field '([^']{1,64})'", message)
    if not m:
        return None
    import difflib
    from pydantic import BaseModel
    from ..spec import ClusterSpec
    names: set[str] = set()
    seen: set[type] = set()

    def walk(model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
            for t in _types(info.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    walk(t)
    walk(ClusterSpec)
    close = difflib.get_close_matches(m.group(1), sorted(names), n=1, cutoff=0.7)
    return close[0] if close else None


def _types(annotation) -> list:
    import typing
    out = [annotation]
    for arg in typing.get_args(annotation):
        out += _types(arg)
    return out
