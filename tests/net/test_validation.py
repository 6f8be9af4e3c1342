"""The daemon's topic validators: only signed wire envelopes for this subnet and topic
are delivered or forwarded - checked alone and across two real hosts."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.codec.envelope_bodies import Heartbeat, Manifest
from qflow_node.core.envelopes import seal_envelope
from qflow_node.identity import SigningKey
from qflow_node.net.gossip import open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.topics import topic
from qflow_node.runtime.validation import envelope_validator

SUBNET = "dao-1"
LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]


def heartbeat(key: SigningKey, subnet: str = SUBNET, seq: int = 1) -> bytes:
    body = Heartbeat(
        node=key.peer_id,
        subnets=(subnet,),
        manifest=Manifest(
            wasm_engine="wasmtime/50.0.1",
            memory_bytes=1 << 30,
            load=0,
            free_work_tokens=1,
            version="0.1.0",
        ),
    )
    return seal_envelope(key, subnet=subnet, seq=seq, body=body)


def test_only_envelopes_for_this_subnet_and_topic_pass() -> None:
    key = SigningKey.generate()
    nodes = envelope_validator(SUBNET, "nodes")
    assert nodes(heartbeat(key)) is True
    assert envelope_validator(SUBNET, "exec")(heartbeat(key)) is False  # wrong topic
    assert envelope_validator("other", "nodes")(heartbeat(key)) is False  # signed for dao-1
    assert nodes(heartbeat(key, subnet="other")) is False
    assert nodes(b"") is False
    assert nodes(b"\x86garbage") is False
    tampered = bytearray(heartbeat(key))
    tampered[-1] ^= 1  # flips a signature bit
    assert nodes(bytes(tampered)) is False


async def test_a_node_forwards_heartbeats_and_drops_everything_else() -> None:
    name = topic(SUBNET, "nodes")
    validate = envelope_validator(SUBNET, "nodes")
    async with AsyncExitStack() as stack:
        keys = [SigningKey.generate() for _ in range(2)]
        hosts = [build_host(key, LOOPBACK) for key in keys]
        gossips = []
        for host in hosts:
            await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
            gossips.append(await stack.enter_async_context(open_gossip(host)))
        a, b = gossips
        # a publishes whatever it is given (a faulty or hostile sender); b checks.
        await a.subscribe(name, lambda _data: True)
        at_b = await b.subscribe(name, validate)
        await hosts[0].connect(info_from_p2p_addr(hosts[1].get_addrs()[0]))
        good = heartbeat(keys[0])
        with trio.fail_after(10):
            await a.pubsub.wait_for_mesh(hosts[1].get_id(), name, timeout=10)
            await a.publish(name, b"not an envelope")
            await a.publish(name, heartbeat(keys[0], subnet="other"))
            await a.publish(name, good)
            message = await at_b.receive()
        assert message.data == good
        assert message.origin == keys[0].peer_id
