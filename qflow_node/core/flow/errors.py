"""Flow errors: what is wrong, where in the source (line:column), and the path to it.

A flow is hostile input: every problem becomes a `FlowError` value, all of them are
collected and reported at once, sorted by position, and no exception trail reaches
the user.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# A path into the document: mapping keys and list indexes, from the root.
Path = tuple[str | int, ...]

# Hostile input can hold thousands of mistakes; past this many nobody reads on.
MAX_ERRORS: Final = 100

_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True, order=True)
class FlowError:
    """One problem: 1-based line and column, a path such as `steps[3].retry`, a message."""

    line: int
    column: int
    path: str  # "" for the whole document (syntax errors, a missing top-level key)
    message: str

    def __str__(self) -> str:
        where = f"{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class FlowCompileError(ValueError):
    """A flow that does not compile; `errors` lists every problem, sorted by position."""

    def __init__(self, errors: Iterable[FlowError]) -> None:
        ordered = sorted(set(errors))
        if len(ordered) > MAX_ERRORS:
            first = ordered[MAX_ERRORS - 1]
            more = FlowError(
                first.line,
                first.column,
                "",
                f"{len(ordered) - MAX_ERRORS + 1} more errors not shown",
            )
            ordered = [*ordered[: MAX_ERRORS - 1], more]
        self.errors: tuple[FlowError, ...] = tuple(ordered)
        super().__init__("\n".join(str(e) for e in self.errors))


class ResolveError(ValueError):
    """Raised by a module or flow resolver; its message becomes a FlowError at the reference."""


def format_path(path: Path) -> str:
    """`steps[3].parallel.join`; keys that are not identifiers are quoted: `a["x-y"]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out
