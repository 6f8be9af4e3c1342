"""`scan()`: walk a tree, run the scanner each file calls for, apply the allowlist."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from sentinel.allowlist import ALLOWLIST_NAME, Allowlist, load_allowlist
from sentinel.report import Diagnostic, Finding, Report, Suppressed
from sentinel.rules import RuleSet, default_rules
from sentinel.scanners import FileKind, Outcome, classify, scan_file

MAX_FILE_SIZE = 5 * 1024 * 1024

# Tool caches, virtualenvs and build output: not the project's own declarations.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
        ".tox",
        ".nox",
        "build",
        "dist",
    }
)


def scan(
    root: Path,
    *,
    rules: RuleSet | None = None,
    max_file_size: int = MAX_FILE_SIZE,
) -> Report:
    """Scan the tree under `root` for central dependencies.

    Never raises for problems in the scanned files: unreadable or unparsable files become
    `report.errors` (exit code 2) and the rest of the tree is still scanned.
    """
    ruleset = rules if rules is not None else default_rules()
    report = Report(root=str(root), rules_source=ruleset.source, rules_version=ruleset.version)
    if not root.is_dir():
        problem = "does not exist" if not root.exists() else "is not a directory"
        report.errors.append(Diagnostic(str(root), None, f"scan root {problem}"))
        return report
    allowlist = load_allowlist(root, ruleset)
    report.errors += allowlist.errors
    report.warnings += allowlist.warnings
    findings: dict[tuple[str, int, str, str], Finding] = {}
    for rel, path, kind in _walk(root, allowlist, report):
        outcome, scanned = _scan_one(rel, path, kind, ruleset, max_file_size)
        report.files_scanned += scanned
        report.errors += outcome.errors
        report.warnings += outcome.warnings
        for finding in outcome.findings:
            # One finding per rule, kind and line: `from g.c import pubsub, pubsub_v1` is one.
            findings.setdefault((finding.path, finding.line, finding.rule, finding.kind), finding)
    _apply_allowlist(report, allowlist, list(findings.values()))
    report.sort()
    return report


def _walk(root: Path, allowlist: Allowlist, report: Report) -> Iterator[tuple[str, Path, FileKind]]:
    """(relative path, path, kind) of every file a scanner wants, in a stable order."""

    def on_error(exc: OSError) -> None:
        where = _relative(root, Path(exc.filename)) if exc.filename else "."
        report.errors.append(Diagnostic(where, None, f"cannot list directory: {exc.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        base = Path(dirpath)
        rel_dir = _relative(root, base)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(
            d for d in dirnames if not _skip_dir(base / d, d) and not allowlist.excluded(prefix + d)
        )
        for name in sorted(filenames):
            rel = prefix + name
            if rel == ALLOWLIST_NAME or allowlist.excluded(rel):
                continue
            kind = classify(tuple(rel.split("/")))
            if kind is not None:
                yield rel, base / name, kind


def _skip_dir(path: Path, name: str) -> bool:
    if name in SKIP_DIRS or name.endswith(".egg-info"):
        return True
    # Any virtualenv, whatever its name (".env", "py311", ...), has a pyvenv.cfg.
    return (path / "pyvenv.cfg").is_file()


def _scan_one(
    rel: str, path: Path, kind: FileKind, rules: RuleSet, max_file_size: int
) -> tuple[Outcome, bool]:
    """The file's outcome, and whether it was actually scanned (not skipped)."""
    out = Outcome(rel)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            out.error(f"broken symlink (target {str(path.readlink())!r} does not exist)")
        else:
            out.error("file vanished during the scan")
        return out, False
    except OSError as exc:
        out.error(f"cannot stat: {exc.strerror}")
        return out, False
    if not stat.S_ISREG(info.st_mode):
        # Reading a FIFO or device could block or never end.
        out.warn("not a regular file; skipped")
        return out, False
    if info.st_size > max_file_size:
        out.warn(f"{info.st_size} bytes is over the {max_file_size}-byte limit; skipped")
        return out, False
    try:
        data = path.read_bytes()
    except OSError as exc:
        out.error(f"cannot read: {exc.strerror}")
        return out, False
    try:
        return scan_file(kind, rel, data, rules), True
    except Exception as exc:  # one file must never abort the whole scan
        out.error(f"internal error while scanning ({type(exc).__name__}: {exc})")
        return out, True


def _apply_allowlist(report: Report, allowlist: Allowlist, findings: list[Finding]) -> None:
    used: set[int] = set()
    for finding in findings:
        entry = allowlist.entry_for(finding)
        if entry is None:
            report.findings.append(finding)
            continue
        used.add(entry.number)
        report.suppressed.append(Suppressed(finding, entry.rule, entry.path, entry.justification))
    for entry in allowlist.entries:
        if entry.number not in used:
            report.warnings.append(
                Diagnostic(
                    ALLOWLIST_NAME, entry.line, f"{entry.describe()} matched no finding; remove it?"
                )
            )


def _relative(root: Path, path: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return str(path)
    return rel.as_posix() if rel.parts else "."
