"""Centralization sentinel: refuses central dependencies (CI rule) and central boots.

Library API: `scan(root)` returns a `Report` (findings, errors, warnings; `to_json()`);
`load_rules(path)` reads and validates a rules file (default: the packaged rules.toml).
The CLI is `sentinel.cli:sentinel_group` (`qflow sentinel check`, `python -m sentinel`).
"""

from sentinel.engine import MAX_FILE_SIZE, scan
from sentinel.report import Diagnostic, Finding, Report, Suppressed
from sentinel.rules import Rule, RulesError, RuleSet, load_rules

__all__ = [
    "MAX_FILE_SIZE",
    "Diagnostic",
    "Finding",
    "Report",
    "Rule",
    "RuleSet",
    "RulesError",
    "Suppressed",
    "load_rules",
    "scan",
]
