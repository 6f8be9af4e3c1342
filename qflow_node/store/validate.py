"""The checks every store runs before accepting a block."""

from __future__ import annotations

from qflow_node.codec import CID, Block, CidError, check_cid, cid_for
from qflow_node.store.errors import BlockTooLargeError, InvalidBlockError


def is_storable(cid: CID) -> bool:
    """Whether a block could ever be stored under `cid` (CIDv1, sha2-256, dag-cbor or raw)."""
    try:
        check_cid(cid)
    except CidError:
        return False
    return True


def check_block(block: Block, max_size: int) -> None:
    """Refuse a block whose CID is unsupported, that is too large, or whose bytes lie."""
    try:
        check_cid(block.cid)
    except CidError as exc:
        raise InvalidBlockError(f"refusing block: {exc}") from None
    if len(block.data) > max_size:
        raise BlockTooLargeError(block.cid, len(block.data), max_size)
    actual = cid_for(block.data, block.codec)
    if actual != block.cid:
        raise InvalidBlockError(
            f"refusing block {block.cid.encode()}: its bytes hash to {actual.encode()}"
        )


def corruption(cid: CID, data: bytes, max_size: int) -> str | None:
    """Why stored bytes cannot be the block `cid`, or None if they are."""
    if len(data) > max_size:
        return f"file is larger than the {max_size}-byte block size limit"
    actual = cid_for(data, cid.cid_bytes[1])
    if actual != cid:
        return f"its {len(data)} bytes hash to {actual.encode()}"
    return None
