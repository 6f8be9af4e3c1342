"""Key shares sealed to a node's key: round trip, only the recipient opens them, and a
sealed share cannot be replayed for another subnet, policy or index."""

from __future__ import annotations

import nacl.bindings
import nacl.public
import pytest

from qflow_node.codec import DAG_CBOR, RAW, cid_for, decode_dag, encode_dag
from qflow_node.identity import SigningKey
from qflow_node.identity.sealed import (
    SEALED_SHARE_TYPE,
    SHARE_TYPE,
    SealedShare,
    SealedShareError,
    open_share,
    seal_share,
)

ALICE = SigningKey(bytes([1]) * 32)
BOB = SigningKey(bytes([2]) * 32)
POLICY = cid_for(b"policy 0", DAG_CBOR)
OTHER_POLICY = cid_for(b"policy 1", DAG_CBOR)
SHARE = bytes(range(32))


def sealed(subnet: str = "dao", policy: object = POLICY, index: int = 2) -> SealedShare:
    return seal_share(ALICE.peer_id, subnet, policy, index, SHARE)  # type: ignore[arg-type]  # hostile values on purpose


def test_round_trip_through_the_file_form() -> None:
    item = sealed()
    data = item.to_bytes()
    assert SHARE not in data  # the share is not in the clear
    back = SealedShare.from_bytes(data)
    assert back == item
    assert decode_dag(data) == {
        "v": 1,
        "type": SEALED_SHARE_TYPE,
        "peer": ALICE.peer_id,
        "subnet": "dao",
        "policy": POLICY,
        "index": 2,
        "box": item.box,
    }
    assert open_share(back, ALICE) == SHARE
    assert open_share(back, ALICE, subnet="dao", policy=POLICY, index=2) == SHARE


def test_each_seal_is_fresh_but_opens_the_same() -> None:
    one, two = sealed(), sealed()
    assert one.box != two.box  # an ephemeral key per box
    assert open_share(one, ALICE) == open_share(two, ALICE) == SHARE


def test_the_box_is_a_libsodium_sealed_box_to_the_x25519_form_of_the_node_key() -> None:
    # Another implementation opens it with the standard conversions alone.
    private = nacl.public.PrivateKey(
        nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(ALICE.seed + ALICE.public_key)
    )
    payload = decode_dag(nacl.public.SealedBox(private).decrypt(sealed().box))
    assert payload == {
        "v": 1,
        "type": SHARE_TYPE,
        "subnet": "dao",
        "policy": POLICY,
        "index": 2,
        "share": SHARE,
    }


def test_another_node_cannot_open_it() -> None:
    item = sealed()
    with pytest.raises(SealedShareError, match=f"sealed to peer {ALICE.peer_id}; this node is"):
        open_share(item, BOB)
    # Relabelled for Bob, the box still only opens with Alice's key.
    relabelled = SealedShare(BOB.peer_id, item.subnet, item.policy, item.index, item.box)
    with pytest.raises(SealedShareError, match="not sealed to this node's key, or it was altered"):
        open_share(relabelled, BOB)


def test_a_tampered_box_does_not_open() -> None:
    item = sealed()
    flipped = item.box[:-1] + bytes([item.box[-1] ^ 1])
    tampered = SealedShare(item.peer, item.subnet, item.policy, item.index, flipped)
    with pytest.raises(SealedShareError, match="or it was altered"):
        open_share(tampered, ALICE)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"subnet": "other"}, "subnet is 'dao', but the share file says 'other'"),
        ({"index": 3}, "index is 2, but the share file says 3"),
        ({"policy": OTHER_POLICY}, f"policy is {POLICY.encode()}, but the share file says"),
    ],
)
def test_a_box_relabelled_for_another_context_is_refused(
    header: dict[str, object], message: str
) -> None:
    item = sealed()
    fields = {"subnet": item.subnet, "policy": item.policy, "index": item.index, **header}
    replayed = SealedShare(item.peer, box=item.box, **fields)  # type: ignore[arg-type]  # hostile values on purpose
    with pytest.raises(SealedShareError, match=message):
        open_share(replayed, ALICE)


@pytest.mark.parametrize(
    ("expected", "message"),
    [
        ({"subnet": "other"}, "subnet is 'dao', but expected 'other'"),
        ({"index": 1}, "index is 2, but expected 1"),
        ({"policy": OTHER_POLICY}, f"but expected {OTHER_POLICY.encode()}"),
    ],
)
def test_the_context_the_caller_expects_is_checked(
    expected: dict[str, object], message: str
) -> None:
    with pytest.raises(SealedShareError, match=message):
        open_share(sealed(), ALICE, **expected)  # type: ignore[arg-type]  # hostile values on purpose


def test_seal_refuses_bad_input() -> None:
    with pytest.raises(SealedShareError, match="share: expected 32 bytes, got 31"):
        seal_share(ALICE.peer_id, "dao", POLICY, 1, SHARE[:31])
    with pytest.raises(SealedShareError, match="cannot seal to 'nobody'"):
        seal_share("nobody", "dao", POLICY, 1, SHARE)
    with pytest.raises(SealedShareError, match="cannot seal to"):
        seal_share(ALICE.did, "dao", POLICY, 1, SHARE)
    with pytest.raises(SealedShareError, match=r"share\.index: 0 is outside 1\.\.1024"):
        sealed(index=0)
    with pytest.raises(SealedShareError, match=r"share\.subnet: 'Bad' is not a subnet name"):
        sealed(subnet="Bad")
    with pytest.raises(SealedShareError, match=r"share\.policy: .* must be a dag-cbor link"):
        sealed(policy=cid_for(b"x", RAW))
    with pytest.raises(SealedShareError, match=r"share\.policy: expected a CID link"):
        sealed(policy="bafy")


def file_with(**changes: object) -> bytes:
    obj = decode_dag(sealed().to_bytes())
    obj.update(changes)
    return encode_dag({k: v for k, v in obj.items() if v is not None})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff", "share file: not a dag-cbor block"),
        (b"\x00" * 2000, "share file: expected at most 1024 bytes"),
        (encode_dag([1]), "share file: expected a map"),
        (file_with(extra=1), r"share file: unknown field\(s\)"),
        (file_with(box=None), r"share file: missing field\(s\) \['box'\]"),
        (file_with(v=2), r"share file\.v: version 2 is not supported"),
        (file_with(type="qflow/share"), r"share file\.type: expected 'qflow/sealed-share'"),
        (file_with(peer=7), r"share file\.peer: expected a peer id string"),
        (file_with(peer="12D3KooWnope"), r"share file: peer: "),
        (file_with(box="text"), r"share file\.box: expected bytes"),
        (file_with(box=b"short"), r"share file: box: expected 49\.\.512 bytes, got 5"),
        (file_with(index=True), r"share file\.index: True is outside"),
        (file_with(subnet=""), r"share file\.subnet: '' is not a subnet name"),
    ],
)
def test_share_files_are_parsed_strictly(data: bytes, message: str) -> None:
    with pytest.raises(SealedShareError, match=message):
        SealedShare.from_bytes(data)


def seal_payload(payload: object) -> SealedShare:
    """A box holding `payload`, sealed to Alice the way `seal_share` does."""
    recipient = nacl.public.PublicKey(
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ALICE.public_key)
    )
    box = nacl.public.SealedBox(recipient).encrypt(encode_dag(payload))
    return SealedShare(ALICE.peer_id, "dao", POLICY, 2, bytes(box))


GOOD_PAYLOAD = {
    "v": 1,
    "type": SHARE_TYPE,
    "subnet": "dao",
    "policy": POLICY,
    "index": 2,
    "share": SHARE,
}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {**GOOD_PAYLOAD, "share": SHARE[:16]},
            r"sealed payload\.share: expected 32 bytes, got 16",
        ),
        ({**GOOD_PAYLOAD, "share": "x" * 32}, r"sealed payload\.share: expected 32 bytes, got str"),
        (
            {**GOOD_PAYLOAD, "type": SEALED_SHARE_TYPE},
            r"sealed payload\.type: expected 'qflow/share'",
        ),
        ({**GOOD_PAYLOAD, "peer": ALICE.peer_id}, r"sealed payload: unknown field\(s\)"),
        ({**GOOD_PAYLOAD, "index": 2000}, r"sealed payload\.index: 2000 is outside"),
        ([GOOD_PAYLOAD], "sealed payload: expected a map"),
    ],
)
def test_the_sealed_payload_is_parsed_strictly(payload: object, message: str) -> None:
    with pytest.raises(SealedShareError, match=message):
        open_share(seal_payload(payload), ALICE)


def test_the_sealed_payload_is_what_counts() -> None:
    assert open_share(seal_payload(GOOD_PAYLOAD), ALICE) == SHARE
