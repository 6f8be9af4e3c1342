"""Bitswap between real libp2p hosts on loopback, in one trio process.

Each node has a real block store (files under tmp_path), a host, bitswap and a
BlockService; the tests fetch single blocks, whole DAGs and UnixFS files, and check what
hostile or absent peers cause (precise errors, counters, nothing stored).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
from libp2p.abc import IHost
from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.utils.varint import encode_uvarint
from multiaddr import Multiaddr

from qflow_node.codec import CID, Block, dag_block, raw_block
from qflow_node.codec.dagpb import cid_with_codec
from qflow_node.identity import SigningKey
from qflow_node.net.bitswap import PROTOCOL_V120, Bitswap, Limits, Stats, open_bitswap
from qflow_node.net.bitswap.wire import Outgoing, parse
from qflow_node.net.host import build_host
from qflow_node.store import BlockUnavailableError, FileBlockStore
from qflow_node.store.service import BlockService

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
TIMEOUT = 10


@dataclass
class Node:
    host: IHost
    store: FileBlockStore
    bitswap: Bitswap
    blocks: BlockService

    @property
    def peer(self) -> str:
        return self.host.get_id().to_base58()


@asynccontextmanager
async def running_node(root: Path, limits: Limits | None = None) -> AsyncIterator[Node]:
    await trio.Path(root).mkdir(parents=True)
    store = FileBlockStore(root)
    host = build_host(SigningKey.generate(), LOOPBACK)
    async with (
        host.run(listen_addrs=LOOPBACK),
        open_bitswap(host, BlockService(store).local, limits) as bitswap,
    ):
        yield Node(host, store, bitswap, BlockService(store, bitswap))


async def connect(a: Node, b: Node) -> None:
    await a.host.connect(info_from_p2p_addr(b.host.get_addrs()[0]))


def file_dag(size: int, chunk: int = 256 * 1024) -> tuple[Block, list[Block]]:
    data = hashlib.shake_256(b"qflow").digest(size)
    leaves = [raw_block(data[i : i + chunk]) for i in range(0, size, chunk)]
    root = dag_block({"chunks": [leaf.cid for leaf in leaves], "size": size})
    return root, leaves


async def test_a_block_put_on_one_node_is_fetched_by_cid_from_another(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_node(tmp_path / "a"))
        b = await stack.enter_async_context(running_node(tmp_path / "b"))
        await connect(b, a)
        block = dag_block({"hello": "bitswap"})
        await a.blocks.put(block)
        with trio.fail_after(TIMEOUT):
            data = await b.blocks.get(block.cid)
        assert data == block.data
        assert b.store.get(block.cid) == block.data  # stored on arrival
        assert a.bitswap.stats.blocks_sent == 1
        assert b.bitswap.stats.blocks_received == 1


async def test_a_whole_dag_is_fetched_level_by_level(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_node(tmp_path / "a"))
        b = await stack.enter_async_context(running_node(tmp_path / "b"))
        await connect(a, b)
        root, leaves = file_dag(3 * 1024 * 1024 + 17)
        a.store.put_many([root, *leaves])
        with trio.fail_after(TIMEOUT):
            report = await b.blocks.fetch_dag([root.cid])
        assert report.fetched == 1 + len(leaves)
        assert report.fetched_bytes == len(root.data) + sum(len(x.data) for x in leaves)
        assert all(b.store.has(leaf.cid) for leaf in leaves)
        # Walking again finds everything local and asks the network for nothing.
        again = await b.blocks.fetch_dag([root.cid])
        assert (again.fetched, again.local) == (0, 1)


async def test_a_block_nobody_has_fails_fast_with_dont_have(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_node(tmp_path / "a"))
        b = await stack.enter_async_context(running_node(tmp_path / "b"))
        await connect(b, a)
        missing = raw_block(b"nobody has this").cid
        with trio.fail_after(TIMEOUT), pytest.raises(BlockUnavailableError) as caught:
            await b.blocks.get(missing)
        assert caught.value.missing == {missing: "dont_have"}


async def test_a_want_that_could_not_be_served_is_served_when_the_block_arrives(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_node(tmp_path / "a"))
        b = await stack.enter_async_context(running_node(tmp_path / "b"))
        await connect(b, a)
        block = raw_block(b"later")
        # Kubo-style: a want-block without send-dont-have, before a has the block.
        want = Message()
        want.wantlist.entries.add(block=block.cid.cid_bytes, wantType=Message.Wantlist.Block)
        await send_raw(b, a, want.SerializeToString())
        with trio.fail_after(TIMEOUT):
            await a.bitswap.wait_for(lambda stats: stats.messages_in == 1)
        assert a.bitswap.stats.blocks_sent == 0
        await a.blocks.put(block)  # arrives later: a keeps its promise
        with trio.fail_after(TIMEOUT):  # b's fetch is not waiting: unwanted
            await b.bitswap.wait_for(lambda stats: stats.unwanted_blocks == 1)
        assert a.bitswap.stats.blocks_sent == 1


async def send_raw(sender: Node, to: Node, message: bytes) -> None:
    await send_frame(sender, to, encode_uvarint(len(message)) + message)


async def send_frame(sender: Node, to: Node, frame: bytes) -> None:
    """Bytes on a fresh bitswap stream, framed or not: what a hostile peer can send."""
    stream = await sender.host.new_stream(to.host.get_id(), [TProtocol(PROTOCOL_V120)])
    await stream.write(frame)


async def test_hostile_messages_are_dropped_and_counted_and_the_node_keeps_serving(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_node(tmp_path / "a"))
        b = await stack.enter_async_context(running_node(tmp_path / "b"))
        await connect(b, a)
        # Garbage that is not protobuf, then a length prefix far over the limit.
        frames = (encode_uvarint(5) + b"\xff\xff\xff\xff\xff", encode_uvarint(64 << 20))
        for count, frame in enumerate(frames, 1):
            await send_frame(b, a, frame)
            with trio.fail_after(TIMEOUT):
                await a.bitswap.wait_for(partial(malformed, count))
        # A block nobody asked for (correctly hashed) is dropped, not stored.
        unsolicited = raw_block(b"unsolicited")
        message = Outgoing(blocks=[(unsolicited.cid.cid_bytes[:4], unsolicited.data)]).encode()
        await send_raw(b, a, message)
        with trio.fail_after(TIMEOUT):
            await a.bitswap.wait_for(lambda stats: stats.unwanted_blocks == 1)
        assert not a.store.has(unsolicited.cid)
        assert a.bitswap.stats.malformed_messages == 2
        # ... and a still serves.
        block = raw_block(b"still serving")
        a.store.put(block)
        with trio.fail_after(TIMEOUT):
            assert await b.blocks.get(block.cid) == block.data


def test_a_received_block_is_named_by_its_bytes_not_by_the_sender() -> None:
    block = raw_block(b"truth")
    lie = Outgoing(blocks=[(block.cid.cid_bytes[:4], b"a lie")]).encode()
    [(cid, data)] = parse(lie).blocks
    assert cid != block.cid
    assert cid == cid_with_codec(0x55, hashlib.sha256(b"a lie").digest())
    assert data == b"a lie"


def malformed(count: int, stats: Stats) -> bool:
    return stats.malformed_messages == count


def pb_bytes(field: int, value: bytes) -> bytes:
    return encode_uvarint(field << 3 | 2) + encode_uvarint(len(value)) + value


def pb_varint(field: int, value: int) -> bytes:
    return encode_uvarint(field << 3) + encode_uvarint(value)


def unixfs_file(chunks: list[bytes]) -> tuple[CID, dict[CID, bytes]]:
    """A UnixFS file as Kubo lays it out: CIDv0 dag-pb leaves under a dag-pb root."""
    blocks: dict[CID, bytes] = {}
    links = b""
    for chunk in chunks:
        leaf = pb_bytes(1, pb_varint(1, 2) + pb_bytes(2, chunk) + pb_varint(3, len(chunk)))
        multihash = bytes([0x12, 0x20]) + hashlib.sha256(leaf).digest()
        blocks[cid_with_codec(0x70, multihash[2:])] = leaf
        links += pb_bytes(2, pb_bytes(1, multihash) + pb_varint(3, len(leaf)))
    sizes = b"".join(pb_varint(4, len(c)) for c in chunks)
    root = links + pb_bytes(1, pb_varint(1, 2) + pb_varint(3, sum(map(len, chunks))) + sizes)
    root_cid = cid_with_codec(0x70, hashlib.sha256(root).digest())
    blocks[root_cid] = root
    return root_cid, blocks


async def test_a_unixfs_file_is_fetched_verified_and_reassembled(tmp_path: Path) -> None:
    chunks = [b"first chunk, ", b"second chunk, ", b"and the end"]
    root, blocks = unixfs_file(chunks)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_node(tmp_path / "a"))
        host = build_host(SigningKey.generate(), LOOPBACK)  # a peer that holds dag-pb
        await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
        await stack.enter_async_context(open_bitswap(host, blocks.get))
        await a.host.connect(info_from_p2p_addr(host.get_addrs()[0]))
        with trio.fail_after(TIMEOUT):
            assert await a.blocks.cat(root) == b"".join(chunks)
        assert not any(a.store.has(cid) for cid in blocks)  # read through (ADR 0005)
