"""`qflow sentinel ...` / `python -m sentinel ...`: the click group and its commands.

Exit codes: 0 clean, 1 central dependencies found, 2 usage, I/O or parse errors (errors
dominate: a scan that could not read every file cannot vouch that the repo is clean).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from sentinel.engine import scan
from sentinel.report import EXIT_ERROR
from sentinel.rules import RulesError, RuleSet, load_rules

_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Human-readable lines, or one JSON document (docs/sentinel.md).",
)
_RULES = click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Use this rules file instead of the packaged sentinel/rules.toml.",
)


@click.group("sentinel", context_settings={"help_option_names": ["-h", "--help"]})
def sentinel_group() -> None:
    """Centralization sentinel: find central databases, brokers and queues."""


@sentinel_group.command("check", short_help="Scan PATH for central dependencies.")
@click.argument("path", type=click.Path(path_type=Path), default=Path())
@_FORMAT
@_RULES
def check_command(path: Path, fmt: str, rules_path: Path | None) -> None:
    """Scan PATH (default: the current directory) and fail on central dependencies.

    Reads dependency and lock files, Python imports and deployment/config files.
    Exceptions live in PATH/sentinel.toml. Exit status: 0 clean, 1 findings,
    2 usage, I/O or parse errors.
    """
    rules = _load(rules_path, fmt)
    report = scan(path, rules=rules)
    click.echo(report.to_json() if fmt == "json" else report.render_text())
    raise SystemExit(report.exit_code)


@sentinel_group.command("rules", short_help="List the rules.")
@_FORMAT
@_RULES
def rules_command(fmt: str, rules_path: Path | None) -> None:
    """List the rules: id, family and why each dependency is central."""
    rules = _load(rules_path, fmt)
    if fmt == "json":
        click.echo(json.dumps(rules.to_dict(), indent=2, ensure_ascii=False))
        return
    width = max(len(rule.id) for rule in rules.rules)
    for rule in rules.rules:
        click.echo(f"{rule.id:<{width}}  {rule.why}")
    click.echo(f"{len(rules.rules)} rules (version {rules.version}) from {rules.source}")


# The boot check starts a node's block store and libp2p stack, so it lives with the node
# (`qflow node boot-check`, exit codes 0/2/3/4 there). It is reachable here by name only,
# imported when invoked: the sentinel keeps no import of the node and works without it.
_BOOT_CHECK = "qflow_node.cli.node_cmd"


@sentinel_group.command(
    "boot-check",
    short_help="Prove a node's IPFS and libp2p work (needs the Qflow node).",
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.pass_context
def boot_check_command(ctx: click.Context) -> None:
    """Same as `qflow node boot-check [--repo DIR]` (see docs/operator.md)."""
    try:
        node_cmd = importlib.import_module(_BOOT_CHECK)
    except ImportError as exc:
        click.echo(f"sentinel: boot-check needs the Qflow node installed ({exc})", err=True)
        raise SystemExit(EXIT_ERROR) from exc
    command: click.Command = node_cmd.boot_check_command
    command.main(args=ctx.args, prog_name=ctx.command_path, standalone_mode=True)


def _load(rules_path: Path | None, fmt: str) -> RuleSet:
    try:
        return load_rules(rules_path)
    except RulesError as exc:
        if fmt == "json":
            click.echo(json.dumps({"version": 1, "status": "error", "error": str(exc)}))
        click.echo(f"sentinel: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from exc
