"""A hostile peer for the cluster tests: joins a node's topics and publishes bad envelopes.

    python tests/net/hostile_peer.py <target multiaddr with /p2p/> <subnet>

It is a real libp2p peer (our host, GossipSub with validators that accept anything), so
its messages are well-formed *pubsub* messages, correctly signed by its own key: only
the Qflow envelope inside is bad. For each topic of the subnet it publishes each case
below once, after the target has grafted it into that topic's mesh, then prints one JSON
line `{"sent": {"<kind>/<reason>": n, ...}}` with the reason the target must count, and
stays connected until its stdin closes. Bounded: it gives up (exit 1) if the mesh does
not form within the timeout.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import msgspec
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.codec import dag_block
from qflow_node.codec.envelope_bodies import Claim, Heads, HeadsEntry, Heartbeat, Manifest
from qflow_node.core.envelopes import seal_envelope
from qflow_node.identity import SigningKey
from qflow_node.net.gossip import GossipSettings, open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.topics import TOPIC_KINDS, topic

TIMEOUT = 20.0
EXEC = dag_block({"hostile": True}).cid


def cases(key: SigningKey, subnet: str, kind: str) -> list[tuple[str, bytes]]:
    """(reason the receiver must give, envelope bytes) for one topic."""
    claim = seal_envelope(key, subnet=subnet, seq=1, body=Claim(EXEC, "s", 1, 1000, 0))
    if kind == "exec":
        good = seal_envelope(key, subnet=subnet, seq=1, body=Heads((HeadsEntry(EXEC, (EXEC,)),)))
    elif kind == "nodes":
        manifest = Manifest(
            wasm_engine="x", memory_bytes=1, load=0, free_work_tokens=0, version="0.1.0"
        )
        body = Heartbeat(node=key.peer_id, subnets=(subnet,), manifest=manifest)
        good = seal_envelope(key, subnet=subnet, seq=1, body=body)
    else:  # flows: a well-signed claim, on a topic claims never travel on
        good = claim
    forged = bytearray(good)
    forged[-1] ^= 0xFF  # the signature is the last field: flip its last byte
    fields = msgspec.msgpack.decode(good)
    signature_case = "wrong_topic" if kind == "flows" else "bad_signature"
    unknown = msgspec.msgpack.encode({**fields, "kind": "teleport"})
    future = msgspec.msgpack.encode({**fields, "v": 99})
    too_big = msgspec.msgpack.encode({**fields, "kind": "claim", "body": bytes(8 << 10)})
    return [
        ("malformed", b"\xc1 not msgpack at all"),
        (signature_case, bytes(forged)),
        ("unknown_kind", unknown),
        ("unsupported_version", future),
        ("oversize", too_big),
    ]


async def main(target: str, subnet: str) -> None:
    key = SigningKey.generate()
    host = build_host(key, [Multiaddr("/ip4/127.0.0.1/tcp/0")])
    settings = GossipSettings(max_message_size=2 << 20)
    sent: Counter[str] = Counter()
    async with (
        host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]),
        open_gossip(host, settings) as gossip,
    ):
        info = info_from_p2p_addr(Multiaddr(target))
        for kind in TOPIC_KINDS:
            await gossip.subscribe(topic(subnet, kind), lambda _data: True)
        with trio.fail_after(TIMEOUT):
            await host.connect(info)
            for kind in TOPIC_KINDS:
                await gossip.pubsub.wait_for_mesh(info.peer_id, topic(subnet, kind), TIMEOUT)
        for kind in TOPIC_KINDS:
            for reason, data in cases(key, subnet, kind):
                await gossip.publish(topic(subnet, kind), data)
                sent[f"{kind}/{reason}"] += 1
        print(json.dumps({"sent": dict(sorted(sent.items()))}), flush=True)
        # Stay connected (so the router flushes) until the test closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
