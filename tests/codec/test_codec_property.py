"""Property tests: our dag-cbor is byte-identical to the reference codec (`dag_cbor`,
from the IPLD/multiformats Python stack), round-trips exactly, and the decoder only ever
accepts the one canonical encoding of a value."""

from __future__ import annotations

import math
import struct
from typing import Any

import dag_cbor
import multiformats
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qflow_node.codec import (
    CID,
    DAG_CBOR,
    RAW,
    CodecError,
    cid_for,
    decode_dag,
    encode_dag,
    parse_cid,
)

cids = st.builds(cid_for, st.binary(max_size=64), st.sampled_from([DAG_CBOR, RAW]))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)  # includes -0.0 and subnormals
    | st.text()
    | st.binary()
    | cids
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)


def to_reference(value: Any) -> Any:
    """The same IPLD value in the reference library's types (its own CID class)."""
    if isinstance(value, CID):
        return multiformats.CID.decode(value.cid_bytes)
    if isinstance(value, dict):
        return {k: to_reference(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_reference(v) for v in value]
    return value


def exact(value: Any) -> Any:
    """A form where == also compares types and float bits (True != 1, 0.0 != -0.0)."""
    if isinstance(value, bool | None):
        return ("bool/null", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, bytes):
        return ("bytes", value)
    if isinstance(value, CID):
        return ("cid", value.cid_bytes)
    if isinstance(value, list):
        return ("list", [exact(v) for v in value])
    if isinstance(value, dict):
        # Map order is the codec's business; content is compared as a set of pairs.
        return ("map", sorted((k, exact(v)) for k, v in value.items()))
    raise AssertionError(f"unexpected type {type(value)}")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(values)
@example({"b": 1, "aa": 2, "a": [True, 1, 1.0, -0.0, None]})
@example([2**64 - 1, -(2**64), 5e-324, -1.7976931348623157e308])
@example({"": b"", "\x00": "\U0010ffff"})
def test_encoding_matches_the_reference_and_round_trips(value: Any) -> None:
    data = encode_dag(value)
    assert data == dag_cbor.encode(to_reference(value))
    decoded = decode_dag(data)
    assert exact(decoded) == exact(value)
    assert encode_dag(decoded) == data


@settings(max_examples=200)
@given(values)
def test_reference_decodes_our_bytes_to_the_same_value(value: Any) -> None:
    reference = dag_cbor.decode(encode_dag(value))
    assert reference == to_reference(value)


@settings(max_examples=200)
@given(cids)
def test_cid_strings_round_trip_and_match_multiformats(cid: CID) -> None:
    text = cid.encode()
    assert multiformats.CID.decode(cid.cid_bytes).encode("base32") == text
    assert bytes(multiformats.CID.decode(text)) == cid.cid_bytes
    assert parse_cid(text) == cid


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_only_if_canonical(data: bytes) -> None:
    try:
        value = decode_dag(data)
    except CodecError:
        return
    assert encode_dag(value) == data


@settings(max_examples=300)
@given(values, st.data())
def test_mutated_encodings_decode_only_if_canonical(value: Any, draw: st.DataObject) -> None:
    data = bytearray(encode_dag(value))
    position = draw.draw(st.integers(0, len(data) - 1))
    data[position] = draw.draw(st.integers(0, 255))
    try:
        decoded = decode_dag(bytes(data))
    except CodecError:
        return
    # Accepted: then these bytes must be exactly the canonical encoding of what we got.
    assert encode_dag(decoded) == bytes(data)
    assert all(not isinstance(v, float) or math.isfinite(v) for v in _leaves(decoded))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]
