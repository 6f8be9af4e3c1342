"""Plain values the block store returns: block stats, pin modes, gc reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from qflow_node.codec import CID
from qflow_node.codec.block import codec_name


class PinMode(enum.StrEnum):
    DIRECT = "direct"  # keeps the block itself
    RECURSIVE = "recursive"  # keeps the block and everything its IPLD links reach


@dataclass(frozen=True, slots=True)
class BlockStat:
    cid: CID
    size: int
    codec: int

    @property
    def codec_name(self) -> str:
        return codec_name(self.codec)


ProblemKind = Literal["missing", "corrupt", "undecodable"]


@dataclass(frozen=True, slots=True)
class GcProblem:
    """A block a pin needs that gc could not keep or follow: reported, never fatal."""

    root: CID  # the pin whose DAG contains the block
    cid: CID
    kind: ProblemKind
    detail: str

    def __str__(self) -> str:
        via = self.root.encode()
        return f"{self.kind} block {self.cid.encode()} (pinned via {via}): {self.detail}"


@dataclass(frozen=True, slots=True)
class GcReport:
    removed: int  # blocks deleted
    freed_bytes: int
    live: int  # blocks kept because a pin reaches them
    problems: tuple[GcProblem, ...] = ()

    @property
    def missing(self) -> tuple[CID, ...]:
        return tuple(p.cid for p in self.problems if p.kind == "missing")
