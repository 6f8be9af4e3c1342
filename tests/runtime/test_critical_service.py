"""The two-phase commit over real libp2p hosts on loopback (`runtime/critical_service.py`).

Five nodes, each a validator of a 3-of-5 policy dealt in the test; node 0 coordinates.
Each validator's re-execution is a callback returning the outcome it computes, so a
node can be made to disagree; a node that is "down" serves nothing (its host is up, the
protocol unsupported), which the coordinator sees as silence.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr
from structlog.testing import capture_logs

from qflow_node.codec import dag_block, raw_block
from qflow_node.core.critical import (
    Decision,
    Outcome,
    Prepare,
    Settings,
    statement_bytes,
    verify_certificate,
)
from qflow_node.core.critical.testing import SECRET, committee
from qflow_node.core.policy import PolicyDocument
from qflow_node.core.scheduling import Slot
from qflow_node.crypto import Share, sign
from qflow_node.crypto.bls import R
from qflow_node.identity import SigningKey
from qflow_node.identity.sealed import seal_share
from qflow_node.net.host import build_host
from qflow_node.net.reqresp import Direct
from qflow_node.runtime.config import CriticalFiles
from qflow_node.runtime.critical_service import (
    CriticalConfig,
    CriticalError,
    CriticalService,
    CriticalSetupError,
    LockJournal,
    load_critical,
)

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
SLOT = Slot(dag_block({"an": "execution"}).cid, "pay", 1)
PAID = Outcome(SLOT.exec, "pay", 1, "completed", raw_block(b"paid 10").cid)
OTHER = Outcome(SLOT.exec, "pay", 1, "completed", raw_block(b"paid 99").cid)
QUICK = Settings(query_ms=1_500, commit_ms=2_500, abort_ms=2_500, resend_ms=400)
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(5)]


@dataclass
class Cluster:
    hosts: list[Direct]
    policy: PolicyDocument
    root: Path
    computes: list[Outcome | None]  # what each validator's re-execution gives
    nursery: trio.Nursery

    def service(self, i: int, *, serving: bool = True) -> CriticalService:
        share = committee(3, 5).shares[i]  # the policy's keys were dealt from the same seed
        config = CriticalConfig(self.policy, share if serving else None)

        async def reexecute(_peer: str, prepare: Prepare) -> Outcome | None:
            assert prepare.slot == SLOT
            return self.computes[i]

        service = CriticalService(
            KEYS[i].peer_id,
            self.hosts[i],
            config,
            journal=LockJournal(self.root / f"n{i}" / "critical-locks.log"),
            reexecute=reexecute,
            settings=QUICK,
        )
        self.nursery.start_soon(service.run)
        return service


@asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    keys = committee(3, 5).keys
    policy = PolicyDocument.create(subnet="s", validators=[k.peer_id for k in KEYS], keys=keys)
    async with AsyncExitStack() as stack:
        hosts = []
        for key in KEYS:
            host = build_host(key, LOOPBACK)
            await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
            hosts.append(Direct(host))
        for i, dialer in enumerate(hosts):
            for other in hosts[i + 1 :]:
                await dialer.host.connect(info_from_p2p_addr(other.host.get_addrs()[0]))
        nursery = await stack.enter_async_context(trio.open_nursery())
        yield Cluster(hosts, policy, tmp_path, [PAID] * 5, nursery)
        nursery.cancel_scope.cancel()


async def run_round(coordinator: CriticalService, proposal: Outcome | None = PAID) -> Decision:
    with trio.fail_after(30):
        decided = await coordinator.decide(SLOT, proposal)
    policy = coordinator.config.policy
    assert verify_certificate(decided.certificate, policy.keys, "s", SLOT)
    return decided.decision


async def test_five_validators_commit_and_the_certificate_is_the_group_signature(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        services = [c.service(i) for i in range(5)]
        with trio.fail_after(30):
            decided = await services[0].decide(SLOT, PAID)
        assert decided.decision == Decision.commit(PAID)
        statement = statement_bytes("s", c.policy.cid, SLOT, decided.decision)
        assert decided.certificate.sig == sign(SECRET, statement).to_bytes()  # known answer


async def test_two_validators_down_still_commit_three_down_cannot(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        services = [c.service(i, serving=i < 3) for i in range(5)]
        assert await run_round(services[0]) == Decision.commit(PAID)
    async with cluster(tmp_path / "again") as c:
        services = [c.service(i, serving=i < 2) for i in range(5)]
        with trio.fail_after(30), pytest.raises(CriticalError, match="timed out"):
            await services[0].decide(SLOT, PAID)


async def test_validators_that_compute_another_outcome_make_it_abort(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        c.computes = [PAID, PAID, OTHER, OTHER, OTHER]  # the coordinator's is the odd one
        services = [c.service(i) for i in range(5)]
        assert await run_round(services[0]) == Decision.abort()


async def test_a_lock_survives_a_restart_and_no_second_outcome_is_signed(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        services = [c.service(i) for i in range(5)]
        assert await run_round(services[0]) == Decision.commit(PAID)
    async with cluster(tmp_path) as c:  # every node back from its journal
        c.computes = [OTHER] * 5  # even if all of them now computed another outcome
        services = [c.service(i) for i in range(5)]
        assert await run_round(services[1], OTHER) == Decision.commit(PAID)  # recovered
        locks = [s.validator.lock(SLOT) for s in services if s.validator is not None]
        assert all(lock is not None and lock.decision == Decision.commit(PAID) for lock in locks)


async def test_a_malformed_request_gets_a_precise_error_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        service = c.service(1)
        answer = await service.answer(KEYS[0].peer_id, b"\xa1\x61x\x01")
        assert b"bad request" in answer
        assert service.validator is not None and service.validator.locks() == ()


def test_the_critical_files_are_checked_before_a_node_boots(tmp_path: Path) -> None:
    shares = committee(3, 5).shares
    policy = PolicyDocument.create(
        subnet="s", validators=[k.peer_id for k in KEYS], keys=committee(3, 5).keys
    )
    (tmp_path / "policy.cbor").write_bytes(policy.to_block().data)
    for i in (0, 1):
        sealed = seal_share(KEYS[i].peer_id, "s", policy.cid, i + 1, shares[i].to_bytes())
        (tmp_path / f"{i}.share").write_bytes(sealed.to_bytes())
    loaded = load_critical(tmp_path, CriticalFiles(Path("policy.cbor"), Path("0.share")), KEYS[0])
    assert loaded.cid == policy.cid and loaded.share == shares[0]
    assert load_critical(tmp_path, CriticalFiles(Path("policy.cbor")), KEYS[4]).share is None
    stranger = SigningKey(b"\x09" * 32)
    cases = [
        (CriticalFiles(Path("none.cbor")), KEYS[0], "No such file"),
        (CriticalFiles(Path("0.share")), KEYS[0], "[critical] policy:"),
        (CriticalFiles(Path("policy.cbor"), Path("1.share")), KEYS[0], "[critical] share"),
        (CriticalFiles(Path("policy.cbor"), Path("0.share")), stranger, "is not a validator"),
    ]
    for files, key, message in cases:
        with pytest.raises(CriticalSetupError, match=re.escape(message)):
            load_critical(tmp_path, files, key)


def _byzantine(c: Cluster, i: int, kind: type[CriticalService], share: Share) -> CriticalService:
    async def reexecute(_peer: str, _prepare: Prepare) -> Outcome | None:
        return c.computes[i]

    service = kind(
        KEYS[i].peer_id,
        c.hosts[i],
        CriticalConfig(c.policy, share),
        journal=LockJournal(c.root / f"b{i}" / "critical-locks.log"),
        reexecute=reexecute,
        settings=QUICK,
    )
    c.nursery.start_soon(service.run)
    return service


async def test_a_forged_vote_is_reported_and_never_counted(tmp_path: Path) -> None:
    """Validators 1 and 2 honest, 3 signing with a wrong share, 4 and 5 down: the forged
    partial is named and not counted, so no certificate."""
    async with cluster(tmp_path) as c:
        honest = [c.service(i, serving=i < 2) for i in (0, 1, 3, 4)]
        real = committee(3, 5).shares[2]
        _byzantine(c, 2, CriticalService, Share(real.index, (real.value + 1) % R))
        with capture_logs() as logs, trio.fail_after(30), pytest.raises(CriticalError):
            await honest[0].decide(SLOT, PAID)
    forged = [e for e in logs if e["event"] == "critical.invalid_partial"]
    assert forged and {e["validator"] for e in forged} == {3}


async def test_a_validator_that_lies_about_the_result_is_outvoted(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        c.computes[4] = OTHER  # validator 5 computes (or claims) another result
        services = [c.service(i) for i in range(5)]
        assert await run_round(services[0]) == Decision.commit(PAID)
        assert services[4].validator is not None and services[4].validator.lock(SLOT) is None
