"""Shamir secret sharing over the BLS12-381 scalar field, with Feldman commitments.

A dealer hides a secret s as f(0) of a random polynomial f of degree t-1 and gives
share i the value f(i), i = 1..n: any t shares recover s by Lagrange interpolation at
0, t-1 shares say nothing about it. The dealer also publishes commitments
C_k = a_k·G1 to the coefficients of f, so anyone can compute the public key of share i,
sum(C_k · i^k) = f(i)·G1, and its holder can check the share against it alone.
C_0 is the public key of s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from py_arkworks_bls12381 import G1Point

from qflow_node.crypto.bls import (
    G1_GENERATOR,
    PublicKey,
    R,
    Rng,
    SecretKey,
    random_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
    to_scalar,
)
from qflow_node.crypto.errors import CryptoError, DecodeError, ThresholdError

# Committees are small; the cap bounds the work a hostile message can ask for.
MAX_PARTICIPANTS: Final = 1024


def check_index(index: int, size: int = MAX_PARTICIPANTS) -> None:
    if type(index) is not int or not 1 <= index <= size:
        raise ThresholdError(f"share index {index!r} is invalid: indices are 1..{size}")


def check_threshold(threshold: int, size: int) -> None:
    if type(size) is not int or not 1 <= size <= MAX_PARTICIPANTS:
        raise ThresholdError(f"n = {size!r} is invalid: it must be 1..{MAX_PARTICIPANTS}")
    if type(threshold) is not int or not 1 <= threshold <= size:
        raise ThresholdError(f"t = {threshold!r} is invalid: it must be 1..n (n = {size})")


@dataclass(frozen=True, slots=True, repr=False)
class Share:
    """Share `index` of a secret: f(index). `repr` never shows the value."""

    index: int
    value: int

    def __post_init__(self) -> None:
        check_index(self.index)
        # Zero is a legal (if unlikely) f(i); a share is not a secret key.
        if type(self.value) is not int or not 0 <= self.value < R:
            raise CryptoError(f"share {self.index}: value must be an int in 0..r-1")

    @classmethod
    def from_bytes(cls, index: int, data: bytes, what: str = "") -> Share:
        check_index(index)
        return cls(index, scalar_from_bytes(data, what or f"share {index}"))

    def to_bytes(self) -> bytes:
        return scalar_to_bytes(self.value)

    def __repr__(self) -> str:
        return f"Share(index={self.index}, …)"


@dataclass(frozen=True, slots=True)
class Commitments:
    """Feldman commitments C_0..C_{t-1}: points in G1, so `threshold` is their count."""

    points: tuple[G1Point, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.points) <= MAX_PARTICIPANTS:
            raise ThresholdError(
                f"{len(self.points)} commitments: a polynomial has 1..{MAX_PARTICIPANTS}"
            )

    @property
    def threshold(self) -> int:
        return len(self.points)

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.points[0])

    def to_list(self) -> list[bytes]:
        return [point.to_compressed_bytes() for point in self.points]

    @classmethod
    def from_list(cls, items: Sequence[bytes], what: str = "commitments") -> Commitments:
        if not isinstance(items, list | tuple):
            raise DecodeError(f"{what}: expected a list, got {type(items).__name__}")
        if not 1 <= len(items) <= MAX_PARTICIPANTS:
            raise DecodeError(f"{what}: {len(items)} points, expected 1..{MAX_PARTICIPANTS}")
        return cls(
            tuple(
                PublicKey.from_bytes(item, f"{what}, point {k}").point
                for k, item in enumerate(items)
            )
        )


def random_polynomial(threshold: int, rng: Rng, constant: int | None = None) -> tuple[int, ...]:
    """Coefficients a_0..a_{t-1}, all nonzero (a zero one would commit to the identity)."""
    head = random_scalar(rng) if constant is None else constant
    return (head, *(random_scalar(rng) for _ in range(threshold - 1)))


def evaluate(coefficients: Sequence[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % R
    return value


def commit(coefficients: Sequence[int]) -> Commitments:
    return Commitments(tuple(G1_GENERATOR * to_scalar(a) for a in coefficients))


def deal(
    secret: SecretKey, threshold: int, size: int, rng: Rng
) -> tuple[tuple[Share, ...], Commitments]:
    """Split `secret` into `size` shares, any `threshold` of which recover it."""
    check_threshold(threshold, size)
    coefficients = random_polynomial(threshold, rng, secret.value)
    shares = tuple(Share(i, evaluate(coefficients, i)) for i in range(1, size + 1))
    return shares, commit(coefficients)


def share_public_key(index: int, commitments: Commitments) -> PublicKey:
    """f(index)·G1 = sum(C_k · index^k), from the public commitments alone."""
    check_index(index)
    powers = [1]
    for _ in range(commitments.threshold - 1):
        powers.append(powers[-1] * index % R)
    # The points came from the checked decoder or from arithmetic on such points.
    scalars = [to_scalar(power) for power in powers]
    return PublicKey(G1Point.multiexp_unchecked(list(commitments.points), scalars))


def verify_share(share: Share, commitments: Commitments) -> bool:
    expected = share_public_key(share.index, commitments).point
    return G1_GENERATOR * to_scalar(share.value) == expected


def aggregate(parts: Iterable[Commitments]) -> Commitments:
    """Pointwise sum: the commitments of the sum of the polynomials (the DKG's key)."""
    items = list(parts)
    if not items or len({c.threshold for c in items}) != 1:
        raise ThresholdError("aggregate needs one or more commitments of the same threshold")
    points = list(items[0].points)
    for commitments in items[1:]:
        points = [a + b for a, b in zip(points, commitments.points, strict=True)]
    return Commitments(tuple(points))


def lagrange_at_zero(indices: Iterable[int]) -> dict[int, int]:
    """λ_i with f(0) = sum(λ_i · f(i)) for any polynomial of degree < len(indices)."""
    chosen = list(indices)
    for index in chosen:
        check_index(index)
    if len(set(chosen)) != len(chosen):
        raise ThresholdError(f"share indices {sorted(chosen)} repeat an index")
    coefficients = {}
    for i in chosen:
        numerator, denominator = 1, 1
        for j in chosen:
            if j != i:
                numerator = numerator * j % R
                denominator = denominator * (j - i) % R
        coefficients[i] = numerator * pow(denominator, -1, R) % R
    return coefficients


def recover_secret(shares: Iterable[Share]) -> SecretKey:
    """The secret behind `shares` (needs at least t of them, from one dealing)."""
    items = list(shares)
    weights = lagrange_at_zero(share.index for share in items)
    return SecretKey(sum(weights[share.index] * share.value for share in items) % R)
