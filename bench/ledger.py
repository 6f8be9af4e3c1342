"""Execution ledger benchmark: build a long ledger, verify it, print records/s.

    .venv/bin/python bench/ledger.py [--records 100000] [--disk-records 10000]

Figures (all single process unless said otherwise):
  build             new_record: clock, field checks, encode, Ed25519 sign
  hash-chain only   verify_execution(chain_only=True): every block hashed, decoded
                    strictly, its `exec` compared and its `prev` links followed
  records, no sigs  verify_execution(signatures=False): also every field checked, clocks
                    checked, replay order computed
  full, 1 process   the same plus every Ed25519 signature, inline
  full, N processes signatures batched through a ParallelSignatureChecker (pool start-up
                    is printed separately, not included)
  DAG               hash-chain only on a ledger written by 4 nodes that merge every
                    8 appends (merges exercise the antichain and multi-parent clock paths)
  from disk         the same checks reading a FileBlockStore (warm page cache)

Blocks come from a dict (in memory) unless said otherwise. Each figure is the best of a
few runs; the machine is shared, so expect ±15%.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from qflow_node.codec import CID, Block
from qflow_node.core.ledger import VerifyReport, verify_execution
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION, Replica, World
from qflow_node.ledger_store import ParallelSignatureChecker, store_lookup
from qflow_node.store import FileBlockStore


def build_chain(records: int) -> tuple[World, float]:
    world = World()
    replica = Replica(KEYS[0])
    start = time.perf_counter()
    for _ in range(records):
        world.append(replica)
    return world, time.perf_counter() - start


def build_dag(records: int, writers: int = 4, sync_every: int = 8) -> World:
    world = World()
    replicas = [Replica(KEYS[i]) for i in range(writers)]
    world.append(replicas[0])
    for replica in replicas[1:]:
        world.sync(replica, replicas[0])
    for n in range(1, records - 1):
        replica = replicas[n % writers]
        if n % sync_every == 0:
            for other in replicas:
                world.sync(replica, other)
        world.append(replica)
    final = replicas[0]
    for other in replicas:
        world.sync(final, other)
    world.append(final, "exec.completed")
    return world


def timed(run: Callable[[], VerifyReport], expected: int, repeat: int) -> float:
    """Best wall time of `repeat` runs; exits if the ledger does not verify."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        report = run()
        best = min(best, time.perf_counter() - start)
        if not report.ok or report.records != expected:
            sys.exit(f"benchmark ledger did not verify: {report.failure}")
    return best


def line(label: str, count: int, seconds: float, note: str = "") -> None:
    rate = f"{count / seconds:>10,.0f} records/s"
    print(f"  {label:<28}{rate}   ({seconds:.2f} s){'   ' + note if note else ''}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--disk-records", type=int, default=10_000)
    parser.add_argument("--dag-records", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    n = args.records

    print(
        f"ledger: {n:,} records, Python {platform.python_version()}, {os.cpu_count()} cores",
        flush=True,
    )
    world, build_seconds = build_chain(n)
    line("build (sign + encode)", n, build_seconds)
    head = world.appended[-1]

    def lookup(cid: CID) -> bytes | None:
        return world.blocks.get(cid.cid_bytes)

    seconds = timed(lambda: verify_execution([head], lookup, chain_only=True), n, 3)
    line("verify hash-chain only", n, seconds)
    seconds = timed(lambda: verify_execution([head], lookup, signatures=False), n, 3)
    line("verify records, no sigs", n, seconds)
    seconds = timed(lambda: verify_execution([head], lookup), n, 1)
    line("verify full, 1 process", n, seconds)

    start = time.perf_counter()
    with ParallelSignatureChecker(args.processes) as checker:
        checker([])  # nothing to check: only makes sure the pool exists
        pool_seconds = time.perf_counter() - start
        # First run warms the workers (imports); the figure is the best of the next two.
        verify_execution([head], lookup, checker=checker)
        seconds = timed(lambda: verify_execution([head], lookup, checker=checker), n, 2)
    line(
        f"verify full, {args.processes} processes",
        n,
        seconds,
        f"pool start {pool_seconds:.2f} s not included",
    )

    dag = build_dag(args.dag_records)
    heads = [dag.appended[-1]]

    def dag_lookup(cid: CID) -> bytes | None:
        return dag.blocks.get(cid.cid_bytes)

    merges = sum(1 for cid in dag.appended if len(dag.records[cid].prev) > 1)
    seconds = timed(
        lambda: verify_execution(heads, dag_lookup, signatures=False), len(dag.appended), 3
    )
    line("DAG, 4 writers, hash-chain", len(dag.appended), seconds, f"{merges:,} merges")

    m = min(args.disk_records, n)
    with tempfile.TemporaryDirectory(prefix="qflow-bench-") as tmp:
        store = FileBlockStore(Path(tmp))
        blocks = [SUBMISSION, PAYLOAD]
        blocks += [Block(cid, world.blocks[cid.cid_bytes]) for cid in world.appended[:m]]
        start = time.perf_counter()
        store.put_many(blocks)
        write_seconds = time.perf_counter() - start
        disk_head = world.appended[m - 1]
        disk_lookup = store_lookup(store)
        print(f"from disk (FileBlockStore, {m:,} records, warm page cache):", flush=True)
        line("write (put_many, fsync each)", m, write_seconds)
        seconds = timed(lambda: verify_execution([disk_head], disk_lookup, signatures=False), m, 3)
        line("verify hash-chain only", m, seconds)
        seconds = timed(lambda: verify_execution([disk_head], disk_lookup), m, 1)
        line("verify full, 1 process", m, seconds)


if __name__ == "__main__":
    main()
