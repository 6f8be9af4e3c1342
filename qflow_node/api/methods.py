"""The methods the node serves on its control API (docs/api.md).

Bytes travel as base64 (`data_b64`). CIDs are parsed with `qflow_node.codec.parse_cid`,
which accepts Qflow's codecs only (dag-cbor `bafyrei…`, raw `bafkrei…`): a dag-pb CID
(`bafybei…`, a Kubo UnixFS file) is a `bad_request` for now, though `BlockService` can
walk and read such DAGs once asked with a CID.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from qflow_node.api.errors import (
    BAD_REQUEST,
    STORE_ERROR,
    TOO_LARGE,
    UNAVAILABLE,
    ApiError,
)
from qflow_node.api.server import Handler
from qflow_node.codec import CID, CidError, CodecError, parse_cid
from qflow_node.store.errors import BlockUnavailableError, StoreError
from qflow_node.store.service import BlockService, DagTooLargeError

# `cat` answers in one response line: its base64 must fit in MAX_RESPONSE_LINE (128 MiB).
MAX_CAT_BYTES: Final = 64 << 20
MAX_WITHIN: Final = 3600.0  # seconds; longer waits are a typo, not a plan


def node_methods(
    blocks: BlockService, *, status: Callable[[], dict[str, Any]]
) -> dict[str, Handler]:
    """The node's API handlers by method name, over its block service and status."""

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

    return {"block.get": block_get, "dag.fetch": dag_fetch, "cat": cat, "node.status": node_status}


def _expect(params: dict[str, Any], method: str, *names: str) -> None:
    """Refuse unknown params: a misspelt optional param must not be silently ignored."""
    unknown = sorted(set(params) - set(names))
    if unknown:
        expected = ", ".join(names) if names else "none"
        raise ApiError(
            BAD_REQUEST, f"unknown params for {method}: {', '.join(unknown)} (expected: {expected})"
        )


def _cid(params: dict[str, Any]) -> CID:
    text = params.get("cid")
    if not isinstance(text, str):
        raise ApiError(BAD_REQUEST, "params.cid must be a CID string (e.g. bafy…)")
    try:
        return parse_cid(text)
    except CidError as exc:
        raise ApiError(BAD_REQUEST, f"params.cid: {exc}") from None


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
