"""The control API's `submit` method: every block checked, precise refusals naming the
block, then the node's callback (docs/api.md)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from qflow_node.api.errors import ApiError
from qflow_node.api.methods import MAX_SUBMIT_BLOCKS, Submit, node_methods
from qflow_node.api.server import Handler
from qflow_node.codec import CID, Block, cid_for, dag_block, decode_dag, raw_block
from qflow_node.core.engine.records import json_block
from qflow_node.core.submission import build_submission, signing_message
from qflow_node.identity.keys import SigningKey
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

KEY = SigningKey(bytes([9]) * 32)
FLOW = dag_block({"format": "qflow.flow/1"})
INPUTS = json_block({"who": "Ada"})
SUBMISSION = build_submission(KEY, flow=FLOW.cid, inputs=INPUTS.cid, nonce=bytes(16), ts=1)


class Recorder:
    def __init__(self, new: bool = True) -> None:
        self.calls: list[tuple[CID, list[Block]]] = []
        self.new = new

    async def __call__(self, exec_cid: CID, blocks: list[Block]) -> bool:
        self.calls.append((exec_cid, blocks))
        return self.new


def methods(tmp_path: Path, submit: Submit | None) -> dict[str, Handler]:
    (tmp_path / "blocks").mkdir(exist_ok=True)
    service = BlockService(FileBlockStore(tmp_path / "blocks"))
    return node_methods(service, status=dict, submit=submit)


def wire(*blocks: Block) -> list[dict[str, str]]:
    return [{"cid": b.cid.encode(), "data_b64": base64.b64encode(b.data).decode()} for b in blocks]


async def test_a_valid_submission_reaches_the_callback(tmp_path: Path) -> None:
    recorder = Recorder()
    handler = methods(tmp_path, recorder)["submit"]
    result = await handler({"blocks": wire(SUBMISSION, FLOW, INPUTS)})
    assert result == {"exec": SUBMISSION.cid.encode(), "duplicate": False}
    assert recorder.calls == [(SUBMISSION.cid, [SUBMISSION, FLOW, INPUTS])]


async def test_a_duplicate(tmp_path: Path) -> None:
    handler = methods(tmp_path, Recorder(new=False))["submit"]
    result = await handler({"blocks": wire(SUBMISSION)})
    assert result == {"exec": SUBMISSION.cid.encode(), "duplicate": True}


async def test_a_node_without_submit_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as caught:
        await methods(tmp_path, None)["submit"]({"blocks": wire(SUBMISSION)})
    assert (caught.value.code, caught.value.message) == (
        "unavailable",
        "this node does not accept submissions",
    )


def forged() -> Block:
    obj: dict[str, Any] = decode_dag(SUBMISSION.data)
    obj["inputs"] = json_block({"who": "Eve"}).cid
    return dag_block(obj)


def resigned_by_other() -> Block:
    obj: dict[str, Any] = decode_dag(SUBMISSION.data)
    obj["sig"] = SigningKey(bytes([8]) * 32).sign(signing_message(obj))
    return dag_block(obj)


NON_CANONICAL = b"\x18\x01"  # the integer 1, not in its shortest form
MISMATCH = {"cid": INPUTS.cid.encode(), "data_b64": base64.b64encode(b"other").decode()}
ONE = wire(SUBMISSION)[0]

BAD: dict[str, tuple[dict[str, Any], str]] = {
    "no blocks": ({}, "params.blocks must be a list of 1 to 64 blocks"),
    "empty": ({"blocks": []}, "params.blocks must be a list of 1 to 64 blocks"),
    "not a list": ({"blocks": ONE}, "params.blocks must be a list"),
    "too many": ({"blocks": [ONE] * (MAX_SUBMIT_BLOCKS + 1)}, "1 to 64 blocks"),
    "unknown param": ({"blocks": [ONE], "x": 1}, "unknown params for submit: x"),
    "item not an object": ({"blocks": [ONE, "bafy"]}, "params.blocks[1] must be an object"),
    "extra key": ({"blocks": [{**ONE, "size": 3}]}, "params.blocks[0] must be an object"),
    "cid not a string": ({"blocks": [{**ONE, "cid": 5}]}, "params.blocks[0]: cid and data_b64"),
    "bad cid": (
        {"blocks": [ONE, {**ONE, "cid": "bafyNOPE"}]},
        "params.blocks[1].cid: cannot parse CID",
    ),
    "bad base64": (
        {"blocks": [{**ONE, "data_b64": "***"}]},
        "params.blocks[0].data_b64 is not standard base64",
    ),
    "hash mismatch": ({"blocks": [ONE, MISMATCH]}, "params.blocks[1]: block bytes do not hash"),
    "twice": ({"blocks": [ONE, *wire(INPUTS, INPUTS)]}, "params.blocks[2]: bafk"),
    "non-canonical dag-cbor": (
        {"blocks": [ONE, *wire(Block(cid_for(NON_CANONICAL, 0x71), NON_CANONICAL))]},
        "params.blocks[1]: invalid or non-canonical dag-cbor",
    ),
    "first not a submission": (
        {"blocks": wire(INPUTS)},
        "params.blocks[0] is not a valid submission: not_dag_cbor:",
    ),
    "first a dag-cbor non-submission": (
        {"blocks": wire(FLOW)},
        "params.blocks[0] is not a valid submission: wrong_format:",
    ),
    "submission hash mismatch": (
        {"blocks": [{**ONE, "data_b64": wire(FLOW)[0]["data_b64"]}]},
        "params.blocks[0] is not a valid submission: hash_mismatch:",
    ),
    "forged": (
        {"blocks": wire(forged())},
        "params.blocks[0] is not a valid submission: bad_signature:",
    ),
    "signed by another key": (
        {"blocks": wire(resigned_by_other())},
        "params.blocks[0] is not a valid submission: bad_signature:",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_requests_name_the_block(tmp_path: Path, case: str) -> None:
    params, message = BAD[case]
    recorder = Recorder()
    with pytest.raises(ApiError) as caught:
        await methods(tmp_path, recorder)["submit"](params)
    assert caught.value.code == "bad_request"
    assert message in caught.value.message, caught.value.message
    assert recorder.calls == []


async def test_at_most_8_mib_in_all(tmp_path: Path) -> None:
    big = [raw_block(bytes([i]) * (1 << 20)) for i in range(9)]
    recorder = Recorder()
    handler = methods(tmp_path, recorder)["submit"]
    assert await handler({"blocks": wire(SUBMISSION, *big[:7])})
    with pytest.raises(ApiError, match=r"params\.blocks\[8\]: the blocks exceed 8388608 bytes"):
        await handler({"blocks": wire(SUBMISSION, *big[:8])})
