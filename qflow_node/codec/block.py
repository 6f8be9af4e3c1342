"""Blocks: bytes named by their CID, dag-cbor for structure and raw for opaque bytes.

Decoding is strict: input must be canonical DAG-CBOR (minimal ints, sorted map keys,
64-bit floats, no indefinite lengths, only tag 42), within the size cap and nesting limit,
links must be CIDs Qflow accepts, and a block's bytes must hash to its CID. Every refusal
is a `CodecError` subclass naming the reason. Encoding applies the same link and nesting
rules, so a node never produces a block that its peers would refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import cbrrr

from qflow_node.codec.cid import CID, CODEC_NAMES, DAG_CBOR, RAW, CidError, check_cid, cid_for

# Bitswap peers refuse blocks over 2 MiB; 1 MiB is the conventional safe maximum.
MAX_BLOCK_SIZE: Final = 1 << 20
# cbrrr decodes iteratively and would accept a 1 MiB block nested a million levels deep;
# recursive consumers (==, repr, json, schema validation) would then blow the stack.
# 128 is the recursion limit serde-based IPLD decoders use; Qflow objects nest < 10.
MAX_DEPTH: Final = 128


class CodecError(ValueError):
    """Bytes that are not an acceptable block."""


class OversizeError(CodecError):
    pass


class NonCanonicalError(CodecError):
    pass


class UnknownCodecError(CodecError):
    pass


class HashMismatchError(CodecError):
    pass


class UnencodableError(CodecError):
    pass


@dataclass(frozen=True, slots=True)
class Block:
    cid: CID
    data: bytes

    @property
    def codec(self) -> int:
        return int(self.cid.cid_bytes[1])


def encode_dag(obj: Any) -> bytes:
    """Canonical DAG-CBOR bytes of `obj` (dict/list/str/bytes/int/float/bool/None/CID)."""
    problem = _check_tree(obj, MAX_DEPTH)
    if problem is not None:
        raise UnencodableError(f"cannot encode as dag-cbor: {problem}")
    try:
        return bytes(cbrrr.encode_dag_cbor(obj))
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnencodableError(f"cannot encode as dag-cbor: {exc}") from None


def dag_block(obj: Any) -> Block:
    data = encode_dag(obj)
    return Block(cid_for(data, DAG_CBOR), data)


def raw_block(data: bytes) -> Block:
    return Block(cid_for(data, RAW), bytes(data))


def decode_dag(data: bytes, *, max_size: int = MAX_BLOCK_SIZE) -> Any:
    """Decode canonical DAG-CBOR; anything else raises a CodecError naming the problem."""
    if len(data) > max_size:
        raise OversizeError(f"dag-cbor block of {len(data)} bytes exceeds the {max_size}-byte cap")
    try:
        obj = cbrrr.decode_dag_cbor(data)
    except RecursionError:
        raise NonCanonicalError("dag-cbor nesting too deep") from None
    except UnicodeDecodeError as exc:
        raise NonCanonicalError(f"invalid dag-cbor: string is not UTF-8 ({exc.reason})") from None
    except (cbrrr.CbrrrDecodeError, ValueError, TypeError) as exc:
        raise NonCanonicalError(f"invalid or non-canonical dag-cbor: {exc}") from None
    problem = _check_tree(obj, MAX_DEPTH)
    if problem is not None:
        raise NonCanonicalError(f"invalid dag-cbor: {problem}")
    return obj


def verify_block(cid: CID, data: bytes) -> None:
    """Raise unless `data` hashes to `cid` under its codec."""
    try:
        codec = check_cid(cid).cid_bytes[1]
    except CidError as exc:
        raise UnknownCodecError(str(exc)) from None
    if cid_for(data, codec) != cid:
        raise HashMismatchError(f"block bytes do not hash to {cid.encode()}")


def decode_block(cid: CID, data: bytes, *, max_size: int = MAX_BLOCK_SIZE) -> Any:
    """Verify `data` against `cid`, then decode it: dag-cbor → object, raw → bytes."""
    if len(data) > max_size:
        raise OversizeError(f"block {cid.encode()} of {len(data)} bytes exceeds {max_size}")
    verify_block(cid, data)
    if cid.cid_bytes[1] == RAW:
        return data
    return decode_dag(data, max_size=max_size)


def iter_links(obj: Any) -> Iterator[CID]:
    """Every CID inside a decoded dag-cbor object, depth-first in encoding order."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, CID):
            yield item
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _check_tree(obj: Any, max_depth: int) -> str | None:
    """Why `obj` is not an acceptable dag-cbor tree (a bad link, too deep), or None.

    Breadth-first, one level at a time: no recursion, so hostile nesting cannot exhaust
    the stack, and cheap enough (~2 µs for a ledger record) for every encode and decode.
    """
    level: list[Any] = [obj]
    depth = 0  # how many lists/maps enclose the items of `level`
    while level:
        next_level: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children: Any = item.values()
            elif isinstance(item, list):
                children = item
            else:
                if isinstance(item, CID):
                    try:
                        check_cid(item)
                    except CidError as exc:
                        return f"invalid link: {exc}"
                continue
            if depth >= max_depth:
                return f"nesting deeper than {max_depth} levels of lists and maps"
            next_level.extend(children)
        level = next_level
        depth += 1
    return None


def codec_name(codec: int) -> str:
    return CODEC_NAMES.get(codec, f"0x{codec:02x}")
