"""Threshold BLS: any t of n share holders sign for the group.

Share i signs m as sig_i = f(i)·H(m). Any t partials combine by Lagrange interpolation
in the exponent, sig = Σ λ_i·sig_i = f(0)·H(m): byte for byte the plain BLS signature of
the group secret (BLS signing is deterministic), so any standard verifier checks it under
the group key, and it does not depend on which t shares took part.

A bad partial spoils the combination without saying whose it is. `combine_verified`
therefore checks the combination (one pairing check: the common case) and only when it
fails verifies the partials one by one, names the culprits and combines good ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from py_arkworks_bls12381 import G2Point

from qflow_node.crypto.bls import (
    PublicKey,
    Rng,
    SecretKey,
    Signature,
    hash_to_point,
    sign_point,
    to_scalar,
    verify,
    verify_point,
)
from qflow_node.crypto.errors import DecodeError, InvalidPartialsError, ThresholdError
from qflow_node.crypto.feldman import (
    Commitments,
    Share,
    check_index,
    check_threshold,
    deal,
    lagrange_at_zero,
    share_public_key,
)


@dataclass(frozen=True, slots=True)
class KeySet:
    """The public side of a t-of-n key: the group key and every share's public key.

    Kept as the n and the Feldman commitments (t points) rather than n share keys: the
    share keys are derived from the commitments, so they cannot disagree with the group
    key, and the stored form is smaller.
    """

    size: int
    commitments: Commitments
    _share_keys: dict[int, PublicKey] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        check_threshold(self.commitments.threshold, self.size)

    @property
    def threshold(self) -> int:
        return self.commitments.threshold

    @property
    def public_key(self) -> PublicKey:
        return self.commitments.public_key

    def share_key(self, index: int) -> PublicKey:
        check_index(index, self.size)
        key = self._share_keys.get(index)
        if key is None:
            key = self._share_keys[index] = share_public_key(index, self.commitments)
        return key

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.size, "commitments": self.commitments.to_list()}

    @classmethod
    def from_dict(cls, obj: Any, what: str = "key set") -> KeySet:
        if not isinstance(obj, dict) or set(obj) != {"n", "commitments"}:
            raise DecodeError(f"{what}: expected a map with keys 'n' and 'commitments'")
        commitments = Commitments.from_list(obj["commitments"], f"{what} commitments")
        try:
            return cls(obj["n"], commitments)
        except ThresholdError as exc:
            raise DecodeError(f"{what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Combined:
    """A verified group signature and the shares whose partials failed on the way."""

    signature: Signature
    culprits: tuple[int, ...] = ()


def dealer_keygen(threshold: int, size: int, rng: Rng) -> tuple[KeySet, tuple[Share, ...]]:
    """A trusted dealer's t-of-n key: the key set and the n shares (the secret is dropped)."""
    shares, commitments = deal(SecretKey.generate(rng), threshold, size, rng)
    return KeySet(size, commitments), shares


def partial_sign(share: Share, msg: bytes) -> Signature:
    return sign_point(share.value, hash_to_point(msg))


def verify_partial(share_key: PublicKey, msg: bytes, partial: Signature) -> bool:
    return verify(share_key, msg, partial)


def combine(partials: Mapping[int, Signature], threshold: int) -> Signature:
    """Interpolate the t lowest-indexed partials; they are not verified here."""
    if type(threshold) is not int or threshold < 1:
        raise ThresholdError(f"t = {threshold!r} is invalid: it must be 1 or more")
    for index in partials:
        check_index(index)
    if len(partials) < threshold:
        raise ThresholdError(
            f"need {threshold} partial signatures to combine, got {len(partials)}"
            f" (shares {sorted(partials)})"
        )
    chosen = sorted(partials)[:threshold]
    weights = lagrange_at_zero(chosen)
    # Safe without a subgroup check: a Signature's point was decoded with the checked
    # decoder or computed from such points. The lists have equal length by construction
    # (the library silently truncates mismatched ones).
    points = [partials[i].point for i in chosen]
    return Signature(G2Point.multiexp_unchecked(points, [to_scalar(weights[i]) for i in chosen]))


def combine_verified(keys: KeySet, msg: bytes, partials: Mapping[int, Signature]) -> Combined:
    """Combine and verify under the group key; on failure find the bad partials.

    Raises InvalidPartialsError (with `culprits`) when fewer than t partials verify.
    """
    for index in partials:
        check_index(index, keys.size)
    hashed = hash_to_point(msg)
    signature = combine(partials, keys.threshold)
    if verify_point(keys.public_key, hashed, signature):
        return Combined(signature)
    good = {
        index: partial
        for index, partial in partials.items()
        if verify_point(keys.share_key(index), hashed, partial)
    }
    culprits = tuple(sorted(set(partials) - set(good)))
    if len(good) < keys.threshold:
        raise InvalidPartialsError(
            f"partial signatures from shares {_list(culprits)} do not verify;"
            f" {len(good)} valid of the {keys.threshold} needed",
            culprits,
        )
    signature = combine(good, keys.threshold)
    if not culprits or not verify_point(keys.public_key, hashed, signature):
        # Valid partials always combine to a valid signature under a consistent key set.
        raise ThresholdError("partials that verify combine to an invalid signature")
    return Combined(signature, culprits)


def _list(indices: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in indices)
