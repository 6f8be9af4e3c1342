"""Just enough protobuf to pull each block's signed payload out of a serialized Biscuit.

Schema (biscuit `schema.proto`): `Biscuit { rootKeyId = 1; SignedBlock authority = 2;
repeated SignedBlock blocks = 3; Proof proof = 4 }`, `SignedBlock { bytes block = 1; … }`.
The compiled fast path compares these payloads byte for byte with blocks it regenerates,
which is what makes reading a token's printed Datalog exact (see `scope.py`).
"""

from __future__ import annotations

from typing import Final

_VARINT: Final = 0
_I64: Final = 1
_LEN: Final = 2
_I32: Final = 5


class ProtoError(ValueError):
    """Bytes that are not the protobuf this module expects."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise ProtoError("varint longer than 10 bytes")


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of each top-level field; LEN fields as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == _LEN:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ProtoError("truncated length-delimited field")
            out.append((number, buf[pos : pos + length]))
            pos += length
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > len(buf):
                raise ProtoError("truncated fixed-width field")
            out.append((number, int.from_bytes(buf[pos : pos + width], "little")))
            pos += width
        else:
            raise ProtoError(f"unsupported wire type {wire}")
    return out


def _signed_blocks(token: bytes) -> list[list[tuple[int, int | bytes]]]:
    signed: list[list[tuple[int, int | bytes]]] = []
    for number, value in fields(token):
        if number in (2, 3):
            if not isinstance(value, bytes):
                raise ProtoError("SignedBlock is not length-delimited")
            signed.append(fields(value))
    return signed


def block_payloads(token: bytes) -> list[bytes]:
    """The serialized `Block` of the authority block, then of each attenuation block."""
    payloads: list[bytes] = []
    for signed in _signed_blocks(token):
        blocks = [value for number, value in signed if number == 1]
        if len(blocks) != 1 or not isinstance(blocks[0], bytes):
            raise ProtoError("SignedBlock must hold exactly one block payload")
        payloads.append(blocks[0])
    return payloads


def has_third_party_blocks(token: bytes) -> bool:
    """Whether a block carries an external signature (SignedBlock field 4)."""
    return any(number == 4 for signed in _signed_blocks(token) for number, _ in signed)
