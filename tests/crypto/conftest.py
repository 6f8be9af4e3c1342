"""Seeded randomness and hostile points for the crypto tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from py_arkworks_bls12381 import G1Point, G2Point

from qflow_node.crypto import Rng, seeded_rng

SeededRng = Callable[[bytes], Rng]


@pytest.fixture
def seeded() -> SeededRng:
    return seeded_rng


def _outside_subgroup(size: int, unchecked: Callable[[bytes], G1Point | G2Point]) -> bytes:
    """Canonical bytes of a curve point outside the prime-order subgroup.

    The unchecked decoder solves for y, so a small x that decodes is on the curve; the
    cofactor is huge, so such a point is almost surely outside the subgroup (asserted).
    """
    for x in range(1, 1000):
        data = bytes([0x80]) + x.to_bytes(size - 1, "big")
        try:
            point = unchecked(data)
        except ValueError:
            continue
        if not point.is_in_subgroup():
            return point.to_compressed_bytes()
    raise AssertionError("no point outside the subgroup found")


@pytest.fixture(scope="session")
def g1_outside_subgroup() -> bytes:
    return _outside_subgroup(48, G1Point.from_compressed_bytes_unchecked)


@pytest.fixture(scope="session")
def g2_outside_subgroup() -> bytes:
    # x = c1·u + c0 with c1 = 0: the encoding puts c1 first, so x sits in the second half.
    return _outside_subgroup(96, G2Point.from_compressed_bytes_unchecked)
