"""Hostile bytes never raise: random input, truncations, bit flips, signed garbage bodies."""

from __future__ import annotations

from typing import Any

import cbrrr
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qflow_node.codec.envelope import KINDS
from qflow_node.core.envelopes import REASONS, Rejected, Verified, open_envelope

SUBNET = "dao-1"
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check(data: Any, original: bytes | None = None) -> None:
    result = open_envelope(data, subnet=SUBNET)
    if isinstance(result, Rejected):
        assert result.reason in REASONS, result
        assert isinstance(result.message, str) and result.message
    else:
        # Only an unchanged envelope can verify (a flip the decoder cannot see, if any).
        assert original is not None
        assert result == open_envelope(original, subnet=SUBNET)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.data())
def test_truncations(sealed: dict[str, bytes], data: st.DataObject) -> None:
    envelope = sealed[data.draw(st.sampled_from(sorted(KINDS)))]
    cut = data.draw(st.integers(min_value=0, max_value=len(envelope) - 1))
    result = open_envelope(envelope[:cut], subnet=SUBNET)
    assert isinstance(result, Rejected) and result.reason in REASONS


@FUZZ
@given(st.data())
def test_bit_flips(sealed: dict[str, bytes], data: st.DataObject) -> None:
    original = sealed[data.draw(st.sampled_from(sorted(KINDS)))]
    envelope = bytearray(original)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        bit = data.draw(st.integers(min_value=0, max_value=len(envelope) * 8 - 1))
        envelope[bit // 8] ^= 1 << (bit % 8)
    check(bytes(envelope), original)


@FUZZ
@given(st.data())
def test_every_single_bit_flip_of_a_signed_field_is_refused(
    sealed: dict[str, bytes], data: st.DataObject
) -> None:
    kind = data.draw(st.sampled_from(sorted(KINDS)))
    raw = msgspec.msgpack.decode(sealed[kind])
    field = data.draw(st.sampled_from(["body", "sig"]))
    value = bytearray(raw[field])
    bit = data.draw(st.integers(min_value=0, max_value=len(value) * 8 - 1))
    value[bit // 8] ^= 1 << (bit % 8)
    raw[field] = bytes(value)
    result = open_envelope(msgspec.msgpack.encode(raw), subnet=SUBNET)
    assert isinstance(result, Rejected) and result.reason == "bad_signature"


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "v": st.just(1) | JSONISH,
            "kind": st.sampled_from(sorted(KINDS)) | JSONISH,
            "from": JSONISH,
            "seq": st.integers(min_value=-1, max_value=2**64 - 1) | JSONISH,
            "body": st.binary(max_size=64) | JSONISH,
            "sig": st.binary(min_size=64, max_size=64) | JSONISH,
            "extra": JSONISH,
        },
    )
)
def test_random_envelope_shapes(fields: dict[str, Any]) -> None:
    check(msgspec.msgpack.encode(fields))


@FUZZ
@given(st.sampled_from(sorted(KINDS)), JSONISH)
def test_signed_random_bodies(forge: Any, kind: str, value: Any) -> None:
    # An authenticated but hostile peer: its signature is valid, its body is anything.
    try:
        body = bytes(cbrrr.encode_dag_cbor(value))
    except (TypeError, ValueError):
        body = msgspec.msgpack.encode(value)
    result = open_envelope(forge(body, kind=kind), subnet=SUBNET)
    assert isinstance(result, Rejected) and result.reason in {"malformed", "bad_field"}


@FUZZ
@given(st.sampled_from(sorted(KINDS)), st.binary(max_size=512))
def test_signed_random_body_bytes(forge: Any, kind: str, body: bytes) -> None:
    result = open_envelope(forge(body, kind=kind), subnet=SUBNET)
    assert isinstance(result, Rejected) and result.reason in {"malformed", "bad_field"}


def test_verified_is_reachable(sealed: dict[str, bytes]) -> None:
    # The fuzzers above would pass vacuously if nothing could verify.
    assert all(isinstance(open_envelope(e, subnet=SUBNET), Verified) for e in sealed.values())
