"""Rejections: telling a submitter why its submission was refused (docs/protocol.md,
"Rejections"). Pure: members, times and the refusal are arguments.

Every node that hears a submission checks it on its own; when it refuses one, the
submitter hears nothing unless someone says so. One node says so - the first, by
rendezvous over the pseudo-slot `(exec, "$reject", 0)`, among the subnet's alive nodes
other than the sender - with a signed `rejection` envelope on the `flows` topic. The
others only log: N nodes would otherwise send N copies, and a hostile submitter could
make the subnet amplify each of its messages N-fold.

Only refusals that are facts about the submission's blocks are published - every honest
node that holds those blocks refuses them the same way. A node that merely failed to
fetch a block, or heard a submission on the wrong subnet, says nothing: another node may
well run that execution.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from qflow_node.codec import CID, DAG_CBOR
from qflow_node.codec.envelope_bodies import MAX_REJECTION_MESSAGE
from qflow_node.core.scheduling.rank import Slot, ranking

REJECT_SLOT: Final = "$reject"  # the pseudo-slot whose rank 0 publishes the rejection
# Refusals every node holding the blocks reaches alike (docs/submission.md reason codes,
# plus the runtime's `bad_inputs`). Not `hash_mismatch` (the bytes are not the block the
# exec id names, so the refusal says nothing about that execution), not `missing` (a
# fetch that failed here), not `wrong_subnet` (misrouted, maybe valid where it belongs).
DEFINITIVE: Final = frozenset(
    {"not_dag_cbor", "wrong_format", "bad_field", "bad_signature", "bad_inputs"}
)
# `unusable` (the flow does not compile, the inputs are not JSON) is definitive only
# when both blocks were here: otherwise a block may just not have arrived.
UNUSABLE: Final = "unusable"
REPEAT_MS: Final = 30_000  # the same execution is rejected again only after this long
MAX_KEPT: Final = 1_000  # rejections a node remembers (the newest)
# A node publishes at most PER_S rejections a second, in bursts of BURST (a token
# bucket): a flood of invalid submissions must not become a flood of rejections.
BURST: Final = 20
PER_S: Final = 10.0
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class KnownRejection:
    """A rejection this node made (`by` is itself) or heard."""

    reason: str
    message: str
    by: str  # peer id of the node that refused the submission
    at_ms: int = 0  # when this node learned it (wall clock, ms; the runtime's)

    def as_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "by": self.by}


def definitive(reason: str, *, blocks_here: bool) -> bool:
    """Whether refusing a submission for `reason` holds for every node: worth telling.
    `blocks_here`: the submission's flow and inputs blocks were in the store."""
    if reason == UNUSABLE:
        return blocks_here
    return reason in DEFINITIVE


def publisher(exec: CID, *, sender: str, nodes: Iterable[str]) -> str | None:
    """The node that publishes the rejection of `exec`: the first by rendezvous among
    `nodes` (the subnet's alive nodes, the deciding node included) without `sender`,
    who sent the submission and must know. None if nobody is left."""
    order = ranking(Slot(exec, REJECT_SLOT, 0), (n for n in nodes if n != sender))
    return order[0] if order else None


def why_not_publish(
    exec: CID,
    reason: str,
    *,
    me: str,
    sender: str,
    nodes: Iterable[str],
    blocks_here: bool,
    last_ms: int | None,
    now_ms: int,
) -> str | None:
    """None if this node (`me`) should publish the rejection of `exec` now, else why
    not. `last_ms`: when this node last sent or heard a rejection of `exec` (None:
    never), so a submitter resending its submission is answered again, but not at once."""
    if exec.cid_bytes[1] != DAG_CBOR:
        return "exec is not a dag-cbor CID"
    if not definitive(reason, blocks_here=blocks_here):
        return f"{reason} is not a fact about the submission"
    first = publisher(exec, sender=sender, nodes=[me, *nodes])
    if first != me:
        return f"{first} publishes it"
    if last_ms is not None and now_ms - last_ms < REPEAT_MS:
        return "rejected less than 30 s ago"
    return None


def rejection_message(text: str, fallback: str) -> str:
    """`text` fit for a rejection: on one line (whitespace runs as one space), other
    control characters as `?`, at most MAX_REJECTION_MESSAGE characters (cut with
    `…`), `fallback` if nothing is left."""
    clean = _CONTROL.sub("?", " ".join(text.split())) or fallback
    if len(clean) > MAX_REJECTION_MESSAGE:
        clean = clean[: MAX_REJECTION_MESSAGE - 1] + "…"
    return clean
