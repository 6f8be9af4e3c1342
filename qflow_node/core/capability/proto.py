"""Just enough protobuf to pull each block's signed payload out of a serialized Biscuit.

Schema (biscuit `schema.proto`): `Biscuit { rootKeyId = 1; SignedBlock authority = 2;
repeated SignedBlock blocks = 3; Proof proof = 4 }`, `SignedBlock { bytes block = 1; … }`.
The compiled fast path compares these payloads byte for byte with blocks it regenerates,
which is what makes reading a token's printed Datalog exact (see `scope.py`).
"""

from __future__ import annotations

from qflow_node.codec.protobuf import ProtoError
from qflow_node.codec.protobuf import fields as wire_fields

__all__ = ["ProtoError", "block_payloads", "fields", "has_third_party_blocks"]


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of each top-level field; LEN fields as bytes."""
    return [(number, value) for number, _wire, value in wire_fields(buf)]


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
