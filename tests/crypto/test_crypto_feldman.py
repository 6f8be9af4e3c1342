"""Shamir shares with Feldman commitments: recovery, share checks and refusals."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qflow_node.codec import decode_dag, encode_dag
from qflow_node.crypto import (
    Commitments,
    DecodeError,
    Rng,
    SecretKey,
    Share,
    ThresholdError,
    deal,
    lagrange_at_zero,
    public_key,
    recover_secret,
    share_public_key,
    verify_share,
)
from qflow_node.crypto.bls import R
from qflow_node.crypto.feldman import evaluate

SeededRng = Callable[[bytes], Rng]
SECRET = SecretKey(0x1234_5678_9ABC_DEF0)


def test_any_t_shares_recover_the_secret_and_fewer_do_not(seeded: SeededRng) -> None:
    shares, commitments = deal(SECRET, 3, 5, seeded(b"deal"))
    assert commitments.threshold == 3
    assert commitments.public_key == public_key(SECRET)
    for subset in itertools.combinations(shares, 3):
        assert recover_secret(subset) == SECRET
    assert recover_secret(shares) == SECRET  # more than t: same polynomial
    for pair in itertools.combinations(shares, 2):
        assert recover_secret(pair) != SECRET


def test_every_share_verifies_and_matches_its_public_key(seeded: SeededRng) -> None:
    shares, commitments = deal(SECRET, 3, 5, seeded(b"deal"))
    for share in shares:
        assert verify_share(share, commitments)
        assert share_public_key(share.index, commitments) == public_key(SecretKey(share.value))


def test_a_tampered_share_fails_the_feldman_check(seeded: SeededRng) -> None:
    shares, commitments = deal(SECRET, 3, 5, seeded(b"deal"))
    share = shares[3]
    assert not verify_share(Share(share.index, (share.value + 1) % R), commitments)
    assert not verify_share(Share(share.index + 1, share.value), commitments)
    _, other = deal(SECRET, 3, 5, seeded(b"other"))
    assert not verify_share(share, other)


def test_dealing_is_deterministic_in_the_rng(seeded: SeededRng) -> None:
    assert deal(SECRET, 3, 5, seeded(b"x")) == deal(SECRET, 3, 5, seeded(b"x"))
    assert deal(SECRET, 3, 5, seeded(b"x")) != deal(SECRET, 3, 5, seeded(b"y"))


def test_one_of_one_is_the_secret_itself(seeded: SeededRng) -> None:
    shares, commitments = deal(SECRET, 1, 1, seeded(b"1"))
    assert shares == (Share(1, SECRET.value),)
    assert verify_share(shares[0], commitments)


@pytest.mark.parametrize(
    ("t", "n", "problem"),
    [
        (0, 5, r"t = 0 is invalid: it must be 1\.\.n \(n = 5\)"),
        (6, 5, r"t = 6 is invalid"),
        (1, 0, r"n = 0 is invalid: it must be 1\.\.1024"),
        (1, 1025, r"n = 1025 is invalid"),
    ],
)
def test_bad_thresholds_are_refused(t: int, n: int, problem: str, seeded: SeededRng) -> None:
    with pytest.raises(ThresholdError, match=problem):
        deal(SECRET, t, n, seeded(b"t"))


def test_commitments_round_trip_through_dag_cbor(seeded: SeededRng) -> None:
    _, commitments = deal(SECRET, 4, 6, seeded(b"c"))
    decoded = Commitments.from_list(decode_dag(encode_dag(commitments.to_list())))
    assert decoded == commitments


def test_bad_commitments_are_refused_naming_the_point(
    seeded: SeededRng, g1_outside_subgroup: bytes
) -> None:
    _, commitments = deal(SECRET, 3, 5, seeded(b"c"))
    items = commitments.to_list()
    with pytest.raises(DecodeError, match=r"^commitments, point 1: not in the G1 subgroup$"):
        Commitments.from_list([items[0], g1_outside_subgroup, items[2]])
    with pytest.raises(DecodeError, match=r"point 2: the identity point is not allowed"):
        Commitments.from_list([items[0], items[1], bytes([0xC0]) + bytes(47)])
    with pytest.raises(DecodeError, match=r"0 points, expected 1\.\.1024"):
        Commitments.from_list([])
    with pytest.raises(DecodeError, match="expected a list"):
        Commitments.from_list(items[0])  # type: ignore[arg-type]  # not a list, on purpose


def test_share_encoding_refuses_scalars_at_or_above_r() -> None:
    assert Share.from_bytes(2, (R - 1).to_bytes(32, "big")).value == R - 1
    with pytest.raises(DecodeError, match=r"^share 2: not below the group order r"):
        Share.from_bytes(2, R.to_bytes(32, "big"))
    with pytest.raises(DecodeError, match=r"^share 2: expected 32 bytes, got 31"):
        Share.from_bytes(2, bytes(31))
    assert "1234" not in repr(Share(2, 0x1234))


@pytest.mark.parametrize(
    ("indices", "problem"),
    [
        ([0, 1, 2], r"share index 0 is invalid: indices are 1\.\.1024"),
        ([1, -3], r"share index -3 is invalid"),
        ([1, 1025], r"share index 1025 is invalid"),
        ([1, True], r"share index True is invalid"),
        ([1, 2, 1], r"share indices \[1, 1, 2\] repeat an index"),
    ],
)
def test_bad_indices_are_refused(indices: list[int], problem: str) -> None:
    with pytest.raises(ThresholdError, match=problem):
        lagrange_at_zero(indices)


def test_share_public_key_refuses_index_zero(seeded: SeededRng) -> None:
    # Index 0 would be the secret's own key: never a share.
    _, commitments = deal(SECRET, 2, 3, seeded(b"z"))
    with pytest.raises(ThresholdError, match="share index 0 is invalid"):
        share_public_key(0, commitments)


@settings(max_examples=200, deadline=None)
@given(
    coefficients=st.lists(st.integers(0, R - 1), min_size=1, max_size=8),
    data=st.data(),
)
def test_lagrange_at_zero_interpolates_any_polynomial(
    coefficients: list[int], data: st.DataObject
) -> None:
    t = len(coefficients)
    indices = data.draw(st.lists(st.integers(1, 1024), min_size=t, max_size=t, unique=True))
    weights = lagrange_at_zero(indices)
    assert sum(weights[i] * evaluate(coefficients, i) for i in indices) % R == coefficients[0]
