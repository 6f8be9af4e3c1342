"""Writer for the crash test: stores blocks in a loop, reporting each on stdout once stored.

Usage: python crash_writer.py ROOT SEED. Prints `ready`, then one line per finished
operation: `block <cid>` after the put/put_many holding that block returned, `pin <cid>`
after pin returned. Runs until killed.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from qflow_node.codec import Block, dag_block, raw_block
from qflow_node.store import FileBlockStore

# Mostly small blocks, some large enough that a kill often lands inside a write.
SIZES = [0, 1, 400, 400, 400, 4096, 65536, 262144]


def main() -> None:
    root, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    store = FileBlockStore(root)
    print("ready", flush=True)
    n = 0
    while True:
        batch: list[Block] = [
            raw_block(rng.randbytes(rng.choice(SIZES))) for _ in range(rng.randint(1, 6))
        ]
        batch.append(dag_block({"seed": seed, "n": n, "kids": [b.cid for b in batch]}))
        n += 1
        if rng.random() < 0.3:
            for block in batch:
                store.put(block)
                print("block", block.cid.encode(), flush=True)
        else:
            store.put_many(batch)
            for block in batch:
                print("block", block.cid.encode(), flush=True)
        if rng.random() < 0.5:
            store.pin(batch[-1].cid, recursive=rng.random() < 0.8)
            print("pin", batch[-1].cid.encode(), flush=True)


if __name__ == "__main__":
    main()
