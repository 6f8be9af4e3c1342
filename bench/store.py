"""Block store throughput: put (one pack append + fdatasync per block) vs put_many (one
per batch), then get (read + re-hash), on disk and in memory. Prints figures; asserts
nothing.

    .venv/bin/python bench/store.py [--count 10000] [--size 400] [--batch 100] [--dir DIR]

DIR (default: a temp dir) decides the filesystem measured: flush cost is the whole story
for writes, so the script prints which filesystem it ran on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from qflow_node.codec import Block, raw_block
from qflow_node.store import BlockStore, FileBlockStore, MemoryBlockStore


def filesystem_of(path: Path) -> str:
    """The mount (device, type) holding `path`, from /proc/mounts (Linux)."""
    best = ("?", "?", "")
    try:
        with Path("/proc/mounts").open() as mounts:
            for line in mounts:
                device, mount_point, fs_type, *_ = line.split()
                inside = str(path).startswith(mount_point.rstrip("/") + "/")
                if (inside or str(path) == mount_point) and len(mount_point) >= len(best[2]):
                    best = (device, fs_type, mount_point)
    except OSError:
        pass
    return f"{best[1]} on {best[0]} (mounted at {best[2]})"


def timed(label: str, count: int, action: Callable[[], object]) -> None:
    start = time.perf_counter()
    action()
    elapsed = time.perf_counter() - start
    print(f"  {label:<38} {count / elapsed:>12,.0f} blocks/s  ({elapsed:7.2f} s)")


def put_each(store: BlockStore, blocks: list[Block]) -> None:
    for block in blocks:
        store.put(block)


def put_batched(store: BlockStore, blocks: list[Block], batch: int) -> None:
    for i in range(0, len(blocks), batch):
        store.put_many(blocks[i : i + batch])


def get_all(store: BlockStore, blocks: list[Block]) -> None:
    for block in blocks:
        store.get(block.cid)


def fresh(base: Path, name: str) -> FileBlockStore:
    root = base / name
    root.mkdir()
    return FileBlockStore(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=400, help="bytes per block")
    parser.add_argument("--batch", type=int, default=100, help="blocks per put_many call")
    parser.add_argument("--dir", type=Path, default=None, help="where to create the stores")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="qflow-bench-store-", dir=args.dir))
    blocks = [raw_block(os.urandom(args.size)) for _ in range(args.count)]
    n = len(blocks)
    print(f"{n} raw blocks of {args.size} B; FileBlockStore in {base}")
    print(f"  filesystem: {filesystem_of(base.resolve())}; {os.cpu_count()} CPUs")
    try:
        each = fresh(base, "each")
        timed("file put (append + fdatasync each)", n, lambda: put_each(each, blocks))
        batched = fresh(base, "batched")
        timed(
            f"file put_many (batches of {args.batch})",
            n,
            lambda: put_batched(batched, blocks, args.batch),
        )
        whole = fresh(base, "whole")
        timed(f"file put_many (one batch of {n})", n, lambda: whole.put_many(blocks))
        timed("file put again (already indexed)", n, lambda: put_each(each, blocks))
        timed("file get (read + verify, warm cache)", n, lambda: get_all(each, blocks))
        timed("file iter_cids", n, lambda: sum(1 for _ in each.iter_cids()))
        timed(
            "file open + first lookup (index build)",
            n,
            lambda: FileBlockStore(each.root).has(blocks[0].cid),
        )

        memory = MemoryBlockStore()
        timed("memory put (verify)", n, lambda: put_each(memory, blocks))
        timed("memory get", n, lambda: get_all(memory, blocks))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
