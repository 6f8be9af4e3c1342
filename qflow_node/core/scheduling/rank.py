"""Slots and rendezvous ranking: who should run a unit of work, in which order.

A *slot* is one unit of work every replica agrees on: a step instance's attempt, or
the execution-level writes (`$start`, `$finish`). Its candidates are ordered by
rendezvous (highest-random-weight) hashing: each node scores the slot on its own, the
highest score ranks first. Removing a node never reorders the others, so when a node
dies only the slots it ranked first for move, each to its runner-up — failover costs
nothing to agree on. Scores need no membership view at all, which also makes them the
view-independent order used to settle conflicting claims (see `claims`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from qflow_node.codec.cid import CID
from qflow_node.codec.envelope_bodies import MAX_STEP_LEN

START: Final = "$start"  # the slot that writes `exec.started`
FINISH: Final = "$finish"  # the slot that writes `exec.completed` / `exec.failed`
RESERVED: Final = frozenset({START, FINISH})

MAX_ATTEMPT: Final = 2**32 - 1  # the wire's `attempt` is a u32
RANK_DOMAIN: Final = b"qflow/rank/v1\x00"


@dataclass(frozen=True, slots=True)
class Slot:
    """One unit of work: step instance (or reserved name) `name`, try `attempt`, of `exec`."""

    exec: CID
    name: str
    attempt: int = 0

    def __post_init__(self) -> None:
        # NUL separates the hashed fields; forbidding it keeps the encoding unambiguous.
        if not 0 < len(self.name) <= MAX_STEP_LEN or "\x00" in self.name:
            raise ValueError(f"slot name must be 1-{MAX_STEP_LEN} characters without NUL")
        if not 0 <= self.attempt <= MAX_ATTEMPT:
            raise ValueError(f"attempt must be 0..{MAX_ATTEMPT}, got {self.attempt}")


@functools.lru_cache(maxsize=1 << 16)
def score(slot: Slot, node: str) -> bytes:
    """The node's rendezvous weight for the slot (32 bytes; higher ranks first).
    Memoized: every replica asks for the same few slots' scores on every decision and
    every claim comparison, and a SHA-256 each time was a measurable share of the
    scheduling CPU under load."""
    if "\x00" in node:
        raise ValueError("node ids contain no NUL")
    return hashlib.sha256(
        RANK_DOMAIN
        + node.encode()
        + b"\x00"
        + slot.exec.cid_bytes
        + b"\x00"
        + slot.name.encode()
        + b"\x00"
        + slot.attempt.to_bytes(4, "big")
    ).digest()


def precedence(slot: Slot, node: str) -> tuple[int, str]:
    """Sort key: smaller goes first (score descending, then node id on a tie)."""
    return -int.from_bytes(score(slot, node), "big"), node


def ranking(slot: Slot, nodes: Iterable[str]) -> tuple[str, ...]:
    """`nodes` (duplicates dropped) from the slot's first choice to its last."""
    return _ranking(slot, frozenset(nodes))


@functools.lru_cache(maxsize=4096)
def _ranking(slot: Slot, nodes: frozenset[str]) -> tuple[str, ...]:
    # Every node re-ranks each due slot whenever it hears of its execution: a few hashes
    # per node each time, for the same answer.
    return tuple(sorted(nodes, key=lambda node: precedence(slot, node)))


def rank_of(slot: Slot, node: str, nodes: Iterable[str]) -> int | None:
    """The node's position in the ranking of `nodes`, None if it is not among them."""
    order = ranking(slot, nodes)
    return order.index(node) if node in order else None
