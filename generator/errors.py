"""One error type for everything the user can get wrong.

Every problem carries the spec path it is about (``nodes[2].endpoint``), the line in the
YAML file where we know it, what is wrong, and how to fix it. The CLI prints them all and
exits 2; nothing is written when there is any.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    hint: str = ""
    line: int | None = None

    def render(self, source: str = "") -> str:
        where = self.path or "(spec)"
        if self.line is not None:
            where = f"{source}:{self.line}: {where}" if source else f"line {self.line}: {where}"
        elif source:
            where = f"{source}: {where}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class UserError(Exception):
    """One or more problems the user must fix. Exit code 2."""

    def __init__(self, problems: list[Problem] | Problem, source: str = ""):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(p.render(self.source) for p in self.problems)


def fail(path: str, message: str, hint: str = "", line: int | None = None) -> UserError:
    return UserError(Problem(path, message, hint, line))
