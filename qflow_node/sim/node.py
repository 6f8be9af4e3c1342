"""A virtual node: the real services of `qflow node run` (membership, execution, ledger
sync, the critical service, the envelope gate) wired to the simulated network instead of
libp2p.

What a crash keeps is what a real crash keeps: the repo on disk (blocks, heads journal,
a validator's lock journal) and the key. Everything in memory goes with the
incarnation's cancelled task tree; a restart builds new services on the same repo, which
resume from it as a real node does.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import structlog
import trio

from qflow_node import clock
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.net.gossip import Gossip
from qflow_node.net.reqresp import Direct
from qflow_node.repo import RepoPaths
from qflow_node.runtime.critical_service import CRITICAL_LOCKS, LockJournal
from qflow_node.runtime.daemon import Consumers, join_subnets
from qflow_node.runtime.exec_service import ExecService, ExecSettings
from qflow_node.runtime.heads_service import HeadsService, HeadsSettings
from qflow_node.runtime.local import LocalRunner
from qflow_node.runtime.membership_service import MembershipService, membership_config
from qflow_node.runtime.validation import Rejections
from qflow_node.sandbox import Sandbox
from qflow_node.sim.critical import CriticalWatch, Dealing, critical_service
from qflow_node.sim.network import Endpoint, SimDirect, SimExchange, SimGossip, SimNet
from qflow_node.store.filestore import FileBlockStore
from qflow_node.store.service import BlockService

SUBNET = "default"
EPOCH_NS = 1_790_000_000 * 10**9  # virtual time 0 is in 2026, on every node's clock


class Services:
    """One incarnation's running parts."""

    def __init__(
        self,
        store: FileBlockStore,
        ledger: LedgerStore,
        membership: MembershipService,
        execs: ExecService,
        heads: HeadsService,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.membership = membership
        self.execs = execs
        self.heads = heads


class SimNode:
    def __init__(
        self,
        name: str,
        key: SigningKey,
        root: Path,
        net: SimNet,
        *,
        exec_settings: ExecSettings,
        heads_settings: HeadsSettings,
        heartbeat_s: float,
        wasm_cache: Path,
        critical: tuple[Dealing, CriticalWatch] | None = None,
    ) -> None:
        self.name = name
        self.key = key
        self.peer = key.peer_id
        self.paths = RepoPaths(root)
        self.paths.blocks.mkdir(parents=True, exist_ok=True)
        self.net = net
        self.exec_settings = exec_settings
        self.heads_settings = heads_settings
        self.heartbeat_s = heartbeat_s
        self.wasm_cache = wasm_cache
        self.critical = critical  # the subnet policy, and who watches its rounds
        self.skew_ns = 0  # this node's clock error
        self.slow_s = 0.0
        self.incarnation = 0
        self.services: Services | None = None  # None while down
        self.endpoint: Endpoint | None = None
        self.ready = trio.Event()
        self._scope = trio.CancelScope()
        self.stopped = trio.Event()  # set while no incarnation runs
        self.stopped.set()

    @property
    def up(self) -> bool:
        return self.services is not None

    @property
    def running(self) -> bool:
        """An incarnation is booting, serving or unwinding from a crash."""
        return not self.stopped.is_set()

    @property
    def crashing(self) -> bool:
        return self.running and self._scope.cancel_called

    def start(self, nursery: trio.Nursery, life: Callable[[SimNode], Awaitable[None]]) -> None:
        """Boot a new incarnation in `nursery` (`life` wraps `run`). Running and
        crashable from now on, booting included: the scope exists before the task."""
        assert not self.running, f"{self.name} is already running"
        self._scope = trio.CancelScope()
        self.stopped = trio.Event()
        nursery.start_soon(life, self)

    def wall_ns(self) -> int:
        return EPOCH_NS + int(trio.current_time() * 1e9) + self.skew_ns

    def call(self, job: Callable[[], Awaitable[None]]) -> bool:
        """Run `job` in this node's task tree (its clock, its logs), as its API would;
        False if the node is down."""
        end = self.endpoint
        if self.services is None or end is None or end.jobs is None:
            return False
        end.jobs.send_nowait(job)
        return True

    def crash(self) -> None:
        """Stop at once: the task tree is cancelled, memory and unsent messages lost."""
        end = self.net.endpoints.get(self.peer)
        if end is not None:
            end.alive = False
        self._scope.cancel()

    async def run(self) -> None:
        """One incarnation, from boot until `crash`."""
        self.incarnation += 1
        self.ready = trio.Event()
        structlog.contextvars.bind_contextvars(sim_node=self.name)
        store = FileBlockStore(self.paths.blocks)
        end = Endpoint(self.peer, self.incarnation, store, slow_s=self.slow_s)
        self.endpoint = end
        self.net.join(end)
        journal = LockJournal(self.paths.ledger / CRITICAL_LOCKS)
        try:
            with (
                clock.wall_clock_from(self.wall_ns),
                self._scope,
                Sandbox(store, cache_dir=self.wasm_cache) as sandbox,
            ):
                await self._serve(store, end, sandbox, journal)
        finally:
            end.alive = False
            self.services = None
            journal.close()
            store.close()
            self.stopped.set()

    async def _serve(
        self, store: FileBlockStore, end: Endpoint, sandbox: Sandbox, journal: LockJournal
    ) -> None:
        gossip = cast(Gossip, SimGossip(self.net, end))
        blocks = BlockService(store, SimExchange(self.net, end))
        ledger = LedgerStore(store, self.paths)
        runner = LocalRunner(store, ledger, sandbox, self.key)
        membership = MembershipService(
            self.key,
            gossip,
            [SUBNET],
            membership_config(self.heartbeat_s),
            work_tokens=lambda: execs.free_work_tokens(),  # noqa: PLW0108 - made below
            load=lambda: 0,
        )
        direct = cast(Direct, SimDirect(self.net, end))
        execs = ExecService(
            self.key,
            gossip,
            blocks,
            ledger,
            runner=runner,
            membership=membership,
            direct=direct,
            subnets=[SUBNET],
            settings=self.exec_settings,
        )
        if self.critical is not None:
            dealing, watch = self.critical
            # As the daemon does: every certificate links the policy block.
            store.put(dealing.policy.to_block())
            execs.critical = critical_service(
                self.peer, direct, execs, journal, name=self.name, dealing=dealing,
                watch=watch,
            )  # fmt: skip
        heads = HeadsService(
            self.key,
            gossip,
            blocks,
            ledger,
            subnets=[SUBNET],
            settings=self.heads_settings,
            withhold=execs.withholds,
            on_merged=execs.ledger_merged,
        )
        rejections = Rejections()
        jobs_in, jobs = trio.open_memory_channel[Callable[[], Awaitable[None]]](math.inf)
        async with trio.open_nursery() as services:
            end.jobs = jobs_in
            services.start_soon(_serve_jobs, jobs, services)
            await join_subnets(
                gossip,
                [SUBNET],
                rejections.validator,
                services,
                Consumers(membership, heads, execs, rejections),
            )
            self.services = Services(store, ledger, membership, execs, heads)
            services.start_soon(membership.run)
            services.start_soon(heads.run)
            services.start_soon(execs.run)
            if execs.critical is not None:
                services.start_soon(execs.critical.run)
            self.ready.set()


async def _serve_jobs(
    jobs: trio.MemoryReceiveChannel[Callable[[], Awaitable[None]]], nursery: trio.Nursery
) -> None:
    async for job in jobs:
        nursery.start_soon(job)
