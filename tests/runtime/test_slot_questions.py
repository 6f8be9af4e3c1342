"""How a node answers the slot question a claimer asks before writing a record
(docs/protocol.md, "Confirming before a commit"), on a real execution service; and how
it batches claims, questions and received records (docs/protocol.md, "Batches"); and
that it opens an execution heard of by its records only with the submission's whole DAG.

Two nodes that both claimed a slot each ask the other; what closes the race is that
(1) a question counts as the asker's claim in the answerer's claim book, so the
answerer's own last check before writing sees a better claimer that asked meanwhile,
and (2) once past that check the answerer says the slot is done, so a claimer asking
later yields. Without (1) or (2) both could write.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.cli.init_cmd import init_repo
from qflow_node.codec import dag_block, decode_dag, encode_dag, raw_block
from qflow_node.codec.envelope_bodies import Claim as ClaimBody
from qflow_node.codec.envelope_bodies import Claims, InlineBlock, RecordAnnouncement, Records
from qflow_node.core.ledger.testing import (
    KEYS,
    OTHER_SUBMISSION,
    PAYLOAD,
    SUBMISSION,
    Replica,
    World,
)
from qflow_node.core.membership import MembershipConfig
from qflow_node.core.scheduling import Slot, precedence
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore, LedgerStoreError
from qflow_node.net.bitswap import Bitswap, open_bitswap
from qflow_node.net.gossip import open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.reqresp import Direct
from qflow_node.net.topics import TopicKind
from qflow_node.repo import RepoPaths
from qflow_node.runtime.exec_service import ExecService, ExecSettings, _Asked
from qflow_node.runtime.local import LocalRunner
from qflow_node.runtime.membership_service import MembershipService
from qflow_node.runtime.replica import Replica as ReplicaState
from qflow_node.sandbox import Sandbox
from qflow_node.sim.workload import KINDS, submission
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

SLOT = Slot(raw_block(b"an execution").cid, "step", 0)
CLAIMED = dag_block({"an": "execution"}).cid  # what a claim envelope may name


@asynccontextmanager
async def exec_service(
    settings: ExecSettings | None = None, subnet: str = "s"
) -> AsyncIterator[ExecService]:
    """A node's execution service on a real host, repo, sandbox and gossip (not run:
    the questions are put to it directly)."""
    with tempfile.TemporaryDirectory(prefix="qs", dir="/tmp") as tmp:
        repo = Path(tmp) / "n"
        key = init_repo(repo)
        paths = RepoPaths(repo)
        store = FileBlockStore(paths.blocks)
        ledger = LedgerStore(store, paths)
        loopback = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
        host = build_host(key, loopback)
        with Sandbox(store) as sandbox, LocalRunner(store, ledger, sandbox, key) as runner:
            async with (
                host.run(listen_addrs=loopback),
                open_gossip(host) as gossip,
                open_bitswap(host, BlockService(store).local) as bitswap,
            ):
                membership = MembershipService(key, gossip, [subnet], MembershipConfig())
                service = ExecService(
                    key,
                    gossip,
                    BlockService(store, bitswap),
                    ledger,
                    runner=runner,
                    membership=membership,
                    direct=Direct(host),
                    subnets=[subnet],
                    settings=settings,
                )
                service.resumed.set()  # nothing to resume: questions are answered at once
                yield service


async def ask(service: ExecService, slot: Slot, asker: str) -> dict[str, object]:
    question = encode_dag({"exec": slot.exec, "name": slot.name, "attempt": slot.attempt})
    answer = decode_dag(await service._answer_slot(asker, question))
    assert isinstance(answer, dict)
    return answer


PEERS = [SigningKey(bytes([i]) * 32).peer_id for i in range(1, 9)]


def slot_between(me: str) -> tuple[Slot, str, str]:
    """A slot for which a peer precedes `me` and another follows it (`me` is a fresh
    key: the attempt is chosen to put it between two of eight fixed peers)."""
    for attempt in range(1_000):
        slot = Slot(SLOT.exec, SLOT.name, attempt)
        mine = precedence(slot, me)
        better = [n for n in PEERS if precedence(slot, n) < mine]
        worse = [n for n in PEERS if precedence(slot, n) > mine]
        if better and worse:
            return slot, better[0], worse[0]
    raise AssertionError("no attempt ranks the node between two of eight peers")


async def test_a_question_counts_as_the_askers_claim() -> None:
    async with exec_service() as service:
        slot, better, worse = slot_between(service.me)
        answer = await ask(service, slot, worse)
        assert answer == {"done": False, "claims": [worse]}
        holder = service.book.holder(slot, int(trio.current_time() * 1000))
        assert holder is not None and holder.node == worse
        # A better claimer asking takes the slot in our book: our last check yields.
        answer = await ask(service, slot, better)
        assert answer["claims"] == sorted([better, worse])
        holder = service.book.holder(slot, int(trio.current_time() * 1000))
        assert holder is not None and holder.node == better


async def test_past_its_last_check_a_writer_says_done_and_notes_no_claim() -> None:
    async with exec_service() as service:
        slot, better, _worse = slot_between(service.me)
        service._writing.add(slot)
        answer = await ask(service, slot, better)
        assert answer == {"done": True, "claims": []}
        assert service.book.claims(slot) == ()  # a claimer told "done" yields: no claim
        service._writing.discard(slot)
        assert (await ask(service, slot, better))["done"] is False


async def test_free_work_tokens_are_the_free_work_slots_within_admission() -> None:
    async with exec_service(ExecSettings(admission_per_s=0.0)) as service:  # no refill
        assert service.free_work_tokens() == service.settings.work_slots
        taken = [Slot(SLOT.exec, f"s{i}", 0) for i in range(2)]
        for slot in taken:
            service._slots.acquire_on_behalf_of_nowait(slot)
        assert service.free_work_tokens() == service.settings.work_slots - 2
        now = int(trio.current_time() * 1000)
        while service.admission.take(now):  # admission spent: declines whatever is free
            pass
        assert service.free_work_tokens() == 0


async def test_several_slots_in_one_question_are_answered_in_order() -> None:
    async with exec_service() as service:
        slot, better, worse = slot_between(service.me)
        other = Slot(SLOT.exec, "other", 0)
        service._writing.add(other)
        questions = [{"exec": s.exec, "name": s.name, "attempt": s.attempt} for s in (slot, other)]
        asked = encode_dag({"slots": [*questions, {"exec": SLOT.exec}]})
        answer = decode_dag(await service._answer_slot(worse, asked))
        assert answer == {
            "answers": [
                {"done": False, "claims": [worse]},  # noted as the asker's claim
                {"done": True, "claims": []},
                {"error": "bad request"},  # a broken item spoils only itself
            ]
        }
        too_many = encode_dag({"slots": questions[:1] * 65})
        assert decode_dag(await service._answer_slot(better, too_many)) == {
            "error": "more than 64 slots"
        }
        assert [c.node for c in service.book.claims(slot)] == [worse]  # not noted


async def test_claims_made_together_go_out_in_one_envelope_and_a_lone_one_alone() -> None:
    async with exec_service() as service:
        published: list[object] = []
        publish = service._publish

        async def recording(subnet: str, kind: TopicKind, body: object) -> int:
            published.append(body)
            return await publish(subnet, kind, body)

        service._publish = recording  # type: ignore[method-assign]  # the real one, recorded
        slots = [Slot(CLAIMED, f"s{i}", 0) for i in range(5)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service._claims.run)
            async with trio.open_nursery() as claiming:  # as one scheduling pass starts them
                for slot in slots:
                    claiming.start_soon(service._claim, "s", slot, 0)
            await service._claim("s", Slot(CLAIMED, "alone", 0), 1)
            nursery.cancel_scope.cancel()
        batch, alone = published
        assert isinstance(batch, Claims)
        assert sorted(c.step for c in batch.claims) == sorted(s.name for s in slots)
        assert isinstance(alone, ClaimBody) and (alone.step, alone.rank) == ("alone", 1)
        now = int(trio.current_time() * 1000)
        for slot in slots:
            holder = service.book.holder(slot, now)
            assert holder is not None and holder.node == service.me


async def test_records_announced_together_merge_in_one_trip_each_on_its_own() -> None:
    first, second = World(), World(exec=OTHER_SUBMISSION.cid)
    started = [w.append(Replica(KEYS[0])) for w in (first, second)]
    not_a_record = dag_block({"kind": "nothing"})
    bodies = [
        RecordAnnouncement(record=cid, blocks=(InlineBlock(cid, w.blocks[cid.cid_bytes]),))
        for w, cid in zip((first, second), started, strict=True)
    ]
    inline = (InlineBlock(not_a_record.cid, not_a_record.data),)
    bodies.insert(1, RecordAnnouncement(not_a_record.cid, inline))
    async with exec_service() as service:
        # The node holds the submissions and payloads: a record is merged only with its
        # own blocks (docs/protocol.md, verification rule 7).
        service.blocks.store.put_many([SUBMISSION, OTHER_SUBMISSION, PAYLOAD])
        taken = await trio.to_thread.run_sync(service._take_inline, bodies)
        assert isinstance(taken[1], LedgerStoreError)  # refused alone ...
        for outcome, exec, head in zip(
            (taken[0], taken[2]), (first.exec, second.exec), started, strict=True
        ):
            assert not isinstance(outcome, Exception)
            record, report = outcome
            assert report.ok and record.exec == exec
            assert service.ledger.heads(exec) == (head,)  # ... the others merged


async def test_a_record_announced_twice_in_one_flush_goes_out_once() -> None:
    """Regression (found by the simulator, seed 2/10/moderate): a re-announcement of the
    heads met the announcement of the record just written in one flush; the `records`
    body refuses twins, so sealing it raised and the node died."""
    world = World()
    head = world.append(Replica(KEYS[0]))
    twice = RecordAnnouncement(
        record=head, blocks=(InlineBlock(head, world.blocks[head.cid_bytes]),)
    )
    other = dag_block({"another": "record"})
    also = RecordAnnouncement(other.cid, (InlineBlock(other.cid, other.data),))
    async with exec_service() as service:
        published: list[object] = []
        publish = service._publish

        async def recording(subnet: str, kind: TopicKind, body: object) -> int:
            published.append(body)
            return await publish(subnet, kind, body)

        service._publish = recording  # type: ignore[method-assign]  # the real one, recorded
        await service._flush_announcements([("s", twice), ("s", also), ("s", twice)])
        await service._flush_announcements([("s", twice), ("s", twice)])
    both, alone = published
    assert isinstance(both, Records) and [b.record for b in both.records] == [head, other.cid]
    assert alone == twice


async def test_a_question_asked_at_claim_time_is_answered_to_the_first_write() -> None:
    """`_Asked` holds the answer to the question a claimer asks as soon as it claims,
    for the slot's first write, which waits for it if it is still on its way."""
    answered = trio.Event()

    async def confirm(_replica: ReplicaState, _slot: Slot) -> str | None:
        await answered.wait()
        return "n2 claimed the slot too, and wins"

    asked = _Asked()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(asked.ask, confirm, cast(ReplicaState, None), SLOT)
        with trio.move_on_after(0.05) as waited:  # the writer waits while it is unanswered
            await asked.answer()
        assert waited.cancelled_caught
        answered.set()
        assert await asked.answer() == "n2 claimed the slot too, and wins"


async def test_an_execution_is_opened_only_with_its_submission_inputs() -> None:
    """Regression (found by the simulator, seed 3/10/hostile): a re-announcement carries
    the submission block alone; a node that took the present block to stand for its
    whole DAG never fetched the flow and inputs, so it could never open the execution."""
    exec, blocks = submission(KINDS[0], random.Random(7), SigningKey.generate(), ts_ms=1)
    with tempfile.TemporaryDirectory(prefix="qs", dir="/tmp") as tmp:
        holder = FileBlockStore(Path(tmp))  # a peer holding the whole submission
        holder.put_many(blocks)
        loopback = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
        host = build_host(SigningKey.generate(), loopback)
        async with (
            host.run(listen_addrs=loopback),
            open_bitswap(host, BlockService(holder).local),
            exec_service(subnet="default") as service,
        ):
            service.blocks.store.put_many(blocks[:1])  # the submission block, heard inline
            exchange = service.blocks.exchange
            assert isinstance(exchange, Bitswap)
            await exchange.host.connect(info_from_p2p_addr(host.get_addrs()[0]))
            with trio.fail_after(10):
                await service._open_from_ledger(exec, peers=[host.get_id().to_base58()])
            assert exec in service.replicas
            assert all(service.blocks.store.has(b.cid) for b in blocks)


async def test_a_submission_accepted_is_resumed_after_a_crash_before_its_start() -> None:
    """Regression (found by the simulator, seed 3010/3/hostile): see
    tests/ledger/test_accepted_marks.py; here through the service's own submit/resume."""
    exec, blocks = submission(KINDS[0], random.Random(8), SigningKey.generate(), ts_ms=1)
    async with exec_service(subnet="default") as service:
        assert await service.submit(exec, blocks)
        resumed = await trio.to_thread.run_sync(service._resume)  # what a restart opens
        assert [replica.exec for replica in resumed] == [exec]
        assert not resumed[0].started


async def test_a_restarted_node_never_rewinds_its_start_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression (found by the simulator, seed 3045/3/hostile): a node back from a crash
    rewound every record of its own that the one peer answering lacked - a peer just back
    from a crash itself - `exec.started` included, and the accepted execution was gone
    from every ledger. Its later records are still rewound; its start record stays (a
    second start by another node would be no conflict: replay applies the first)."""
    exec, blocks = submission(KINDS[0], random.Random(9), SigningKey.generate(), ts_ms=1)
    async with exec_service(subnet="default") as service:
        assert await service.submit(exec, blocks)
        ledger, key = service.ledger, service.key
        started = ledger.append(exec, "exec.started", payload=exec, key=key).cid
        control = raw_block(b"{}")
        service.blocks.store.put_many([control])
        pause = ledger.append(exec, "exec.paused", payload=control.cid, key=key, actor=key.did)
        paused = pause.cid
        replica = service.replicas[exec]
        service._refresh(exec)
        assert replica.heads == (paused,)

        asked: list[object] = []

        async def ask_all(
            _replica: ReplicaState, question: dict[str, object], *, batch: bool
        ) -> list[tuple[str, object]]:
            asked.append(question["record"])
            return [(PEERS[0], {"have": False})]  # the one peer that answers lacks it

        monkeypatch.setattr(service, "_ask_all", ask_all)
        replica.own_heads = "checking"  # as after a restart, once the hold is over
        assert service.withholds(exec)
        await service._settle_own_heads(replica)
        assert asked == [paused]  # the start record is not even asked about
        assert ledger.heads(exec) == (started,)
        assert replica.started and replica.heads == (started,)
        assert not service.withholds(exec)  # checked: its heads are announced again
