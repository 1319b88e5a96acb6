"""One error type for everything the user can get wrong.

Every problem carries the spec path it is about (``nodes[2].endpoint``), the line in the
YAML file where we know it, what is wrong, and how to fix it. The CLI prints them all and
exits 2; nothing is written when there is any.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# Anything printed is bounded and printable: a 50 MB value or a terminal escape sequence in
# the spec must not reach the user's terminal as such (issue 12).
MAX_SHOWN = 400
_UNPRINTABLE = re.compile(r"[^\S ]|[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    """text with control characters escaped, cut to about limit characters."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def shown(value: object, limit: int = 60) -> str:
    """A user's value inside a message: repr-quoted, escaped, at most about limit characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return f"{text[:limit]!r}... ({len(text)} characters)"
    return repr(text)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    hint: str = ""
    line: int | None = None

    def render(self, source: str = "") -> str:
        where = clip(self.path, 200) or "(spec)"
        if self.line is not None:
            where = f"{source}:{self.line}: {where}" if source else f"line {self.line}: {where}"
        elif source:
            where = f"{source}: {where}"
        text = f"{where}: {clip(self.message)}"
        if self.hint:
            text += f"\n    hint: {clip(self.hint)}"
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
