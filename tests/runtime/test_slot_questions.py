"""How a node answers the slot question a claimer asks before writing a record
(docs/protocol.md, "Confirming before a commit"), on a real execution service.

Two nodes that both claimed a slot each ask the other; what closes the race is that
(1) a question counts as the asker's claim in the answerer's claim book, so the
answerer's own last check before writing sees a better claimer that asked meanwhile,
and (2) once past that check the answerer says the slot is done, so a claimer asking
later yields. Without (1) or (2) both could write.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from multiaddr import Multiaddr

from qflow_node.cli.init_cmd import init_repo
from qflow_node.codec import decode_dag, encode_dag, raw_block
from qflow_node.core.membership import MembershipConfig
from qflow_node.core.scheduling import Slot, precedence
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.net.gossip import open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.reqresp import Direct
from qflow_node.repo import RepoPaths
from qflow_node.runtime.exec_service import ExecService, ExecSettings
from qflow_node.runtime.local import LocalRunner
from qflow_node.runtime.membership_service import MembershipService
from qflow_node.sandbox import Sandbox
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

SLOT = Slot(raw_block(b"an execution").cid, "step", 0)


@asynccontextmanager
async def exec_service(settings: ExecSettings | None = None) -> AsyncIterator[ExecService]:
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
            async with host.run(listen_addrs=loopback), open_gossip(host) as gossip:
                membership = MembershipService(key, gossip, ["s"], MembershipConfig())
                yield ExecService(
                    key,
                    gossip,
                    BlockService(store),
                    ledger,
                    runner=runner,
                    membership=membership,
                    direct=Direct(host),
                    subnets=["s"],
                    settings=settings,
                )


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
