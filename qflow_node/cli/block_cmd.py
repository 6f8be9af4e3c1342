"""`qflow block put|get|stat`: blocks in the local repo's block store.

Exit codes: 0 ok; 1 the block asked for is missing or corrupt (a corrupt file is moved to
`blocks/quarantine/`); 2 usage or I/O error (no repo, invalid CID, unreadable input,
invalid JSON, oversize block). Errors are one line on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

import click

from qflow_node.cli.errors import (
    EXIT_CHECK_FAILED,
    cid_argument,
    fail,
    open_block_store,
)
from qflow_node.cli.options import repo_option
from qflow_node.codec import CID, Block, UnencodableError, dag_block, raw_block
from qflow_node.codec.dagjson import DagJsonError, parse_dag_json
from qflow_node.store import (
    BlockNotFoundError,
    CorruptBlockError,
    FileBlockStore,
    InvalidBlockError,
)

# JSON spends up to 4/3 bytes per byte (base64) plus syntax and whitespace; anything
# longer than this cannot plausibly encode to a block within the limit.
_JSON_INPUT_FACTOR: Final = 8


def _read_input(source: str, limit: int) -> bytes:
    """At most `limit` bytes of FILE (or stdin for `-`); more is an error, not a truncation."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(source).open("rb") as fh:
                data = fh.read(limit + 1)
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror or exc}")
    if len(data) > limit:
        fail(f"{source}: input is larger than {limit} bytes")
    return data


@click.group("block", epilog="Exit codes: 0 ok, 1 block missing or corrupt, 2 usage or I/O error.")
def block_group() -> None:
    """Store and read IPFS blocks (CIDv1, sha2-256) in the local block store."""


@block_group.command("put")
@repo_option
@click.option(
    "--codec",
    type=click.Choice(["raw", "dag-cbor"]),
    default="raw",
    show_default=True,
    help="raw: FILE's bytes as they are. dag-cbor: FILE is DAG-JSON, stored as DAG-CBOR.",
)
@click.argument("file", metavar="FILE")
def put_command(repo: Path, codec: str, file: str) -> None:
    """Store FILE (`-` for stdin) as one block and print its CID.

    With --codec dag-cbor, FILE is JSON with the DAG-JSON conventions: {"/": "bafy…"} is a
    link and {"/": {"bytes": "<base64>"}} is a byte string.
    """
    store = open_block_store(repo)
    limit = store.max_block_size
    block: Block
    if codec == "raw":
        block = raw_block(_read_input(file, limit))
    else:
        text = _read_input(file, limit * _JSON_INPUT_FACTOR)
        try:
            block = dag_block(parse_dag_json(text))
        except (DagJsonError, UnencodableError) as exc:
            fail(f"{file}: {exc}")
    try:
        store.put(block)
    except InvalidBlockError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write to the block store: {exc}")
    click.echo(block.cid.encode())


@block_group.command("get")
@repo_option
@click.argument("cid", metavar="CID")
def get_command(repo: Path, cid: str) -> None:
    """Write the block's bytes to stdout, after checking they hash to CID."""
    store = open_block_store(repo)
    key = cid_argument(cid)
    data = _load(store, key)
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


@block_group.command("stat")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.argument("cid", metavar="CID")
def stat_command(repo: Path, as_json: bool, cid: str) -> None:
    """Print a block's CID, codec and size.

    Reads the file's size only; `qflow block get` verifies the content.
    """
    store = open_block_store(repo)
    key = cid_argument(cid)
    try:
        st = store.stat(key)
    except BlockNotFoundError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    except OSError as exc:
        fail(f"cannot read the block store: {exc}")
    fields: dict[str, Any] = {"cid": st.cid.encode(), "codec": st.codec_name, "size": st.size}
    if as_json:
        click.echo(json.dumps(fields))
    else:
        for name, value in fields.items():
            click.echo(f"{name:<6}{value}")


def _load(store: FileBlockStore, cid: CID) -> bytes:
    try:
        return store.get(cid)
    except (BlockNotFoundError, CorruptBlockError) as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    except OSError as exc:
        fail(f"cannot read the block store: {exc}")
