"""Flow source text → plain data (dicts, lists, str, int, float, bool, None) with the
line and column of every value and every mapping key.

YAML is read from the parser's event stream (never PyYAML's constructor), so nothing
in a hostile file can run code, expand (no anchors, aliases, merge keys or tags) or
blow the stack (nesting is capped while streaming). Plain scalars follow the YAML 1.2
core schema: `yes`, `no`, `on`, `off` and `1:30` are strings, `0o17` is an integer,
`1e3` is a float — the same values JSON gives. JSON gets its own strict reader with
positions (YAML would mis-read tabs, surrogate-pair escapes and U+2028 in strings).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import yaml

from qflow_node.core.flow.errors import FlowCompileError, FlowError, Path, format_path

MAX_SOURCE_BYTES: Final = 1 << 20
MAX_NESTING: Final = 64  # lists and mappings; real flows nest < 20
INT_MIN: Final = -(1 << 63)
INT_MAX: Final = (1 << 63) - 1

Syntax = Literal["auto", "yaml", "json"]

_NULL: Final = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE: Final = frozenset({"true", "True", "TRUE"})
_FALSE: Final = frozenset({"false", "False", "FALSE"})
_INT: Final = re.compile(r"[-+]?[0-9]+")
_OCT: Final = re.compile(r"0o[0-7]+")
_HEX: Final = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT: Final = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_SPECIAL_FLOAT: Final = re.compile(r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Pos:
    line: int  # 1-based
    column: int  # 1-based, in characters
    index: int  # 0-based offset into the text


@dataclass(slots=True)
class Document:
    """A parsed flow: its value, and where each value and key starts in `text`."""

    text: str
    value: Any
    positions: dict[Path, Pos] = field(default_factory=dict)
    key_positions: dict[Path, Pos] = field(default_factory=dict)
    quoted: set[Path] = field(default_factory=set)  # scalars written in quotes

    def pos(self, path: Path) -> Pos:
        """Where the value at `path` starts, or its nearest ancestor that exists."""
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, Pos(1, 1, 0))

    def key_pos(self, path: Path) -> Pos:
        return self.key_positions.get(path) or self.pos(path)

    def error(self, path: Path, message: str, *, at_key: bool = False) -> FlowError:
        pos = self.key_pos(path) if at_key else self.pos(path)
        return FlowError(pos.line, pos.column, format_path(path), message)

    def inner_pos(self, path: Path, offset: int) -> Pos | None:
        """Where character `offset` of the string at `path` is in the source, when the
        string is written there verbatim on one line (plain, or quoted without escapes)."""
        value = self.value_at(path)
        start = self.positions.get(path)
        if not isinstance(value, str) or start is None or "\n" in value:
            return None
        begin = start.index + (1 if path in self.quoted else 0)
        if self.text[begin : begin + len(value)] != value or not 0 <= offset <= len(value):
            return None
        return Pos(start.line, start.column + (begin - start.index) + offset, begin + offset)

    def value_at(self, path: Path) -> Any:
        value = self.value
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value


def parse_source(text: str, syntax: Syntax = "auto") -> Document:
    """Parse a flow file. Raises FlowCompileError with every problem found."""
    if text.startswith("\ufeff"):
        text = text[1:]
    size = (
        len(text)
        if len(text) * 4 <= MAX_SOURCE_BYTES
        else len(text.encode("utf-8", "surrogatepass"))
    )
    if size > MAX_SOURCE_BYTES:
        raise FlowCompileError(
            [FlowError(1, 1, "", f"flow source is {size} bytes; the limit is {MAX_SOURCE_BYTES}")]
        )
    if syntax == "json":
        return _parse_json(text)
    if syntax == "auto" and text.lstrip(" \t\r\n").startswith("{"):
        try:
            return _parse_json(text)
        except FlowCompileError as json_error:
            try:  # a YAML flow mapping such as `{name: x, steps: [...]}`
                return _parse_yaml(text)
            except FlowCompileError:
                raise json_error from None
    return _parse_yaml(text)


class _Builder:
    """Assembles values from a stream of (start, scalar, end) calls, recording positions."""

    def __init__(self, text: str) -> None:
        self.doc = Document(text, None)
        self.errors: list[FlowError] = []
        # Open containers: (container, its path, recording positions?).
        self.stack: list[tuple[dict[str, Any] | list[Any], Path, bool]] = []
        self.key: str | None = None  # pending mapping key
        self.key_at: Pos | None = None
        self.key_ok = True  # False: the value of a duplicate key, parsed and dropped

    def fail(self, pos: Pos, path: Path, message: str) -> None:
        self.errors.append(FlowError(pos.line, pos.column, format_path(path), message))

    def expects_key(self) -> bool:
        return bool(self.stack) and isinstance(self.stack[-1][0], dict) and self.key is None

    def add_key(self, key: str, pos: Pos) -> None:
        container, path, record = self.stack[-1]
        assert isinstance(container, dict)
        self.key, self.key_at, self.key_ok = key, pos, True
        if key in container:
            if record:
                first = self.doc.key_positions[(*path, key)]
                self.fail(
                    pos,
                    (*path, key),
                    f"duplicate key {json.dumps(key)} (first at {first.line}:{first.column})",
                )
            self.key_ok = False

    def next_path(self, key: str | None = None) -> Path:
        """The path of the next value (or of `key`, when the next scalar is a key)."""
        if not self.stack:
            return ()
        container, path, _ = self.stack[-1]
        if isinstance(container, list):
            return (*path, len(container))
        return (*path, key if key is not None else self.key or "")

    def _slot(self) -> tuple[Path, bool]:
        """Where the next value goes: its path and whether positions are recorded."""
        if not self.stack:
            return (), True
        container, path, record = self.stack[-1]
        if isinstance(container, list):
            return (*path, len(container)), record
        assert self.key is not None
        return (*path, self.key), record and self.key_ok

    def _attach(self, value: Any, pos: Pos, path: Path, record: bool) -> None:
        if record:
            self.doc.positions[path] = pos
        if not self.stack:
            self.doc.value = value
            return
        container = self.stack[-1][0]
        if isinstance(container, list):
            container.append(value)
        else:
            assert self.key is not None and self.key_at is not None
            if record:
                container[self.key] = value
                self.doc.key_positions[path] = self.key_at
            self.key = None

    def scalar(self, value: Any, pos: Pos, *, quoted: bool = False) -> None:
        path, record = self._slot()
        if isinstance(value, str) and _SURROGATE.search(value):
            self.fail(pos, path, "string contains an unpaired UTF-16 surrogate")
            value = None
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not INT_MIN <= value <= INT_MAX
        ):
            self.fail(pos, path, "integer outside the 64-bit range")
            value = None
        elif isinstance(value, float) and not math.isfinite(value):
            self.fail(pos, path, "numbers must be finite (no infinity or NaN)")
            value = None
        if quoted and record:
            self.doc.quoted.add(path)
        self._attach(value, pos, path, record)

    def start(self, container: dict[str, Any] | list[Any], pos: Pos) -> None:
        path, record = self._slot()
        if len(self.stack) >= MAX_NESTING:
            self.fail(pos, path, f"nesting deeper than {MAX_NESTING} levels")
            raise FlowCompileError(self.errors)
        self._attach(container, pos, path, record)
        self.stack.append((container, path, record))

    def end(self) -> None:
        self.stack.pop()


# -- YAML --------------------------------------------------------------------------------


def _parse_yaml(text: str) -> Document:
    b = _Builder(text)
    documents = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    pos = _at(event.start_mark)
                    b.errors.append(
                        FlowError(pos.line, pos.column, "", "a flow file holds one YAML document")
                    )
                    break
            elif isinstance(event, yaml.CollectionEndEvent):
                b.end()
            elif isinstance(event, yaml.NodeEvent):
                _yaml_node(b, event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        b.errors.append(FlowError(line, column, "", f"YAML syntax error: {problem}{context}"))
    except yaml.reader.ReaderError as exc:
        line, column = _line_col_of(text, exc.position)
        char = exc.character
        what = f"character #x{char:04x}" if isinstance(char, int) else "character"
        b.errors.append(
            FlowError(line, column, "", f"YAML syntax error: unacceptable {what}: {exc.reason}")
        )
    if b.errors:
        raise FlowCompileError(b.errors)
    return b.doc


def _yaml_node(b: _Builder, event: Any) -> None:
    pos = _at(event.start_mark)
    is_key = b.expects_key()
    if is_key:
        scalar_key = isinstance(event, yaml.ScalarEvent)
        path = b.next_path(event.value) if scalar_key else b.stack[-1][1]
    else:
        path = b.next_path()
    if isinstance(event, yaml.AliasEvent):
        b.fail(pos, path, "YAML aliases (*name) are not allowed")
        if is_key:
            b.add_key(f"*{event.anchor}", pos)
            b.key_ok = False
        else:
            b.scalar(None, pos)
        return
    if event.anchor is not None:
        b.fail(pos, path, "YAML anchors (&name) are not allowed")
    tag = event.tag
    if tag is not None:
        b.fail(pos, path, f"YAML tags ({tag}) are not allowed")
    if is_key:
        if not isinstance(event, yaml.ScalarEvent):
            b.fail(pos, path, "mapping keys must be strings")
            raise FlowCompileError(b.errors)
        if event.value == "<<" and event.style is None:
            b.fail(pos, path, "YAML merge keys (<<) are not allowed")
        b.add_key(event.value, pos)
    elif isinstance(event, yaml.ScalarEvent):
        plain = event.style is None and tag is None
        value = _resolve_plain(event.value) if plain else event.value
        b.scalar(value, pos, quoted=event.style in ("'", '"'))
    else:
        b.start({} if isinstance(event, yaml.MappingStartEvent) else [], pos)


def _at(mark: Any) -> Pos:
    return Pos(mark.line + 1, mark.column + 1, mark.index)


def _line_col_of(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _resolve_plain(text: str) -> Any:
    """A plain (unquoted) YAML scalar under the YAML 1.2 core schema."""
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _OCT.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _SPECIAL_FLOAT.fullmatch(text):
        return math.nan  # refused as not finite
    return text


# -- JSON --------------------------------------------------------------------------------

_WS: Final = re.compile(r"[ \t\n\r]*")
_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS: Final = (("true", True), ("false", False), ("null", None))


class _JsonSyntax(Exception):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


def _parse_json(text: str) -> Document:
    reader = _JsonReader(text)
    try:
        reader.run()
    except _JsonSyntax as exc:
        pos = reader.where(exc.index)
        reader.b.errors.append(
            FlowError(pos.line, pos.column, "", f"JSON syntax error: {exc.message}")
        )
    if reader.b.errors:
        raise FlowCompileError(reader.b.errors)
    return reader.b.doc


class _JsonReader:
    """Strict JSON (RFC 8259) into a _Builder, iteratively: no recursion, any nesting."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.b = _Builder(text)
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def where(self, index: int) -> Pos:
        line = bisect.bisect_right(self.line_starts, index)
        return Pos(line, index - self.line_starts[line - 1] + 1, index)

    def skip(self, i: int) -> int:
        # `_WS` matches the empty string too, so there is always a match.
        match = _WS.match(self.text, i)
        assert match is not None
        return match.end()

    def got(self, i: int) -> str:
        return repr(self.text[i]) if i < len(self.text) else "the end of the text"

    def run(self) -> None:
        i, expect_value = self.skip(0), True
        while True:
            if expect_value:
                i, opened = self.value(i)
                if opened:
                    continue  # inside a new container: its first element or key is next
            i, expect_value, done = self.after_value(self.skip(i))
            if done:
                return

    def value(self, i: int) -> tuple[int, bool]:
        """Read the value at `i`; True if it opened a non-empty container."""
        text, b = self.text, self.b
        if i >= len(text):
            raise _JsonSyntax(i, "expected a value, got the end of the text")
        c, pos = text[i], self.where(i)
        if c in "{[":
            b.start({} if c == "{" else [], pos)
            i = self.skip(i + 1)
            if i < len(text) and text[i] == ("}" if c == "{" else "]"):
                b.end()
                return i + 1, False
            return (self.key(i) if c == "{" else i), True
        if c == '"':
            string, i = _json_string(text, i)
            b.scalar(string, pos, quoted=True)
            return i, False
        number = _NUMBER.match(text, i)
        if number is not None:
            literal = number.group()
            is_float = number.group(1) or number.group(2)
            b.scalar(float(literal) if is_float else int(literal), pos)
            return number.end(), False
        for word, constant in _LITERALS:
            if text.startswith(word, i):
                b.scalar(constant, pos)
                return i + len(word), False
        raise _JsonSyntax(i, f"expected a value, got {self.got(i)}")

    def after_value(self, i: int) -> tuple[int, bool, bool]:
        """Close containers or go to the next element: (i, expect a value, finished)."""
        b = self.b
        if not b.stack:
            if i < len(self.text):
                raise _JsonSyntax(i, "extra text after the JSON value")
            return i, False, True
        container = b.stack[-1][0]
        close = "}" if isinstance(container, dict) else "]"
        if i < len(self.text) and self.text[i] == close:
            b.end()
            return i + 1, False, False
        if i < len(self.text) and self.text[i] == ",":
            i = self.skip(i + 1)
            return (self.key(i) if isinstance(container, dict) else i), True, False
        raise _JsonSyntax(i, f"expected ',' or '{close}', got {self.got(i)}")

    def key(self, i: int) -> int:
        """Read `"key":` at `i`; the index of the value after it."""
        if i >= len(self.text) or self.text[i] != '"':
            raise _JsonSyntax(i, f"expected a string key, got {self.got(i)}")
        pos = self.where(i)
        key, i = _json_string(self.text, i)
        if _SURROGATE.search(key):
            self.b.fail(pos, self.b.stack[-1][1], "key contains an unpaired UTF-16 surrogate")
        self.b.add_key(key, pos)
        i = self.skip(i)
        if i >= len(self.text) or self.text[i] != ":":
            raise _JsonSyntax(i, "expected ':' after the key")
        return self.skip(i + 1)


def _json_string(text: str, i: int) -> tuple[str, int]:
    try:
        value, end = json.decoder.scanstring(text, i + 1, True)  # type: ignore[attr-defined]
    except json.JSONDecodeError as exc:
        raise _JsonSyntax(exc.pos, exc.msg.lower()) from None
    return str(value), int(end)
