"""`qflow flow check|compile`: validate flow files and compile them into the block store.

Exit codes: 0 every flow is valid (compiled); 1 a flow has errors, each printed as
`FILE:LINE:COL: path: message` (on stdout for check, whose report they are; on stderr
for compile, whose stdout is the CID or the IR); 2 usage or I/O error (a file that
cannot be read, no block store).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from qflow_node.cli.errors import EXIT_CHECK_FAILED, EXIT_USAGE, open_block_store
from qflow_node.cli.flowfile import load_flow_or_exit
from qflow_node.cli.options import repo_option
from qflow_node.codec.dagjson import to_dag_json
from qflow_node.core.flow import FlowCompileError
from qflow_node.flow_loader import FlowFileError, load_flow

_FILE = click.Path(path_type=Path, dir_okay=False)


@click.group("flow")
def flow_group() -> None:
    """Check and compile flow definitions (YAML or JSON; see docs/flows.md)."""


@flow_group.command("check")
@click.argument("files", nargs=-1, required=True, type=_FILE)
def check_command(files: tuple[Path, ...]) -> None:
    """Check flow files without storing anything.

    Prints `FILE: CID` for each valid flow, and every error of the others as
    `FILE:LINE:COL: path: message`. Local `run:` modules are read and hashed;
    sub-flows are not looked up (compile does that).
    """
    code = 0
    for file in files:
        try:
            loaded = load_flow(file)
        except FlowFileError as exc:
            click.echo(f"error: {exc.strerror}", err=True)
            code = EXIT_USAGE
        except FlowCompileError as exc:
            for error in exc.errors:
                click.echo(f"{file}:{error}")
            code = max(code, EXIT_CHECK_FAILED)
        else:
            click.echo(f"{file}: {loaded.cid.encode()}")
    if code:
        raise SystemExit(code)


@flow_group.command("compile")
@click.argument("file", type=_FILE)
@repo_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print the compiled flow (DAG-JSON), not its CID."
)
def compile_command(file: Path, repo: Path, as_json: bool) -> None:
    """Compile a flow into the repo's block store and print its CID.

    Local `run:` modules are added as raw blocks, sub-flows must already be in the
    store, and the compiled flow is stored and pinned (with everything it links to).
    """
    loaded = load_flow_or_exit(file, open_block_store(repo), pin=True)
    if as_json:
        ir = to_dag_json(loaded.compiled.ir)
        click.echo(json.dumps(ir, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        click.echo(loaded.cid.encode())
