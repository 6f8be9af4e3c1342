"""The DKG ceremony over real libp2p hosts on loopback (`runtime/dkg_service.py`).

Five hosts in one trio process, t = 3: every party derives the same policy and its own
share of the key, which signs; a cheating dealer is disqualified by everyone and the
others finish; so are the rest when a party is offline; hostile requests get a precise
refusal and change nothing. Waits are bounded; nothing asserts on timings.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from multiaddr import Multiaddr

from qflow_node import clock
from qflow_node.codec import DAG_CBOR, cid_for
from qflow_node.core.dkg import Answer, Ceremony, DkgPlan, Envelope, Finished, Payload
from qflow_node.core.dkg.testing import WrongShare, make_plan, node_keys
from qflow_node.crypto import (
    Complaint,
    DealtShare,
    combine_verified,
    partial_sign,
    seeded_rng,
    verify,
    verify_share,
)
from qflow_node.identity import SigningKey
from qflow_node.net.host import advertised_addrs, build_host
from qflow_node.net.reqresp import Direct
from qflow_node.runtime.dkg_service import DKG_PROTOCOL, DkgError, DkgService, dkg_limits

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
KEYS = node_keys(6, seed=40)  # five parties, and a stranger
STEP_MS = 500
TIMEOUT = 60.0
MSG = b"signed by the new subnet key"
OTHER_PLAN = cid_for(b"another ceremony", DAG_CBOR)

Results = dict[int, Finished | DkgError]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def hosts(keys: Sequence[SigningKey]) -> AsyncIterator[list[Direct]]:
    async with AsyncExitStack() as stack:
        directs = []
        for key in keys:
            host = build_host(key, LOOPBACK)
            await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
            directs.append(Direct(host))
        yield directs


def plan_for(directs: dict[int, Direct], offline: Sequence[int] = ()) -> DkgPlan:
    """A 3-of-5 plan starting shortly; an offline party's address refuses connections."""
    addrs = [
        f"/ip4/127.0.0.1/tcp/{closed_port()}"
        if i in offline
        else advertised_addrs(directs[i].host)[0]
        for i in range(1, 6)
    ]
    start = clock.wall_ms() + 1500  # time for every service to start and dial
    return make_plan(KEYS[:5], 3, start_ms=start, step_ms=STEP_MS, addrs=addrs)


async def run_all(services: dict[int, DkgService]) -> Results:
    results: Results = {}

    async def one(i: int, service: DkgService) -> None:
        try:
            results[i] = await service.run()
        except DkgError as exc:
            results[i] = exc

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i, service in services.items():
                nursery.start_soon(one, i, service)
    return results


def finished(results: Results, parties: Sequence[int]) -> list[Finished]:
    done = []
    for i in parties:
        result = results[i]
        assert isinstance(result, Finished), f"party {i}: {result}"
        done.append(result)
    assert len({r.policy.cid for r in done}) == 1, "the parties derived different policies"
    return done


def service(direct: Direct, plan: DkgPlan, i: int, kind: type[Ceremony] = Ceremony) -> DkgService:
    return DkgService(direct, kind(plan, KEYS[i - 1], seeded_rng(b"party %d" % i)))


async def test_five_parties_make_one_key_whose_shares_sign() -> None:
    async with hosts(KEYS[:5]) as directs:
        by_party = dict(enumerate(directs, 1))
        plan = plan_for(by_party)
        results = await run_all({i: service(d, plan, i) for i, d in by_party.items()})
    done = finished(results, range(1, 6))
    policy = done[0].policy
    assert policy.subnet == plan.subnet and [v.peer for v in policy.validators] == [
        k.peer_id for k in KEYS[:5]
    ]
    assert policy.threshold == 3 and done[0].result.qualified == (1, 2, 3, 4, 5)
    for i, result in enumerate(done, 1):
        assert result.confirmed_by == (1, 2, 3, 4, 5)
        assert result.result.share.index == i
        assert verify_share(result.result.share, policy.keys.commitments)
    partials = {r.result.share.index: partial_sign(r.result.share, MSG) for r in done[1:4]}
    combined = combine_verified(policy.keys, MSG, partials)
    assert combined.culprits == () and verify(policy.group_key, MSG, combined.signature)


@pytest.mark.parametrize("justify", ["none", "bad"])
async def test_a_cheating_dealer_is_disqualified_and_the_others_finish(justify: str) -> None:
    """Party 5 deals party 2 a wrong share, then does not justify or reveals a bad one."""

    class Cheat(WrongShare):
        pass

    Cheat.victim, Cheat.justify = 2, justify
    async with hosts(KEYS[:5]) as directs:
        by_party = dict(enumerate(directs, 1))
        plan = plan_for(by_party)
        services = {
            i: service(d, plan, i, Cheat if i == 5 else Ceremony) for i, d in by_party.items()
        }
        results = await run_all(services)
    done = finished(results, range(1, 5))
    why = {
        "none": "did not answer the complaint from 2",
        "bad": "revealed a share for 2 that does not verify",
    }[justify]
    for result in done:
        assert result.result.qualified == (1, 2, 3, 4)
        assert dict(result.result.disqualified) == {5: why}
        assert verify_share(result.result.share, result.policy.keys.commitments)


async def test_an_offline_party_is_disqualified_and_the_rest_finish() -> None:
    async with hosts(KEYS[:4]) as directs:
        by_party = dict(enumerate(directs, 1))
        plan = plan_for(by_party, offline=[5])
        results = await run_all({i: service(d, plan, i) for i, d in by_party.items()})
    done = finished(results, range(1, 5))
    for result in done:
        assert dict(result.result.disqualified) == {5: "sent no deal"}
        assert result.confirmed_by == (1, 2, 3, 4)
    partials = {r.result.share.index: partial_sign(r.result.share, MSG) for r in done[:3]}
    combined = combine_verified(done[0].policy.keys, MSG, partials)
    assert verify(done[0].policy.group_key, MSG, combined.signature)


async def test_hostile_requests_get_a_precise_refusal_and_change_nothing() -> None:
    async with hosts(KEYS[:6]) as directs:
        by_party = dict(enumerate(directs[:5], 1))
        plan = plan_for(by_party)
        services = {i: service(d, plan, i) for i, d in by_party.items()}
        answers: list[Answer] = []

        async def hostile() -> None:
            """Party 1 (and a stranger) send party 2 what it must refuse."""
            me, target = KEYS[0], KEYS[1].peer_id
            cases = [
                b"\xa1\x61x",  # not even dag-cbor
                Envelope.signed(Payload(OTHER_PLAN, 1, Complaint(1, 3)), me).to_bytes(),
                Envelope.signed(Payload(plan.cid, 1, Complaint(3, 4)), me).to_bytes(),
                Envelope.signed(
                    Payload(plan.cid, 1, DealtShare(1, 3, b"\x01" * 32)), me
                ).to_bytes(),
            ]
            await services[1].serving.wait()
            for data in cases:
                answers.append(Answer.from_bytes(await services[1].channel.request(target, data)))
            stranger = Direct(directs[5].host)
            channel = stranger.open_channel(DKG_PROTOCOL, _unused, dkg_limits(plan))
            stranger.host.get_peerstore().add_addrs(
                by_party[2].host.get_id(), by_party[2].host.get_addrs(), 0
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(channel.run)
                data = Envelope.signed(Payload(plan.cid, 1, Complaint(1, 3)), KEYS[5]).to_bytes()
                answers.append(Answer.from_bytes(await channel.request(target, data)))
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hostile)
            results = await run_all(services)
    reasons = [(a.status, a.reason or "") for a in answers]
    assert [status for status, _ in reasons] == ["refused"] * 5
    assert reasons[0][1].startswith("dkg message: invalid or non-canonical dag-cbor")
    assert reasons[1][1].startswith(
        f"a message of plan {cid_for(b'another ceremony', DAG_CBOR).encode()}"
    )
    assert reasons[2][1] == "a dkg/complaint by party 3 sent as party 1"
    assert reasons[3][1] == "dkg/share from party 1 is for party 3, not this party (2)"
    assert reasons[4][1].startswith(f"peer {KEYS[5].peer_id} is not a party of plan")
    done = finished(results, range(1, 6))
    assert all(r.result.qualified == (1, 2, 3, 4, 5) for r in done)


async def _unused(_peer: str, _data: bytes) -> bytes:
    return b""
