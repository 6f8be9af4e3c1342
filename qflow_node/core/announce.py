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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from qflow_node.codec import CID

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
