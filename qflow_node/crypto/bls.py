"""Plain BLS signatures: IETF ciphersuite BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_.

The minimal-pubkey-size variant: public keys are G1 points (48 bytes compressed),
signatures G2 points (96 bytes), secret keys scalars mod r (32 bytes big-endian, the
draft's I2OSP). Point bytes are the ZCash compressed format every BLS12-381 library
reads, so any standard verifier checks our signatures, threshold ones included.

Decoding is strict: exact length, canonical bytes (re-encoding gives the input back),
the point in the prime-order subgroup and never the identity (the draft's KeyValidate);
a scalar must be below r. A `PublicKey` or `Signature` holds a point decoded that way
or computed from such points; `threshold.combine` relies on it to use the library's
multi-exponentiation, which does no subgroup check.

Pure: randomness comes in as `rng(n) -> n bytes` (`os.urandom` in the node, a seeded
source in the simulator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

from qflow_node.crypto.errors import CryptoError, DecodeError

# The order of G1, G2 and the scalar field.
R: Final = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
DST: Final = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_"
SCALAR_LEN: Final = 32
PUBLIC_KEY_LEN: Final = 48
SIGNATURE_LEN: Final = 96

Rng = Callable[[int], bytes]

G1_GENERATOR: Final = G1Point()
_NEG_G1: Final = -G1_GENERATOR
_G1_IDENTITY: Final = G1Point.identity()
_G2_IDENTITY: Final = G2Point.identity()
# 64 random bytes mod r: the bias (< 2^-256) is far below anything observable.
_WIDE_LEN: Final = 64

_P = TypeVar("_P", G1Point, G2Point)


def seeded_rng(seed: bytes) -> Rng:
    """A deterministic byte stream, SHA-256 in counter mode over `seed`: for tests and the
    simulator, which must replay keys exactly. Never for real keys (`os.urandom`)."""
    counter = 0
    buffer = b""

    def rng(size: int) -> bytes:
        nonlocal counter, buffer
        while len(buffer) < size:
            buffer += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        out, buffer = buffer[:size], buffer[size:]
        return out

    return rng


def random_bytes(rng: Rng, size: int) -> bytes:
    """`rng(size)`, checked: a short or non-bytes answer would quietly weaken keys."""
    data = rng(size)
    if not isinstance(data, bytes) or len(data) != size:
        raise CryptoError(f"rng({size}) returned {_describe(data)}, expected {size} bytes")
    return data


def random_scalar(rng: Rng) -> int:
    """A uniform scalar in 1..r-1."""
    while True:
        value = int.from_bytes(random_bytes(rng, _WIDE_LEN), "big") % R
        if value:
            return value


def scalar_to_bytes(value: int) -> bytes:
    return value.to_bytes(SCALAR_LEN, "big")


def scalar_from_bytes(data: bytes, what: str = "scalar") -> int:
    """32 bytes big-endian below r; the library would reduce larger values silently."""
    _check_len(data, SCALAR_LEN, what)
    value = int.from_bytes(data, "big")
    if value >= R:
        raise DecodeError(f"{what}: not below the group order r (non-canonical scalar)")
    return value


def to_scalar(value: int) -> Scalar:
    # Scalar(int) reduces mod r and refuses negatives; callers pass 0..r-1.
    return Scalar(value % R)


@dataclass(frozen=True, slots=True, repr=False)
class SecretKey:
    """A BLS secret key, 1..r-1. `repr` never shows it."""

    value: int

    def __post_init__(self) -> None:
        if type(self.value) is not int or not 0 < self.value < R:
            raise CryptoError("secret key must be an int in 1..r-1")

    @classmethod
    def generate(cls, rng: Rng) -> SecretKey:
        return cls(random_scalar(rng))

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "secret key") -> SecretKey:
        value = scalar_from_bytes(data, what)
        if value == 0:
            raise DecodeError(f"{what}: zero is not a secret key")
        return cls(value)

    def to_bytes(self) -> bytes:
        return scalar_to_bytes(self.value)

    def __repr__(self) -> str:
        return "SecretKey(…)"


@dataclass(frozen=True, slots=True, repr=False)
class PublicKey:
    point: G1Point

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "public key") -> PublicKey:
        return cls(
            _decode_point(
                data,
                size=PUBLIC_KEY_LEN,
                checked=G1Point.from_compressed_bytes,
                unchecked=G1Point.from_compressed_bytes_unchecked,
                identity=_G1_IDENTITY,
                group="G1",
                what=what,
            )
        )

    def to_bytes(self) -> bytes:
        return self.point.to_compressed_bytes()

    def __repr__(self) -> str:
        return f"PublicKey({self.to_bytes().hex()[:16]}…)"


@dataclass(frozen=True, slots=True, repr=False)
class Signature:
    point: G2Point

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "signature") -> Signature:
        return cls(
            _decode_point(
                data,
                size=SIGNATURE_LEN,
                checked=G2Point.from_compressed_bytes,
                unchecked=G2Point.from_compressed_bytes_unchecked,
                identity=_G2_IDENTITY,
                group="G2",
                what=what,
            )
        )

    def to_bytes(self) -> bytes:
        return self.point.to_compressed_bytes()

    def __repr__(self) -> str:
        return f"Signature({self.to_bytes().hex()[:16]}…)"


def public_key(sk: SecretKey) -> PublicKey:
    return PublicKey(G1_GENERATOR * to_scalar(sk.value))


def hash_to_point(msg: bytes) -> G2Point:
    """RFC 9380 hash_to_curve into G2 under our DST."""
    return G2Point.hash_to_curve(msg, DST)


def sign(sk: SecretKey, msg: bytes) -> Signature:
    return sign_point(sk.value, hash_to_point(msg))


def verify(pk: PublicKey, msg: bytes, sig: Signature) -> bool:
    return verify_point(pk, hash_to_point(msg), sig)


def sign_point(scalar: int, hashed: G2Point) -> Signature:
    """`scalar * hashed`: signing once the message is hashed (threshold code reuses it)."""
    return Signature(hashed * to_scalar(scalar))


def verify_point(pk: PublicKey, hashed: G2Point, sig: Signature) -> bool:
    """e(pk, H(m)) == e(g1, sig), as one pairing product; identity keys never verify."""
    if pk.point == _G1_IDENTITY or sig.point == _G2_IDENTITY:
        return False
    return GT.pairing_check([pk.point, _NEG_G1], [hashed, sig.point])


def _decode_point(
    data: bytes,
    *,
    size: int,
    checked: Callable[[bytes], _P],
    unchecked: Callable[[bytes], _P],
    identity: _P,
    group: str,
    what: str,
) -> _P:
    _check_len(data, size, what)
    try:
        point = checked(data)
    except ValueError:
        # The checked decoder's errors are opaque; the unchecked one tells a point that
        # is off the curve (or badly flagged) from one outside the subgroup.
        try:
            unchecked(data)
        except ValueError:
            raise DecodeError(f"{what}: not a compressed {group} point") from None
        raise DecodeError(f"{what}: not in the {group} subgroup") from None
    # The library decodes infinity with stray bits (sign flag, nonzero x) as the identity;
    # requiring the canonical bytes gives each value exactly one encoding.
    if point.to_compressed_bytes() != data:
        raise DecodeError(f"{what}: non-canonical {group} point encoding")
    if point == identity:
        raise DecodeError(f"{what}: the identity point is not allowed")
    return point


def _check_len(data: bytes, size: int, what: str) -> None:
    if not isinstance(data, bytes):
        raise DecodeError(f"{what}: expected {size} bytes, got {type(data).__name__}")
    if len(data) != size:
        raise DecodeError(f"{what}: expected {size} bytes, got {len(data)}")


def _describe(data: object) -> str:
    return f"{len(data)} bytes" if isinstance(data, bytes) else type(data).__name__
