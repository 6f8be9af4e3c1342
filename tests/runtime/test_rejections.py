"""An invalid submission gossiped to a subnet of real in-process nodes: one node answers
with a `rejection` on the flows topic, and `qflow watch|status` on a node that never got
the submission itself report it.

Each node is what `qflow node run` wires (libp2p host, GossipSub, bitswap, a repo, the
sandbox, membership, the execution service, the daemon's dispatcher, the control API's
exec methods), in one trio run. The submitter is a bare libp2p host, as `qflow submit
--peer` is. To show that the rejection alone tells a node why, one node's `flows`
subscription loses the submission (gossip is lossy; here it is on purpose).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner, Result
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.api.exec_methods import exec_methods
from qflow_node.api.server import serve_api
from qflow_node.cli.init_cmd import init_repo
from qflow_node.cli.main import qflow
from qflow_node.codec import CID, Block, dag_block
from qflow_node.codec.envelope import decode_envelope
from qflow_node.codec.envelope_bodies import Rejection
from qflow_node.codec.envelope_bodies import Submission as SubmissionBody
from qflow_node.core.engine.records import json_block
from qflow_node.core.envelopes import Verified, open_envelope, seal_envelope
from qflow_node.core.membership import MembershipConfig, PeerState
from qflow_node.core.rejection import publisher
from qflow_node.core.submission import NONCE_LEN, build_submission
from qflow_node.flow_loader import load_flow
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.net.bitswap import open_bitswap
from qflow_node.net.gossip import Gossip, GossipMessage, open_gossip
from qflow_node.net.host import build_host
from qflow_node.net.reqresp import Direct
from qflow_node.net.topics import TOPIC_KINDS, topic
from qflow_node.repo import RepoPaths
from qflow_node.runtime.daemon import Consumers, _dispatch
from qflow_node.runtime.exec_service import ExecService, inline_blocks
from qflow_node.runtime.heads_service import HeadsService
from qflow_node.runtime.local import LocalRunner
from qflow_node.runtime.membership_service import MembershipService
from qflow_node.runtime.validation import Rejections
from qflow_node.sandbox import Sandbox
from qflow_node.store import FileBlockStore
from qflow_node.store.service import BlockService

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
SUBNET = "rej"
FLOWS = topic(SUBNET, "flows")
# Slow to suspect: the test is about who answers, not about failure detection.
MEMBERSHIP = MembershipConfig(heartbeat_ms=200, suspect_ms=5_000, dead_ms=10_000)
GREET = Path(__file__).resolve().parents[2] / "examples" / "flows" / "greet.yaml"
TIMEOUT = 30  # seconds: a bound on every wait, never an expected duration


@dataclass
class Node:
    repo: Path
    key: SigningKey
    host: IHost
    gossip: Gossip
    membership: MembershipService
    execs: ExecService

    @property
    def id(self) -> str:
        return self.key.peer_id


@pytest.fixture
def root() -> Iterator[Path]:
    # Short: each repo's API socket path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="qr", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def running_node(repo: Path, drops_submissions: Callable[[str], bool]) -> AsyncIterator[Node]:
    """A node as the daemon wires it; its `flows` deliveries lose the submissions for
    which `drops_submissions(its peer id)` holds at that moment."""
    key = init_repo(repo)
    paths = RepoPaths(repo)
    store = FileBlockStore(paths.blocks)
    blocks = BlockService(store)
    ledger = LedgerStore(store, paths)
    host = build_host(key, LOOPBACK)
    with Sandbox(store) as sandbox, LocalRunner(store, ledger, sandbox, key) as runner:
        async with (
            host.run(listen_addrs=LOOPBACK),
            open_bitswap(host, blocks.local) as bitswap,
            open_gossip(host) as gossip,
            trio.open_nursery() as nursery,
        ):
            blocks.exchange = bitswap
            membership = MembershipService(key, gossip, [SUBNET], MEMBERSHIP)
            execs = ExecService(
                key,
                gossip,
                blocks,
                ledger,
                runner=runner,
                membership=membership,
                direct=Direct(host),
                subnets=[SUBNET],
            )
            heads = HeadsService(
                key,
                gossip,
                blocks,
                ledger,
                subnets=[SUBNET],
                withhold=execs.withholds,
                on_merged=execs.ledger_merged,
            )
            envelopes = Rejections()  # the daemon's validators, which keep what they opened
            consumers = Consumers(membership, heads, execs, envelopes)
            for kind in TOPIC_KINDS:  # as the daemon's _join_subnets
                if kind == "nodes":
                    beats = await gossip.subscribe(
                        topic(SUBNET, kind), membership.validator(SUBNET)
                    )
                    nursery.start_soon(membership.consume, SUBNET, beats)
                    continue
                messages = await gossip.subscribe(
                    topic(SUBNET, kind), envelopes.validator(SUBNET, kind)
                )
                if kind == "flows":
                    messages = lossy(nursery, messages, lambda: drops_submissions(key.peer_id))
                nursery.start_soon(_dispatch, SUBNET, kind, messages, consumers)
            nursery.start_soon(membership.run)
            nursery.start_soon(execs.run)
            handlers = exec_methods(
                ledger, active=lambda: list(execs.replicas), rejected=execs.rejection
            )
            await nursery.start(serve_api, paths.api_socket, handlers)
            yield Node(repo, key, host, gossip, membership, execs)
            nursery.cancel_scope.cancel()


def lossy(
    nursery: trio.Nursery,
    messages: trio.MemoryReceiveChannel[GossipMessage],
    losing: Callable[[], bool],
) -> trio.MemoryReceiveChannel[GossipMessage]:
    """`messages` without the submissions that arrive while `losing()`."""
    send, receive = trio.open_memory_channel[GossipMessage](64)

    async def forward() -> None:
        async with send:
            async for message in messages:
                if losing() and decode_envelope(message.data).kind == "submission":
                    continue
                await send.send(message)

    nursery.start_soon(forward)
    return receive


async def next_rejection(
    messages: trio.MemoryReceiveChannel[GossipMessage], exec: CID
) -> tuple[str, Rejection]:
    """(sender, body) of the next rejection of `exec` heard on the flows topic."""
    with trio.fail_after(TIMEOUT):
        async for message in messages:
            opened = open_envelope(message.data, subnet=SUBNET, channel="flows")
            body = opened.body if isinstance(opened, Verified) else None
            if isinstance(body, Rejection) and body.exec == exec:
                assert isinstance(opened, Verified)
                return opened.sender, body
    raise AssertionError("the flows subscription ended")


async def known_to(node: Node, exec: CID) -> None:
    """Until `node` knows why `exec` was refused (bounded)."""
    with trio.fail_after(TIMEOUT):
        await node.execs.wait_rejection(exec)


async def connect(a: IHost, b: IHost) -> None:
    await a.connect(info_from_p2p_addr(b.get_addrs()[0]))


async def qflow_in_thread(repo: Path, *args: str) -> Result:
    command = [*args, "--repo", str(repo)]
    with trio.fail_after(TIMEOUT):
        return await trio.to_thread.run_sync(partial(CliRunner().invoke, qflow, command))


def invalid_submission(key: SigningKey) -> list[Block]:
    """greet.yaml without its required input `who`: signed and well formed, but the
    inputs do not match the flow's schema (`bad_inputs`)."""
    loaded = load_flow(GREET)
    inputs = json_block({"whom": "nobody"})
    submission = build_submission(
        key,
        flow=loaded.cid,
        inputs=inputs.cid,
        nonce=os.urandom(NONCE_LEN),
        ts=time.time_ns() // 1_000_000,
        subnet=SUBNET,
    )
    return [submission, loaded.compiled.block, inputs]


async def test_one_node_rejects_an_invalid_submission_and_every_node_can_say_why(
    root: Path,
) -> None:
    deaf: set[str] = set()  # nodes whose flows subscription loses the submission
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(running_node(root / f"n{i}", deaf.__contains__))
            for i in range(4)
        ]
        # The submitter: a bare host on the flows topic (it only carries the envelope).
        carrier = SigningKey.generate()
        client = build_host(carrier, LOOPBACK)
        await stack.enter_async_context(client.run(listen_addrs=LOOPBACK))
        client_gossip = await stack.enter_async_context(open_gossip(client))
        heard = await client_gossip.subscribe(FLOWS, lambda _data: True)

        with trio.fail_after(TIMEOUT):
            for i, a in enumerate(nodes):
                for b in nodes[i + 1 :]:
                    await connect(a.host, b.host)
                await connect(client, a.host)
            for a in nodes:
                for b in nodes:
                    if a is not b:
                        await a.membership.wait_for(b.id, PeerState.ALIVE)
                        await a.gossip.pubsub.wait_for_mesh(ID.from_base58(b.id), FLOWS, TIMEOUT)
                await client_gossip.pubsub.wait_for_mesh(ID.from_base58(a.id), FLOWS, TIMEOUT)

        blocks = invalid_submission(SigningKey.generate())
        exec = blocks[0].cid
        # The node that answers, and a node that will only learn of it by the answer.
        answering = publisher(exec, sender=carrier.peer_id, nodes=[n.id for n in nodes])
        by_id = {n.id: n for n in nodes}
        last = [n for n in nodes if n.id != answering][-1]
        deaf.add(last.id)
        body = SubmissionBody(exec=exec, blocks=inline_blocks(blocks))
        await client_gossip.publish(FLOWS, seal_envelope(carrier, subnet=SUBNET, seq=1, body=body))

        # On the topic, to the submitter: a rejection, from the node ranked first.
        sender, rejection = await next_rejection(heard, exec)
        assert sender == answering
        assert rejection.exec == exec and rejection.reason == "bad_inputs"
        assert "who" in rejection.message

        # `qflow watch` on the node that lost the submission: rejected, the reason, exit 1.
        # (It may hear the rejection a moment after the submitter; watch would say
        # "unknown execution" until then.)
        await known_to(last, exec)
        watched = await qflow_in_thread(last.repo, "watch", exec.encode(), "--timeout", "20")
        assert watched.exit_code == 1, watched.output
        assert f"exec {exec.encode()}: rejected by …{answering[-6:]}" in watched.stderr, (
            watched.stderr
        )
        assert f"error: bad_inputs: {rejection.message}" in watched.stderr
        status = await qflow_in_thread(last.repo, "status", exec.encode(), "--json")
        assert status.exit_code == 1
        shown = json.loads(status.stdout)
        assert shown["status"] == "rejected" and shown["by"] == answering
        assert (shown["reason"], shown["message"]) == ("bad_inputs", rejection.message)
        assert shown["error"] == {"kind": "bad_inputs", "message": rejection.message}
        assert last.execs.rejections_published == 0 and not last.execs.replicas

        # Every other node refused it itself, and says so with its own name.
        for node in nodes:
            if node is last:
                continue
            await known_to(node, exec)
            watched = await qflow_in_thread(node.repo, "watch", exec.encode(), "--timeout", "20")
            assert watched.exit_code == 1, watched.output
            assert f"rejected by …{node.id[-6:]}" in watched.stderr
            assert node.execs.rejection(exec) == {
                "reason": "bad_inputs",
                "message": rejection.message,
                "by": node.id,
            }
        published = {n.id: n.execs.rejections_published for n in nodes}
        assert published == {n: int(n == answering) for n in by_id}, published

        # A rejection from outside the subnet (the bare carrier) is not listened to. The
        # next submission from the same carrier arrives after it: once its rejection is
        # known everywhere, so would the forged one be, had it been taken.
        deaf.clear()  # every node hears the submission now (any may be the one to answer)
        forged = dag_block({"format": "qflow.submission/1", "nonce": b"\x03" * 16}).cid
        lie = Rejection(exec=forged, reason="bad_field", message="not from a member")
        await client_gossip.publish(FLOWS, seal_envelope(carrier, subnet=SUBNET, seq=2, body=lie))
        second = invalid_submission(SigningKey.generate())
        body = SubmissionBody(exec=second[0].cid, blocks=inline_blocks(second))
        await client_gossip.publish(FLOWS, seal_envelope(carrier, subnet=SUBNET, seq=3, body=body))
        await next_rejection(heard, second[0].cid)
        for node in nodes:
            await known_to(node, second[0].cid)
            watched = await qflow_in_thread(
                node.repo, "watch", second[0].cid.encode(), "--timeout", "20"
            )
            assert watched.exit_code == 1 and "bad_inputs" in watched.stderr
            assert node.execs.rejection(forged) is None
        unknown = await qflow_in_thread(last.repo, "status", forged.encode())
        assert unknown.exit_code == 1 and "holds no records" in unknown.stderr
