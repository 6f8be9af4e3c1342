"""The scanned repository's own `sentinel.toml`: justified exceptions and excluded paths.

    version = 1                       # optional
    exclude = ["vendor/**"]           # never scanned

    [[allow]]
    rule = "rdbms.postgres"           # a rule id, "<family>.*" or "*"
    path = "tests/integration/**"     # glob, relative to the scanned root
    justification = "why this is acceptable here"

Globs are anchored at the scanned root and use `/`: `*` and `?` stay within one path
segment, `**` spans segments (`a/**` is `a` and everything below it).

An entry without a justification (or with a placeholder such as "TODO") is an error and
is not applied. Problems are returned as diagnostics, never raised: a broken allowlist
must not stop the scan.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel.report import Diagnostic, Finding
from sentinel.rules import RuleSet

ALLOWLIST_NAME = "sentinel.toml"
_PLACEHOLDERS = {"todo", "tbd", "fixme", "n/a", "na", "none", "-", "...", "xxx", "?"}
_ENTRY_KEYS = {"rule", "path", "justification"}


class GlobError(ValueError):
    """A malformed path glob."""


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Translate a root-anchored path glob into a regex matched against `/` paths."""
    if not pattern or pattern.startswith("/") or ".." in pattern.split("/"):
        raise GlobError(f"glob {pattern!r} must be a non-empty path relative to the scanned root")
    pattern = pattern.removeprefix("./")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise GlobError(f"glob {pattern!r}: unclosed '['")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"[{'^/' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class AllowEntry:
    number: int  # 1-based position among the [[allow]] tables
    line: int | None  # line of its [[allow]] header in sentinel.toml
    rule: str
    path: str
    justification: str
    _rule_re: re.Pattern[str] = field(repr=False, compare=False)
    _path_re: re.Pattern[str] = field(repr=False, compare=False)

    def covers(self, finding: Finding) -> bool:
        return bool(self._rule_re.fullmatch(finding.rule) and self._path_re.fullmatch(finding.path))

    def describe(self) -> str:
        return f"allow entry #{self.number} (rule {self.rule!r}, path {self.path!r})"


@dataclass
class Allowlist:
    entries: list[AllowEntry] = field(default_factory=list)
    exclude: list[re.Pattern[str]] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def excluded(self, path: str) -> bool:
        return any(pattern.fullmatch(path) for pattern in self.exclude)

    def entry_for(self, finding: Finding) -> AllowEntry | None:
        return next((e for e in self.entries if e.covers(finding)), None)


def load_allowlist(root: Path, rules: RuleSet) -> Allowlist:
    """Read `<root>/sentinel.toml`; a missing file is an empty allowlist."""
    result = Allowlist()
    path = root / ALLOWLIST_NAME
    if not path.exists() and not path.is_symlink():
        return result

    def error(message: str, line: int | None = None) -> None:
        _error(result, message, line)

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        error(f"cannot read the allowlist: {reason}")
        return result
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+)", str(exc))
        error(f"invalid TOML: {exc}", int(match.group(1)) if match else None)
        return result
    unknown = sorted(set(doc) - {"version", "exclude", "allow"})
    if unknown:
        error(f"unknown key(s) {', '.join(unknown)} (expected version, exclude, [[allow]])")
    if doc.get("version", 1) != 1:
        error(f"unsupported allowlist version {doc['version']!r} (expected 1)")
    _load_exclude(doc.get("exclude", []), result)
    headers = [
        i + 1
        for i, line in enumerate(text.splitlines())
        if re.match(r"\s*\[\[\s*allow\s*\]\]", line)
    ]
    raw_entries = doc.get("allow", [])
    if not isinstance(raw_entries, list):
        error("`allow` must be an array of tables ([[allow]])")
        return result
    for number, raw in enumerate(raw_entries, start=1):
        line = headers[number - 1] if number <= len(headers) else None
        entry = _load_entry(raw, number, line, rules, result)
        if entry is not None:
            result.entries.append(entry)
    return result


def _error(result: Allowlist, message: str, line: int | None = None) -> None:
    result.errors.append(Diagnostic(ALLOWLIST_NAME, line, message))


def _load_exclude(value: Any, result: Allowlist) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _error(result, "`exclude` must be a list of path globs")
        return
    for pattern in value:
        try:
            result.exclude.append(compile_glob(pattern))
        except GlobError as exc:
            _error(result, f"exclude: {exc}")


def _load_entry(
    raw: Any, number: int, line: int | None, rules: RuleSet, result: Allowlist
) -> AllowEntry | None:
    where = f"allow entry #{number}"
    if not isinstance(raw, dict):
        _error(result, f"{where} is not a table", line)
        return None
    rule, path, justification = raw.get("rule"), raw.get("path"), raw.get("justification")
    if isinstance(rule, str) and isinstance(path, str):
        where += f" (rule {rule!r}, path {path!r})"
    problems: list[str] = []
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}")
    if not isinstance(rule, str) or not rule:
        problems.append("missing `rule` (a rule id, '<family>.*' or '*')")
    elif not _rule_known(rule, rules):
        problems.append(f"rule {rule!r} matches no rule in {rules.source}")
    path_re: re.Pattern[str] | None = None
    if not isinstance(path, str):
        problems.append("missing `path` (a glob relative to the scanned root)")
    else:
        try:
            path_re = compile_glob(path)
        except GlobError as exc:
            problems.append(str(exc))
    if not isinstance(justification, str) or not justification.strip():
        problems.append("missing justification: every exception must say why it is acceptable")
    elif justification.strip().lower() in _PLACEHOLDERS:
        problems.append(f"justification {justification.strip()!r} is a placeholder, not a reason")
    if problems or path_re is None:
        _error(result, f"{where}: {'; '.join(problems)}; the entry is ignored", line)
        return None
    assert isinstance(rule, str) and isinstance(path, str) and isinstance(justification, str)
    return AllowEntry(
        number=number,
        line=line,
        rule=rule,
        path=path,
        justification=" ".join(justification.split()),
        _rule_re=_rule_pattern(rule),
        _path_re=path_re,
    )


def _rule_pattern(rule: str) -> re.Pattern[str]:
    if rule == "*":
        return re.compile(r".*")
    if rule.endswith(".*"):
        return re.compile(re.escape(rule[:-1]) + r".+")
    return re.compile(re.escape(rule))


def _rule_known(rule: str, rules: RuleSet) -> bool:
    # A typo in a rule id would make the entry silently useless; refuse it instead.
    pattern = _rule_pattern(rule)
    return any(pattern.fullmatch(rule_id) for rule_id in rules.ids)
