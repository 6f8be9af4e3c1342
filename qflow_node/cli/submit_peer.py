"""`qflow submit --peer MULTIADDR`: submit without a local node, straight over libp2p.

A short-lived libp2p host (a fresh key: it is only a carrier; the submission itself is
signed by the submitter) connects to the peer, joins the subnet's `flows` topic and,
once the peer has it in its mesh, publishes the `submission` envelope with the blocks
inline that fit. It serves every block over bitswap too (a node fetches what was not
inline from the sender), and waits until some node announces the execution's
`exec.started` record - proof the subnet took it - or a `rejection` of it (the subnet
refused it: docs/protocol.md, "Rejections"), or the timeout passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.codec import CID, Block
from qflow_node.codec.envelope_bodies import RecordAnnouncement, Records, Rejection
from qflow_node.codec.envelope_bodies import Submission as SubmissionBody
from qflow_node.core.envelopes import Rejected, open_envelope, seal_envelope
from qflow_node.core.ledger import RecordError, decode_record
from qflow_node.identity import SigningKey
from qflow_node.net.bitswap import open_bitswap
from qflow_node.net.gossip import open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.topics import topic
from qflow_node.runtime.exec_service import inline_blocks
from qflow_node.store import BlockStore
from qflow_node.store.service import BlockService

LOOPBACK_ANY: Final = Multiaddr("/ip4/0.0.0.0/tcp/0")


class PeerSubmitError(Exception):
    """The peer could not be reached, or never took the submission."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A node's `rejection` of the submission (advisory: any node may send one; the
    CLI has no membership view to check the sender against)."""

    by: str
    reason: str
    message: str


async def submit_via_peer(
    peer: str, subnet: str, blocks: Sequence[Block], store: BlockStore, *, within: float
) -> bool | Refused:
    """Publish the submission (blocks[0]) through `peer`, serving `store` (which holds
    every block the flow needs) over bitswap; True once some node has written
    `exec.started` for it, `Refused` once a node rejected it, False if neither happened
    within `within` seconds (it may still)."""
    exec_id = blocks[0].cid
    store.put_many(list(blocks))
    key = SigningKey.generate()
    listen = [Multiaddr("/ip4/127.0.0.1/tcp/0")] if "/ip4/127." in peer else [LOOPBACK_ANY]
    host = build_host(key, listen)
    try:
        info = info_from_p2p_addr(Multiaddr(peer))
    except Exception as exc:
        raise PeerSubmitError(f"--peer {peer}: not a multiaddr with /p2p/: {exc}") from None
    flows, exec_topic = topic(subnet, "flows"), topic(subnet, "exec")
    async with (
        host.run(listen_addrs=listen),
        open_bitswap(host, BlockService(store).local),
        open_gossip(host) as gossip,
    ):
        refusals = await gossip.subscribe(flows, lambda _data: True)
        records = await gossip.subscribe(exec_topic, lambda _data: True)
        with trio.move_on_after(within) as reach:
            try:
                await host.connect(info)
            except Exception as exc:  # refused, unreachable, failed handshake
                raise PeerSubmitError(f"--peer {peer}: cannot connect: {exc}") from None
            await gossip.pubsub.wait_for_mesh(info.peer_id, flows, within)
        if reach.cancelled_caught:
            raise PeerSubmitError(f"--peer {peer}: no connection or mesh within {within:g} s")
        body = SubmissionBody(exec=exec_id, blocks=inline_blocks(blocks))
        await gossip.publish(flows, seal_envelope(key, subnet=subnet, seq=1, body=body))
        outcome: list[bool | Refused] = []
        with trio.move_on_after(within):
            async with trio.open_nursery() as waiting:

                async def started() -> None:
                    async for message in records:
                        if _started(message.data, subnet, exec_id):
                            outcome.append(True)
                            waiting.cancel_scope.cancel()

                async def refused() -> None:
                    async for message in refusals:
                        refusal = _refusal(message.data, subnet, exec_id)
                        if refusal is not None:
                            outcome.append(refusal)
                            waiting.cancel_scope.cancel()

                waiting.start_soon(started)
                waiting.start_soon(refused)
    return outcome[0] if outcome else False


def _refusal(data: bytes, subnet: str, exec_id: CID) -> Refused | None:
    """The rejection of `exec_id` a gossiped `flows` envelope carries, if it is one."""
    opened = open_envelope(data, subnet=subnet, channel="flows")
    if isinstance(opened, Rejected) or not isinstance(opened.body, Rejection):
        return None
    body = opened.body
    return Refused(opened.sender, body.reason, body.message) if body.exec == exec_id else None


def _started(data: bytes, subnet: str, exec_id: CID) -> bool:
    """Whether a gossiped envelope announces `exec_id`'s exec.started record (alone, or
    among the records of a `records` envelope)."""
    opened = open_envelope(data, subnet=subnet, channel="exec")
    if isinstance(opened, Rejected):
        return False
    body = opened.body
    if isinstance(body, RecordAnnouncement):
        return _announces_start(body, exec_id)
    if isinstance(body, Records):
        return any(_announces_start(one, exec_id) for one in body.records)
    return False


def _announces_start(body: RecordAnnouncement, exec_id: CID) -> bool:
    for block in body.blocks:
        if block.cid == body.record:
            try:
                record = decode_record(block.cid, block.data)
            except RecordError:
                return False
            return record.exec == exec_id and record.kind == "exec.started"
    return False
