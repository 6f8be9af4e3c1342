"""CEL expressions in flows: compile once to check them, and find what they read.

The `cel` package compiles and lists free variable names but exposes no syntax tree,
so step references (`steps.<id>.output`) are found with a CEL tokenizer run on source
that already compiled: string literals and comments are whole tokens, so `"steps.x"`
inside a string is never taken for a reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NamedTuple

import cel

# Names every expression may read; `item`/`index` exist only in foreach bodies and
# `event` only in wait_for.match.
ROOT_NAMES: Final = ("inputs", "steps", "vars")
LOOP_NAMES: Final = ("item", "index")
EVENT_NAME: Final = "event"
# What `steps.<id>` holds: the step's output, and its error when it failed and the flow
# went on (on_error: continue).
STEP_FIELDS: Final = ("output", "error")
# Type identifiers CEL reports as variables (`type(x) == int`), and the optional library.
BUILTIN_NAMES: Final = frozenset(
    {
        "int",
        "uint",
        "double",
        "bool",
        "string",
        "bytes",
        "list",
        "map",
        "null_type",
        "type",
        "optional",
    }
)
# Macros whose first argument names a new variable: `list.map(x, x + 1)`.
_MACROS: Final = frozenset({"all", "exists", "exists_one", "existsOne", "map", "filter"})
# Operators binding looser than `+`: a literal followed by `+` and only tighter
# operators is a prefix of the expression's value.
_LOOSE: Final = frozenset({"<", "<=", ">", ">=", "==", "!=", "in", "&&", "||", "?", ":"})

_TOKEN: Final = re.compile(
    r"""
    (?P<ws>[ \t\r\n\f]+)
  | (?P<comment>//[^\n]*)
  | (?P<raw>(?:[rR][bB]?|[bB][rR])(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*'))
  | (?P<string>[bB]?(?:\"\"\"(?:[^\\]|\\[\s\S])*?\"\"\"|'''(?:[^\\]|\\[\s\S])*?'''
                    |"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:[0-9]+\.[0-9]+|\.[0-9]+)(?:[eE][+-]?[0-9]+)?
                |[0-9]+[eE][+-]?[0-9]+|[0-9]+[uU]?)
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<punct>==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,\[\]{}()])
    """,
    re.VERBOSE,
)
_CEL_ERROR: Final = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")


class Token(NamedTuple):
    kind: str  # ident, string, bytes, number, punct
    text: str
    start: int  # offset in the source
    value: str | None  # a string literal's value, when it has no escapes


@dataclass(frozen=True, slots=True)
class StepRef:
    step: str
    field: str | None  # `output`, `error`, a typo, or None for `steps.x` alone
    start: int


@dataclass(frozen=True, slots=True)
class Analysis:
    names: tuple[tuple[str, int], ...]  # free names the expression reads, first offset each
    refs: tuple[StepRef, ...]
    dynamic: tuple[int, ...]  # offsets of `steps` not followed by .<id> or ["<id>"]
    rebound: tuple[tuple[str, int], ...]  # inputs/steps/vars rebound by a macro


@dataclass(frozen=True, slots=True)
class CelProblem:
    line: int  # within the expression, 1-based
    column: int
    message: str


def check_syntax(source: str) -> CelProblem | None:
    """Compile `source` with the CEL engine the flow engine uses; the first problem, if any."""
    try:
        cel.compile(source)
    except Exception as exc:  # ValueError, with a caret diagnostic
        return _problem(str(exc))
    except BaseException as exc:  # a Rust panic surfaces as pyo3's PanicException
        if type(exc).__name__ != "PanicException":
            raise
        return CelProblem(1, 1, "the CEL parser failed on this expression")
    return None


def _problem(text: str) -> CelProblem:
    match = _CEL_ERROR.search(text)
    if match is None:
        return CelProblem(1, 1, " ".join(text.split())[:300])
    return CelProblem(int(match[1]), int(match[2]), match[3].strip())


def tokenize(source: str) -> list[Token]:
    """Tokens of CEL source that compiled; ValueError on a character CEL would refuse."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise ValueError(f"unexpected character {source[pos]!r} at offset {pos}")
        kind = m.lastgroup
        assert kind is not None
        text = m.group()
        if kind in ("raw", "string"):
            tokens.append(_string_token(kind, text, pos))
        elif kind not in ("ws", "comment"):
            tokens.append(Token(kind, text, pos, None))
        pos = m.end()
    return tokens


def _string_token(kind: str, text: str, start: int) -> Token:
    prefix = len(text) - len(text.lstrip("rRbB"))
    is_bytes = "b" in text[:prefix].lower()
    body = text[prefix:]
    quote = 3 if body[:3] in ('"""', "'''") else 1
    inner = body[quote:-quote]
    known = kind == "raw" or "\\" not in inner
    return Token("bytes" if is_bytes else "string", text, start, inner if known else None)


def analyse(source: str) -> Analysis:
    """Free names, step references and dynamic `steps` uses of compiled CEL source."""
    tokens = tokenize(source)
    bound: dict[str, int] = {}
    for i in range(len(tokens) - 4):
        a, b, c, d, e = tokens[i : i + 5]
        if (
            a.text == "."
            and b.text in _MACROS
            and c.text == "("
            and d.kind == "ident"
            and e.text == ","
        ):
            bound.setdefault(d.text, d.start)
    names: dict[str, int] = {}
    for name in _variables(source):
        if name in bound:
            continue
        names[name] = next((t.start for t in tokens if t.text == name and t.kind == "ident"), 0)
    refs: list[StepRef] = []
    dynamic: list[int] = []
    if "steps" not in bound:
        for i, tok in enumerate(tokens):
            if tok.text != "steps" or tok.kind != "ident" or (i and tokens[i - 1].text == "."):
                continue
            step, j = _member(tokens, i + 1)
            if step is None:
                dynamic.append(tok.start)
                continue
            field, _ = _member(tokens, j)
            refs.append(StepRef(step, field, tok.start))
    rebound = tuple((n, at) for n, at in bound.items() if n in ROOT_NAMES)
    return Analysis(tuple(names.items()), tuple(refs), tuple(dynamic), rebound)


def _variables(source: str) -> list[str]:
    return list(cel.compile(source).variables())


def _member(tokens: list[Token], i: int) -> tuple[str | None, int]:
    """The name selected at tokens[i:] (`.name` or `["name"]`) and the index after it."""
    if i + 1 < len(tokens) and tokens[i].text == "." and tokens[i + 1].kind == "ident":
        return tokens[i + 1].text, i + 2
    if (
        i + 2 < len(tokens)
        and tokens[i].text == "["
        and tokens[i + 1].kind == "string"
        and tokens[i + 1].value is not None
        and tokens[i + 2].text == "]"
    ):
        return tokens[i + 1].value, i + 3
    return None, i


def step_references(source: str) -> list[str]:
    """The ids of the steps a (valid) expression reads through `steps.<id>`, sorted."""
    return sorted({ref.step for ref in analyse(source).refs})


def literal_prefix(source: str) -> tuple[str, bool] | None:
    """The string an expression's value starts with, when that is static: a string
    literal alone (`(text, True)`) or followed by `+` and operators that bind tighter
    (`(text, False)`, e.g. `"https://api.example.com/orders/" + inputs.id`)."""
    tokens = tokenize(source)
    if not tokens or tokens[0].kind != "string" or tokens[0].value is None:
        return None
    if len(tokens) == 1:
        return tokens[0].value, True
    if tokens[1].text != "+":
        return None
    depth = 0
    for tok in tokens[2:]:
        if tok.text in "([{" and tok.kind == "punct":
            depth += 1
        elif tok.text in ")]}" and tok.kind == "punct":
            depth -= 1
        elif depth == 0 and tok.text in _LOOSE:
            return None
    return tokens[0].value, False
