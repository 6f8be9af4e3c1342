"""Plain BLS (IETF ciphersuite, NUL): published vectors, round trips and hostile bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from py_arkworks_bls12381 import G1Point, G2Point

from qflow_node.crypto import (
    DST,
    CryptoError,
    DecodeError,
    PublicKey,
    Rng,
    SecretKey,
    Signature,
    public_key,
    sign,
    verify,
)
from qflow_node.crypto.bls import R, hash_to_point, random_scalar, scalar_from_bytes

SeededRng = Callable[[bytes], Rng]

# The G1 generator, compressed (ZCash format): the public key of secret key 1.
G1_GENERATOR = bytes.fromhex(
    "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
)

# RFC 9380 appendix J.10.1 (BLS12381G2_XMD:SHA-256_SSWU_RO_), compressed as in the
# dfinity/ic bls12_381 tests; the coordinates match the RFC's P.x, P.y.
RFC9380_DST = b"QUUX-V01-CS02-with-BLS12381G2_XMD:SHA-256_SSWU_RO_"
RFC9380_G2 = {
    b"": (
        "a5cb8437535e20ecffaef7752baddf98034139c38452458baeefab379ba13dff5bf5dd71b72418717047f5b0f37da03d"
        "0141ebfbdca40eb85b87142e130ab689c673cf60f1a3e98d69335266f30d9b8d4ac44c1038e9dcdd5393faf5c41fb78a"
    ),
    b"abc": (
        "939cddbccdc5e91b9623efd38c49f81a6f83f175e80b06fc374de9eb4b41dfe4ca3a230ed250fbe3a2acf73a41177fd8"
        "02c2d18e033b960562aae3cab37a27ce00d80ccd5ba4b7fe0e7a210245129dbec7780ccc7954725f4168aff2787776e6"
    ),
    b"abcdef0123456789": (
        "990d119345b94fbd15497bcba94ecf7db2cbfd1e1fe7da034d26cbba169fb3968288b3fafb265f9ebd380512a71c3f2c"
        "121982811d2491fde9ba7ed31ef9ca474f0e1501297f68c298e9f4c0028add35aea8bb83d53c08cfc007c1e005723cd0"
    ),
}
RFC9380_EMPTY_XY = (
    "0141ebfbdca40eb85b87142e130ab689c673cf60f1a3e98d69335266f30d9b8d4ac44c1038e9dcdd5393faf5c41fb78a"
    "05cb8437535e20ecffaef7752baddf98034139c38452458baeefab379ba13dff5bf5dd71b72418717047f5b0f37da03d"
    "0503921d7f6a12805e72940b963c0cf3471c7b2a524950ca195d11062ee75ec076daf2d4bc358c4b190c0c98064fdd92"
    "12424ac32561493f3fe3c260708a12b7c620e7be00099a974e259ddc7d1f6395c3c811cdd19f1e8dbf3e9ecfdcbab8d6"
)

# drand League of Entropy mainnet (scheme pedersen-bls-chained): a real threshold BLS
# signature in exactly our ciphersuite (G1 keys, G2 signatures, DST ..._NUL_). Round
# 72785 as in drand-verify's tests; the message is sha256(previous_signature || round).
DRAND_PUBLIC_KEY = bytes.fromhex(
    "868f005eb8e6e4ca0a47c8a77ceaa5309a47978a7c71bc5cce96366b5d7a569937c529eeda66c7293784a9402801af31"
)
DRAND_ROUND = 72785
DRAND_PREVIOUS = bytes.fromhex(
    "a609e19a03c2fcc559e8dae14900aaefe517cb55c840f6e69bc8e4f66c8d18e8a609685d9917efbfb0c37f058c2de88f13d297c7e19e0ab24813079efe57a182554ff054c7638153f9b26a60e7111f71a0ff63d9571704905d3ca6df0b031747"
)
DRAND_SIGNATURE = bytes.fromhex(
    "82f5d3d2de4db19d40a6980e8aa37842a0e55d1df06bd68bddc8d60002e8e959eb9cfa368b3c1b77d18f02a54fe047b80f0989315f83b12a74fd8679c4f12aae86eaf6ab5690b34f1fddd50ee3cc6f6cdf59e95526d5a5d82aaa84fa6f181e42"
)


def drand_message(round_: int) -> bytes:
    return hashlib.sha256(DRAND_PREVIOUS + round_.to_bytes(8, "big")).digest()


def test_the_ciphersuite_is_the_ietf_nul_one() -> None:
    assert DST == b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_"


def test_secret_key_one_has_the_generator_as_public_key() -> None:
    sk = SecretKey.from_bytes(bytes(31) + b"\x01")
    assert public_key(sk).to_bytes() == G1_GENERATOR


def test_secret_key_one_signs_with_the_hashed_message_itself() -> None:
    sk = SecretKey(1)
    for msg in (b"", b"abc", b"qflow"):
        signature = sign(sk, msg)
        assert signature.to_bytes() == G2Point.hash_to_curve(msg, DST).to_compressed_bytes()
        assert verify(public_key(sk), msg, signature)


@pytest.mark.parametrize("msg", sorted(RFC9380_G2))
def test_hash_to_curve_matches_rfc9380(msg: bytes) -> None:
    point = G2Point.hash_to_curve(msg, RFC9380_DST)
    assert point.to_compressed_bytes().hex() == RFC9380_G2[msg]


def test_hash_to_curve_coordinates_match_rfc9380() -> None:
    # to_xy_bytes_be puts x.c0 before x.c1, as the RFC writes them.
    assert G2Point.hash_to_curve(b"", RFC9380_DST).to_xy_bytes_be().hex() == RFC9380_EMPTY_XY


def test_drand_mainnet_round_verifies() -> None:
    pk = PublicKey.from_bytes(DRAND_PUBLIC_KEY)
    signature = Signature.from_bytes(DRAND_SIGNATURE)
    assert verify(pk, drand_message(DRAND_ROUND), signature)
    assert not verify(pk, drand_message(DRAND_ROUND + 1), signature)


def test_sign_and_verify_round_trip(seeded: SeededRng) -> None:
    rng = seeded(b"bls")
    sk, other = SecretKey.generate(rng), SecretKey.generate(rng)
    signature = sign(sk, b"hello")
    assert verify(public_key(sk), b"hello", signature)
    assert not verify(public_key(sk), b"hellp", signature)
    assert not verify(public_key(other), b"hello", signature)
    assert Signature.from_bytes(signature.to_bytes()) == signature
    assert PublicKey.from_bytes(public_key(sk).to_bytes()) == public_key(sk)
    assert SecretKey.from_bytes(sk.to_bytes()) == sk


def test_identity_key_and_signature_never_verify() -> None:
    # e(0, H(m)) == e(g1, 0): the identity pair would "verify" any message.
    forged = PublicKey(G1Point.identity()), Signature(G2Point.identity())
    assert not verify(forged[0], b"anything", forged[1])


def test_secret_key_encoding_is_32_bytes_big_endian() -> None:
    assert SecretKey(1).to_bytes() == bytes(31) + b"\x01"
    assert SecretKey(R - 1).to_bytes() == (R - 1).to_bytes(32, "big")
    assert "1" not in repr(SecretKey(1))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (R.to_bytes(32, "big"), "secret key: not below the group order r"),
        (b"\xff" * 32, "secret key: not below the group order r"),
        (bytes(32), "secret key: zero is not a secret key"),
        (b"\x01" * 31, "secret key: expected 32 bytes, got 31"),
        (b"\x01" * 33, "secret key: expected 32 bytes, got 33"),
    ],
)
def test_bad_secret_keys_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        SecretKey.from_bytes(data)


def test_scalars_at_or_above_r_are_refused() -> None:
    assert scalar_from_bytes((R - 1).to_bytes(32, "big")) == R - 1
    with pytest.raises(DecodeError, match="share 3: not below the group order r"):
        scalar_from_bytes((R + 5).to_bytes(32, "big"), "share 3")


def test_secret_key_values_are_checked() -> None:
    for value in (0, R, -1):
        with pytest.raises(CryptoError, match=r"1\.\.r-1"):
            SecretKey(value)


def identity_g1() -> bytes:
    return bytes([0xC0]) + bytes(47)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (G1_GENERATOR[:47], "expected 48 bytes, got 47"),
        (G1_GENERATOR + b"\x00", "expected 48 bytes, got 49"),
        (bytes([G1_GENERATOR[0] & 0x7F]) + G1_GENERATOR[1:], "not a compressed G1 point"),
        (bytes(48), "not a compressed G1 point"),
        (identity_g1(), "the identity point is not allowed"),
        (bytes([0xE0]) + bytes(47), "non-canonical G1 point encoding"),
        (bytes([0xC0]) + bytes(46) + b"\x01", "non-canonical G1 point encoding"),
    ],
)
def test_bad_public_keys_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=f"^public key: {problem}"):
        PublicKey.from_bytes(data)


def test_public_key_with_x_above_p_is_refused() -> None:
    p = int(
        "1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f6241eabfffeb153ffffb9feffffffffaaab",
        16,
    )
    mask = (1 << 381) - 1
    for k in range(1, 100):  # a key whose x + p still fits in 381 bits
        encoded = int.from_bytes(public_key(SecretKey(k)).to_bytes(), "big")
        if (encoded & mask) + p < 1 << 381:
            break
    data = (encoded + p).to_bytes(48, "big")
    with pytest.raises(DecodeError, match="not a compressed G1 point"):
        PublicKey.from_bytes(data)


def test_public_key_outside_the_subgroup_is_refused(g1_outside_subgroup: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^dealer 2, point 0: not in the G1 subgroup$"):
        PublicKey.from_bytes(g1_outside_subgroup, "dealer 2, point 0")


def test_signature_outside_the_subgroup_is_refused(g2_outside_subgroup: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^partial signature from share 4: not in the G2"):
        Signature.from_bytes(g2_outside_subgroup, "partial signature from share 4")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (bytes(95), "expected 96 bytes, got 95"),
        (bytes([0xC0]) + bytes(95), "the identity point is not allowed"),
        (bytes([0xE0]) + bytes(95), "non-canonical G2 point encoding"),
        (bytes(96), "not a compressed G2 point"),
        ("00" * 96, "expected 96 bytes, got str"),
    ],
)
def test_bad_signatures_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=f"^signature: {problem}"):
        Signature.from_bytes(data)


def test_a_short_rng_is_refused() -> None:
    with pytest.raises(CryptoError, match=r"rng\(64\) returned 3 bytes"):
        random_scalar(lambda n: b"abc")


def test_random_scalars_come_from_the_rng(seeded: SeededRng) -> None:
    assert random_scalar(seeded(b"a")) == random_scalar(seeded(b"a"))
    assert random_scalar(seeded(b"a")) != random_scalar(seeded(b"b"))
    assert hash_to_point(b"m") == G2Point.hash_to_curve(b"m", DST)
