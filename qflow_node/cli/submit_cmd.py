"""`qflow submit FLOW`: sign a submission of FLOW and have the running node publish it.

The submitter is the repo actor named by `--as` (`qflow id new NAME`), else the node's
own key (as `qflow run` does): there is no default actor. Inputs, lowest precedence
first: `--input-file`, then `--inputs`, then each `--input NAME=VALUE`.

Exit codes: 0 published (or a duplicate of an execution the node knows); 1 no node is
running, the node refused the submission, or the flow does not compile (as `qflow run`);
2 usage or I/O error.
"""

from __future__ import annotations

import base64
import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Final, NoReturn

import click

from qflow_node.api.errors import (
    API_VERSION,
    BAD_REQUEST,
    MAX_REQUEST_LINE,
    REJECTED,
    UNAVAILABLE,
    ApiError,
)
from qflow_node.cli.errors import EXIT_CHECK_FAILED, fail, open_block_store
from qflow_node.cli.flowfile import load_flow_or_exit
from qflow_node.cli.node_api import call_node, signing_key
from qflow_node.cli.options import repo_option
from qflow_node.cli.run_cmd import _inputs as merge_inputs
from qflow_node.codec import Block
from qflow_node.core.engine.records import json_block
from qflow_node.core.flow.values import duration_ms
from qflow_node.core.submission import NONCE_LEN, PRIORITIES, Priority, build_submission
from qflow_node.store import BlockStore

# What the node answers with when it refuses the submission itself (exit 1), as
# opposed to a failed call (exit 2).
_REFUSED: Final = frozenset({BAD_REQUEST, REJECTED, UNAVAILABLE})
_MAX_INPUT_FILE: Final = 1 << 20
_SUBMIT_TIMEOUT: Final = 60.0


def _input_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_INPUT_FILE + 1)
    except OSError as exc:
        fail(f"--input-file {path}: {exc.strerror or exc}")
    if len(data) > _MAX_INPUT_FILE:
        fail(f"--input-file {path}: larger than {_MAX_INPUT_FILE} bytes")
    try:
        # Strict: NaN and Infinity cannot be stored in the inputs block.
        loaded = json.loads(data, parse_constant=_no_constant)
    except ValueError as exc:
        fail(f"--input-file {path} is not JSON: {exc}")
    if not isinstance(loaded, dict):
        fail(f"--input-file {path} must hold a JSON object")
    return loaded


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _deadline(text: str | None, ts: int) -> int | None:
    if text is None:
        return None
    try:
        ms = duration_ms(text)
    except ValueError as exc:
        fail(f"--deadline: {exc}")
    if ms <= 0:
        fail("--deadline must be longer than 0")
    return ts + ms


def _wire(block: Block) -> dict[str, str]:
    return {"cid": block.cid.encode(), "data_b64": base64.b64encode(block.data).decode("ascii")}


def _request_size(wire: list[dict[str, str]]) -> int:
    request = {"v": API_VERSION, "id": 1, "method": "submit", "params": {"blocks": wire}}
    return len(json.dumps(request, separators=(",", ":")))


def _payload(required: list[Block], optional: list[Block]) -> list[dict[str, str]]:
    """The blocks to send: every required one, then optional ones while the request fits
    the API's line limit. Left-out ones (wasm modules) are in the repo's block store,
    where the node finds and serves them."""
    wire = [_wire(b) for b in required]
    if _request_size(wire) > MAX_REQUEST_LINE:
        fail(f"the submission, flow and inputs exceed the node API's {MAX_REQUEST_LINE}-byte limit")
    for block in optional:
        candidate = [*wire, _wire(block)]
        if _request_size(candidate) <= MAX_REQUEST_LINE:
            wire = candidate
    return wire


def _call_submit(repo: Path, wire: list[dict[str, str]]) -> dict[str, Any]:
    def say(exc: ApiError) -> str:
        if exc.code in _REFUSED:
            return f"the node refused the submission ({exc.code}): {exc.message}"
        return f"submit failed ({exc.code}): {exc.message}"

    result: dict[str, Any] = call_node(
        repo, "submit", {"blocks": wire}, timeout=_SUBMIT_TIMEOUT, refused=_REFUSED, say=say
    )
    return result


@click.command(
    "submit",
    epilog="Exit codes: 0 published, 1 no node running or submission refused, 2 usage or I/O.",
)
@click.argument("file", metavar="FLOW", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--input", "-i", "pairs", multiple=True, help="NAME=VALUE (VALUE as JSON, else a string)."
)
@click.option(
    "--input-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A JSON object of inputs (overridden by --inputs and --input).",
)
@click.option("--inputs", "inputs_json", help="All inputs as one JSON object (over --input-file).")
@click.option("--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True)
@click.option("--deadline", help="Finish within this long from now (e.g. 30s, 5m).")
@click.option(
    "--subnet", default="default", show_default=True, help="The subnet that runs the flow."
)
@click.option(
    "--as",
    "actor",
    metavar="ACTOR",
    help="Sign as this repo actor (qflow id new ACTOR). Default: the node's key.",
)
@click.option(
    "--peer",
    metavar="MULTIADDR",
    help="Publish straight to this node (/ip4/…/tcp/…/p2p/…) instead of the local one.",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"exec", "duplicate"} as JSON.')
@repo_option
def submit_command(
    file: Path,
    *,
    pairs: tuple[str, ...],
    input_file: Path | None,
    inputs_json: str | None,
    priority: Priority,
    deadline: str | None,
    subnet: str,
    actor: str | None,
    peer: str | None,
    as_json: bool,
    repo: Path,
) -> None:
    """Submit the flow in FLOW to the subnet through the running node; print the exec id."""
    inputs = {**_input_file(input_file), **merge_inputs(pairs, inputs_json)}
    key = signing_key(repo, actor)
    ts = time.time_ns() // 1_000_000
    deadline_ms = _deadline(deadline, ts)
    # Compiled into the repo's store: the node reads sub-flows and modules from it.
    store = open_block_store(repo)
    loaded = load_flow_or_exit(file, store)
    inputs_block = json_block(inputs)
    try:
        submission = build_submission(
            key,
            flow=loaded.cid,
            inputs=inputs_block.cid,
            nonce=os.urandom(NONCE_LEN),
            ts=ts,
            priority=priority,
            deadline=deadline_ms,
            subnet=subnet,
        )
    except ValueError as exc:
        fail(str(exc))
    if peer is not None:
        _submit_to_peer(peer, subnet, [submission, loaded.compiled.block, inputs_block], store)
        result = {"exec": submission.cid.encode(), "duplicate": False}
        _print(result, as_json)
        return
    wire = _payload(
        [submission, loaded.compiled.block, inputs_block], list(loaded.modules.values())
    )
    result = _call_submit(repo, wire)
    if result.get("exec") != submission.cid.encode():
        fail(f"the node answered for another execution: {result.get('exec')!r}")
    _print(result, as_json)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(result["exec"])
        if result.get("duplicate") is True:
            click.echo("note: the node already had this execution (a duplicate)", err=True)


def _submit_to_peer(peer: str, subnet: str, blocks: list[Block], store: BlockStore) -> None:
    import trio  # only this path needs libp2p and trio: keep `qflow submit` light

    from qflow_node.cli.submit_peer import PeerSubmitError, Refused, submit_via_peer

    try:
        taken = trio.run(
            partial(submit_via_peer, peer, subnet, blocks, store, within=_SUBMIT_TIMEOUT)
        )
    except PeerSubmitError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    except BaseExceptionGroup as group:  # the error, wrapped by the nurseries it crossed
        matched, _ = group.split(PeerSubmitError)
        if matched is None:
            raise
        leaf: BaseException = matched
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        fail(str(leaf), EXIT_CHECK_FAILED)
    if isinstance(taken, Refused):
        fail(f"rejected by {taken.by}: {taken.reason}: {taken.message}", EXIT_CHECK_FAILED)
    if not taken:
        click.echo(
            f"warning: published, but no node started it within {_SUBMIT_TIMEOUT:g} s",
            err=True,
        )
