"""Reading dag-pb nodes and UnixFS file data: enough to fetch files added in Kubo.

Qflow writes only dag-cbor and raw blocks; dag-pb (codec 0x70) is what Kubo's `ipfs add`
produces (UnixFS), so a node must be able to walk and reassemble it. This is a reader
only, strict about the protobuf wire format and the two schemas:

    PBNode { Data (1): bytes; Links (2): repeated PBLink }
    PBLink { Hash (1): bytes; Name (2): string; Tsize (3): uint64 }
    UnixFS Data { Type (1): enum; Data (2): bytes; filesize (3): uint64;
                  blocksizes (4): repeated uint64; ... }
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from qflow_node.codec.block import CodecError
from qflow_node.codec.cid import CID

DAG_PB: Final = 0x70
_SHA2_256: Final = 0x12
_DIGEST_LEN: Final = 32
_V0_MULTIHASH: Final = bytes([_SHA2_256, _DIGEST_LEN])
UNIXFS_RAW: Final = 0
UNIXFS_FILE: Final = 2
_VARINT: Final = 0
_BYTES: Final = 2


class DagPbError(CodecError):
    """Bytes that are not a dag-pb node (or not the UnixFS data it claims)."""


@dataclass(frozen=True, slots=True)
class PbLink:
    hash: bytes  # CID bytes as written (CIDv0 multihash or CIDv1)
    name: str | None
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PbNode:
    data: bytes | None
    links: tuple[PbLink, ...]


@dataclass(frozen=True, slots=True)
class UnixFsData:
    type: int
    data: bytes
    filesize: int | None
    blocksizes: tuple[int, ...]


def link_cid(raw: bytes) -> CID:
    """The CIDv1 form of CID bytes from a dag-pb link or a bitswap message.

    IPFS spells one dag-pb identifier two ways: CIDv0 (the bare sha2-256 multihash,
    `Qm…`) and CIDv1 dag-pb. Qflow keys blocks by the v1 form. Only sha2-256 CIDs are
    understood; anything else raises DagPbError.
    """
    if len(raw) == 2 + _DIGEST_LEN and raw[:2] == _V0_MULTIHASH:
        return CID(bytes([0x01, DAG_PB]) + raw)
    version, pos = read_varint(raw, 0)
    codec, pos = read_varint(raw, pos)
    hash_code, pos = read_varint(raw, pos)
    length, pos = read_varint(raw, pos)
    if version != 1 or hash_code != _SHA2_256 or length != _DIGEST_LEN:
        raise DagPbError("only CIDv0/CIDv1 with a sha2-256 multihash are supported")
    if len(raw) - pos != _DIGEST_LEN:
        raise DagPbError("CID digest length does not match its multihash header")
    return cid_with_codec(codec, raw[pos:])


def cid_with_codec(codec: int, digest: bytes) -> CID:
    """CIDv1 with a sha2-256 `digest` under any codec, canonically encoded."""
    return CID(b"\x01" + _put_varint(codec) + _V0_MULTIHASH + digest)


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def is_v0(raw: bytes) -> bool:
    return len(raw) == 2 + _DIGEST_LEN and raw[:2] == _V0_MULTIHASH


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 varint at `pos`: (value, position after it)."""
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise DagPbError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >= 1 << 64:
                raise DagPbError("varint exceeds 64 bits")
            return value, pos
    raise DagPbError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field; only varint and bytes exist here."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, pos = read_varint(buf, pos)
            yield number, wire_type, value
        elif wire_type == _BYTES:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise DagPbError(f"field {number} runs past the end of the node")
            yield number, wire_type, buf[pos : pos + length]
            pos += length
        else:
            raise DagPbError(f"field {number} has wire type {wire_type}; dag-pb uses 0 and 2")


def decode_node(buf: bytes) -> PbNode:
    data: bytes | None = None
    links: list[PbLink] = []
    for number, wire_type, value in _fields(buf):
        if number == 1 and wire_type == _BYTES and isinstance(value, bytes):
            data = value
        elif number == 2 and wire_type == _BYTES and isinstance(value, bytes):
            links.append(_decode_link(value))
        else:
            raise DagPbError(f"unexpected field {number} (wire type {wire_type}) in a PBNode")
    return PbNode(data, tuple(links))


def _decode_link(buf: bytes) -> PbLink:
    hash_: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    for number, wire_type, value in _fields(buf):
        if number == 1 and wire_type == _BYTES and isinstance(value, bytes):
            hash_ = value
        elif number == 2 and wire_type == _BYTES and isinstance(value, bytes):
            try:
                name = value.decode()
            except UnicodeDecodeError:
                raise DagPbError("a PBLink name is not UTF-8") from None
        elif number == 3 and wire_type == _VARINT and isinstance(value, int):
            tsize = value
        else:
            raise DagPbError(f"unexpected field {number} (wire type {wire_type}) in a PBLink")
    if hash_ is None:
        raise DagPbError("a PBLink has no Hash")
    return PbLink(hash_, name, tsize)


def decode_unixfs(buf: bytes) -> UnixFsData:
    kind: int | None = None
    data = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for number, _wire_type, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            kind = value
        elif number == 2 and isinstance(value, bytes):
            data = value
        elif number == 3 and isinstance(value, int):
            filesize = value
        elif number == 4 and isinstance(value, int):
            blocksizes.append(value)
        elif number == 4 and isinstance(value, bytes):  # packed repeated
            pos = 0
            while pos < len(value):
                size, pos = read_varint(value, pos)
                blocksizes.append(size)
        # other fields (hashType, fanout, mode, mtime) do not matter for file bytes
    if kind is None:
        raise DagPbError("UnixFS data has no Type")
    return UnixFsData(kind, data, filesize, tuple(blocksizes))
