"""Shared pieces of the scanners: the per-file outcome, decoding, URLs, line lookup."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from sentinel.report import Diagnostic, Finding, Kind
from sentinel.rules import Rule, RuleSet

# A scheme followed by "://". "_" is allowed because SQLAlchemy driver names use it
# (`oracle+cx_oracle://`); the look-behind makes a scheme start at a word boundary, so
# "my_postgres://" is the scheme "my_postgres", never "postgres".
_URL = re.compile(r"(?<![\w+.\-])(?P<scheme>[A-Za-z][\w+.\-]*)://(?P<rest>[^\s'\"<>`]*)")
_USERINFO = re.compile(r"^(?P<user>[^:@/]*):[^@/]*@")


class DecodeError(ValueError):
    """The file is not valid UTF-8."""


@dataclass
class Outcome:
    """Everything one scanner learned about one file."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def find(self, rule: Rule, line: int, kind: Kind, matched: str) -> None:
        self.findings.append(
            Finding(
                path=self.path,
                line=line,
                rule=rule.id,
                kind=kind,
                matched=matched,
                family=rule.family,
                why=rule.why,
            )
        )

    def error(self, message: str, line: int | None = None) -> None:
        self.errors.append(Diagnostic(self.path, line, message))

    def warn(self, message: str, line: int | None = None) -> None:
        self.warnings.append(Diagnostic(self.path, line, message))

    def merge(self, other: Outcome) -> None:
        self.findings += other.findings
        self.errors += other.errors
        self.warnings += other.warnings


def decode(data: bytes) -> str:
    """UTF-8 (a BOM is tolerated), or `DecodeError` saying where the bad byte is."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DecodeError(
            f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line})"
        ) from exc


@dataclass(frozen=True)
class Url:
    start: int  # offset of the scheme in the searched text
    raw: str  # the URL as written
    scheme: str

    @property
    def redacted(self) -> str:
        """The URL with any password replaced, so reports never leak credentials."""
        rest = self.raw[len(self.scheme) + 3 :]
        return f"{self.scheme}://" + _USERINFO.sub(r"\g<user>:***@", rest)


def iter_urls(text: str) -> Iterator[Url]:
    if "://" not in text:  # fast path: most strings hold no URL
        return
    for match in _URL.finditer(text):
        yield Url(match.start(), match.group(0), match["scheme"])


def match_urls(text: str, rules: RuleSet) -> Iterator[tuple[Url, Rule]]:
    for url in iter_urls(text):
        rule = rules.match_url_scheme(url.scheme)
        if rule is not None:
            yield url, rule


class LineFinder:
    """Line numbers of text found in a raw file, for formats whose parsers lose them.

    Each needle keeps a cursor, so the k-th lookup of the same text returns the k-th
    occurrence; occurrences on comment lines are skipped.
    """

    def __init__(self, text: str, comment_prefixes: tuple[str, ...] = ("#",)) -> None:
        self.text = text
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._comments = comment_prefixes
        self._cursors: dict[str, int] = {}

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset)

    def _is_comment(self, line: int) -> bool:
        start = self._starts[line - 1]
        end = self._starts[line] if line < len(self._starts) else len(self.text)
        return self.text[start:end].lstrip().startswith(self._comments)

    def find(self, needle: str) -> int | None:
        """Line of the next occurrence of the literal `needle`."""
        return self.search(re.compile(re.escape(needle)))

    def search(self, pattern: re.Pattern[str]) -> int | None:
        """Line of the next match of `pattern` (use re.MULTILINE for `^` anchors)."""
        key = pattern.pattern
        pos = self._cursors.get(key, 0)
        while True:
            match = pattern.search(self.text, pos)
            if match is None:
                return None
            pos = max(match.end(), match.start() + 1)
            line = self.line_of(match.start())
            if not self._is_comment(line):
                self._cursors[key] = pos
                return line

    def first(self, *needles: str) -> int:
        """Line of the first needle found (in order of preference), else line 1."""
        for needle in needles:
            line = self.find(needle)
            if line is not None:
                return line
        return 1
