"""Ed25519 keys, libp2p peer ids and did:key against published vectors and hostile input."""

from __future__ import annotations

import base64

import base58
import pytest
from multiformats import multibase, multicodec, multihash, varint

from qflow_node.identity import (
    IdentityError,
    InvalidSignatureError,
    SigningKey,
    did_from_public_key,
    peer_id_from_public_key,
    public_key_from_did,
    public_key_from_identity,
    public_key_from_peer_id,
    verify,
)

# RFC 8032 section 7.1, TEST 1: secret key, public key and the signature of "".
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

# The all-zero seed. Its public key is the JWK x "O2onvM62…" of the did:key test vector
# did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp, and rust-libp2p's examples
# (`ed25519_from_bytes([0; 32])`, the rendezvous point) print its peer id.
ZERO_SEED_PUBLIC_JWK_X = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik"
ZERO_SEED_DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
ZERO_SEED_PEER_ID = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
# rust-libp2p rendezvous example: "keypair_bytes = [1; 32] results in peer id 12D3KooWK99…".
ONES_SEED_PEER_ID = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
# did:key spec example DID document: publicKeyBase58 of did:key:z6MkpTHR8….
SPEC_DID = "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH"
SPEC_PUBLIC_B58 = "B12NYF8RrR3h41TDCTJojY59usg3mbtbjnFs7Eud1Y6u"
# seed = bytes(range(32)); values checked by the independent derivation below.
RANGE_SEED_PUBLIC = bytes.fromhex(
    "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
)
RANGE_SEED_PEER_ID = "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
RANGE_SEED_DID = "did:key:z6MkehRgf7yJbgaGfYsdoAsKdBPE3dj2CYhowQdcjqSJgvVd"


def independent_peer_id(public_key: bytes) -> str:
    """libp2p peer id spelled out from the specs, using multiformats (not our base58 path).

    PublicKey protobuf: field 1 (KeyType) varint Ed25519=1, field 2 (Data) 32 bytes;
    keys of at most 42 bytes are inlined with the identity multihash; base58btc, no prefix.
    """
    protobuf = b"\x08" + varint.encode(1) + b"\x12" + varint.encode(len(public_key)) + public_key
    digest = multihash.digest(protobuf, "identity")
    encoded: str = multibase.encode(digest, "base58btc")
    assert encoded.startswith("z")
    return encoded[1:]


def independent_did(public_key: bytes) -> str:
    """did:key = "did:key:" + multibase base58btc("z") of varint(0xed) ‖ public key."""
    tagged = multicodec.wrap("ed25519-pub", public_key)
    return "did:key:" + multibase.encode(tagged, "base58btc")


# -- vectors -----------------------------------------------------------------------------


def test_rfc8032_test1_public_key_and_signature() -> None:
    key = SigningKey(RFC8032_SEED)
    assert key.public_key == RFC8032_PUBLIC
    assert key.sign(b"") == RFC8032_SIG_EMPTY
    verify(RFC8032_PUBLIC, b"", RFC8032_SIG_EMPTY)


def test_zero_seed_matches_did_key_and_rust_libp2p_vectors() -> None:
    key = SigningKey(bytes(32))
    assert base64.urlsafe_b64encode(key.public_key).rstrip(b"=").decode() == (
        ZERO_SEED_PUBLIC_JWK_X
    )
    assert key.did == ZERO_SEED_DID
    assert key.peer_id == ZERO_SEED_PEER_ID


def test_ones_seed_matches_rust_libp2p_vector() -> None:
    assert SigningKey(bytes([1] * 32)).peer_id == ONES_SEED_PEER_ID


def test_did_key_spec_example_decodes_to_its_public_key() -> None:
    public_key = base58.b58decode(SPEC_PUBLIC_B58)
    assert public_key_from_did(SPEC_DID) == public_key
    assert did_from_public_key(public_key) == SPEC_DID


def test_range_seed_against_independent_derivation() -> None:
    key = SigningKey(bytes(range(32)))
    assert key.public_key == RANGE_SEED_PUBLIC
    assert independent_peer_id(key.public_key) == RANGE_SEED_PEER_ID
    assert independent_did(key.public_key) == RANGE_SEED_DID
    assert key.peer_id == RANGE_SEED_PEER_ID
    assert key.did == RANGE_SEED_DID


@pytest.mark.parametrize("seed", [bytes(32), bytes([1] * 32), bytes(range(32)), RFC8032_SEED])
def test_peer_id_and_did_match_independent_derivation(seed: bytes) -> None:
    key = SigningKey(seed)
    assert key.peer_id == independent_peer_id(key.public_key)
    assert key.did == independent_did(key.public_key)
    assert key.peer_id.startswith("12D3KooW")
    assert key.did.startswith("did:key:z6Mk")


# -- round trips -------------------------------------------------------------------------


def test_round_trips_for_a_generated_key() -> None:
    key = SigningKey.generate()
    assert len(key.seed) == 32
    assert SigningKey(key.seed).public_key == key.public_key
    assert public_key_from_peer_id(key.peer_id) == key.public_key
    assert public_key_from_did(key.did) == key.public_key
    assert public_key_from_identity(key.peer_id) == key.public_key
    assert public_key_from_identity(key.did) == key.public_key
    assert peer_id_from_public_key(key.public_key) == key.peer_id


def test_generated_keys_differ() -> None:
    assert SigningKey.generate().seed != SigningKey.generate().seed


def test_repr_never_shows_the_seed() -> None:
    key = SigningKey(bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(key)
    assert repr(bytes(range(32))) not in repr(key)


def test_sign_then_verify_through_did_and_peer_id() -> None:
    key = SigningKey(bytes(range(32)))
    signature = key.sign(b"record bytes")
    assert len(signature) == 64
    verify(public_key_from_identity(key.did), b"record bytes", signature)
    verify(public_key_from_identity(key.peer_id), b"record bytes", signature)


# -- signatures --------------------------------------------------------------------------


def test_wrong_message_is_invalid_signature() -> None:
    key = SigningKey(bytes(range(32)))
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify(key.public_key, b"other", key.sign(b"message"))


def test_flipped_signature_bit_is_invalid_signature() -> None:
    key = SigningKey(bytes(range(32)))
    signature = bytearray(key.sign(b"message"))
    signature[0] ^= 1
    with pytest.raises(InvalidSignatureError):
        verify(key.public_key, b"message", bytes(signature))


def test_other_key_is_invalid_signature() -> None:
    signature = SigningKey(bytes(32)).sign(b"message")
    with pytest.raises(InvalidSignatureError):
        verify(SigningKey(bytes([1] * 32)).public_key, b"message", signature)


def test_non_canonical_signature_s_is_rejected() -> None:
    # S + L (group order) verifies in lax implementations; libsodium refuses it.
    order = 2**252 + 27742317777372353535851937790883648493
    key = SigningKey(RFC8032_SEED)
    s = int.from_bytes(RFC8032_SIG_EMPTY[32:], "little") + order
    malleated = RFC8032_SIG_EMPTY[:32] + s.to_bytes(32, "little")
    with pytest.raises(InvalidSignatureError):
        verify(key.public_key, b"", malleated)


@pytest.mark.parametrize("length", [0, 63, 65, 128])
def test_signature_of_wrong_length_is_malformed_not_invalid(length: int) -> None:
    key = SigningKey(bytes(32))
    with pytest.raises(IdentityError, match=f"64 bytes, got {length}") as info:
        verify(key.public_key, b"m", b"\x01" * length)
    assert not isinstance(info.value, InvalidSignatureError)


def test_signature_of_wrong_type_is_malformed() -> None:
    key = SigningKey(bytes(32))
    with pytest.raises(IdentityError, match="got str"):
        verify(key.public_key, b"m", "x" * 64)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_public_key_of_wrong_length_is_malformed(length: int) -> None:
    signature = SigningKey(bytes(32)).sign(b"m")
    with pytest.raises(IdentityError, match=f"32 bytes, got {length}") as info:
        verify(b"\x01" * length, b"m", signature)
    assert not isinstance(info.value, InvalidSignatureError)


@pytest.mark.parametrize(
    "public_key",
    [
        bytes(32),  # small-order point (y = 0)
        b"\x01" + bytes(31),  # the identity point: signatures with S = 0 would "verify"
        b"\xff" * 32,  # y >= p: non-canonical encoding
    ],
)
def test_public_key_that_is_not_a_valid_point_is_malformed(public_key: bytes) -> None:
    with pytest.raises(IdentityError, match="not a valid Ed25519 public key"):
        verify(public_key, b"m", bytes(64))
    with pytest.raises(IdentityError, match="not a valid Ed25519 public key"):
        did_from_public_key(public_key)
    with pytest.raises(IdentityError, match="not a valid Ed25519 public key"):
        peer_id_from_public_key(public_key)


def test_message_must_be_bytes() -> None:
    key = SigningKey(bytes(32))
    with pytest.raises(TypeError, match="must be bytes"):
        verify(key.public_key, "m", key.sign(b"m"))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), bytes(64)])
def test_seed_of_wrong_length_is_refused(seed: bytes) -> None:
    with pytest.raises(IdentityError, match=f"32 bytes, got {len(seed)}"):
        SigningKey(seed)


def test_seed_of_wrong_type_is_refused() -> None:
    with pytest.raises(IdentityError, match="must be bytes, got str"):
        SigningKey("0" * 32)  # type: ignore[arg-type]


# -- malformed identifiers ---------------------------------------------------------------

_ZERO_PUBLIC = SigningKey(bytes(32)).public_key


@pytest.mark.parametrize(
    ("peer_id", "message"),
    [
        ("", "not an Ed25519 libp2p peer id"),
        ("12D3KooW0OIl", "not base58btc"),  # 0, O, I, l are not in the alphabet
        (ZERO_SEED_PEER_ID + " ", "not canonical"),  # b58decode would strip it
        (ZERO_SEED_PEER_ID + "\n", "not canonical"),
        (" " + ZERO_SEED_PEER_ID, "not base58btc"),
        (ZERO_SEED_PEER_ID[:-1], "not an Ed25519 libp2p peer id"),  # truncated
        (ZERO_SEED_PEER_ID + "1", "not an Ed25519 libp2p peer id"),  # one byte longer
        # An RSA-style sha2-256 peer id (Qm…): not an inlined Ed25519 key.
        ("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "not an Ed25519 libp2p peer id"),
        # Right shape, key type secp256k1 (2) instead of Ed25519 (1).
        (
            base58.b58encode(b"\x00\x24\x08\x02\x12\x20" + _ZERO_PUBLIC).decode(),
            "not an Ed25519 libp2p peer id",
        ),
        # Right shape, sha2-256 multihash code instead of identity.
        (
            base58.b58encode(b"\x12\x24\x08\x01\x12\x20" + _ZERO_PUBLIC).decode(),
            "not an Ed25519 libp2p peer id",
        ),
        # Right shape, but the key is not a curve point.
        (
            base58.b58encode(b"\x00\x24\x08\x01\x12\x20" + b"\xff" * 32).decode(),
            "not a valid Ed25519 public key",
        ),
    ],
)
def test_malformed_peer_ids_are_refused(peer_id: str, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        public_key_from_peer_id(peer_id)


@pytest.mark.parametrize(
    ("did", "message"),
    [
        ("", "not a did:key"),
        ("did:web:example.com", "not a did:key"),
        ("did:key:z", "not an Ed25519 did:key"),
        # base64url multibase ("u") instead of base58btc ("z").
        ("did:key:u7QE7aie8zrakLWKjqNAqbw1zZTIVdx3iQ6Y6wEihi1naKQ", "not a did:key"),
        ("DID:KEY:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "not a did:key"),
        (ZERO_SEED_DID + "0", "not base58btc"),
        (ZERO_SEED_DID + " ", "not canonical"),
        (ZERO_SEED_DID + "#key-1", "not base58btc"),  # a DID URL, not a DID
        (ZERO_SEED_DID + "#" + ZERO_SEED_DID[8:], "too long"),
        (ZERO_SEED_DID[:-1], "not an Ed25519 did:key"),
        # X25519 did:key (multicodec 0xec) from the did:key spec.
        ("did:key:z6LSbysY2xFMRpGMhb7tFTLMpeuPRaqaWM1yECx2AtzE3KCc", "expected multicodec 0xed01"),
        # secp256k1 did:key (multicodec 0xe7, 33-byte key).
        ("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "expected multicodec 0xed01"),
        (
            "did:key:z" + base58.b58encode(b"\xed\x01" + b"\xff" * 32).decode(),
            "not a valid Ed25519 public key",
        ),
    ],
)
def test_malformed_dids_are_refused(did: str, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        public_key_from_did(did)


def test_huge_identifiers_are_refused_before_base58_decoding() -> None:
    # base58 decoding is quadratic: a megabyte would take minutes if it were attempted.
    huge = "2" * 1_000_000
    with pytest.raises(IdentityError, match=r"too long \(1000000 characters\)") as info:
        public_key_from_peer_id(huge)
    assert len(str(info.value)) < 200
    with pytest.raises(IdentityError, match="too long"):
        public_key_from_did("did:key:z" + huge)


def test_public_key_from_identity_dispatches_on_prefix() -> None:
    with pytest.raises(IdentityError, match="not a did:key"):
        public_key_from_identity("did:web:example.com")
    with pytest.raises(IdentityError, match="peer id"):
        public_key_from_identity("not-an-identity")
    with pytest.raises(IdentityError, match="must be a string"):
        public_key_from_identity(b"12D3KooW")  # type: ignore[arg-type]
