"""Where `FileBlockStore` keeps things inside its root directory (`<repo>/blocks`).

    ROOT/packs/<time_ns>-<pid>.pack   blocks appended by one process (`packs.py`)
    ROOT/<shard>/<cid>            one block per file, in repos from before packs (read,
                                  deleted and collected, never written any more)
    ROOT/pins/<cid>               one pin; content `recursive` or `direct`
    ROOT/quarantine/<cid>.<ns>    corrupt block files moved aside by verify-on-read
    <dir>/.<name>.<random>.tmp    an unfinished atomic write; ignored, cleaned when stale

<shard> is the two characters before the last one of the CID string, like Kubo's flatfs
`next-to-last/2`. Those characters come from the sha2-256 digest, so blocks spread
evenly over at most 32² = 1024 directories (the last character is not used because it
carries only 3 bits of the digest).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qflow_node.codec import CID, CidError, parse_cid

PINS_DIR: Final = "pins"
QUARANTINE_DIR: Final = "quarantine"
_BASE32: Final = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def shard_of(name: str) -> str:
    return name[-3:-1]


def is_temp(name: str) -> bool:
    """A leftover of `atomic_write` (`.<target>.<random>.tmp`)."""
    return name.startswith(".") and name.endswith(".tmp")


def parse_name(name: str) -> CID | None:
    """The CID a file in a shard or in `pins/` is named after, or None for foreign files."""
    if name.startswith("."):
        return None
    try:
        cid = parse_cid(name)
    except CidError:
        return None
    # Only the canonical spelling: anything else would never be found by its CID.
    return cid if cid.encode() == name else None


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def pins(self) -> Path:
        return self.root / PINS_DIR

    @property
    def quarantine(self) -> Path:
        return self.root / QUARANTINE_DIR

    def block_path(self, name: str) -> Path:
        return self.root / shard_of(name) / name

    def pin_path(self, name: str) -> Path:
        return self.pins / name

    def shard_dirs(self) -> list[Path]:
        with os.scandir(self.root) as entries:
            return sorted(
                Path(e.path)
                for e in entries
                if len(e.name) == 2 and set(e.name) <= _BASE32 and e.is_dir(follow_symlinks=False)
            )

    def iter_blocks(self, shard: Path) -> Iterator[tuple[CID, os.DirEntry[str]]]:
        """The blocks of one shard dir, skipping temp and foreign files."""
        try:
            with os.scandir(shard) as it:
                entries = list(it)  # don't hold the directory open across yields
        except FileNotFoundError:
            return
        for entry in entries:
            cid = parse_name(entry.name)
            if cid is not None and shard_of(entry.name) == shard.name:
                yield cid, entry
