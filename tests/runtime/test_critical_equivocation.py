"""A coordinator remembers validators' signed votes across rounds and proves equivocation
(`runtime/critical_service.py`: `VoteMemory`, `EquivocationProof`).

Within one round a coordinator hears each validator once, so a validator that signs
commit in one round and abort in the next shows it only across rounds. Five real hosts
on loopback; validator 5 signs whatever its script says with its real share, so both
of its votes verify: the proof is a proof.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr
from structlog.testing import capture_logs

from qflow_node.codec import dag_block, encode_dag, raw_block
from qflow_node.core.critical import (
    AbortRequest,
    Answer,
    Decision,
    Outcome,
    Prepare,
    Query,
    Refusal,
    Settings,
    SignedDecision,
    Vote,
    decode_message,
    encode_message,
    statement_bytes,
    verify_certificate,
)
from qflow_node.core.critical.testing import committee
from qflow_node.core.policy import PolicyDocument
from qflow_node.core.scheduling import Slot
from qflow_node.crypto import Share, partial_sign
from qflow_node.crypto.bls import R
from qflow_node.identity import SigningKey
from qflow_node.log import get_logger
from qflow_node.net.host import build_host
from qflow_node.net.reqresp import Direct
from qflow_node.runtime.critical_service import (
    CriticalConfig,
    CriticalError,
    CriticalService,
    EquivocationProof,
    LockJournal,
    VoteMemory,
)

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
SLOT = Slot(dag_block({"an": "execution"}).cid, "pay", 1)
PAID = Outcome(SLOT.exec, "pay", 1, "completed", raw_block(b"paid 10").cid)
COMMIT, ABORT = Decision.commit(PAID), Decision.abort()
QUICK = Settings(query_ms=800, commit_ms=1_500, abort_ms=1_500, resend_ms=300)
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(5)]
GROUP = committee(3, 5)
POLICY = PolicyDocument.create(subnet="s", validators=[k.peer_id for k in KEYS], keys=GROUP.keys)


def signed(decision: Decision, share: Share) -> SignedDecision:
    statement = statement_bytes("s", POLICY.cid, SLOT, decision)
    return SignedDecision(decision, partial_sign(share, statement).to_bytes())


class Switch(CriticalService):
    """An honest validator that can be switched off (it then answers an error, which
    the coordinator treats as silence)."""

    up = True

    async def answer(self, peer: str, request: bytes) -> bytes:
        if not self.up:
            return encode_dag({"error": "switched off"})
        return await super().answer(peer, request)


class Equivocator(CriticalService):
    """Signs, with its real share, the next decision of `script` for every request (the
    last one repeats): a yes vote when it is what was asked, else a refusal showing it."""

    script: list[Decision]

    async def answer(self, peer: str, request: bytes) -> bytes:
        message = decode_message(request)
        assert isinstance(message, Prepare | AbortRequest | Query)
        assert self.config.share is not None
        decision = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        vote = signed(decision, self.config.share)
        index = self.config.share.index
        if isinstance(message, Query):
            return encode_message(Answer("s", POLICY.cid, SLOT, index, vote))
        kind: Literal["prepare", "abort"] = "prepare" if isinstance(message, Prepare) else "abort"
        asked = message.decision if isinstance(message, Prepare) else ABORT
        refusal = None
        if decision != asked:
            refusal = Refusal.ABORTED if decision == ABORT else Refusal.LOCKED
        return encode_message(Vote("s", POLICY.cid, SLOT, index, kind, vote, refusal))


@dataclass
class Cluster:
    services: list[CriticalService]
    evidence: Path

    def up(self, *indices: int) -> None:
        """Validators `indices` (1..5) answer; the other honest ones are switched off."""
        for i, service in enumerate(self.services, start=1):
            if isinstance(service, Switch):
                service.up = i in indices


@asynccontextmanager
async def cluster(tmp_path: Path, script: list[Decision]) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        hosts: list[Direct] = []
        for key in KEYS:
            host = build_host(key, LOOPBACK)
            await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
            hosts.append(Direct(host))
        for i, dialer in enumerate(hosts):
            for other in hosts[i + 1 :]:
                await dialer.host.connect(info_from_p2p_addr(other.host.get_addrs()[0]))
        nursery = await stack.enter_async_context(trio.open_nursery())
        services: list[CriticalService] = []
        for i, (key, direct) in enumerate(zip(KEYS, hosts, strict=True)):
            kind = Equivocator if i == 4 else Switch

            async def reexecute(_peer: str, _prepare: Prepare) -> Outcome:
                return PAID

            service = kind(
                key.peer_id,
                direct,
                CriticalConfig(POLICY, GROUP.shares[i]),
                journal=LockJournal(tmp_path / f"n{i}" / "critical-locks.log"),
                reexecute=reexecute,
                settings=QUICK,
                evidence=tmp_path / "evidence",
            )
            if isinstance(service, Equivocator):
                service.script = list(script)
            nursery.start_soon(service.run)
            services.append(service)
        yield Cluster(services, tmp_path / "evidence")
        nursery.cancel_scope.cancel()


async def round_(coordinator: CriticalService, *, query_first: bool) -> Decision:
    with trio.fail_after(30):
        decided = await coordinator.decide(SLOT, PAID, query_first=query_first)
    assert verify_certificate(decided.certificate, POLICY.keys, "s", SLOT)
    return decided.decision


async def test_a_validator_voting_abort_then_commit_across_rounds_is_proven_and_dropped(
    tmp_path: Path,
) -> None:
    """Validator 5 signs abort in round 1 and commit in every later one. The coordinator
    (validator 1) proves it, with both votes written to a file, and counts neither: in
    round 2 validators 1 and 2 and its commit would make t = 3, yet the round cannot
    commit; with a third honest validator round 3 can. Honest validators repeating
    their vote round after round are never reported."""
    async with cluster(tmp_path, [ABORT, COMMIT]) as c:
        coordinator = c.services[0]
        c.up(1, 5)
        get_logger()  # configured now: configuring inside `capture_logs` would undo it
        with capture_logs() as logs:
            with pytest.raises(CriticalError, match="timed out"):
                await round_(coordinator, query_first=False)  # 1 commit, 5 abort
            assert not c.evidence.exists()  # nothing conflicting yet
            c.up(1, 2, 5)
            with pytest.raises(CriticalError):
                await round_(coordinator, query_first=True)  # 5 now signs commit
            assert coordinator.votes.proven(SLOT, 5)
            c.up(1, 2, 3, 5)
            assert await round_(coordinator, query_first=True) == COMMIT
        assert len(coordinator.votes) == 0  # a decided slot's votes are dropped
    reports = [e for e in logs if e["event"] == "critical.equivocation"]
    assert [(e["validator"], e["first"], e["second"]) for e in reports] == [(5, "abort", "commit")]
    assert reports[0]["peer"] == KEYS[4].peer_id
    path = Path(reports[0]["proof"])
    assert path.name == f"{SLOT.exec.encode()}-pay-1-5.cbor"
    assert list(c.evidence.iterdir()) == [path]  # no temp file left beside it
    proof = EquivocationProof.from_bytes(await trio.Path(path).read_bytes())
    assert (proof.slot, proof.index) == (SLOT, 5)
    assert (proof.first.decision, proof.second.decision) == (ABORT, COMMIT)
    assert proof.holds(POLICY.keys)


def test_the_memory_needs_two_genuine_partials_and_stays_bounded() -> None:
    share = GROUP.shares[4]
    aborted = signed(ABORT, share)
    forged_share = Share(share.index, (share.value + 1) % R)
    memory = VoteMemory("s", POLICY.cid, POLICY.keys, capacity=2)
    # A forged first vote is no signature: a genuine other one replaces it, no proof.
    assert memory.heard(SLOT, 5, signed(COMMIT, forged_share)) is None
    assert memory.heard(SLOT, 5, aborted) is None
    assert memory.heard(SLOT, 5, aborted) is None  # a repeat
    assert memory.heard(SLOT, 5, signed(COMMIT, forged_share)) is None  # forged second
    assert not memory.proven(SLOT, 5)
    proof = memory.heard(SLOT, 5, signed(COMMIT, share))
    assert proof is not None and proof.holds(POLICY.keys) and memory.proven(SLOT, 5)
    assert memory.heard(SLOT, 5, aborted) is None  # proven once
    # A proof with a forged or a repeated vote proves nothing.
    forged = EquivocationProof("s", POLICY.cid, SLOT, 5, proof.first, signed(COMMIT, forged_share))
    assert not forged.holds(POLICY.keys)
    assert not EquivocationProof("s", POLICY.cid, SLOT, 5, proof.first, proof.first).holds(
        POLICY.keys
    )
    assert not EquivocationProof("s", POLICY.cid, SLOT, 4, proof.first, proof.second).holds(
        POLICY.keys
    )  # not validator 4's signatures
    assert EquivocationProof.from_bytes(encode_dag(proof.to_obj())) == proof
    # Its file name stays a file name whatever the step is called.
    for name in ("pay/refund", "é" * 200):
        long = EquivocationProof("s", POLICY.cid, Slot(SLOT.exec, name, 1), 5, aborted, aborted)
        assert "/" not in long.file_name() and len(long.file_name().encode()) <= 255
    # Bounded: the oldest slot goes first, its proof with it.
    for attempt in (2, 3):
        memory.heard(Slot(SLOT.exec, "pay", attempt), 1, signed(ABORT, GROUP.shares[0]))
    assert len(memory) == 2 and not memory.proven(SLOT, 5)
