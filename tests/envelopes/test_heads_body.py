"""The batched `heads` body: many executions per envelope, in canonical order."""

from __future__ import annotations

from typing import Any

import pytest

from qflow_node.codec import CID, dag_block, encode_dag
from qflow_node.codec.envelope import (
    KIND_MAX_SIZE,
    body_obj,
    decode_body,
    encode_body,
    encode_envelope,
    signing_message,
)
from qflow_node.codec.envelope_bodies import MAX_HEADS, MAX_HEADS_ENTRIES, Heads, HeadsEntry
from qflow_node.core.envelopes import Rejected, Verified, open_envelope, seal_envelope
from qflow_node.identity.keys import SigningKey

KEY = SigningKey(b"\x01" * 32)
SUBNET = "dao-1"


def cids(count: int, tag: str = "x") -> list[CID]:
    """`count` distinct dag-cbor CIDs, sorted by raw bytes."""
    made = [dag_block({tag: i}).cid for i in range(count)]
    return sorted(made, key=lambda cid: cid.cid_bytes)


EXECS = cids(3, "exec")
HEADS = cids(3, "head")


def opened(body_bytes: bytes) -> Verified[Any] | Rejected:
    """`body_bytes` as a well-signed heads envelope, opened as a receiver would."""
    sig = KEY.sign(signing_message(SUBNET, "heads", 1, body_bytes))
    data = encode_envelope("heads", KEY.peer_id, 1, body_bytes, sig)
    return open_envelope(data, subnet=SUBNET, channel="exec")


def raw_body(*entries: tuple[CID, list[CID]]) -> bytes:
    return encode_dag({"entries": [{"exec": exec, "heads": heads} for exec, heads in entries]})


def test_a_multi_entry_body_round_trips() -> None:
    body = Heads(
        (
            HeadsEntry(EXECS[0], (HEADS[0],)),
            HeadsEntry(EXECS[1], (HEADS[0], HEADS[1], HEADS[2])),
            HeadsEntry(EXECS[2], (HEADS[2],)),
        )
    )
    assert decode_body("heads", encode_body(body)) == body
    sealed = seal_envelope(KEY, subnet=SUBNET, seq=7, body=body)
    assert open_envelope(sealed, subnet=SUBNET, channel="exec") == Verified(
        "heads", KEY.peer_id, 7, body
    )
    assert body_obj(body) == {
        "entries": [
            {"exec": EXECS[0], "heads": [HEADS[0]]},
            {"exec": EXECS[1], "heads": HEADS},
            {"exec": EXECS[2], "heads": [HEADS[2]]},
        ]
    }


def test_unsorted_entries_are_refused_with_the_position() -> None:
    data = raw_body((EXECS[0], [HEADS[0]]), (EXECS[2], [HEADS[0]]), (EXECS[1], [HEADS[0]]))
    assert opened(data) == Rejected(
        "bad_field",
        "heads body: entries must be sorted by raw exec CID bytes: "
        "entries[2] sorts before entries[1]",
    )
    with pytest.raises(ValueError, match=r"entries\[1\] sorts before entries\[0\]"):
        Heads((HeadsEntry(EXECS[1], (HEADS[0],)), HeadsEntry(EXECS[0], (HEADS[0],))))


def test_an_execution_twice_is_refused_even_with_other_heads() -> None:
    data = raw_body((EXECS[0], [HEADS[0]]), (EXECS[1], [HEADS[0]]), (EXECS[1], [HEADS[1]]))
    assert opened(data) == Rejected(
        "bad_field", "heads body: entries[2] repeats the exec of entries[1]"
    )
    with pytest.raises(ValueError, match="repeats the exec"):
        Heads((HeadsEntry(EXECS[0], (HEADS[0],)), HeadsEntry(EXECS[0], (HEADS[1],))))


def test_a_bad_entry_is_named_by_its_index() -> None:
    data = raw_body((EXECS[0], [HEADS[0]]), (EXECS[1], [HEADS[1], HEADS[0]]))
    assert opened(data) == Rejected(
        "bad_field",
        "heads body: heads must be sorted by raw CID bytes with no duplicates - at `$.entries[1]`",
    )


def test_entry_count_bounds() -> None:
    execs = cids(MAX_HEADS_ENTRIES + 1, "e")
    most = raw_body(*((exec, [HEADS[0]]) for exec in execs[:MAX_HEADS_ENTRIES]))
    assert isinstance(opened(most), Verified)
    too_many = raw_body(*((exec, [HEADS[0]]) for exec in execs))
    result = opened(too_many)
    assert isinstance(result, Rejected) and result.reason == "bad_field"
    assert "length <= 256" in result.message
    assert opened(raw_body()) == Rejected(
        "bad_field", "heads body: Expected `array` of length >= 1 - at `$.entries`"
    )


def test_the_largest_entry_fits_the_cap_several_times() -> None:
    entry = HeadsEntry(EXECS[0], tuple(cids(MAX_HEADS, "h")))
    sealed = seal_envelope(KEY, subnet=SUBNET, seq=1, body=Heads((entry,)))
    assert 4 * len(sealed) < KIND_MAX_SIZE["heads"] == 256 << 10
