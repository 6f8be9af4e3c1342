"""The wire forms of prepare, abort, query, vote and answer: round trips and hostile input."""

from __future__ import annotations

from typing import Any

import pytest

from qflow_node.codec import Block, dag_block, encode_dag, raw_block
from qflow_node.core.critical import (
    MAX_MESSAGE_SIZE,
    AbortRequest,
    Answer,
    Decision,
    FormatError,
    Message,
    Prepare,
    Query,
    Refusal,
    SignedDecision,
    Vote,
    decode_message,
    encode_message,
    message_from_obj,
    outcome_digest,
)
from qflow_node.core.critical.messages import MAX_BLOCKS, MAX_INLINE_BYTES
from qflow_node.core.critical.testing import POLICY, SLOT, SUBNET, outcome

X = outcome(b"paid 10")
Y = outcome(b"paid 11")
PARTIAL = bytes(range(96))  # the wire checks the length; the coordinator the point
SIGNED_X = SignedDecision(Decision.commit(X), PARTIAL)
SIGNED_ABORT = SignedDecision(Decision.abort(), PARTIAL)
RECORD = dag_block({"kind": "step.completed", "step": "pay"})
VALUE = raw_block(b"paid 10")


def vote(request: str = "prepare", signed: SignedDecision | None = SIGNED_X, **extra: Any) -> Vote:
    return Vote(SUBNET, POLICY, SLOT, 2, request, signed, **extra)  # type: ignore[arg-type]  # hostile values on purpose


SAMPLES: list[Message] = [
    Prepare(SUBNET, POLICY, SLOT, X, (RECORD, VALUE)),
    Prepare(SUBNET, POLICY, SLOT, X),
    AbortRequest(SUBNET, POLICY, SLOT),
    Query(SUBNET, POLICY, SLOT),
    vote(),
    vote("abort", SIGNED_ABORT),
    vote(signed=SignedDecision(Decision.commit(Y), PARTIAL), refusal=Refusal.LOCKED),
    vote("abort", refusal=Refusal.LOCKED),
    vote(signed=SIGNED_ABORT, refusal=Refusal.ABORTED),
    vote(signed=None, refusal=Refusal.MISMATCH, own=outcome_digest(Y), detail="another outcome"),
    vote(signed=None, refusal=Refusal.MISMATCH),
    vote("abort", None, refusal=Refusal.POLICY, detail="not the lease holder"),
    Answer(SUBNET, POLICY, SLOT, 5, None),
    Answer(SUBNET, POLICY, SLOT, 5, SIGNED_ABORT),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_messages_round_trip_canonically(message: Message) -> None:
    data = encode_message(message)
    again = decode_message(data)
    assert again == message
    assert encode_message(again) == data
    assert message_from_obj(message.to_obj()) == message


def test_every_message_names_its_type_and_keeps_all_keys() -> None:
    kinds = {type(m).__name__: m.to_obj()["type"] for m in SAMPLES}
    assert kinds == {
        "Prepare": "prepare",
        "AbortRequest": "abort",
        "Query": "query",
        "Vote": "vote",
        "Answer": "answer",
    }
    assert set(vote().to_obj()) == {
        "type",
        "subnet",
        "policy",
        "slot",
        "index",
        "request",
        "signed",
        "refusal",
        "detail",
        "own",
    }


def mutated(obj: dict[str, Any], path: tuple[str | int, ...], value: object) -> Any:
    copy: Any = list(obj) if isinstance(obj, list) else dict(obj)
    key = path[0]
    if len(path) > 1:
        copy[key] = mutated(copy[key], path[1:], value)
    elif value is DELETE:
        del copy[key]
    else:
        copy[key] = value
    return copy


DELETE = object()
OTHER_SLOT = {"exec": SLOT.exec, "step": "pay", "attempt": 1}


@pytest.mark.parametrize(
    ("message", "path", "value", "error"),
    [
        (vote(), ("type",), "ballot", "message.type: expected one of"),
        (vote(), ("subnet",), "Bad Subnet", "vote.subnet: 'Bad Subnet' does not match"),
        (vote(), ("policy",), raw_block(b"p").cid, "vote.policy: .* must be a dag-cbor link"),
        (vote(), ("slot", "attempt"), "0", "vote.slot.attempt: expected an int"),
        (vote(), ("slot", "step"), "$finish", "vote.slot.step: .* is not a step instance"),
        (vote(), ("index",), 0, "vote.index: 0 is outside 1..1024"),
        (vote(), ("index",), 1025, "vote.index: 1025 is outside"),
        (vote(), ("index",), True, "vote.index: expected an int, got True"),
        (vote(), ("request",), "commit", "vote.request: expected one of"),
        (vote(), ("refusal",), "bored", "vote.refusal: expected one of"),
        (vote(), ("signed", "partial"), PARTIAL[:95], "vote.signed.partial: expected 96 bytes"),
        (vote(), ("signed", "partial"), None, "vote.signed.partial: expected bytes"),
        (vote(), ("signed", "decision"), "abort", "vote.signed.outcome: must be null"),
        (vote(), ("signed", "extra"), 1, r"vote.signed: unknown field\(s\)"),
        (vote(), ("signed", "outcome", "slot"), 1, r"vote.signed.outcome: unknown field"),
        (
            vote(),
            ("signed", "outcome", "error"),
            "boom",
            "vote.signed.outcome.error: set exactly when status is 'failed'",
        ),
        (vote(), ("signed",), None, "vote.signed: a yes vote carries a signed commit"),
        (vote(), ("own",), outcome_digest(Y), "vote.own: only a 'mismatch' refusal"),
        (vote(), ("detail",), "why", "vote.detail: only a refusal carries it"),
        (vote(), ("refusal",), "locked", None),  # a locked refusal showing commit: fine
        (
            vote(),
            ("refusal",),
            "aborted",
            "vote.signed: a 'aborted' refusal carries a signed abort",
        ),
        (vote(), ("refusal",), "mismatch", "vote.signed: a 'mismatch' refusal carries no signed"),
        (vote(), ("slot",), OTHER_SLOT, "vote.signed.outcome: is for another slot"),
        (vote(), ("extra",), 1, r"vote: unknown field\(s\)"),
        (vote(), ("own",), DELETE, r"vote: missing field\(s\) \['own'\]"),
        (
            vote(signed=None, refusal=Refusal.POLICY, detail="no"),
            ("detail",),
            "line\x1b[31m",
            "vote.detail: .* does not match",
        ),
        (
            vote(signed=None, refusal=Refusal.POLICY, detail="no"),
            ("detail",),
            "x" * 257,
            "vote.detail: length 257",
        ),
        (
            vote("abort", SIGNED_ABORT),
            ("refusal",),
            "aborted",
            "vote.refusal: an abort request is not refused as 'aborted'",
        ),
        (
            vote(signed=None, refusal=Refusal.MISMATCH),
            ("request",),
            "abort",
            "vote.refusal: only a prepare is refused as 'mismatch'",
        ),
        (Answer(SUBNET, POLICY, SLOT, 1, None), ("index",), -3, "answer.index: -3 is outside"),
        (
            Answer(SUBNET, POLICY, SLOT, 1, SIGNED_X),
            ("slot",),
            OTHER_SLOT,
            "answer.signed.outcome: is for another slot",
        ),
        (Query(SUBNET, POLICY, SLOT), ("outcome",), None, r"query: unknown field\(s\)"),
        (AbortRequest(SUBNET, POLICY, SLOT), ("slot",), DELETE, r"abort: missing field\(s\)"),
        (
            Prepare(SUBNET, POLICY, SLOT, X),
            ("slot",),
            OTHER_SLOT,
            "prepare.outcome: is for another slot",
        ),
        (Prepare(SUBNET, POLICY, SLOT, X), ("blocks",), {}, "prepare.blocks: expected a list"),
        (
            Prepare(SUBNET, POLICY, SLOT, X),
            ("blocks",),
            [{"cid": VALUE.cid, "data": b"tampered"}],
            r"prepare.blocks\[0\]: block bytes do not hash",
        ),
        (
            Prepare(SUBNET, POLICY, SLOT, X),
            ("blocks",),
            [{"cid": VALUE.cid, "data": VALUE.data}] * 2,
            "prepare.blocks: a block appears twice",
        ),
        (
            Prepare(SUBNET, POLICY, SLOT, X),
            ("blocks",),
            [{"cid": VALUE.cid}],
            r"prepare.blocks\[0\]: missing field\(s\) \['data'\]",
        ),
    ],
)
def test_hostile_messages_are_refused_by_field(
    message: Message, path: tuple[str, ...], value: object, error: str | None
) -> None:
    obj = mutated(message.to_obj(), path, value)
    if error is None:
        message_from_obj(obj)
        return
    with pytest.raises(FormatError, match=error):
        message_from_obj(obj)


def test_prepare_blocks_are_bounded() -> None:
    many = [raw_block(i.to_bytes(2, "big")) for i in range(MAX_BLOCKS + 1)]
    obj = Prepare(SUBNET, POLICY, SLOT, X).to_obj()
    obj["blocks"] = [{"cid": b.cid, "data": b.data} for b in many]
    with pytest.raises(FormatError, match=f"prepare.blocks: {MAX_BLOCKS + 1} items exceeds"):
        message_from_obj(obj)
    big = [raw_block(bytes([i]) * (1 << 20)) for i in range(3)]
    assert sum(len(b.data) for b in big) > MAX_INLINE_BYTES
    with pytest.raises(FormatError, match=r"prepare.blocks: .* bytes exceeds"):
        Prepare(SUBNET, POLICY, SLOT, X, tuple(big))
    with pytest.raises(FormatError, match=r"more than 32 blocks"):
        Prepare(SUBNET, POLICY, SLOT, X, tuple(Block(b.cid, b.data) for b in many))


def test_hostile_bytes_are_refused() -> None:
    with pytest.raises(FormatError, match=r"message: expected a map, got a list"):
        decode_message(encode_dag([1, 2]))
    with pytest.raises(FormatError, match=r"message: invalid or non-canonical dag-cbor"):
        decode_message(bytes.fromhex("a2616201616102"))  # keys out of order
    with pytest.raises(FormatError, match=r"message: .* exceeds"):
        decode_message(b"\x00" * (MAX_MESSAGE_SIZE + 1))
    with pytest.raises(FormatError, match=r"message.type: expected one of"):
        decode_message(encode_dag({"kind": "vote"}))
