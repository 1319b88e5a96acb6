"""The wgkube command line. Thin: the Typer app, the bad-input wrapper, and the commands wired in
the order `--help` lists them (each command lives in generator/commands/).

Start-up is kept small: the command modules import only typer at the top and everything else
inside the command, so `wgkube --help`, `check`, `schema` and `init` never load the renderer,
the PKI, ISO or Packer code. Help uses click's plain formatter (markup mode None): Typer's rich
help imports rich.markdown, markdown-it and pygments, a tenth of a second for every run."""
from __future__ import annotations

import errno
from functools import wraps

import typer

from .commands import register_all
from .errors import Problem, UserError

VERSION_HELP = "print the wgkube version and exit"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            v = version("wgkube")
        except PackageNotFoundError:
            v = "unknown (not installed)"
        typer.echo(f"wgkube {v}")
        raise typer.Exit()


app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="One cluster spec in; self-assembling Kubernetes-over-WireGuard nodes out.")


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, help=VERSION_HELP)) -> None:
    """One cluster spec in; self-assembling Kubernetes-over-WireGuard nodes out."""


_OS_HINTS = {
    errno.EROFS: "the file system is read-only: remount it read-write, or write elsewhere (-o for out/, --secrets for the bundle)",
    errno.ENOSPC: "the disk is full: free some space, or write elsewhere (-o for out/), and run again",
    errno.EDQUOT: "your disk quota is used up: free some space, or write elsewhere (-o for out/), and run again",
    errno.EACCES: "no permission: check the owner and mode of this path and its folders, or run as the user who owns them",
    errno.EPERM: "not permitted: check the owner, mode and attributes (chattr) of this path",
    errno.ENOTDIR: "a file stands where a folder is needed: move it away or choose another path",
    errno.EISDIR: "a folder stands where a file is needed: move it away or choose another path",
    errno.EEXIST: "something already stands at this path: move it away or choose another path",
}


def os_problem(exc: OSError) -> Problem:
    """An OS error as a problem: the path, what the OS said, what to do. Writes are ordered so
    that a failure leaves the previous bundle and out/<cluster> in place (docs/day-two.md)."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None) or "(file system)"
    hint = _OS_HINTS.get(exc.errno or 0, "fix the cause and run again")
    return Problem("", f"{where}: {exc.strerror or exc}", hint + "; the previous bundle and out/ are left as they were")


def user_errors(fn):
    """Bad input, or a file system that says no: one clear message per problem, exit 2, no traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, OSError) as exc:
            from .commands.common import print_problems
            if isinstance(exc, OSError):
                exc = UserError(os_problem(exc))
            print_problems(exc)
            raise typer.Exit(2) from None
    return wrapper


register_all(app, user_errors)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
