"""Which executions' heads to announce in a round of anti-entropy (Trickle, RFC 6206,
counted in rounds instead of time).

Announcing every active execution every round costs O(executions) messages per round on
every node, most of them telling peers what the record gossip already told them. Here:

* a head set seen for the first time is announced at once;
* a head set that changed is announced once it has stayed the same for a round, and
  not sooner than the unchanged one would have been - an execution in progress is
  carried by its record gossip, and a peer that missed a record gets it with the next
  one (fetching a record walks its links); what anti-entropy must cover is the last
  record before a pause;
* the same execution is announced again after 1, 2, 4, ... rounds, at most
  `max_backoff` rounds apart, whether or not its heads moved meanwhile;
* hearing a peer announce *different* heads for an execution (it is behind, or we are)
  makes ours due at once again, so a node back from a crash or a partition catches up
  within a round of announcing itself.

The due head sets of a round travel together: `pack` puts them into as few `heads`
bodies as the per-envelope caps allow (one signature and one gossip message for many
executions, where one per execution made anti-entropy a third of all gossip).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from qflow_node.codec import CID
from qflow_node.codec.envelope_bodies import MAX_HEADS_ENTRIES, Heads, HeadsEntry

MAX_BACKOFF: Final = 16  # rounds between announcements of an unchanged head set, at most


@dataclass(slots=True)
class _Beat:
    heads: frozenset[CID]
    due: int  # the round it is announced in
    backoff: int  # rounds to the next announcement after that


class AnnouncePlan:
    def __init__(self, max_backoff: int = MAX_BACKOFF) -> None:
        if max_backoff < 1:
            raise ValueError("max_backoff must be >= 1")
        self.max_backoff = max_backoff
        self._beats: dict[CID, _Beat] = {}

    def due(
        self, round_: int, active: Iterable[tuple[CID, tuple[CID, ...]]]
    ) -> list[tuple[CID, tuple[CID, ...]]]:
        """Of the `active` (execution, heads) this round, the ones to announce now.
        Executions no longer active are forgotten (seen again, they count as new)."""
        beats: dict[CID, _Beat] = {}
        chosen = []
        for exec, heads in active:
            current = frozenset(heads)
            beat = self._beats.get(exec)
            if beat is None:
                beat = _Beat(current, round_, 1)
            elif beat.heads != current:  # progress: once it stays so for a round
                beat = _Beat(current, max(beat.due, round_ + 1), beat.backoff)
            beats[exec] = beat
            if round_ >= beat.due:
                chosen.append((exec, heads))
                beat.due = round_ + beat.backoff
                beat.backoff = min(beat.backoff * 2, self.max_backoff)
        self._beats = beats
        return chosen

    def heard(self, exec: CID, heads: Iterable[CID], round_: int) -> None:
        """A peer announced `heads` for `exec`: if ours differ, ours are due now."""
        beat = self._beats.get(exec)
        if beat is not None and beat.heads != frozenset(heads):
            beat.due = round_
            beat.backoff = 1


# DAG-CBOR sizes, upper bounds: a link is tag 42 (2 bytes), a byte-string header (2 for
# the CIDs in use, < 256 bytes) and the 0x00 multibase prefix; an entry adds its map
# header, the keys "exec" and "heads" and the array header; a body its map header, the
# key "entries" and the array header.
_LINK_OVERHEAD: Final = 5
_ENTRY_OVERHEAD: Final = 1 + 5 + 6 + 3
_BODY_OVERHEAD: Final = 1 + 8 + 3


def entry_size(entry: HeadsEntry) -> int:
    """An upper bound on the encoded size of `entry` (cheap: no encoding)."""
    links = len(entry.heads) + 1
    cid_bytes = len(entry.exec.cid_bytes) + sum(len(h.cid_bytes) for h in entry.heads)
    return _ENTRY_OVERHEAD + links * _LINK_OVERHEAD + cid_bytes


def pack(
    heads: Iterable[tuple[CID, Iterable[CID]]],
    *,
    max_bytes: int,
    max_entries: int = MAX_HEADS_ENTRIES,
) -> list[Heads]:
    """(execution, heads) pairs as `heads` bodies of at most `max_entries` entries and
    `max_bytes` encoded bytes each, entries in canonical order (by raw exec CID bytes).
    An entry bigger than `max_bytes` alone goes in a body of its own."""
    if max_entries < 1 or max_entries > MAX_HEADS_ENTRIES:
        raise ValueError(f"max_entries must be in [1, {MAX_HEADS_ENTRIES}]")
    entries = sorted(
        (HeadsEntry(exec, tuple(sorted(set(hs), key=_raw))) for exec, hs in heads),
        key=lambda entry: entry.exec.cid_bytes,
    )
    bodies: list[Heads] = []
    batch: list[HeadsEntry] = []
    size = _BODY_OVERHEAD
    for entry in entries:
        grown = size + entry_size(entry)
        if batch and (len(batch) == max_entries or grown > max_bytes):
            bodies.append(Heads(tuple(batch)))
            batch, grown = [], _BODY_OVERHEAD + entry_size(entry)
        batch.append(entry)
        size = grown
    if batch:
        bodies.append(Heads(tuple(batch)))
    return bodies


def _raw(cid: CID) -> bytes:
    return cid.cid_bytes
