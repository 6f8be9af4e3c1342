"""Loading a flow file for a command: one way to report its errors."""

from __future__ import annotations

from pathlib import Path

import click

from qflow_node.cli.errors import EXIT_CHECK_FAILED, fail
from qflow_node.core.flow import FlowCompileError
from qflow_node.flow_loader import FlowFileError, LoadedFlow, load_flow
from qflow_node.store import BlockStore, StoreError


def load_flow_or_exit(file: Path, store: BlockStore, *, pin: bool = False) -> LoadedFlow:
    """Compile FILE into `store` (and pin it), or exit: every compile error as
    `FILE:L:C: path: message` with exit 1, an unreadable file or store with exit 2."""
    try:
        loaded = load_flow(file, store=store)
        if pin:
            store.pin(loaded.cid, recursive=True)
    except FlowFileError as exc:
        fail(exc.strerror or str(exc))
    except FlowCompileError as exc:
        for error in exc.errors:
            click.echo(f"{file}:{error}", err=True)
        raise SystemExit(EXIT_CHECK_FAILED) from None
    except StoreError as exc:
        fail(f"cannot store the flow: {exc}")
    return loaded
