"""Hostile and non-canonical input: every refusal is the right CodecError subclass."""

from __future__ import annotations

import time
from typing import Any

import pytest

from qflow_node.codec import (
    CID,
    DAG_CBOR,
    MAX_BLOCK_SIZE,
    MAX_DEPTH,
    RAW,
    CodecError,
    HashMismatchError,
    NonCanonicalError,
    OversizeError,
    UnencodableError,
    UnknownCodecError,
    cid_for,
    dag_block,
    decode_block,
    decode_dag,
    encode_dag,
    raw_block,
    verify_block,
)

DIGEST = bytes(range(32))


def link_bytes(cid_bytes: bytes) -> bytes:
    """A dag-cbor link: tag 42, byte string of 0x00 (identity multibase) + CID bytes."""
    body = b"\x00" + cid_bytes
    assert len(body) < 256
    header = bytes([0x40 + len(body)]) if len(body) < 24 else bytes([0x58, len(body)])
    return b"\xd8\x2a" + header + body


GOOD_LINK = link_bytes(b"\x01\x71\x12\x20" + DIGEST)

NON_CANONICAL: list[tuple[str, str, str]] = [
    # (case, hex, expected message fragment)
    ("empty input", "", "not enough bytes"),
    ("truncated array", "8201", "not enough bytes"),
    ("truncated string", "6261", "not enough bytes"),
    ("unsorted keys, same length", "a2616201616102", "map key ordering"),
    ("unsorted keys, longer first", "a262616101616202", "map key ordering"),
    # From codec-fixtures negative-fixtures/dag-cbor/decode/duplicate-keys.json.
    ("duplicate keys", "a3636261720363666f6f0163666f6f02", "map key ordering"),
    ("non-minimal uint8", "1801", "not minimally encoded"),
    ("non-minimal uint16", "190001", "not minimally encoded"),
    ("non-minimal uint32", "1a0000ffff", "not minimally encoded"),
    ("non-minimal uint64", "1b00000000ffffffff", "not minimally encoded"),
    ("non-minimal negative", "3800", "not minimally encoded"),
    ("non-minimal string length", "780161", "not minimally encoded"),
    ("non-minimal bytes length", "580161", "not minimally encoded"),
    ("non-minimal array length", "980101", "not minimally encoded"),
    ("non-minimal map length", "b800", "not minimally encoded"),
    ("float16", "f93c00", "float"),
    ("float32", "fa3f800000", "float"),
    ("NaN", "fb7ff8000000000000", "NaN"),
    ("+Infinity", "fb7ff0000000000000", "Infinit"),
    ("-Infinity", "fbfff0000000000000", "Infinit"),
    ("indefinite array", "9f01ff", "extra info"),
    ("indefinite map", "bf616101ff", "extra info"),
    ("indefinite bytes", "5f4101ff", "extra info"),
    ("indefinite string", "7f6161ff", "extra info"),
    ("lone break", "ff", "extra info"),
    ("tag 0 (date string)", "c060", "tag"),
    ("tag 1 (epoch)", "c101", "tag"),
    ("tag 2 (bignum)", "c24101", "tag"),
    ("tag 43", "d82b4100", "tag"),
    ("tag 55799 (self-describe)", "d9d9f700", "tag"),
    ("undefined", "f7", "extra info"),
    ("simple value 16", "f0", "extra info"),
    ("simple value 32", "f820", "extra info"),
    ("trailing bytes after a scalar", "0000", "end of buffer"),
    ("trailing bytes after a map", "a000", "end of buffer"),
    ("integer map key", "a10101", "expected 3"),
    ("bytes map key", "a1416101", "expected 3"),
    ("tag 42 on a string", "d82a6161", "expected 2"),
    ("tag 42 without the 0x00 prefix", GOOD_LINK.hex().replace("d82a582500", "d82a5824", 1), "CID"),
    ("tag 42 on empty bytes", "d82a40", "CID"),
]


@pytest.mark.parametrize(
    ("hex_data", "fragment"), [c[1:] for c in NON_CANONICAL], ids=[c[0] for c in NON_CANONICAL]
)
def test_non_canonical_or_invalid_input_is_refused(hex_data: str, fragment: str) -> None:
    with pytest.raises(NonCanonicalError, match=fragment):
        decode_dag(bytes.fromhex(hex_data))


@pytest.mark.parametrize(
    "hex_data",
    [
        "61ff",  # invalid start byte
        "62c080",  # overlong encoding of U+0000
        "63eda080",  # UTF-16 surrogate U+D800 encoded in UTF-8
        "64f4908080",  # above U+10FFFF
        "a161ff01",  # in a map key
        "8261616180",  # continuation byte alone
    ],
)
def test_invalid_utf8_is_refused(hex_data: str) -> None:
    with pytest.raises(NonCanonicalError, match="UTF-8"):
        decode_dag(bytes.fromhex(hex_data))


def test_the_canonical_form_of_each_refused_value_is_accepted() -> None:
    # Guards against the table passing for the wrong reason (e.g. a broken decoder).
    assert decode_dag(bytes.fromhex("a2616101616202")) == {"a": 1, "b": 2}
    assert decode_dag(bytes.fromhex("a261620162616102")) == {"b": 1, "aa": 2}
    assert decode_dag(bytes.fromhex("01")) == 1
    assert decode_dag(bytes.fromhex("fb3ff0000000000000")) == 1.0
    assert decode_dag(bytes.fromhex("8101")) == [1]
    assert decode_dag(GOOD_LINK) == CID(b"\x01\x71\x12\x20" + DIGEST)


# -- links -------------------------------------------------------------------------------

BAD_LINKS: list[tuple[str, bytes, str]] = [
    ("CIDv0", b"\x12\x20" + DIGEST, "CIDv0"),
    ("dag-pb codec", b"\x01\x70\x12\x20" + DIGEST, "unsupported codec 0x70"),
    ("dag-json codec", b"\x01\xa9\x02\x12\x20" + DIGEST, "unsupported codec 0x129"),
    ("sha2-512", b"\x01\x71\x13\x40" + DIGEST * 2, "unsupported multihash"),
    ("identity multihash", b"\x01\x55\x00\x05hello", "unsupported multihash"),
    ("digest shorter than 32", b"\x01\x71\x12\x20" + DIGEST[:31], "31-byte digest"),
    ("digest longer than 32", b"\x01\x71\x12\x20" + DIGEST + b"\x00", "33-byte digest"),
    ("header says 31 bytes", b"\x01\x71\x12\x1f" + DIGEST, "unsupported multihash"),
    ("CID version 2", b"\x02\x71\x12\x20" + DIGEST, "version 2"),
    ("truncated varint", b"\x01\xff", "truncated"),
]


@pytest.mark.parametrize(
    ("cid_bytes", "fragment"), [c[1:] for c in BAD_LINKS], ids=[c[0] for c in BAD_LINKS]
)
def test_bad_links_are_refused_when_decoding(cid_bytes: bytes, fragment: str) -> None:
    data = b"\xa1\x61\x6c" + link_bytes(cid_bytes)  # {"l": link}
    with pytest.raises(NonCanonicalError, match=f"invalid link: .*{fragment}"):
        decode_dag(data)


@pytest.mark.parametrize(
    ("cid_bytes", "fragment"), [c[1:] for c in BAD_LINKS], ids=[c[0] for c in BAD_LINKS]
)
def test_bad_links_are_refused_when_encoding(cid_bytes: bytes, fragment: str) -> None:
    # A node must never produce a block its peers would refuse.
    with pytest.raises(UnencodableError, match=f"invalid link: .*{fragment}"):
        encode_dag({"l": [CID(cid_bytes)]})


def test_a_huge_bad_link_gives_a_short_message() -> None:
    data = b"\xd8\x2a\x5a" + (100_001).to_bytes(4, "big") + b"\x00" + b"\x01" * 100_000
    with pytest.raises(NonCanonicalError) as info:
        decode_dag(data)
    assert len(str(info.value)) < 300
    assert "(100000 bytes)" in str(info.value)


# -- size and depth ----------------------------------------------------------------------


def nested_lists(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_the_limit_is_accepted() -> None:
    data = b"\x81" * MAX_DEPTH + b"\x00"
    assert decode_dag(data) == nested_lists(MAX_DEPTH)
    assert encode_dag(nested_lists(MAX_DEPTH)) == data


def test_nesting_beyond_the_limit_is_refused() -> None:
    assert MAX_DEPTH == 128
    with pytest.raises(NonCanonicalError, match="nesting deeper than 128"):
        decode_dag(b"\x81" * (MAX_DEPTH + 1) + b"\x00")
    with pytest.raises(NonCanonicalError, match="nesting deeper than 128"):
        decode_dag(b"\xa1\x61\x6b" * (MAX_DEPTH + 1) + b"\x00")  # {"k": {"k": …}}
    with pytest.raises(NonCanonicalError, match="nesting deeper than 128"):
        decode_dag(b"\x81" * MAX_DEPTH + b"\xa0")  # the innermost, empty map is level 129
    with pytest.raises(UnencodableError, match="nesting deeper than 128"):
        encode_dag(nested_lists(MAX_DEPTH + 1))


def test_nesting_counts_lists_and_maps_together() -> None:
    value: Any = 0
    for i in range(MAX_DEPTH):
        value = [value] if i % 2 else {"k": value}
    data = encode_dag(value)
    assert decode_dag(data) == value
    with pytest.raises(UnencodableError, match="nesting"):
        encode_dag([value])
    with pytest.raises(NonCanonicalError, match="nesting"):
        decode_dag(b"\x81" + data)


def test_hostile_million_level_nesting_is_refused_without_recursion() -> None:
    data = b"\x81" * (MAX_BLOCK_SIZE - 1) + b"\x00"
    start = time.perf_counter()
    with pytest.raises(NonCanonicalError, match="nesting"):
        decode_dag(data)
    # Not a timing test: a generous bound that only a pathological path would exceed.
    assert time.perf_counter() - start < 10


def test_oversized_dag_cbor_is_refused_before_decoding() -> None:
    data = encode_dag(b"\x00" * MAX_BLOCK_SIZE)
    assert len(data) > MAX_BLOCK_SIZE
    with pytest.raises(OversizeError, match=f"exceeds the {MAX_BLOCK_SIZE}-byte cap"):
        decode_dag(data)
    with pytest.raises(OversizeError):
        decode_dag(b"\xff" * (MAX_BLOCK_SIZE + 1))  # garbage, but the size check comes first


def test_max_size_is_configurable() -> None:
    data = encode_dag("x" * 100)
    assert decode_dag(data, max_size=len(data)) == "x" * 100
    with pytest.raises(OversizeError):
        decode_dag(data, max_size=len(data) - 1)


def test_a_block_of_exactly_the_cap_is_accepted() -> None:
    payload = b"\x00" * (MAX_BLOCK_SIZE - 5)  # 0x5a + 4-byte length
    data = encode_dag(payload)
    assert len(data) == MAX_BLOCK_SIZE
    assert decode_dag(data) == payload


# -- encoding refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        2**64,
        -(2**64) - 1,
        (1, 2),
        {1, 2},
        {1: "int key"},
        {b"k": "bytes key"},
        bytearray(b"x"),
        object(),
        "\ud800",  # lone surrogate: not encodable as UTF-8
        {"k": [float("nan")]},
    ],
    ids=repr,
)
def test_values_outside_the_ipld_data_model_are_unencodable(value: Any) -> None:
    with pytest.raises(UnencodableError, match="cannot encode as dag-cbor"):
        encode_dag(value)


def test_codec_errors_share_a_base_class() -> None:
    for cls in (NonCanonicalError, OversizeError, UnknownCodecError, HashMismatchError):
        assert issubclass(cls, CodecError)
    assert issubclass(UnencodableError, CodecError)


# -- blocks ------------------------------------------------------------------------------


def test_decode_block_checks_the_hash() -> None:
    block = dag_block({"a": 1})
    assert decode_block(block.cid, block.data) == {"a": 1}
    with pytest.raises(HashMismatchError, match=f"do not hash to {block.cid.encode()}"):
        decode_block(block.cid, encode_dag({"a": 2}))
    with pytest.raises(HashMismatchError):
        verify_block(block.cid, block.data + b"\x00")


def test_decode_block_of_a_raw_cid_returns_the_bytes() -> None:
    block = raw_block(b"\xa1\x61\x61\x01")  # valid dag-cbor bytes, but named as raw
    assert decode_block(block.cid, block.data) == b"\xa1\x61\x61\x01"
    with pytest.raises(HashMismatchError):
        decode_block(block.cid, b"other")


def test_same_bytes_under_the_two_codecs_are_different_blocks() -> None:
    data = encode_dag({})
    dag_cid, raw_cid = cid_for(data, DAG_CBOR), cid_for(data, RAW)
    assert dag_cid != raw_cid
    assert dag_cid.cid_bytes[4:] == raw_cid.cid_bytes[4:]
    with pytest.raises(HashMismatchError):
        verify_block(dag_cid, b"\xa1")


@pytest.mark.parametrize(
    "cid_bytes",
    [
        b"\x01\x70\x12\x20" + DIGEST,  # dag-pb
        b"\x01\xa9\x02\x12\x20" + DIGEST,  # dag-json (two-byte varint codec)
        b"\x01\x71\x13\x40" + DIGEST * 2,  # sha2-512
        b"\x12\x20" + DIGEST,  # CIDv0
    ],
)
def test_blocks_named_by_unsupported_cids_are_refused(cid_bytes: bytes) -> None:
    with pytest.raises(UnknownCodecError, match="unsupported"):
        decode_block(CID(cid_bytes), b"")
    with pytest.raises(UnknownCodecError):
        verify_block(CID(cid_bytes), b"")


def test_oversized_raw_block_is_refused() -> None:
    data = b"\x00" * (MAX_BLOCK_SIZE + 1)
    block = raw_block(data)
    with pytest.raises(OversizeError):
        decode_block(block.cid, data)


def test_a_block_whose_bytes_match_but_whose_content_is_invalid_is_refused() -> None:
    data = bytes.fromhex("a2616201616102")  # unsorted keys, correctly hashed
    with pytest.raises(NonCanonicalError):
        decode_block(cid_for(data, DAG_CBOR), data)
