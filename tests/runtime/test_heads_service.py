"""Ledger anti-entropy between real in-process nodes: announce heads, fetch, merge.

Each node: a libp2p host, GossipSub, bitswap, a file block store and a LedgerStore in
its own repo under tmp_path. Announcements go over real gossip (which is lossy, so the
announcer repeats until the listener has merged - exactly what the service does on its
interval), records over real bitswap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.codec import decode_dag, encode_dag
from qflow_node.codec.block import Block, dag_block
from qflow_node.core.envelopes import Rejected, open_envelope
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.net.bitswap import open_bitswap
from qflow_node.net.gossip import GossipMessage, open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.topics import topic
from qflow_node.repo import RepoPaths
from qflow_node.runtime.heads_service import HeadsService, HeadsSettings
from qflow_node.runtime.validation import envelope_validator
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
SUBNET = "sync"
EXEC = SUBMISSION.cid
TIMEOUT = 20


@dataclass
class Node:
    heads: HeadsService
    ledger: LedgerStore
    store: FileBlockStore
    host: IHost


@asynccontextmanager
async def running_node(root: Path) -> AsyncIterator[Node]:
    paths = RepoPaths(root)
    await trio.Path(paths.blocks).mkdir(parents=True)
    store = FileBlockStore(paths.blocks)
    blocks = BlockService(store)
    ledger = LedgerStore(store, paths)
    key = SigningKey.generate()
    host = build_host(key, LOOPBACK)
    async with (
        host.run(listen_addrs=LOOPBACK),
        open_bitswap(host, blocks.local) as bitswap,
        open_gossip(host) as gossip,
        trio.open_nursery() as nursery,
    ):
        blocks.exchange = bitswap
        heads = HeadsService(
            key, gossip, blocks, ledger, subnets=[SUBNET], settings=HeadsSettings()
        )
        name = topic(SUBNET, "exec")
        messages = await gossip.subscribe(name, envelope_validator(SUBNET, "exec"))
        nursery.start_soon(heads.run)  # announces every 5 s: the tests announce themselves
        nursery.start_soon(deliver, heads, messages)
        yield Node(heads, ledger, store, host)
        nursery.cancel_scope.cancel()


async def deliver(heads: HeadsService, messages: trio.MemoryReceiveChannel[GossipMessage]) -> None:
    """What the daemon's dispatcher does for heads envelopes."""
    async for message in messages:
        opened = open_envelope(message.data, subnet=SUBNET, channel="exec")
        assert not isinstance(opened, Rejected)
        heads.heard(opened)


def write_ledger(node: Node, records: int) -> None:
    node.store.put_many([SUBMISSION, PAYLOAD])
    for i in range(records):
        kind = "exec.started" if i == 0 else "step.completed"
        step = None if i == 0 else f"s{i}"
        node.ledger.append(EXEC, kind, payload=PAYLOAD.cid, key=KEYS[0], ts=1000 + i, step=step)


async def announce_until(announcer: Node, listener: Node, done: Callable[[], bool]) -> None:
    """Announce as the service does on its interval, until `done()` holds."""
    with trio.fail_after(TIMEOUT):
        while not done():
            await announcer.heads.announce_once()
            with trio.move_on_after(0.5):
                await listener.heads.wait_idle_after(listener.heads.merges + 1)


async def test_a_late_joiner_fetches_and_merges_a_ledger_it_never_saw(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_node(tmp_path / "a"))
        write_ledger(a, 5)
        b = await stack.enter_async_context(running_node(tmp_path / "b"))
        await b.host.connect(info_from_p2p_addr(a.host.get_addrs()[0]))
        await announce_until(a, b, lambda: b.heads.merges >= 1)
        assert b.ledger.heads(EXEC) == a.ledger.heads(EXEC)
        report = b.ledger.verify(EXEC, resolve_links=True)
        assert report.ok and report.records == 5
        # Later records travel the same way; known heads are not fetched again.
        merges = b.heads.merges
        await b.heads.announce_once()  # b announcing a's heads back changes nothing at a
        write_ledger_more(a, 2)
        await announce_until(a, b, lambda: b.heads.merges > merges)
        assert b.ledger.heads(EXEC) == a.ledger.heads(EXEC)
        assert b.ledger.verify(EXEC).records == 7


def write_ledger_more(node: Node, records: int) -> None:
    for i in range(records):
        node.ledger.append(
            EXEC, "step.completed", payload=PAYLOAD.cid, key=KEYS[1], ts=2000 + i, step=f"t{i}"
        )


async def test_forged_heads_are_fetched_refused_and_never_merged(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_node(tmp_path / "a"))
        write_ledger(a, 2)
        # Tamper with the head record: same signature, different content.
        [head] = a.ledger.heads(EXEC)
        obj = decode_dag(a.store.get(head))
        obj["ts"] += 1
        forged: Block = dag_block(obj)
        assert forged.data == encode_dag(obj)
        a.store.put(forged)
        a.ledger._write_heads(EXEC, [forged.cid])
        b = await stack.enter_async_context(running_node(tmp_path / "b"))
        await b.host.connect(info_from_p2p_addr(a.host.get_addrs()[0]))
        await announce_until(a, b, lambda: b.heads.rejected >= 1)
        assert b.ledger.heads(EXEC) == ()
        # Refused once, not fetched again on every announcement.
        await a.heads.announce_once()
        assert b.heads.rejected == 1
