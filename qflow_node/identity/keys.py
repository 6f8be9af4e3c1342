"""Ed25519 keys, libp2p peer ids and did:key identifiers. Pure: no files, no clock.

A node's key is also its libp2p identity: the peer id is the identity multihash of the
protobuf-encoded public key, base58btc (`12D3KooW…`). Actors are `did:key:z6Mk…`
(multicodec ed25519-pub 0xed01, base58btc multibase). Both forms carry the public key,
so a record's `node` or `actor` field is enough to verify its signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

import base58
import nacl.bindings
import nacl.exceptions
import nacl.signing

PUBLIC_KEY_LEN: Final = 32
SIGNATURE_LEN: Final = 64
SEED_LEN: Final = 32

# libp2p crypto.pb PublicKey{Type: Ed25519 (1), Data: 32 bytes}, wrapped in an
# identity multihash (code 0x00, length 36).
_PEER_ID_PREFIX: Final = b"\x00\x24\x08\x01\x12\x20"
_DID_KEY_PREFIX: Final = "did:key:z"
_ED25519_PUB_MULTICODEC: Final = b"\xed\x01"
_MAX_B58_LEN: Final = 64


class IdentityError(ValueError):
    """A malformed key, peer id, did or signature."""


class InvalidSignatureError(IdentityError):
    """A well-formed signature that does not verify."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key. `repr` never shows the seed."""

    seed: bytes = field(repr=False)
    _key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes):
            raise IdentityError(f"Ed25519 seed must be bytes, got {type(self.seed).__name__}")
        if len(self.seed) != SEED_LEN:
            raise IdentityError(f"Ed25519 seed must be {SEED_LEN} bytes, got {len(self.seed)}")
        object.__setattr__(self, "_key", nacl.signing.SigningKey(self.seed))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    @property
    def did(self) -> str:
        return did_from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature


def _verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LEN:
        raise IdentityError(
            f"Ed25519 public key must be {PUBLIC_KEY_LEN} bytes, got {_describe_len(public_key)}"
        )
    return _checked_verify_key(public_key)


@lru_cache(maxsize=4096)
def _checked_verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    # Refuse what no honest key can be (non-canonical encodings, small-order points):
    # such a key could otherwise be named in a did or peer id and match forged signatures.
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(public_key):
        raise IdentityError("not a valid Ed25519 public key (not a canonical, full-order point)")
    return nacl.signing.VerifyKey(public_key)


def _describe_len(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return str(len(value))
    return type(value).__name__


def _b58decode_canonical(text: str, what: str) -> bytes:
    """base58btc bytes of `text`, refusing any spelling other than the canonical one.

    `base58.b58decode` strips trailing whitespace, so without the round trip two strings
    would name one key and string comparisons of identities (allowlists) could be fooled.
    """
    if not isinstance(text, str):
        raise IdentityError(f"{what} must be a string, got {type(text).__name__}")
    # base58 decoding is quadratic in the length: a megabyte-long "peer id" in a hostile
    # record would stall the verifier for minutes. Ed25519 forms are 48-52 characters.
    if len(text) > _MAX_B58_LEN:
        raise IdentityError(f"{what} {_show(text)} is too long ({len(text)} characters)")
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raise IdentityError(f"{what} {_show(text)} is not base58btc") from None
    if base58.b58encode(raw).decode("ascii") != text:
        raise IdentityError(f"{what} {_show(text)} is not canonical base58btc")
    return bytes(raw)


def _show(text: object) -> str:
    """A readable repr of untrusted input, cut short."""
    shown = repr(text)
    return shown if len(shown) <= 80 else f"{shown[:60]}... ({len(shown)} chars)"


class VerifiedMemo:
    """Valid (public key, message, signature) triples already checked in this process.

    Off in the node. The simulator turns it on (`remember_verified`): its virtual nodes
    share one process, and each would check the same bytes of every gossiped message
    again. Only a valid signature is remembered, by its exact bytes: anything forged or
    tampered differs, and is checked for real."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.valid: dict[tuple[bytes, bytes, bytes], None] = {}

    def seen(self, key: tuple[bytes, bytes, bytes]) -> bool:
        return key in self.valid

    def add(self, key: tuple[bytes, bytes, bytes]) -> None:
        if len(self.valid) >= self.size:
            del self.valid[next(iter(self.valid))]  # oldest first
        self.valid[key] = None


_memo: VerifiedMemo | None = None


def remember_verified(size: int | None) -> None:
    """Remember up to `size` valid signatures (None: forget them, and stop)."""
    global _memo  # noqa: PLW0603 - one switch for the process
    _memo = VerifiedMemo(size) if size else None


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise InvalidSignatureError unless `signature` is valid; IdentityError if malformed."""
    memo = _memo
    if memo is not None and type(public_key) is type(message) is type(signature) is bytes:
        key = (public_key, message, signature)
        if memo.seen(key):
            return
        _verify(public_key, message, signature)
        memo.add(key)
        return
    _verify(public_key, message, signature)


def _verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
        raise IdentityError(
            f"Ed25519 signature must be {SIGNATURE_LEN} bytes, got {_describe_len(signature)}"
        )
    if not isinstance(message, bytes):
        raise TypeError(f"signed message must be bytes, got {type(message).__name__}")
    try:
        _verify_key(public_key).verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        raise InvalidSignatureError("Ed25519 signature does not verify") from None
    except (nacl.exceptions.ValueError, nacl.exceptions.TypeError) as exc:
        raise IdentityError(f"malformed Ed25519 key or signature: {exc}") from None


def peer_id_from_public_key(public_key: bytes) -> str:
    _verify_key(public_key)
    return str(base58.b58encode(_PEER_ID_PREFIX + public_key).decode("ascii"))


@lru_cache(maxsize=4096)
def public_key_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key inside a `12D3KooW…` peer id."""
    raw = _b58decode_canonical(peer_id, "peer id")
    if len(raw) != len(_PEER_ID_PREFIX) + PUBLIC_KEY_LEN or not raw.startswith(_PEER_ID_PREFIX):
        raise IdentityError(
            f"peer id {_show(peer_id)} is not an Ed25519 libp2p peer id (12D3KooW…)"
        )
    public_key = raw[len(_PEER_ID_PREFIX) :]
    _verify_key(public_key)
    return public_key


def did_from_public_key(public_key: bytes) -> str:
    _verify_key(public_key)
    encoded = base58.b58encode(_ED25519_PUB_MULTICODEC + public_key).decode("ascii")
    return _DID_KEY_PREFIX + encoded


@lru_cache(maxsize=4096)
def public_key_from_did(did: str) -> bytes:
    """The Ed25519 public key inside a `did:key:z6Mk…` identifier."""
    if not isinstance(did, str) or not did.startswith(_DID_KEY_PREFIX):
        raise IdentityError(f"{_show(did)} is not a did:key with base58btc multibase (did:key:z…)")
    raw = _b58decode_canonical(did[len(_DID_KEY_PREFIX) :], f"{_show(did)}: key part")
    if len(raw) != 2 + PUBLIC_KEY_LEN or not raw.startswith(_ED25519_PUB_MULTICODEC):
        raise IdentityError(f"{_show(did)} is not an Ed25519 did:key (expected multicodec 0xed01)")
    public_key = raw[2:]
    _verify_key(public_key)
    return public_key


def public_key_from_identity(identity: str) -> bytes:
    """Public key from either a did:key or a peer id."""
    if isinstance(identity, str) and identity.startswith("did:"):
        return public_key_from_did(identity)
    return public_key_from_peer_id(identity)
