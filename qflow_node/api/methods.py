"""The methods the node serves on its control API (docs/api.md).

Bytes travel as base64 (`data_b64`). CIDs are parsed with `qflow_node.codec.parse_cid`,
which accepts Qflow's codecs only (dag-cbor `bafyrei…`, raw `bafkrei…`): a dag-pb CID
(`bafybei…`, a Kubo UnixFS file) is a `bad_request` for now, though `BlockService` can
walk and read such DAGs once asked with a CID.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from qflow_node.api.errors import (
    BAD_REQUEST,
    STORE_ERROR,
    TOO_LARGE,
    UNAVAILABLE,
    ApiError,
)
from qflow_node.api.params import cid_param as _cid
from qflow_node.api.params import expect as _expect
from qflow_node.api.server import Handler
from qflow_node.codec import CID, Block, CidError, CodecError, decode_block, parse_cid
from qflow_node.core.submission import SubmissionError, verify_submission
from qflow_node.store.errors import BlockUnavailableError, StoreError
from qflow_node.store.service import BlockService, DagTooLargeError

# `cat` answers in one response line: its base64 must fit in MAX_RESPONSE_LINE (128 MiB).
MAX_CAT_BYTES: Final = 64 << 20
MAX_WITHIN: Final = 3600.0  # seconds; longer waits are a typo, not a plan
MAX_SUBMIT_BLOCKS: Final = 64
MAX_SUBMIT_BYTES: Final = 8 << 20  # decoded bytes of all blocks of one `submit`

# Takes the execution id and the checked blocks (the submission first); True if the
# execution is new to this node, False for a duplicate.
Submit = Callable[[CID, list[Block]], Awaitable[bool]]


def node_methods(
    blocks: BlockService,
    *,
    status: Callable[[], dict[str, Any]],
    submit: Submit | None = None,
) -> dict[str, Handler]:
    """The node's API handlers by method name, over its block service and status; `submit`
    publishes a checked submission (None: this node does not accept submissions)."""

    async def block_get(params: dict[str, Any]) -> dict[str, Any]:
        _expect(params, "block.get", "cid", "within")
        cid, within = _cid(params), _within(params)
        with _store_errors():
            data = await blocks.get(cid, within=within)
        return {"cid": cid.encode(), "size": len(data), "data_b64": _b64(data)}

    async def dag_fetch(params: dict[str, Any]) -> dict[str, Any]:
        _expect(params, "dag.fetch", "cid", "within")
        cid, within = _cid(params), _within(params)
        with _store_errors():
            report = await blocks.fetch_dag([cid], within=within)
        return {
            "blocks": report.blocks,
            "fetched": report.fetched,
            "fetched_bytes": report.fetched_bytes,
            "local": report.local,
        }

    async def cat(params: dict[str, Any]) -> dict[str, Any]:
        _expect(params, "cat", "cid", "within")
        cid, within = _cid(params), _within(params)
        with _store_errors():
            data = await blocks.cat(cid, within=within)
        if len(data) > MAX_CAT_BYTES:
            raise ApiError(
                TOO_LARGE,
                f"{cid.encode()} is {len(data)} bytes; cat returns at most {MAX_CAT_BYTES}",
            )
        return {"size": len(data), "data_b64": _b64(data)}

    async def node_status(params: dict[str, Any]) -> dict[str, Any]:
        _expect(params, "node.status")
        return dict(status())

    async def submit_method(params: dict[str, Any]) -> dict[str, Any]:
        if submit is None:
            raise ApiError(UNAVAILABLE, "this node does not accept submissions")
        _expect(params, "submit", "blocks")
        checked = submit_blocks(params)
        exec_cid = checked[0].cid
        new = await submit(exec_cid, checked)
        return {"exec": exec_cid.encode(), "duplicate": not new}

    return {
        "block.get": block_get,
        "dag.fetch": dag_fetch,
        "cat": cat,
        "node.status": node_status,
        "submit": submit_method,
    }


def submit_blocks(params: dict[str, Any]) -> list[Block]:
    """The blocks of a `submit` request, each checked against its CID, the first a valid
    signed submission; ApiError(bad_request) naming the first bad block otherwise."""
    items = params.get("blocks")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_SUBMIT_BLOCKS:
        raise ApiError(
            BAD_REQUEST,
            f"params.blocks must be a list of 1 to {MAX_SUBMIT_BLOCKS} blocks "
            "(the submission first)",
        )
    checked: list[Block] = []
    seen: set[CID] = set()
    total = 0
    for i, item in enumerate(items):
        where = f"params.blocks[{i}]"
        if not isinstance(item, dict) or set(item) != {"cid", "data_b64"}:
            raise ApiError(BAD_REQUEST, f'{where} must be an object {{"cid", "data_b64"}}')
        text, b64 = item["cid"], item["data_b64"]
        if not isinstance(text, str) or not isinstance(b64, str):
            raise ApiError(BAD_REQUEST, f"{where}: cid and data_b64 must be strings")
        try:
            cid = parse_cid(text)
        except CidError as exc:
            raise ApiError(BAD_REQUEST, f"{where}.cid: {exc}") from None
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(BAD_REQUEST, f"{where}.data_b64 is not standard base64") from None
        total += len(data)
        if total > MAX_SUBMIT_BYTES:
            raise ApiError(
                BAD_REQUEST, f"{where}: the blocks exceed {MAX_SUBMIT_BYTES} bytes in all"
            )
        if cid in seen:
            raise ApiError(BAD_REQUEST, f"{where}: {text} is given twice")
        seen.add(cid)
        try:
            if i == 0:
                verify_submission(cid, data)  # the hash, strict dag-cbor, fields, signature
            else:
                decode_block(cid, data)  # the hash, the size cap, strict dag-cbor
        except SubmissionError as exc:
            raise ApiError(BAD_REQUEST, f"{where} is not a valid submission: {exc}") from None
        except CodecError as exc:
            raise ApiError(BAD_REQUEST, f"{where}: {exc}") from None
        checked.append(Block(cid, data))
    return checked


def _within(params: dict[str, Any]) -> float | None:
    value = params.get("within")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_WITHIN
    ):
        shown = repr(value)[:80]
        raise ApiError(
            BAD_REQUEST,
            f"params.within must be a number of seconds in (0, {MAX_WITHIN:g}], got {shown}",
        )
    return float(value)


@contextmanager
def _store_errors() -> Iterator[None]:
    """Block service failures as API errors with stable codes."""
    try:
        yield
    except BlockUnavailableError as exc:
        raise ApiError(UNAVAILABLE, str(exc)) from None
    except DagTooLargeError as exc:
        raise ApiError(TOO_LARGE, str(exc)) from None
    except (StoreError, CodecError) as exc:  # undecodable or mismatched blocks
        raise ApiError(STORE_ERROR, str(exc)) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
