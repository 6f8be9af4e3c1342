"""`qflow block put|get|stat`: blocks in the local repo's block store;
`qflow block fetch|fetch-dag`: blocks through the running node (local, else bitswap).

Exit codes: 0 ok; 1 the block asked for is missing or corrupt (a corrupt block file of an
older repo is moved to `blocks/quarantine/`), or no node is running (fetch); 2 usage or
I/O error (no repo, invalid CID, unreadable input, invalid JSON, oversize block, the node
failed). Errors are one line on stderr.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from pathlib import Path
from typing import Any, Final

import click

from qflow_node.api.errors import (
    STORE_ERROR,
    UNAVAILABLE,
)
from qflow_node.cli.errors import (
    EXIT_CHECK_FAILED,
    cid_argument,
    fail,
    open_block_store,
)
from qflow_node.cli.node_api import call_node
from qflow_node.cli.options import repo_option
from qflow_node.codec import (
    CID,
    Block,
    CodecError,
    UnencodableError,
    dag_block,
    raw_block,
    verify_block,
)
from qflow_node.codec.dagjson import DagJsonError, parse_dag_json
from qflow_node.fsio import atomic_write
from qflow_node.store import (
    BlockNotFoundError,
    CorruptBlockError,
    FileBlockStore,
    InvalidBlockError,
)

# JSON spends up to 4/3 bytes per byte (base64) plus syntax and whitespace; anything
# longer than this cannot plausibly encode to a block within the limit.
_JSON_INPUT_FACTOR: Final = 8
# How long `block fetch` waits for the node: its own fetch deadline (--within, else the
# node's default of 30 s) plus room for the node to answer.
_FETCH_WAIT_DEFAULT: Final = 120.0
_FETCH_WAIT_GRACE: Final = 30.0
# API error codes that mean "the block is missing or bad" (exit 1), not "the call failed".
_MISSING_CODES: Final = frozenset({UNAVAILABLE, STORE_ERROR})


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


@click.group(
    "block",
    epilog="Exit codes: 0 ok, 1 block missing or corrupt or no node running, 2 usage or I/O error.",
)
def block_group() -> None:
    """Store and read IPFS blocks (CIDv1, sha2-256): the local store, or via the node."""


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

    Reads the stored size only; `qflow block get` verifies the content.
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


_within_option = click.option(
    "--within",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Give up on blocks peers have not delivered within SECONDS "
    "(default: the node's fetch timeout, 30 s).",
)


@block_group.command("fetch")
@repo_option
@_within_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write the bytes to FILE (atomically: all or nothing) instead of stdout.",
)
@click.argument("cid", metavar="CID")
def fetch_command(repo: Path, within: float | None, out: Path | None, cid: str) -> None:
    """Get a block through the running node: its store, else peers over bitswap.

    Writes the block's bytes, checked against CID, to stdout or FILE. Needs `qflow node
    run` on the same repo.
    """
    key = cid_argument(cid)
    wait = _FETCH_WAIT_DEFAULT if within is None else within + _FETCH_WAIT_GRACE
    result = call_node(
        repo, "block.get", _fetch_params(key, within), timeout=wait, refused=_MISSING_CODES
    )
    data = _block_bytes(key, result)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        atomic_write(out, data)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")


@block_group.command("fetch-dag")
@repo_option
@_within_option
@click.argument("cid", metavar="CID")
def fetch_dag_command(repo: Path, within: float | None, cid: str) -> None:
    """Make every block reachable from CID local, through the running node.

    Prints one JSON line: {"cid", "blocks", "fetched", "fetched_bytes", "local"}.
    --within bounds each level of the DAG; the command waits for the whole walk
    (Ctrl-C to stop waiting).
    """
    key = cid_argument(cid)
    result = call_node(
        repo, "dag.fetch", _fetch_params(key, within), timeout=None, refused=_MISSING_CODES
    )
    summary = {"cid": key.encode(), **result}
    click.echo(json.dumps(summary, separators=(",", ":")))


def _fetch_params(cid: CID, within: float | None) -> dict[str, Any]:
    params: dict[str, Any] = {"cid": cid.encode()}
    if within is not None:
        params["within"] = within
    return params


def _block_bytes(cid: CID, result: dict[str, Any]) -> bytes:
    """The bytes in a `block.get` result, checked against `cid`: trust the node, verify."""
    try:
        data = base64.b64decode(result["data_b64"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        fail("the node's block.get result has no valid data_b64")
    try:
        verify_block(cid, data)
    except CodecError as exc:
        fail(f"the node returned bad bytes for {cid.encode()}: {exc}", EXIT_CHECK_FAILED)
    return data


def _load(store: FileBlockStore, cid: CID) -> bytes:
    try:
        return store.get(cid)
    except (BlockNotFoundError, CorruptBlockError) as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    except OSError as exc:
        fail(f"cannot read the block store: {exc}")
