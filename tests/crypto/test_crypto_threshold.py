"""Threshold BLS: any t partials make the group's plain BLS signature; bad ones are named."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from py_arkworks_bls12381 import G2Point

from qflow_node.codec import decode_dag, encode_dag
from qflow_node.crypto import (
    DecodeError,
    InvalidPartialsError,
    KeySet,
    Rng,
    SecretKey,
    Share,
    Signature,
    ThresholdError,
    combine,
    combine_verified,
    deal,
    dealer_keygen,
    partial_sign,
    public_key,
    sign,
    verify,
    verify_partial,
)

SeededRng = Callable[[bytes], Rng]
MSG = b"qflow: step 7 of execution bafy... committed"
SECRET = SecretKey(0xC0FFEE)


def known_dealing(rng: Rng, t: int = 3, n: int = 5) -> tuple[KeySet, tuple[Share, ...]]:
    shares, commitments = deal(SECRET, t, n, rng)
    return KeySet(n, commitments), shares


def partials(shares: tuple[Share, ...], msg: bytes = MSG) -> dict[int, Signature]:
    return {share.index: partial_sign(share, msg) for share in shares}


def test_every_3_of_5_subset_makes_the_plain_signature_of_the_secret(
    seeded: SeededRng,
) -> None:
    keys, shares = known_dealing(seeded(b"kat"))
    assert keys.public_key == public_key(SECRET)
    expected = sign(SECRET, MSG)
    all_partials = partials(shares)
    for subset in itertools.combinations(sorted(all_partials), 3):
        combined = combine({i: all_partials[i] for i in subset}, 3)
        assert combined.to_bytes() == expected.to_bytes()
        assert verify(keys.public_key, MSG, combined)


def test_7_of_13_known_answer(seeded: SeededRng) -> None:
    keys, shares = known_dealing(seeded(b"7of13"), 7, 13)
    all_partials = partials(shares)
    expected = sign(SECRET, MSG)
    for subset in ((1, 2, 3, 4, 5, 6, 7), (7, 8, 9, 10, 11, 12, 13), (1, 3, 5, 7, 9, 11, 13)):
        assert combine({i: all_partials[i] for i in subset}, 7) == expected
    assert combine_verified(keys, MSG, all_partials).signature == expected


def test_a_random_key_signs_for_its_group(seeded: SeededRng) -> None:
    keys, shares = dealer_keygen(3, 5, seeded(b"random"))
    for share in shares:
        assert verify_partial(keys.share_key(share.index), MSG, partial_sign(share, MSG))
    combined = combine_verified(keys, MSG, partials(shares[1:4]))
    assert combined.culprits == ()
    assert verify(keys.public_key, MSG, combined.signature)


def test_t_minus_1_partials_cannot_be_combined(seeded: SeededRng) -> None:
    keys, shares = known_dealing(seeded(b"few"))
    two = partials(shares[:2])
    with pytest.raises(ThresholdError, match=r"need 3 partial signatures to combine, got 2"):
        combine(two, 3)
    with pytest.raises(ThresholdError, match=r"need 3 partial signatures"):
        combine_verified(keys, MSG, two)
    # Pretending t = 2 gives some signature, but not the group's.
    forged = combine(two, 2)
    assert not verify(keys.public_key, MSG, forged)


def test_a_tampered_partial_is_named_and_routed_around(seeded: SeededRng) -> None:
    keys, shares = known_dealing(seeded(b"tamper"))
    given = partials(shares[:4])
    given[2] = partial_sign(shares[1], b"another message")
    assert not verify_partial(keys.share_key(2), MSG, given[2])
    assert not verify(keys.public_key, MSG, combine(given, 3))  # 1, 2, 3: spoiled
    result = combine_verified(keys, MSG, given)
    assert result.culprits == (2,)
    assert result.signature == sign(SECRET, MSG)


def test_a_partial_from_another_share_is_named(seeded: SeededRng) -> None:
    keys, shares = known_dealing(seeded(b"swap"))
    given = partials(shares[:4])
    given[1], given[3] = given[3], given[1]
    with pytest.raises(InvalidPartialsError) as caught:
        combine_verified(keys, MSG, given)
    assert caught.value.culprits == (1, 3)
    assert str(caught.value) == (
        "partial signatures from shares 1, 3 do not verify; 2 valid of the 3 needed"
    )


def test_partial_indices_outside_the_key_set_are_refused(seeded: SeededRng) -> None:
    keys, shares = known_dealing(seeded(b"range"))
    given = partials(shares[:3])
    with pytest.raises(ThresholdError, match=r"^share index 6 is invalid: indices are 1\.\.5$"):
        combine_verified(keys, MSG, {**given, 6: given[1]})
    with pytest.raises(ThresholdError, match=r"share index 0 is invalid"):
        combine({0: given[1], **given}, 3)
    with pytest.raises(ThresholdError, match=r"share index 6 is invalid"):
        keys.share_key(6)


def test_the_signature_does_not_depend_on_the_signers(seeded: SeededRng) -> None:
    _, shares = dealer_keygen(4, 7, seeded(b"any"))
    all_partials = partials(shares)
    signatures = {
        combine({i: all_partials[i] for i in subset}, 4).to_bytes()
        for subset in itertools.combinations(range(1, 8), 4)
    }
    assert len(signatures) == 1


def test_decoded_partials_combine(seeded: SeededRng, g2_outside_subgroup: bytes) -> None:
    keys, shares = known_dealing(seeded(b"wire"))
    wire = {i: s.to_bytes() for i, s in partials(shares[:3]).items()}
    decoded = {
        i: Signature.from_bytes(data, f"partial signature from share {i}")
        for i, data in wire.items()
    }
    assert combine_verified(keys, MSG, decoded).signature == sign(SECRET, MSG)
    with pytest.raises(DecodeError, match=r"^partial signature from share 4: not in the G2"):
        Signature.from_bytes(g2_outside_subgroup, "partial signature from share 4")


def test_the_identity_is_not_a_partial_signature(seeded: SeededRng) -> None:
    keys, _ = known_dealing(seeded(b"id"))
    assert not verify_partial(keys.share_key(1), MSG, Signature(G2Point.identity()))


def test_key_sets_round_trip_through_dag_cbor(seeded: SeededRng) -> None:
    keys, _ = dealer_keygen(3, 5, seeded(b"store"))
    decoded = KeySet.from_dict(decode_dag(encode_dag(keys.to_dict())))
    assert decoded == keys
    assert [decoded.share_key(i) for i in range(1, 6)] == [keys.share_key(i) for i in range(1, 6)]


def test_bad_key_sets_are_refused(seeded: SeededRng) -> None:
    keys, _ = dealer_keygen(3, 5, seeded(b"bad"))
    with pytest.raises(DecodeError, match=r"^key set: t = 3 is invalid: it must be 1\.\.n"):
        KeySet.from_dict({**keys.to_dict(), "n": 2})
    with pytest.raises(DecodeError, match="expected a map with keys"):
        KeySet.from_dict({**keys.to_dict(), "extra": 1})
    with pytest.raises(DecodeError, match="key set commitments, point 0: expected 48 bytes"):
        KeySet.from_dict({"n": 5, "commitments": [b"\x00"]})
