"""Opening what a local run needs from a repo: store, ledger, node key, sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict, Unpack

from qflow_node.codec import CID, decode_dag
from qflow_node.core.flow import FlowIR, walk
from qflow_node.identity.store import load_node_key
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime.local import Clock, Inbox, LocalRunner, Progress, Sleep
from qflow_node.sandbox import Sandbox, SubnetPolicy
from qflow_node.store import BlockStore, FileBlockStore


def flow_modules(store: BlockStore, ir: FlowIR, *, depth: int = 0) -> frozenset[CID]:
    """The wasm modules a flow and its sub-flows run: the local run's module whitelist."""
    found: set[CID] = set()
    for step in walk(ir["steps"]):
        if step["kind"] == "run":
            found.add(step["module"])
        elif step["kind"] == "flow" and depth < 16:
            sub = decode_dag(store.get(step["flow"]))
            found |= flow_modules(store, sub, depth=depth + 1)
    return frozenset(found)


class RunnerOptions(TypedDict, total=False):
    """The keyword options of `LocalRunner` (all optional)."""

    clock: Clock
    sleep: Sleep
    inbox: Inbox | None
    max_wait_ms: int | None
    on_event: Progress | None


@contextmanager
def local_runner(repo: Path, ir: FlowIR, **options: Unpack[RunnerOptions]) -> Iterator[LocalRunner]:
    paths = RepoPaths(repo)
    store = FileBlockStore(paths.blocks)
    ledger = LedgerStore(store, paths)
    key = load_node_key(paths)
    policy = SubnetPolicy(allowed_modules=flow_modules(store, ir))
    with (
        Sandbox(store, policy=policy) as sandbox,
        LocalRunner(
            store,
            ledger,
            sandbox,
            key,
            **options,
        ) as runner,
    ):
        yield runner
