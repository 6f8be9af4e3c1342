"""Fetching a peer's records and merging them into the ledger: one way, for records
heard in announcements (`ExecService`) and heads caught up by anti-entropy
(`HeadsService`)."""

from __future__ import annotations

from collections.abc import Sequence

from qflow_node import offload
from qflow_node.codec import CID
from qflow_node.core.ledger import Reason, VerifyReport
from qflow_node.ledger_store import LedgerStore
from qflow_node.store.service import BlockService, DagFetch


async def fetch_and_merge(
    blocks: BlockService,
    ledger: LedgerStore,
    exec: CID,
    heads: Sequence[CID],
    *,
    peers: Sequence[str],
    within: float,
) -> tuple[VerifyReport, DagFetch]:
    """Fetch the DAGs of `heads` from `peers` and merge them into `exec`'s ledger.

    The first fetch trusts blocks already present to come with their DAG. When the merge
    still finds a block missing (an earlier fetch cut short; a record that came inline
    without its payload), the DAG is walked again in full, once. StoreError if a fetch
    fails."""
    for trust_present in (True, False):
        fetched = await blocks.fetch_dag(
            heads, peers=peers, within=within, skip_present=trust_present
        )
        report = await offload.run_sync(ledger.merge, exec, heads)
        if not (trust_present and missing_block(report)):
            break
    return report, fetched


def missing_block(report: VerifyReport) -> bool:
    """Whether a merge was refused only for a block this node lacks (fetch, then retry)."""
    return report.failure is not None and report.failure.reason == Reason.MISSING_BLOCK
