"""Signed submissions v1 (docs/submission.md): build, verify, every refusal, and the
local v0 format still read by the engine."""

from __future__ import annotations

from typing import Any

import pytest

from qflow_node.codec import CID, DAG_CBOR, Block, cid_for, dag_block, decode_dag, encode_dag
from qflow_node.core.engine.records import (
    PayloadError,
    event_of,
    json_block,
    read_submission,
    submission_blocks,
)
from qflow_node.core.ledger import new_record
from qflow_node.core.submission import (
    FIELDS,
    FORMAT,
    REASONS,
    SIG_DOMAIN,
    Submission,
    SubmissionError,
    build_submission,
    signing_message,
    verify_submission,
)
from qflow_node.identity.keys import SigningKey

KEY = SigningKey(bytes([1]) * 32)
OTHER = SigningKey(bytes([2]) * 32)
NODE = SigningKey(bytes([3]) * 32)
FLOW = dag_block({"format": "qflow.flow/1"}).cid
INPUTS_BLOCK = json_block({"who": "Ada"})
INPUTS = INPUTS_BLOCK.cid
NONCE = bytes(range(16))
TS = 1_700_000_000_000


def build(key: SigningKey = KEY, **overrides: Any) -> Block:
    args: dict[str, Any] = {"flow": FLOW, "inputs": INPUTS, "nonce": NONCE, "ts": TS}
    return build_submission(key, **(args | overrides))


def obj_of(block: Block) -> dict[str, Any]:
    obj: dict[str, Any] = decode_dag(block.data)
    return obj


def reencoded(obj: dict[str, Any]) -> Block:
    return dag_block(obj)


def refused(cid: CID, data: bytes, reason: str, match: str | None = None) -> SubmissionError:
    with pytest.raises(SubmissionError, match=match) as caught:
        verify_submission(cid, data)
    assert caught.value.reason == reason, caught.value
    assert caught.value.reason in REASONS
    return caught.value


def test_build_and_verify_round_trip() -> None:
    caps = (b"token-1", b"token-2")
    block = build(priority="high", deadline=TS + 30_000, subnet="team-a", caps=caps)
    assert block.cid.cid_bytes[1] == DAG_CBOR
    submission = verify_submission(block.cid, block.data)
    assert submission == Submission(
        cid=block.cid,
        flow=FLOW,
        inputs=INPUTS,
        submitter=KEY.did,
        nonce=NONCE,
        ts=TS,
        priority="high",
        deadline=TS + 30_000,
        subnet="team-a",
        caps=caps,
        sig=obj_of(block)["sig"],
    )
    obj = obj_of(block)
    assert obj.keys() == FIELDS
    assert obj["format"] == FORMAT
    assert obj["caps"] == list(caps)


def test_defaults() -> None:
    submission = verify_submission(build().cid, build().data)
    assert (submission.priority, submission.deadline, submission.subnet, submission.caps) == (
        "normal",
        None,
        "default",
        (),
    )


def test_the_signature_covers_the_map_without_sig() -> None:
    obj = obj_of(build())
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    assert signing_message(obj) == signing_message(unsigned) == SIG_DOMAIN + encode_dag(unsigned)
    assert SIG_DOMAIN == b"qflow/submission/v1\x00"
    assert KEY.sign(signing_message(obj)) == obj["sig"]


def test_determinism_the_exec_id_is_a_function_of_the_fields() -> None:
    assert build() == build()  # Ed25519 is deterministic: same block, same execution
    assert build().cid != build(nonce=bytes(16)).cid
    assert build().cid != build(OTHER).cid
    assert build().cid != build(ts=TS + 1).cid


def test_a_v0_submission_is_wrong_format() -> None:
    v0, _ = submission_blocks(FLOW, {}, submitter=KEY.did, nonce=NONCE, ts=TS)
    refused(v0.cid, v0.data, "wrong_format", "qflow.submission/0")


def test_not_dag_cbor() -> None:
    block = build()
    raw_cid = cid_for(block.data, 0x55)
    refused(raw_cid, block.data, "not_dag_cbor", "must be a dag-cbor")
    # 0x18 0x01: the integer 1 in a non-shortest form
    bad = b"\x18\x01"
    refused(cid_for(bad, DAG_CBOR), bad, "not_dag_cbor", "non-canonical")
    huge = b"\x00" * ((1 << 20) + 1)
    refused(cid_for(huge, DAG_CBOR), huge, "not_dag_cbor", "exceeds")


def test_hash_mismatch() -> None:
    block = build()
    other = build(ts=TS + 1)
    refused(other.cid, block.data, "hash_mismatch", "do not hash to")


@pytest.mark.parametrize("value", [[1, 2], "qflow", 7, None])
def test_not_a_map_is_wrong_format(value: object) -> None:
    block = dag_block(value)
    refused(block.cid, block.data, "wrong_format")


def test_missing_format_is_wrong_format() -> None:
    obj = obj_of(build())
    del obj["format"]
    block = reencoded(obj)
    refused(block.cid, block.data, "wrong_format", "'format' is None")


BAD_FIELDS: dict[str, tuple[str, Any, str]] = {
    "flow raw": ("flow", INPUTS, "'flow'"),
    "flow string": ("flow", FLOW.encode(), "'flow'"),
    "inputs dag-cbor": ("inputs", FLOW, "'inputs'"),
    "submitter peer id": ("submitter", KEY.peer_id, "'submitter'"),
    "submitter null": ("submitter", None, "'submitter'"),
    "nonce short": ("nonce", bytes(15), "'nonce'"),
    "nonce string": ("nonce", "0" * 16, "'nonce'"),
    "ts negative": ("ts", -1, "'ts'"),
    "ts bool": ("ts", True, "'ts'"),
    "ts float": ("ts", 1.5, "'ts'"),
    "ts too big": ("ts", 2**63, "'ts'"),
    "priority unknown": ("priority", "urgent", "'priority'"),
    "priority list": ("priority", ["high"], "'priority'"),
    "deadline before ts": ("deadline", TS, "'deadline'"),
    "deadline string": ("deadline", "5m", "'deadline'"),
    "subnet slash": ("subnet", "a/b", "'subnet'"),
    "subnet newline": ("subnet", "a\n", "'subnet'"),
    "subnet empty": ("subnet", "", "'subnet'"),
    "caps map": ("caps", {}, "'caps'"),
    "caps too many": ("caps", [b"t"] * 17, "'caps'"),
    "cap empty": ("caps", [b""], r"caps\[0\]"),
    "cap string": ("caps", [b"ok", "no"], r"caps\[1\]"),
    "sig short": ("sig", bytes(63), "'sig'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_bad_fields_are_named(case: str) -> None:
    name, value, match = BAD_FIELDS[case]
    obj = obj_of(build())
    obj[name] = value
    block = reencoded(obj)
    refused(block.cid, block.data, "bad_field", match)


def test_missing_and_unknown_fields() -> None:
    obj = obj_of(build())
    del obj["caps"]
    obj["extra"] = 1
    block = reencoded(obj)
    error = refused(block.cid, block.data, "bad_field")
    assert error.message == "missing field(s) ['caps']; unknown field(s) ['extra']"


def test_a_signature_by_another_key() -> None:
    obj = obj_of(build())
    obj["sig"] = OTHER.sign(signing_message(obj))
    block = reencoded(obj)
    refused(block.cid, block.data, "bad_signature")


TAMPERED: dict[str, Any] = {
    "flow": dag_block({"format": "qflow.flow/1", "x": 1}).cid,
    "inputs": json_block({"who": "Eve"}).cid,
    "submitter": OTHER.did,
    "nonce": bytes(16),
    "ts": TS + 1,
    "priority": "high",
    "deadline": TS + 1,
    "subnet": "other",
    "caps": [b"forged"],
}


def test_every_signed_field_is_covered() -> None:
    assert set(TAMPERED) == FIELDS - {"format", "sig"}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_tampering_any_field_breaks_the_signature(name: str) -> None:
    obj = obj_of(build())
    obj[name] = TAMPERED[name]
    block = reencoded(obj)
    refused(block.cid, block.data, "bad_signature")


def test_build_refuses_what_a_verifier_would() -> None:
    cases: list[dict[str, Any]] = [
        {"nonce": bytes(8)},
        {"deadline": TS},
        {"subnet": "Bad Subnet"},
        {"priority": "urgent"},
        {"ts": -1},
        {"caps": [b""]},
        {"flow": INPUTS},
    ]
    for overrides in cases:
        with pytest.raises(ValueError, match=r"^cannot build a submission: bad_field: "):
            build(**overrides)


def test_the_error_carries_reason_and_message() -> None:
    error = SubmissionError("bad_field", "'ts' is wrong")
    assert (error.reason, error.message, str(error)) == (
        "bad_field",
        "'ts' is wrong",
        "bad_field: 'ts' is wrong",
    )


# The engine reads both formats: v0 (local runs) and v1 (verified on read).


def test_read_submission_reads_v0_and_v1() -> None:
    v0, _ = submission_blocks(FLOW, {"who": "Ada"}, submitter=None, nonce=b"n", ts=5)
    assert read_submission(v0.data)["format"] == "qflow.submission/0"
    v1 = build()
    obj = read_submission(v1.data)
    assert (obj["format"], obj["flow"], obj["inputs"]) == (FORMAT, FLOW, INPUTS)


def test_read_submission_refuses_a_forged_v1() -> None:
    obj = obj_of(build())
    obj["inputs"] = TAMPERED["inputs"]
    with pytest.raises(PayloadError, match=r"invalid qflow\.submission/1 block: bad_signature"):
        read_submission(reencoded(obj).data)
    with pytest.raises(PayloadError, match=r"not a qflow\.submission/0 or qflow\.submission/1"):
        read_submission(dag_block({"format": "qflow.submission/2"}).data)


def test_exec_started_with_a_signed_submission() -> None:
    submission = build()
    start_block, start = new_record(
        submission.cid, "exec.started", parents={}, payload=submission.cid, key=NODE, ts=TS
    )
    store = {submission.cid: submission.data, INPUTS: INPUTS_BLOCK.data}
    event = event_of(start_block.cid, start, store.__getitem__)
    assert (event.kind, event.value) == (
        "exec.started",
        {"flow": FLOW.encode(), "inputs": {"who": "Ada"}},
    )
