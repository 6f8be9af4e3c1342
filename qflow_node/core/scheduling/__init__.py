"""Who runs which step, and when: pure scheduling decisions (docs/protocol.md, "Claims and leases").

- `rank`: slots and their rendezvous ranking over eligible nodes;
- `claims`: the claims a replica has heard and who holds a slot at a given time;
- `decide`: claim now, wait, hold or leave, from the ranking, the claims and the clock;
- `admission`: the token bucket that makes a busy node decline;
- `lanes`: priority lanes (Δ per lane) and re-announcement backoff.
"""

from qflow_node.core.scheduling.admission import TokenBucket
from qflow_node.core.scheduling.claims import (
    DEFAULT_LEASE_MS,
    MAX_CLAIMS_PER_SLOT,
    Claim,
    ClaimBook,
)
from qflow_node.core.scheduling.decide import (
    DEFAULT_DELTA_MS,
    ClaimNow,
    Decision,
    Hold,
    Leave,
    LeaveReason,
    WaitUntil,
    decide,
    turn_order,
)
from qflow_node.core.scheduling.lanes import (
    MIN_DELTA_MS,
    PRIORITIES,
    Priority,
    delta_for,
    reannounce_delay_ms,
)
from qflow_node.core.scheduling.rank import (
    FINISH,
    RESERVED,
    START,
    Slot,
    precedence,
    rank_of,
    ranking,
    score,
)

__all__ = [
    "DEFAULT_DELTA_MS",
    "DEFAULT_LEASE_MS",
    "FINISH",
    "MAX_CLAIMS_PER_SLOT",
    "MIN_DELTA_MS",
    "PRIORITIES",
    "RESERVED",
    "START",
    "Claim",
    "ClaimBook",
    "ClaimNow",
    "Decision",
    "Hold",
    "Leave",
    "LeaveReason",
    "Priority",
    "Slot",
    "TokenBucket",
    "WaitUntil",
    "decide",
    "delta_for",
    "precedence",
    "rank_of",
    "ranking",
    "reannounce_delay_ms",
    "score",
    "turn_order",
]
