"""The worked example of docs/protocol.md, byte for byte, cross-checked with the reference
IPLD libraries (`dag_cbor`, `multiformats`): another implementation can test against it."""

from __future__ import annotations

import base64
from typing import Any

import dag_cbor
import multiformats
from multiformats import multihash

from qflow_node.codec import dag_block, parse_cid, raw_block
from qflow_node.core.ledger import SIG_DOMAIN, new_record, signing_message, verify_execution
from qflow_node.identity.keys import SigningKey, verify

SEED = bytes([1]) * 32
PEER_ID = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
SUBMISSION_CID = "bafyreiekjumqupv2ju55sbenpbahvji3djiao3w5wilt2xcfklydvbcpi4"
PAYLOAD_CID = "bafkreiaucws53gruaagfvgqqfbhhb4kxrwmzfahuokbx5nkmbbthep7wua"
GENESIS_CID = "bafyreicobiikbvejsvkgcx3rdr33w5wmsjxphljsjk6yyqzymqlpcvfzt4"
GENESIS_HEX = (
    "ae6176016274731b0000018bcfe568006373696758403ff27760b229c32a45f273c1b3eacb38cc9b5fafd737"
    "3267c3c299b339b8cae50d7e4e805b189b9ef3b40b72089751d2bd531a94ce45d3c469258bbab0a3170564"
    "65786563d82a582500017112208a4d190a3eba4d3bd9048d78407aa51b1a50076eddb2173d5c4552f03a84"
    "4f47646b696e646c657865632e73746172746564646e6f64657834313244334b6f6f574b3939566f56784e"
    "4537587a79427758457a573778684b37477076383572394633563366794b53554b50483564707265768064"
    "73746570f6656163746f72f665636c6f636ba17834313244334b6f6f574b3939566f56784e4537587a7942"
    "7758457a573778684b37477076383572394633563366794b53554b50483501657374617465f66671756f72"
    "756df667617474656d707400677061796c6f6164d82a582500015512201415a5dd9a34000c5a9a10284e70"
    "f1578d999280f472837eb54c0866723ff6a0"
)
GENESIS_SIG = (
    "P/J3YLIpwypF8nPBs+rLOMybX6/XNzJnw8KZszm4yuUNfk6AWxibnvO0C3IIl1HSvVMalM5F08RpJYu6sKMXBQ"
)
NEXT_CID = "bafyreigawqmhjivn66gfaerqpydqkgynnark3orhyadjbfbo6mzcjery6u"


def build() -> tuple[SigningKey, list[tuple[str, bytes]]]:
    key = SigningKey(SEED)
    submission = dag_block({"flow": "test", "nonce": 1})
    payload = raw_block(b"step output")
    genesis, record = new_record(
        submission.cid, "exec.started", parents={}, payload=payload.cid, key=key, ts=1700000000000
    )
    nxt, _ = new_record(
        submission.cid,
        "step.completed",
        parents={genesis.cid: record.clock},
        payload=payload.cid,
        key=key,
        ts=1700000000500,
        step="fetch",
    )
    blocks = [submission, payload, genesis, nxt]
    return key, [(b.cid.encode(), b.data) for b in blocks]


def test_the_documented_example() -> None:
    key, blocks = build()
    assert key.peer_id == PEER_ID
    assert [cid for cid, _ in blocks] == [SUBMISSION_CID, PAYLOAD_CID, GENESIS_CID, NEXT_CID]
    genesis = blocks[2][1]
    assert genesis.hex() == GENESIS_HEX
    assert len(genesis) == 363


def reference_decode(data: bytes) -> dict[str, Any]:
    value = dag_cbor.decode(data)
    assert isinstance(value, dict)
    return value


def test_the_example_matches_the_reference_codec() -> None:
    genesis = bytes.fromhex(GENESIS_HEX)
    value = reference_decode(genesis)
    assert dag_cbor.encode(value) == genesis
    digest = multihash.digest(genesis, "sha2-256")
    assert str(multiformats.CID("base32", 1, "dag-cbor", digest)) == GENESIS_CID
    assert value["exec"].encode("base32") == SUBMISSION_CID
    assert value["payload"].encode("base32") == PAYLOAD_CID
    assert base64.b64encode(value["sig"]).decode().rstrip("=") == GENESIS_SIG


def test_the_example_signature_and_verification() -> None:
    key, blocks = build()
    genesis = bytes.fromhex(GENESIS_HEX)
    value = reference_decode(genesis)
    unsigned = dag_cbor.encode({k: v for k, v in value.items() if k != "sig"})
    verify(key.public_key, SIG_DOMAIN + unsigned, value["sig"])
    assert signing_message(genesis, 1700000000000) == SIG_DOMAIN + unsigned
    store = {cid: data for cid, data in blocks}
    report = verify_execution(
        [parse_cid(NEXT_CID)], lambda c: store.get(c.encode()), resolve_links=True
    )
    assert report.ok and [c.encode() for c in report.order] == [GENESIS_CID, NEXT_CID]
