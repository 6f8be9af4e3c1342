"""dag-pb / UnixFS reading, checked against CIDs Kubo prints for the same bytes."""

from __future__ import annotations

import hashlib

import base58
import pytest

from qflow_node.codec import CID
from qflow_node.codec.dagpb import (
    DAG_PB,
    UNIXFS_FILE,
    DagPbError,
    cid_with_codec,
    decode_node,
    decode_unixfs,
    is_v0,
    link_cid,
)

# `echo hello | ipfs add` (Kubo, CIDv0): a one-block UnixFS file.
HELLO = bytes.fromhex("0a0c0802120668656c6c6f0a1806")
HELLO_CID = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
# The empty UnixFS directory every Kubo knows.
EMPTY_DIR = bytes.fromhex("0a020801")
EMPTY_DIR_CID = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def v0(text: str) -> bytes:
    return base58.b58decode(text)


def test_kubo_cids_are_the_sha256_of_these_nodes() -> None:
    for data, text in ((HELLO, HELLO_CID), (EMPTY_DIR, EMPTY_DIR_CID)):
        assert v0(text) == bytes([0x12, 0x20]) + hashlib.sha256(data).digest()


def test_a_one_block_file_decodes_to_its_bytes() -> None:
    node = decode_node(HELLO)
    assert node.links == ()
    unixfs = decode_unixfs(node.data or b"")
    assert (unixfs.type, unixfs.data, unixfs.filesize) == (UNIXFS_FILE, b"hello\n", 6)


def test_cidv0_and_cidv1_dag_pb_name_the_same_block() -> None:
    raw = v0(HELLO_CID)
    assert is_v0(raw)
    cid = link_cid(raw)
    assert cid.cid_bytes == bytes([0x01, DAG_PB]) + raw
    assert link_cid(cid.cid_bytes) == cid
    assert cid_with_codec(DAG_PB, raw[2:]) == cid


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (bytes([0x01, 0x55, 0x13, 0x40]) + bytes(64), "sha2-256"),  # sha2-512
        (bytes([0x01, 0x55, 0x12, 0x20]) + bytes(31), "digest length"),
        (bytes([0x02, 0x55, 0x12, 0x20]) + bytes(32), "sha2-256"),  # CIDv2
        (b"\x01\x80", "truncated"),
    ],
)
def test_cids_we_cannot_verify_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(DagPbError, match=reason):
        link_cid(raw)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a\x05ab", "runs past the end"),
        (b"\x0d\x00\x00\x00\x00", "wire type 5"),
        (b"\x1a\x00", "unexpected field 3"),
        (b"\x12\x02\x12\x00", "no Hash"),
        (b"\x12\x04\x0a\x00\x12\x80", "truncated"),
    ],
)
def test_malformed_nodes_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DagPbError, match=reason):
        decode_node(data)


def test_links_keep_their_order_names_and_sizes() -> None:
    child = CID(bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(b"x").digest())
    link = b"\x0a" + bytes([len(child.cid_bytes)]) + child.cid_bytes + b"\x12\x01a\x18\x01"
    node = decode_node(b"\x12" + bytes([len(link)]) + link + b"\x0a\x02\x08\x02")
    [only] = node.links
    assert (link_cid(only.hash), only.name, only.tsize) == (child, "a", 1)
    assert decode_unixfs(node.data or b"").type == UNIXFS_FILE
