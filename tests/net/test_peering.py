"""Peering: dial the nodes heard of in heartbeats, with bounds and backoff (real hosts)."""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack

import trio
from libp2p.abc import IHost
from multiaddr import Multiaddr

from qflow_node.identity import SigningKey
from qflow_node.net.host import advertised_addrs, build_host
from qflow_node.net.peering import Peering, PeeringSettings

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
TIMEOUT = 10


async def host_in(stack: AsyncExitStack) -> IHost:
    host = build_host(SigningKey.generate(), LOOPBACK)
    await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
    return host


def free_port() -> int:
    with socket.socket() as probe:  # bound then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_hinted_peer_is_dialled_once_and_not_while_connected() -> None:
    async with AsyncExitStack() as stack:
        a, b = await host_in(stack), await host_in(stack)
        addrs = advertised_addrs(b)
        assert addrs and all("/p2p/" not in addr for addr in addrs)
        peering = Peering(a)
        nursery = await stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(peering.run)
        peering.hint(b.get_id().to_base58(), addrs)
        peering.hint(b.get_id().to_base58(), addrs)  # in flight: not queued twice
        with trio.fail_after(TIMEOUT):
            await peering.wait_finished(1)
        assert b.get_id() in a.get_network().connections
        peering.hint(b.get_id().to_base58(), addrs)  # connected: nothing to do
        peering.hint(a.get_id().to_base58(), advertised_addrs(a))  # ourselves: never
        assert (peering.dials, peering.failures) == (1, 0)
        nursery.cancel_scope.cancel()


async def test_an_unreachable_peer_is_backed_off_and_bad_addresses_are_ignored() -> None:
    async with AsyncExitStack() as stack:
        a = await host_in(stack)
        ghost = SigningKey.generate().peer_id
        peering = Peering(a, PeeringSettings(dial_timeout=2, backoff=60))
        nursery = await stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(peering.run)
        peering.hint(ghost, ["not a multiaddr"])
        peering.hint("not a peer id", ["/ip4/127.0.0.1/tcp/1"])
        peering.hint(ghost, [f"/ip4/127.0.0.1/tcp/{free_port()}"])
        with trio.fail_after(TIMEOUT):
            await peering.wait_finished(1)
        peering.hint(ghost, [f"/ip4/127.0.0.1/tcp/{free_port()}"])  # backed off: skipped
        assert (peering.dials, peering.failures) == (1, 1)
        nursery.cancel_scope.cancel()


async def test_no_dialling_at_the_connection_limit() -> None:
    async with AsyncExitStack() as stack:
        a, b = await host_in(stack), await host_in(stack)
        peering = Peering(a, PeeringSettings(max_connections=0))
        peering.hint(b.get_id().to_base58(), advertised_addrs(b))
        assert peering._receive.statistics().current_buffer_used == 0
