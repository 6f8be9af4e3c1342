"""Errors every `qflow` command reports the same way."""

from __future__ import annotations

import click


class CliError(click.ClickException):
    """A user-facing error: one line on stderr, exit code 2 (usage or I/O problem)."""

    exit_code = 2


class CheckFailed(click.ClickException):
    """The thing checked is bad or missing (invalid ledger, unknown block): exit code 1."""

    exit_code = 1
