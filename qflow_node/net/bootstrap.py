"""Keep connections to the bootstrap peers: dial with exponential backoff, redial on loss.

Any one live member of a subnet is enough to join it, so each bootstrap address gets
its own task and a dead one never delays the others. Delays grow from `initial` to
`maximum` with jitter so restarted nodes do not dial in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.log import get_logger


def _log() -> Any:
    # Looked up per use: a logger bound at import keeps the format configured then.
    return get_logger("qflow.net.bootstrap")


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2  # +/- this fraction of the delay

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Delay after failed attempt number `attempt` (1-based)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))


async def maintain_bootstrap(
    host: IHost,
    addrs: Sequence[Multiaddr],
    *,
    backoff: Backoff | None = None,
    dial_timeout: float = 10.0,
    check_interval: float = 5.0,
    rng: random.Random | None = None,
    allows: Callable[[ID], bool] = lambda _peer: True,
) -> None:
    """Run until cancelled, keeping a connection to every address in `addrs` whose peer
    `allows` accepts (a test partition refuses some).

    Each address must end in `/p2p/<peer id>` (config validation ensures it).
    """
    backoff = backoff or Backoff()
    rng = rng or random.Random()
    async with trio.open_nursery() as nursery:
        for addr in addrs:
            nursery.start_soon(
                partial(
                    _keep_connected,
                    host,
                    addr,
                    backoff=backoff,
                    dial_timeout=dial_timeout,
                    check_interval=check_interval,
                    rng=rng,
                    allows=allows,
                )
            )


async def _keep_connected(
    host: IHost,
    addr: Multiaddr,
    *,
    backoff: Backoff,
    dial_timeout: float,
    check_interval: float,
    rng: random.Random,
    allows: Callable[[ID], bool],
) -> None:
    info = info_from_p2p_addr(addr)
    peer = info.peer_id.to_base58()
    if info.peer_id == host.get_id():
        _log().info("bootstrap.skip_self", addr=str(addr))
        return
    failures = 0
    while True:
        if info.peer_id in host.get_connected_peers() or not allows(info.peer_id):
            failures = 0
            await trio.sleep(check_interval)
            continue
        try:
            with trio.fail_after(dial_timeout):
                await host.connect(info)
        except Exception as exc:  # any dial failure: refused, timeout, handshake
            failures += 1
            retry_in = backoff.delay(failures, rng)
            _log().warning(
                "bootstrap.dial_failed",
                peer=peer,
                addr=str(addr),
                attempt=failures,
                retry_in=round(retry_in, 2),
                error=str(exc) or type(exc).__name__,
            )
            await trio.sleep(retry_in)
        else:
            failures = 0
            _log().info("bootstrap.connected", peer=peer, addr=str(addr))
