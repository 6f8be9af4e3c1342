"""HeadsService with batched announcements: a round's due heads share envelopes, and a
heard entry the ledger already holds starts no catch-up. No network: a gossip stand-in
records what is published (real gossip between real nodes carries the same envelopes in
tests/runtime/test_heads_service.py and the cluster tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import trio

from qflow_node.codec import CID, dag_block
from qflow_node.codec.envelope import KIND_MAX_SIZE
from qflow_node.codec.envelope_bodies import MAX_HEADS, MAX_HEADS_ENTRIES, Heads, HeadsEntry
from qflow_node.core.envelopes import Verified, open_envelope
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.net.gossip import Gossip
from qflow_node.net.topics import topic
from qflow_node.repo import RepoPaths
from qflow_node.runtime.heads_service import HeadsService, HeadsSettings
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

SUBNETS = ("alpha", "beta")
KEY = SigningKey(b"\x09" * 32)


class RecordingGossip:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, data: bytes) -> None:
        self.published.append((topic, data))


def make_service(root: Path, settings: HeadsSettings | None = None) -> HeadsService:
    paths = RepoPaths(root)
    paths.blocks.mkdir(parents=True)
    store = FileBlockStore(paths.blocks)
    gossip = cast(Gossip, RecordingGossip())
    return HeadsService(
        KEY,
        gossip,
        BlockService(store),
        LedgerStore(store, paths),
        subnets=SUBNETS,
        settings=settings or HeadsSettings(max_announced=1000),
    )


def published(service: HeadsService, subnet: str) -> Iterator[Heads]:
    gossip = cast(RecordingGossip, service.gossip)
    for name, data in gossip.published:
        assert len(data) <= KIND_MAX_SIZE["heads"]
        if name == topic(subnet, "exec"):
            opened = open_envelope(data, subnet=subnet, channel="exec")
            assert isinstance(opened, Verified) and isinstance(opened.body, Heads)
            yield opened.body


def cids(count: int, tag: str) -> list[CID]:
    return [dag_block({tag: i}).cid for i in range(count)]


def announced(service: HeadsService, subnet: str) -> list[HeadsEntry]:
    return [entry for body in published(service, subnet) for entry in body.entries]


async def test_a_round_of_more_entries_than_one_envelope_holds_is_split(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    execs = cids(MAX_HEADS_ENTRIES + 44, "exec")
    written = {exec: (dag_block({"head of": exec}).cid,) for exec in execs}
    for exec, heads in written.items():
        service.ledger._write_heads(exec, heads)

    assert await service.announce_once() == 2 * len(SUBNETS)
    for subnet in SUBNETS:
        bodies = list(published(service, subnet))
        assert [len(body.entries) for body in bodies] == [MAX_HEADS_ENTRIES, 44]
        entries = announced(service, subnet)
        assert {entry.exec: entry.heads for entry in entries} == written  # each once
        assert len(entries) == len(written)


async def test_big_head_sets_are_split_by_size(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    heads = tuple(sorted(cids(MAX_HEADS, "head"), key=lambda c: c.cid_bytes))  # ~41 KiB
    execs = cids(15, "exec")
    for exec in execs:
        service.ledger._write_heads(exec, heads)

    sent = await service.announce_once()
    assert sent == len(cast(RecordingGossip, service.gossip).published) > 2 * len(SUBNETS)
    for subnet in SUBNETS:
        entries = announced(service, subnet)
        assert sorted(e.exec.cid_bytes for e in entries) == sorted(e.cid_bytes for e in execs)
        assert all(entry.heads == heads for entry in entries)


async def test_nothing_due_publishes_nothing(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    assert await service.announce_once() == 0
    service.ledger._write_heads(cids(1, "exec")[0], cids(1, "head"))
    # New heads at once, then after 1, 2, 4, ... rounds (core.announce).
    assert [await service.announce_once() for _ in range(4)] == [len(SUBNETS)] * 2 + [0, 2]


async def test_heard_entries_the_ledger_holds_start_no_catch_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(tmp_path)
    held, partly, unknown = sorted(cids(3, "exec"), key=lambda c: c.cid_bytes)
    h1, h2 = cids(2, "head")
    service.ledger._write_heads(held, [h1])
    service.ledger._write_heads(partly, [h1])
    started: list[tuple[CID, tuple[CID, ...]]] = []

    async def catch_up(exec: CID, heads: tuple[CID, ...], announcer: str) -> None:
        started.append((exec, heads))

    monkeypatch.setattr(service, "_catch_up", catch_up)
    body = Heads(
        (HeadsEntry(held, (h1,)), HeadsEntry(partly, (h1, h2)), HeadsEntry(unknown, (h2,)))
    )
    peer = SigningKey(b"\x0a" * 32).peer_id
    async with trio.open_nursery() as nursery:
        service._nursery = nursery
        service.heard(Verified("heads", peer, 1, body))
    assert sorted(started, key=lambda item: item[0].cid_bytes) == [
        (partly, tuple(sorted((h1, h2), key=lambda c: c.cid_bytes))),
        (unknown, (h2,)),
    ]
    assert service._merged[held] == {h1}
