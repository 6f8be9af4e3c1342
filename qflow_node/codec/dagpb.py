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

from dataclasses import dataclass
from typing import Final

from qflow_node.codec.block import CodecError
from qflow_node.codec.cid import CID
from qflow_node.codec.protobuf import (
    LEN,
    VARINT,
    Field,
    ProtoError,
    fields,
    put_varint,
    read_varint,
)

DAG_PB: Final = 0x70
_SHA2_256: Final = 0x12
_DIGEST_LEN: Final = 32
_V0_MULTIHASH: Final = bytes([_SHA2_256, _DIGEST_LEN])
UNIXFS_RAW: Final = 0
UNIXFS_FILE: Final = 2


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
    version, pos = _varint(raw, 0)
    codec, pos = _varint(raw, pos)
    hash_code, pos = _varint(raw, pos)
    length, pos = _varint(raw, pos)
    if version != 1 or hash_code != _SHA2_256 or length != _DIGEST_LEN:
        raise DagPbError("only CIDv0/CIDv1 with a sha2-256 multihash are supported")
    if len(raw) - pos != _DIGEST_LEN:
        raise DagPbError("CID digest length does not match its multihash header")
    return cid_with_codec(codec, raw[pos:])


def cid_with_codec(codec: int, digest: bytes) -> CID:
    """CIDv1 with a sha2-256 `digest` under any codec, canonically encoded."""
    return CID(b"\x01" + put_varint(codec) + _V0_MULTIHASH + digest)


def is_v0(raw: bytes) -> bool:
    return len(raw) == 2 + _DIGEST_LEN and raw[:2] == _V0_MULTIHASH


def _fields(buf: bytes) -> list[Field]:
    try:
        found = fields(buf)
    except ProtoError as exc:
        raise DagPbError(str(exc)) from None
    for number, wire_type, _ in found:
        if wire_type not in (VARINT, LEN):
            raise DagPbError(f"field {number} has wire type {wire_type}; dag-pb uses 0 and 2")
    return found


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_varint(buf, pos)
    except ProtoError as exc:
        raise DagPbError(str(exc)) from None


def decode_node(buf: bytes) -> PbNode:
    data: bytes | None = None
    links: list[PbLink] = []
    for number, wire_type, value in _fields(buf):
        if number == 1 and wire_type == LEN and isinstance(value, bytes):
            data = value
        elif number == 2 and wire_type == LEN and isinstance(value, bytes):
            links.append(_decode_link(value))
        else:
            raise DagPbError(f"unexpected field {number} (wire type {wire_type}) in a PBNode")
    return PbNode(data, tuple(links))


def _decode_link(buf: bytes) -> PbLink:
    hash_: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    for number, wire_type, value in _fields(buf):
        if number == 1 and wire_type == LEN and isinstance(value, bytes):
            hash_ = value
        elif number == 2 and wire_type == LEN and isinstance(value, bytes):
            try:
                name = value.decode()
            except UnicodeDecodeError:
                raise DagPbError("a PBLink name is not UTF-8") from None
        elif number == 3 and wire_type == VARINT and isinstance(value, int):
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
                size, pos = _varint(value, pos)
                blocksizes.append(size)
        # other fields (hashType, fanout, mode, mtime) do not matter for file bytes
    if kind is None:
        raise DagPbError("UnixFS data has no Type")
    return UnixFsData(kind, data, filesize, tuple(blocksizes))
