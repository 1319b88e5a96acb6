"""The wgkube command line. Thin: the Typer app, the bad-input wrapper, and the commands wired in
the order `--help` lists them (each command lives in generator/commands/)."""
from __future__ import annotations

from functools import wraps

import typer

from .commands import register_all
from .commands.common import err
from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="One cluster spec in; self-assembling Kubernetes-over-WireGuard nodes out.")


def user_errors(fn):
    """Bad input: one clear message per problem, exit 2, no traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[bold red]error[/]: {len(exc.problems)} problem(s)", highlight=False)
            for p in exc.problems:
                err.print(p.render(exc.source), highlight=False, markup=False)
            raise typer.Exit(2) from None
    return wrapper


register_all(app, user_errors)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
