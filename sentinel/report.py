"""What a scan found: findings, allowed findings, errors and warnings, as text or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

REPORT_VERSION = 1

# What kind of evidence a finding rests on.
Kind = Literal["dependency", "import", "url", "image", "cloud-client"]
Status = Literal["clean", "findings", "error"]

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


@dataclass(frozen=True, order=True)
class Finding:
    """A central dependency at `path:line` (path relative to the scan root, `/`-separated)."""

    path: str
    line: int
    rule: str
    kind: Kind
    matched: str
    family: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "rule": self.rule,
            "family": self.family,
            "kind": self.kind,
            "matched": self.matched,
            "why": self.why,
        }

    def render(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.kind} {self.matched!r} — {self.why}"


@dataclass(frozen=True, order=True)
class Suppressed:
    """A finding an allowlist entry accepted, with the entry's written justification."""

    finding: Finding
    allow_rule: str
    allow_path: str
    justification: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.finding.to_dict(),
            "allowed_by": {
                "rule": self.allow_rule,
                "path": self.allow_path,
                "justification": self.justification,
            },
        }


@dataclass(frozen=True, order=True)
class Diagnostic:
    """An error (the file could not be scanned) or a warning about `path` (and `line`)."""

    path: str
    line: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "message": self.message}

    def render(self, level: str) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {level}: {self.message}"


@dataclass
class Report:
    """The result of one scan. Errors dominate: a repo we could not fully read is not clean."""

    root: str
    rules_source: str
    rules_version: int
    files_scanned: int = 0
    findings: list[Finding] = field(default_factory=list)
    suppressed: list[Suppressed] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def status(self) -> Status:
        if self.errors:
            return "error"
        return "findings" if self.findings else "clean"

    @property
    def exit_code(self) -> int:
        return {"clean": EXIT_CLEAN, "findings": EXIT_FINDINGS, "error": EXIT_ERROR}[self.status]

    def sort(self) -> None:
        self.findings.sort()
        self.suppressed.sort()
        self.errors.sort(key=_diag_key)
        self.warnings.sort(key=_diag_key)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape documented in docs/sentinel.md (`version` 1)."""
        return {
            "version": REPORT_VERSION,
            "root": self.root,
            "rules": {"source": self.rules_source, "version": self.rules_version},
            "status": self.status,
            "exit_code": self.exit_code,
            "files_scanned": self.files_scanned,
            "summary": {
                "findings": len(self.findings),
                "suppressed": len(self.suppressed),
                "errors": len(self.errors),
                "warnings": len(self.warnings),
            },
            "findings": [f.to_dict() for f in self.findings],
            "suppressed": [s.to_dict() for s in self.suppressed],
            "errors": [d.to_dict() for d in self.errors],
            "warnings": [d.to_dict() for d in self.warnings],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def render_text(self) -> str:
        lines = [f.render() for f in self.findings]
        lines += [d.render("error") for d in self.errors]
        lines += [d.render("warning") for d in self.warnings]
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        verdict = {
            "clean": "clean",
            "findings": "FAILED (central dependencies found)",
            "error": "ERROR (see the errors: this scan cannot vouch that the repo is clean)",
        }[self.status]
        allowed = f" ({_plural(len(self.suppressed), 'finding')} allowed by sentinel.toml)"
        return (
            f"sentinel: {_plural(len(self.findings), 'finding')}, "
            f"{_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')}"
            f"{allowed if self.suppressed else ''} in {_plural(self.files_scanned, 'file')}: "
            f"{verdict}"
        )


def _diag_key(diag: Diagnostic) -> tuple[str, int, str]:
    return (diag.path, diag.line or 0, diag.message)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
