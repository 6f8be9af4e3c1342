"""Bitswap benchmark: fetch a 10 MB DAG from another node, in MB/s.

    .venv/bin/python bench/bitswap.py [--mb 10] [--runs 3]

Two real nodes on loopback, each a libp2p host with bitswap and a file block store in a
temp dir (fsynced puts). Node A holds a DAG: a dag-cbor root linking 256 KiB raw chunks
(as a file would be stored). Node B fetches the whole DAG with
`BlockService.fetch_dag` (one wantlist per DAG level, every block verified and stored).
The figure is DAG bytes / wall time from the first want to the last block stored.

Prints one line per run and the median; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Final

import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.codec import Block, dag_block, raw_block
from qflow_node.identity import SigningKey
from qflow_node.net.bitswap import open_bitswap
from qflow_node.net.host import build_host
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

LOOPBACK: Final = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
CHUNK: Final = 256 * 1024


def make_dag(size: int) -> tuple[Block, list[Block]]:
    data = hashlib.shake_256(str(time.time_ns()).encode()).digest(size)
    leaves = [raw_block(data[i : i + CHUNK]) for i in range(0, size, CHUNK)]
    return dag_block({"chunks": [leaf.cid for leaf in leaves], "size": size}), leaves


async def one_run(size: int, tmp: Path) -> float:
    stores = []
    for name in ("a", "b"):
        (tmp / name).mkdir()
        stores.append(FileBlockStore(tmp / name))
    root, leaves = make_dag(size)
    stores[0].put_many([root, *leaves])
    hosts = [build_host(SigningKey.generate(), LOOPBACK) for _ in range(2)]
    async with (
        hosts[0].run(listen_addrs=LOOPBACK),
        hosts[1].run(listen_addrs=LOOPBACK),
        open_bitswap(hosts[0], BlockService(stores[0]).local),
        open_bitswap(hosts[1], BlockService(stores[1]).local) as fetcher,
    ):
        await hosts[1].connect(info_from_p2p_addr(hosts[0].get_addrs()[0]))
        service = BlockService(stores[1], fetcher)
        started = time.perf_counter()
        with trio.fail_after(120):
            report = await service.fetch_dag([root.cid])
        elapsed = time.perf_counter() - started
    assert report.fetched == 1 + len(leaves)
    return report.fetched_bytes / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = int(args.mb * 1e6)
    rates = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="qflow-bench-bitswap-") as tmp:
            rate = trio.run(one_run, size, Path(tmp))
        rates.append(rate)
        print(f"run {run + 1}: {args.mb:g} MB DAG fetched at {rate:.1f} MB/s")
    print(
        f"bitswap fetch, {args.mb:g} MB DAG, median of {args.runs}: "
        f"{statistics.median(rates):.1f} MB/s (target >= 20 MB/s)"
    )


if __name__ == "__main__":
    main()
