"""Bitswap interop with a real Kubo: Kubo fetches Qflow blocks, Qflow fetches Kubo files.

Needs the `interop` extra (`make test-interop`); skips without it. The Qflow side is
the node's real stack: libp2p host, bitswap, a file block store and the BlockService.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import base58
import pytest
import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.codec import dag_block, raw_block
from qflow_node.codec.dagpb import link_cid
from qflow_node.identity import SigningKey
from qflow_node.net.bitswap import Bitswap, open_bitswap
from qflow_node.net.host import build_host
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

from .kubo import KuboError, KuboProcess, KuboTimeout

pytestmark = pytest.mark.kubo

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
TIMEOUT = 15.0


@dataclass
class Node:
    host: IHost
    store: FileBlockStore
    bitswap: Bitswap
    blocks: BlockService


@asynccontextmanager
async def qflow_node(root: Path) -> AsyncIterator[Node]:
    await trio.Path(root).mkdir()
    store = FileBlockStore(root)
    blocks = BlockService(store)
    host = build_host(SigningKey.generate(), LOOPBACK)
    async with host.run(listen_addrs=LOOPBACK), open_bitswap(host, blocks.local) as bitswap:
        blocks.exchange = bitswap
        yield Node(host, store, bitswap, blocks)


async def connected(node: Node, kubo: KuboProcess) -> None:
    await node.host.connect(info_from_p2p_addr(Multiaddr(kubo.p2p_addrs()[0])))
    await trio.to_thread.run_sync(kubo.wait_for_peer, node.host.get_id().to_base58(), TIMEOUT)


async def test_kubo_fetches_a_qflow_raw_block_by_cid(tmp_path: Path, kubo: KuboProcess) -> None:
    async with qflow_node(tmp_path / "q") as node:
        block = raw_block(b"served by qflow to kubo " + bytes(range(256)) * 64)
        await node.blocks.put(block)
        await connected(node, kubo)
        data = await trio.to_thread.run_sync(kubo.cat, block.cid.encode(), TIMEOUT)
        assert data == block.data
        assert node.bitswap.stats.blocks_sent >= 1


async def test_kubo_fetches_a_qflow_dag_cbor_block_by_cid(
    tmp_path: Path, kubo: KuboProcess
) -> None:
    """This Kubo build only exposes UnixFS downloads, which refuse dag-cbor once the
    block has arrived: a quick refusal (not a timeout) plus our sent-block count show
    that Kubo fetched it."""
    async with qflow_node(tmp_path / "q") as node:
        block = dag_block({"record": "kept in qflow", "n": 1})
        await node.blocks.put(block)
        await connected(node, kubo)
        with pytest.raises(KuboError) as refused:
            await trio.to_thread.run_sync(kubo.cat, block.cid.encode(), TIMEOUT)
        assert not isinstance(refused.value, KuboTimeout)
        assert node.bitswap.stats.blocks_sent >= 1


async def test_qflow_fetches_a_multi_block_unixfs_file_added_in_kubo(
    tmp_path: Path, kubo: KuboProcess
) -> None:
    content = hashlib.shake_256(b"kubo file").digest(700_000)  # 3 chunks of 256 KiB
    cid_v0 = await trio.to_thread.run_sync(kubo.add_bytes, content)
    assert cid_v0.startswith("Qm")
    root = link_cid(base58.b58decode(cid_v0))
    async with qflow_node(tmp_path / "q") as node:
        await connected(node, kubo)
        with trio.fail_after(TIMEOUT):
            assert await node.blocks.cat(root) == content
        assert node.bitswap.stats.blocks_received == 4  # root + 3 leaves, each verified


async def test_qflow_fetches_a_block_by_its_cidv0(tmp_path: Path, kubo: KuboProcess) -> None:
    content = b"a one-block file: Kubo wraps the bytes in a dag-pb UnixFS node"
    cid_v0 = await trio.to_thread.run_sync(kubo.add_bytes, content)
    async with qflow_node(tmp_path / "q") as node:
        await connected(node, kubo)
        with trio.fail_after(TIMEOUT):
            data = await node.blocks.get(link_cid(base58.b58decode(cid_v0)))
        assert content in data  # a dag-pb node holding the bytes
