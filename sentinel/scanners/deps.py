"""Dependency declarations and lock files.

Covers requirements files, `pyproject.toml` (PEP 621, PEP 735 groups, build-system,
Poetry, PDM, uv, Hatch environments), `setup.cfg`, `Pipfile`, `Pipfile.lock`,
`poetry.lock`, `uv.lock`, `pdm.lock` and `pylock.toml`. Names are compared after PEP 503
normalisation; extras are checked too, since `celery[redis]` pulls in a Redis client.
Line numbers are those of the declaration in the raw file.
"""

from __future__ import annotations

import configparser
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from sentinel.rules import RuleSet
from sentinel.scanners.base import LineFinder, Outcome

_LEADING_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")
_HASH_OPTION = re.compile(r"\s--hash[=\s]\S+")
_SETUP_CFG_KEYS = ("install_requires", "setup_requires", "tests_require")


def check_dependency(
    out: Outcome, rules: RuleSet, name: str, extras: Iterable[str], *, line: int, shown: str
) -> None:
    """Record the findings for one declared dependency `name[extras]` at `line`."""
    extras = list(extras)
    rule = rules.match_distribution(name)
    if rule is not None:
        out.find(rule, line, "dependency", shown)
    for extra_rule, _extra in rules.match_extras(name, extras):
        if extra_rule is not rule:
            out.find(extra_rule, line, "dependency", shown)


def parse_requirement(text: str) -> tuple[str, list[str]] | None:
    """(name, extras) of a PEP 508 string, or None when it is not one."""
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    return req.name, sorted(req.extras)


def _shown(name: str, extras: Iterable[str]) -> str:
    extras = sorted(extras)
    return f"{name}[{','.join(extras)}]" if extras else name


def _check_pep508(out: Outcome, rules: RuleSet, text: str, line: int) -> None:
    parsed = parse_requirement(text)
    if parsed is None:
        # Still look at the leading name: a typo in a version must not hide a driver.
        leading = _LEADING_NAME.match(text)
        out.warn(f"not a valid PEP 508 requirement: {text.strip()!r}", line)
        if leading is None:
            return
        parsed = (leading.group(1), [])
    name, extras = parsed
    check_dependency(out, rules, name, extras, line=line, shown=_shown(name, extras))


# --- requirements files -------------------------------------------------------------------


def scan_requirements(path: str, text: str, rules: RuleSet) -> Outcome:
    out = Outcome(path)
    for line, content in _logical_lines(text):
        if content.startswith("-"):
            # Options: only an editable/URL install naming its egg tells us a name.
            egg = _EGG.search(content)
            if egg is not None:
                check_dependency(out, rules, egg.group(1), (), line=line, shown=egg.group(1))
            continue
        if "://" in content.split(" ", 1)[0] or content.startswith((".", "/")):
            egg = _EGG.search(content)  # a bare URL or path; the name, if any, is the egg
            if egg is not None:
                check_dependency(out, rules, egg.group(1), (), line=line, shown=egg.group(1))
            continue
        _check_pep508(out, rules, _HASH_OPTION.sub("", content), line)
    return out


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, content) with `\\` continuations joined and comments removed."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        joined = " ".join(pending)
        pending = []
        content = re.split(r"(?:^|\s)#", joined, maxsplit=1)[0].strip()
        if content:
            yield start, content
    if pending:
        content = re.split(r"(?:^|\s)#", " ".join(pending), maxsplit=1)[0].strip()
        if content:
            yield start, content


# --- pyproject.toml -----------------------------------------------------------------------


def scan_pyproject(path: str, doc: dict[str, Any], text: str, rules: RuleSet) -> Outcome:
    out = Outcome(path)
    finder = LineFinder(text)
    for requirement in _pyproject_requirements(doc):
        # The parsed string may differ from the raw text (TOML escapes): fall back to
        # the start of a string literal that begins with the distribution name.
        line = finder.first(f'"{requirement}"', f"'{requirement}'", requirement)
        if line == 1 and (parsed := parse_requirement(requirement)) is not None:
            pattern = re.compile(rf"""["']\s*{re.escape(parsed[0])}(?![\w.-])""", re.IGNORECASE)
            line = finder.search(pattern) or 1
        _check_pep508(out, rules, requirement, line)
    tool = _table(doc.get("tool"))
    poetry = _table(tool.get("poetry"))
    tables = [_table(poetry.get("dependencies")), _table(poetry.get("dev-dependencies"))]
    tables += [_table(_table(g).get("dependencies")) for g in _table(poetry.get("group")).values()]
    for table in tables:
        _scan_name_table(out, rules, finder, table, skip={"python"})
    return out


def _pyproject_requirements(doc: dict[str, Any]) -> Iterator[str]:
    """Every PEP 508 string a pyproject.toml declares, in a stable order."""
    project = _table(doc.get("project"))
    yield from _strings(project.get("dependencies"))
    for group in _table(project.get("optional-dependencies")).values():
        yield from _strings(group)
    for group in _table(doc.get("dependency-groups")).values():
        yield from _strings(group)  # {include-group = ...} tables are skipped by _strings
    yield from _strings(_table(doc.get("build-system")).get("requires"))
    tool = _table(doc.get("tool"))
    for group in _table(_table(tool.get("pdm")).get("dev-dependencies")).values():
        yield from _strings(group)
    uv = _table(tool.get("uv"))
    for key in ("dev-dependencies", "constraint-dependencies", "override-dependencies"):
        yield from _strings(uv.get(key))
    for env in _table(_table(tool.get("hatch")).get("envs")).values():
        for key in ("dependencies", "extra-dependencies"):
            yield from _strings(_table(env).get(key))


def _scan_name_table(
    out: Outcome,
    rules: RuleSet,
    finder: LineFinder,
    table: dict[str, Any],
    skip: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Tables keyed by distribution name (Poetry, Pipfile): `name = "^1"` or `{extras=[...]}`."""
    for name, spec in table.items():
        if name.lower() in skip:
            continue
        extras = _strings(spec.get("extras")) if isinstance(spec, dict) else []
        line = finder.search(_key_pattern(name)) or 1
        check_dependency(out, rules, name, extras, line=line, shown=_shown(name, extras))


def _key_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"""^[ \t]*["']?{re.escape(name)}["']?[ \t]*=""", re.MULTILINE)


# --- setup.cfg ----------------------------------------------------------------------------


def scan_setup_cfg(
    path: str, parser: configparser.RawConfigParser, text: str, rules: RuleSet
) -> Outcome:
    out = Outcome(path)
    finder = LineFinder(text, comment_prefixes=("#", ";"))
    values: list[str] = []
    if parser.has_section("options"):
        values += [
            parser.get("options", k) for k in _SETUP_CFG_KEYS if parser.has_option("options", k)
        ]
    if parser.has_section("options.extras_require"):
        values += [v for _, v in parser.items("options.extras_require", raw=True)]
    for value in values:
        # A dangling list is one requirement per line; a one-liner is `;`-separated.
        items = value.splitlines() if "\n" in value.strip() else value.split(";")
        for item in items:
            requirement = item.strip()
            if requirement and not requirement.startswith("#"):
                _check_pep508(out, rules, requirement, finder.first(requirement))
    return out


# --- Pipfile and lock files ---------------------------------------------------------------


def scan_pipfile(path: str, doc: dict[str, Any], text: str, rules: RuleSet) -> Outcome:
    out = Outcome(path)
    finder = LineFinder(text)
    for section, table in doc.items():
        # [packages], [dev-packages] and custom categories; not [[source]] or [requires].
        if section not in {"source", "requires", "scripts", "pipenv"} and isinstance(table, dict):
            _scan_name_table(out, rules, finder, table)
    return out


def scan_toml_lock(path: str, doc: dict[str, Any], text: str, rules: RuleSet) -> Outcome:
    """poetry.lock, uv.lock, pdm.lock (`[[package]]`) and pylock.toml (`[[packages]]`)."""
    out = Outcome(path)
    finder = LineFinder(text)
    entries = doc.get("package", doc.get("packages", []))
    for entry in entries if isinstance(entries, list) else []:
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str):
            pattern = re.compile(rf"""^[ \t]*name[ \t]*=[ \t]*["']{re.escape(name)}["']""", re.M)
            line = finder.search(pattern) or 1
            check_dependency(out, rules, name, (), line=line, shown=name)
    return out


def scan_pipfile_lock(path: str, text: str, rules: RuleSet) -> Outcome:
    out = Outcome(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        out.error(f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno)
        return out
    if not isinstance(doc, dict):
        out.error("invalid Pipfile.lock: the top level is not an object", 1)
        return out
    finder = LineFinder(text)
    for section, packages in doc.items():
        if section == "_meta" or not isinstance(packages, dict):
            continue
        for name, spec in packages.items():
            extras = _strings(spec.get("extras")) if isinstance(spec, dict) else []
            line = finder.search(re.compile(rf'^\s*"{re.escape(name)}"\s*:', re.M)) or 1
            check_dependency(out, rules, name, extras, line=line, shown=_shown(name, extras))
    return out


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
