"""Critical-step commit benchmark: one two-phase-commit round over libp2p, p50/p95 in ms,
and rounds per second with many slots at once.

    .venv/bin/python bench/critical.py [--rounds 100] [--concurrent 20]

n real libp2p hosts on loopback, all in this process (one core, one GIL: the validators'
signing and the coordinator's checks run one after another here, where on n machines
they run side by side, so the figures are an upper bound on the protocol's cost). Each
validator answers through `runtime/critical_service.py` with its lock fsynced to its
journal; the re-execution is a callback returning the proposed outcome (the step's own
run time is the sandbox's, `bench/sandbox.py`). For 3-of-5 and 9-of-13 policies from a
trusted dealer. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from qflow_node.codec import dag_block, raw_block
from qflow_node.core.critical import Outcome, Prepare
from qflow_node.core.policy import PolicyDocument
from qflow_node.core.scheduling import Slot
from qflow_node.crypto import dealer_keygen
from qflow_node.identity import SigningKey
from qflow_node.net.host import build_host
from qflow_node.net.reqresp import Direct
from qflow_node.runtime.critical_service import (
    CriticalConfig,
    CriticalService,
    LockJournal,
)

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]


def outcome(slot: Slot) -> Outcome:
    return Outcome(slot.exec, slot.name, slot.attempt, "completed", raw_block(b"paid").cid)


async def reexecute(_peer: str, prepare: Prepare) -> Outcome:
    return outcome(prepare.slot)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(t: int, n: int, rounds: int, concurrent: int, root: Path) -> None:
    keys, shares = dealer_keygen(t, n, os.urandom)
    signers = [SigningKey.generate() for _ in range(n)]
    policy = PolicyDocument.create(subnet="s", validators=[k.peer_id for k in signers], keys=keys)
    async with AsyncExitStack() as stack:
        directs: list[Direct] = []
        for key in signers:
            host = build_host(key, LOOPBACK)
            await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
            directs.append(Direct(host))
        for other in directs[1:]:  # the coordinator talks to every validator
            await directs[0].host.connect(info_from_p2p_addr(other.host.get_addrs()[0]))
        services = [
            CriticalService(
                signers[i].peer_id,
                directs[i],
                CriticalConfig(policy, shares[i]),
                journal=LockJournal(root / f"t{t}n{n}" / f"v{i}.log"),
                reexecute=reexecute,
            )
            for i in range(n)
        ]
        runs = await stack.enter_async_context(trio.open_nursery())
        for service in services:
            runs.start_soon(service.run)
        coordinator = services[0]

        def slot(i: int) -> Slot:
            return Slot(dag_block({"bench": i, "t": t, "n": n}).cid, "pay", 1)

        for i in range(3):  # warm-up: connections, protocol negotiation
            await coordinator.decide(slot(-1 - i), outcome(slot(-1 - i)))
        latencies = []
        for i in range(rounds):
            start = time.perf_counter()
            await coordinator.decide(slot(i), outcome(slot(i)))
            latencies.append((time.perf_counter() - start) * 1000)
        done = 0
        start = time.perf_counter()
        async with trio.open_nursery() as many:
            for i in range(rounds, rounds + concurrent * 5):

                async def one(i: int = i) -> None:
                    nonlocal done
                    await coordinator.decide(slot(i), outcome(slot(i)))
                    done += 1

                many.start_soon(one)
        elapsed = time.perf_counter() - start
        runs.cancel_scope.cancel()
        print(
            f"  {t}-of-{n}: one round p50 {statistics.median(latencies):6.1f} ms, "
            f"p95 {percentile(latencies, 0.95):6.1f} ms ({rounds} rounds); "
            f"{done} rounds at once: {done / elapsed:6.1f} commits/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=20)
    args = parser.parse_args()
    print("critical-step commit over libp2p (loopback, one process):")
    with tempfile.TemporaryDirectory(prefix="qflow-critical-bench") as tmp:
        for t, n in ((3, 5), (9, 13)):
            trio.run(measure, t, n, args.rounds, args.concurrent, Path(tmp))


if __name__ == "__main__":
    main()
