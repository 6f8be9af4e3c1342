"""`debug.partition`: cut this node off from some peers (tests and chaos scenarios only;
served only when `[debug] partition_api = true` - never on a production node).
`debug.tasks`: where each trio task of the node waits (always served; read-only)."""

from __future__ import annotations

from typing import Any

from libp2p.peer.id import ID

from qflow_node.api.errors import BAD_REQUEST, ApiError
from qflow_node.api.params import expect
from qflow_node.api.server import Handler
from qflow_node.net.partition import Partition
from qflow_node.runtime.task_dump import task_tree


def debug_methods(partition: Partition) -> dict[str, Handler]:
    async def set_partition(params: dict[str, Any]) -> dict[str, Any]:
        expect(params, "debug.partition", "block")
        peers = params.get("block")
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise ApiError(BAD_REQUEST, "params.block must be a list of peer ids")
        try:
            blocked = frozenset(ID.from_base58(p) for p in peers)
        except ValueError as exc:
            raise ApiError(BAD_REQUEST, f"params.block: not a peer id: {exc}") from None
        await partition.block(blocked)
        return {"blocked": sorted(p.to_base58() for p in blocked)}

    return {"debug.partition": set_partition}


def task_methods() -> dict[str, Handler]:
    """`debug.tasks`: where every trio task waits (a live node's hang, diagnosed)."""

    async def tasks(params: dict[str, Any]) -> dict[str, Any]:
        expect(params, "debug.tasks")
        return {"tasks": task_tree()}

    return {"debug.tasks": tasks}
