"""How every `qflow` command reports errors, and the argument helpers they share.

Exit codes: 0 success, 1 the thing checked is bad or missing (findings, an invalid
ledger, an unknown block), 2 usage or I/O error. Errors are one line on stderr starting
with `error: `; stdout stays clean for the command's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, NoReturn

import click

from qflow_node.codec import CID, CidError, parse_cid
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore, StoreNotFoundError

EXIT_CHECK_FAILED: Final = 1
EXIT_USAGE: Final = 2


class CliError(click.ClickException):
    """A user-facing error: one `error: …` line on stderr, exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file: object = None) -> None:
        click.echo(f"error: {' '.join(self.format_message().split())}", err=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Stop the command with one `error: …` line and `code`."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    raise SystemExit(code)


def cid_argument(text: str) -> CID:
    """A CID given on the command line, or exit 2 saying what is wrong with it."""
    try:
        return parse_cid(text.strip())
    except CidError as exc:
        fail(str(exc))


def open_block_store(repo: Path) -> FileBlockStore:
    """The repo's block store, or exit 2 saying how to create it."""
    blocks = RepoPaths(repo).blocks
    try:
        return FileBlockStore(blocks)
    except StoreNotFoundError:
        fail(f"no block store at {blocks}; run `qflow init --repo {repo}` first")
    except OSError as exc:
        fail(f"cannot open the block store at {blocks}: {exc.strerror or exc}")
