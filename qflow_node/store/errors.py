"""Errors of the block store. Every one is a `StoreError`, so callers can catch one type."""

from __future__ import annotations

from pathlib import Path

from qflow_node.codec import CID


class StoreError(Exception):
    """Something the block store refused or could not do."""


class StoreNotFoundError(StoreError):
    """The store's root directory does not exist (the repo was never initialised)."""


class BlockNotFoundError(StoreError, LookupError):
    def __init__(self, cid: CID) -> None:
        super().__init__(f"block {cid.encode()} not found")
        self.cid = cid


class InvalidBlockError(StoreError, ValueError):
    """A block refused on put: its bytes do not hash to its CID, or its CID is unsupported."""


class BlockTooLargeError(InvalidBlockError):
    def __init__(self, cid: CID, size: int, limit: int) -> None:
        super().__init__(
            f"block {cid.encode()} of {size} bytes exceeds the {limit}-byte block size limit"
        )
        self.cid = cid
        self.size = size
        self.limit = limit


class CorruptBlockError(StoreError):
    """A stored file whose bytes do not hash to its CID. It is never returned."""

    def __init__(self, cid: CID, path: Path, reason: str, quarantined: Path | None) -> None:
        where = f"; moved to {quarantined}" if quarantined is not None else ""
        super().__init__(f"block {cid.encode()} at {path} is corrupt: {reason}{where}")
        self.cid = cid
        self.path = path
        self.reason = reason
        self.quarantined = quarantined


class PinnedBlockError(StoreError):
    """delete() of a block that is a pin root: unpin it first."""

    def __init__(self, cid: CID) -> None:
        super().__init__(f"block {cid.encode()} is pinned; unpin it before deleting it")
        self.cid = cid


class BlockUnavailableError(StoreError, LookupError):
    """Blocks the network did not deliver. `missing`: CID -> why (`timeout`, `dont_have`:
    every asked peer said it has none, `no_peers`: nobody to ask)."""

    def __init__(self, missing: dict[CID, str]) -> None:
        shown = ", ".join(f"{cid.encode()} ({why})" for cid, why in list(missing.items())[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        super().__init__(f"blocks not available from peers: {shown}{more}")
        self.missing = missing
