"""Just enough protobuf wire format to read the few foreign formats Qflow must parse
(Biscuit tokens' envelopes, dag-pb nodes and UnixFS data) without generated code.

Strict and bounded: a varint is at most 10 bytes and below 2^64, a length-delimited
field must fit in the buffer, and wire types other than varint, 64-bit, LEN and 32-bit
are refused. Callers check which field numbers and wire types their schema allows.
"""

from __future__ import annotations

from typing import Final

VARINT: Final = 0
I64: Final = 1
LEN: Final = 2
I32: Final = 5

Field = tuple[int, int, int | bytes]
"""(field number, wire type, value): LEN fields as bytes, the others as ints."""


class ProtoError(ValueError):
    """Bytes that are not well-formed protobuf."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 varint at `pos`: (value, position after it)."""
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >= 1 << 64:
                raise ProtoError("varint exceeds 64 bits")
            return value, pos
    raise ProtoError("varint longer than 10 bytes")


def put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def fields(buf: bytes) -> list[Field]:
    """Every top-level field of a message, in order."""
    out: list[Field] = []
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            out.append((number, wire, value))
        elif wire == LEN:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise ProtoError(f"field {number} runs past the end of the message")
            out.append((number, wire, buf[pos : pos + length]))
            pos += length
        elif wire in (I64, I32):
            width = 8 if wire == I64 else 4
            if pos + width > len(buf):
                raise ProtoError(f"fixed-width field {number} runs past the end of the message")
            out.append((number, wire, int.from_bytes(buf[pos : pos + width], "little")))
            pos += width
        else:
            raise ProtoError(f"field {number} has unsupported wire type {wire}")
    return out
