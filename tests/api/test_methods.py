"""The node's API methods over a real BlockService(FileBlockStore) with no exchange."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from qflow_node.api.errors import ApiError
from qflow_node.api.methods import node_methods
from qflow_node.api.server import Handler
from qflow_node.codec import dag_block, raw_block
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

# A Kubo UnixFS (dag-pb) CID: parse_cid does not accept dag-pb yet.
DAG_PB_CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


@pytest.fixture
def store(tmp_path: Path) -> FileBlockStore:
    (tmp_path / "blocks").mkdir()
    return FileBlockStore(tmp_path / "blocks")


@pytest.fixture
def methods(store: FileBlockStore) -> dict[str, Handler]:
    return node_methods(BlockService(store), status=lambda: {"peer_id": "12D3KooWSelf"})


async def fails(handler: Handler, params: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await handler(params)
    return caught.value


async def test_block_get_returns_a_local_block(
    store: FileBlockStore, methods: dict[str, Handler]
) -> None:
    block = raw_block(b"hello, node")
    store.put(block)
    result = await methods["block.get"]({"cid": block.cid.encode(), "within": 1})
    assert result == {
        "cid": block.cid.encode(),
        "size": len(block.data),
        "data_b64": base64.b64encode(block.data).decode(),
    }


async def test_a_missing_block_is_unavailable(methods: dict[str, Handler]) -> None:
    cid = raw_block(b"nobody has this").cid.encode()
    for method in ("block.get", "dag.fetch", "cat"):
        error = await fails(methods[method], {"cid": cid})
        assert error.code == "unavailable"
        assert f"{cid} (no_exchange)" in error.message


async def test_bad_params_are_bad_requests(methods: dict[str, Handler]) -> None:
    cid = raw_block(b"x").cid.encode()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cid": "not-a-cid"}, "params.cid: cannot parse CID 'not-a-cid'"),
        ({"cid": DAG_PB_CID}, "params.cid: unsupported codec 0x70"),
        ({}, "params.cid must be a CID string"),
        ({"cid": 5}, "params.cid must be a CID string"),
        ({"cid": cid, "within": 0}, "params.within must be a number of seconds"),
        ({"cid": cid, "within": True}, "params.within must be a number of seconds"),
        ({"cid": cid, "within": "1"}, "params.within must be a number of seconds"),
        ({"cid": cid, "withn": 1}, "unknown params for block.get: withn (expected: cid, within)"),
    ]
    for params, message in cases:
        error = await fails(methods["block.get"], params)
        assert error.code == "bad_request", params
        assert message in error.message, (params, error.message)


async def test_dag_fetch_of_a_local_dag(store: FileBlockStore, methods: dict[str, Handler]) -> None:
    leaf = raw_block(b"leaf")
    root = dag_block({"leaf": leaf.cid})
    store.put_many([leaf, root])
    result = await methods["dag.fetch"]({"cid": root.cid.encode()})
    # A stored root stands for its whole DAG (skip_present): nothing to walk or fetch.
    assert result == {"blocks": 1, "fetched": 0, "fetched_bytes": 0, "local": 1}


async def test_cat_of_a_raw_block(store: FileBlockStore, methods: dict[str, Handler]) -> None:
    block = raw_block(b"file contents\n")
    store.put(block)
    result = await methods["cat"]({"cid": block.cid.encode()})
    assert result == {"size": 14, "data_b64": base64.b64encode(b"file contents\n").decode()}


async def test_cat_of_a_dag_cbor_block_is_a_store_error(
    store: FileBlockStore, methods: dict[str, Handler]
) -> None:
    block = dag_block({"not": "a file"})
    store.put(block)
    error = await fails(methods["cat"], {"cid": block.cid.encode()})
    assert error.code == "store_error"
    assert "is not a file" in error.message


async def test_node_status(methods: dict[str, Handler]) -> None:
    assert await methods["node.status"]({}) == {"peer_id": "12D3KooWSelf"}
    error = await fails(methods["node.status"], {"verbose": True})
    assert (error.code, error.message) == (
        "bad_request",
        "unknown params for node.status: verbose (expected: none)",
    )
