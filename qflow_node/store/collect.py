"""The mark phase of garbage collection, shared by every store.

Live = every direct pin, plus everything reachable from a recursive pin by following the
IPLD links of dag-cbor blocks (raw blocks are leaves). A block the walk needs but cannot
use (missing, corrupt, not decodable) is reported as a `GcProblem`; the walk goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from qflow_node.codec import CID, DAG_CBOR, CodecError, cid_codec, decode_dag, iter_links
from qflow_node.store.errors import BlockNotFoundError, CorruptBlockError
from qflow_node.store.model import GcProblem, PinMode, ProblemKind


def mark_live(
    pins: Mapping[CID, PinMode],
    has: Callable[[CID], bool],
    get: Callable[[CID], bytes],
    *,
    max_block_size: int,
) -> tuple[set[CID], list[GcProblem]]:
    """The set of blocks gc must keep, and the problems found on the way."""
    live: set[CID] = set()
    problems: list[GcProblem] = []
    reported: set[CID] = set()

    def report(root: CID, cid: CID, kind: ProblemKind, detail: str) -> None:
        if cid not in reported:
            reported.add(cid)
            problems.append(GcProblem(root, cid, kind, detail))

    # Sorted so the report is the same on every run and every node.
    roots = sorted(pins, key=lambda c: c.cid_bytes)
    visited: set[CID] = set()  # blocks whose links were already followed (or tried)
    for root in (r for r in roots if pins[r] is PinMode.RECURSIVE):
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid in visited:
                continue
            visited.add(cid)
            if cid_codec(cid) != DAG_CBOR:
                if has(cid):
                    live.add(cid)
                else:
                    report(root, cid, "missing", "not in the store")
                continue
            try:
                data = get(cid)
            except BlockNotFoundError:
                report(root, cid, "missing", "not in the store")
                continue
            except CorruptBlockError as exc:
                report(root, cid, "corrupt", str(exc))
                continue
            live.add(cid)
            try:
                obj = decode_dag(data, max_size=max_block_size)
            except CodecError as exc:
                report(root, cid, "undecodable", f"links not followed: {exc}")
                continue
            # Reversed so the walk visits links depth-first in encoding order.
            stack.extend(reversed(list(iter_links(obj))))
    for root in (r for r in roots if pins[r] is PinMode.DIRECT):
        if root in live:
            continue
        if has(root):
            live.add(root)
        else:
            report(root, root, "missing", "not in the store")
    return live, problems
