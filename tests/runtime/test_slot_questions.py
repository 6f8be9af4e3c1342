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
from qflow_node.runtime.exec_service import ExecService
from qflow_node.runtime.local import LocalRunner
from qflow_node.runtime.membership_service import MembershipService
from qflow_node.sandbox import Sandbox
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

SLOT = Slot(raw_block(b"an execution").cid, "step", 0)


@asynccontextmanager
async def exec_service() -> AsyncIterator[ExecService]:
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
                )


async def ask(service: ExecService, asker: str) -> dict[str, object]:
    question = encode_dag({"exec": SLOT.exec, "name": SLOT.name, "attempt": SLOT.attempt})
    answer = decode_dag(await service._answer_slot(asker, question))
    assert isinstance(answer, dict)
    return answer


def peers_around(me: str) -> tuple[str, str]:
    """A peer that precedes `me` for SLOT and one that follows it."""
    others = sorted(
        (SigningKey.generate().peer_id for _ in range(8)), key=lambda n: precedence(SLOT, n)
    )
    mine = precedence(SLOT, me)
    better = next(n for n in others if precedence(SLOT, n) < mine)
    worse = next(n for n in reversed(others) if precedence(SLOT, n) > mine)
    return better, worse


async def test_a_question_counts_as_the_askers_claim() -> None:
    async with exec_service() as service:
        better, worse = peers_around(service.me)
        answer = await ask(service, worse)
        assert answer == {"done": False, "claims": [worse]}
        holder = service.book.holder(SLOT, int(trio.current_time() * 1000))
        assert holder is not None and holder.node == worse
        # A better claimer asking takes the slot in our book: our last check yields.
        answer = await ask(service, better)
        assert answer["claims"] == sorted([better, worse])
        holder = service.book.holder(SLOT, int(trio.current_time() * 1000))
        assert holder is not None and holder.node == better


async def test_past_its_last_check_a_writer_says_done_and_notes_no_claim() -> None:
    async with exec_service() as service:
        better, _worse = peers_around(service.me)
        service._writing.add(SLOT)
        answer = await ask(service, better)
        assert answer == {"done": True, "claims": []}
        assert service.book.claims(SLOT) == ()  # a claimer told "done" yields: no claim
        service._writing.discard(SLOT)
        assert (await ask(service, better))["done"] is False
