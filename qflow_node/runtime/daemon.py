"""`qflow node run`: the node daemon - one trio root nursery, boot check, serve, stop.

Lifecycle:
1. The signal watcher starts first, so SIGINT/SIGTERM during boot abort the boot.
2. Boot check, IPFS part: a real block put/get round trip (exit 3 on failure).
3. The libp2p host starts listening, pubsub and the GossipSub router start, the node
   joins its subnets' topics; boot check, libp2p part (exit 4 on failure).
4. One `ready` log line (peer id, listen addresses); services run (membership
   heartbeats, bootstrap dialing).
5. On the first SIGINT/SIGTERM: `shutdown` is logged, services are cancelled first (no
   new work), then pubsub and the host close (connections closed, listeners released),
   all within `shutdown_timeout`; past it the rest is cancelled. A second signal cancels
   at once. Blocks need no flush: every block put is durable when it returns
   (FileBlockStore fsyncs), so nothing in memory is lost by stopping.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost

from qflow_node.api.control_methods import Steer, control_methods
from qflow_node.api.debug_methods import debug_methods, task_methods
from qflow_node.api.errors import REJECTED, ApiError, SocketPathTooLongError
from qflow_node.api.exec_methods import exec_methods
from qflow_node.api.methods import Submit, node_methods
from qflow_node.api.server import ApiSocketInUseError, Handler, serve_api
from qflow_node.codec import CID, Block
from qflow_node.codec.envelope_bodies import Control, Heads, Rejection
from qflow_node.core.envelopes import Rejected
from qflow_node.core.submission import SubmissionError
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore
from qflow_node.log import bind, get_logger
from qflow_node.net.bitswap import Bitswap, open_bitswap
from qflow_node.net.bootstrap import maintain_bootstrap
from qflow_node.net.events import ConnectionLog
from qflow_node.net.gossip import Gossip, GossipMessage, Validator, open_gossip
from qflow_node.net.host import advertised_addrs, build_host
from qflow_node.net.partition import Partition
from qflow_node.net.peering import Peering, PeeringSettings
from qflow_node.net.reqresp import Direct
from qflow_node.net.topics import TOPIC_KINDS, TopicKind, topic
from qflow_node.repo import RepoPaths
from qflow_node.runtime.bootcheck import (
    BootCheckFailed,
    Probe,
    boot_failure,
    check_bitswap,
    check_ipfs,
    check_libp2p,
    open_block_store,
)
from qflow_node.runtime.config import NodeConfig
from qflow_node.runtime.critical_service import (
    CRITICAL_LOCKS,
    EQUIVOCATIONS,
    CriticalConfig,
    CriticalService,
    CriticalSetupError,
    LockJournal,
    load_critical,
)
from qflow_node.runtime.exec_service import ControlRefused, ExecService
from qflow_node.runtime.heads_service import HeadsService
from qflow_node.runtime.local import LocalRunner
from qflow_node.runtime.membership_service import MembershipService, membership_config
from qflow_node.runtime.validation import Rejections
from qflow_node.sandbox import Sandbox
from qflow_node.store.service import BlockService


def _log() -> Any:
    # Looked up per use: a logger bound at import keeps the format configured then.
    return get_logger("qflow.node")


@dataclass(frozen=True, slots=True)
class Wiring:
    """What later services plug into the daemon.

    `validator_for(subnet, kind)`: the check every message on that topic must pass
    before it is delivered or forwarded (default: it opens as a signed wire envelope,
    refusals counted by the daemon's `Rejections` and logged as `envelope.rejected`).
    The `nodes` topics are the membership service's: its validator, its consumer.
    `required_protocols`: stream protocols the boot check insists on (e.g. bitswap).
    """

    validator_for: Callable[[str, TopicKind], Validator] | None = None
    required_protocols: Sequence[str] = ()


class _Stop:
    """Set by the signal watcher; tells the daemon how hard to stop."""

    def __init__(self) -> None:
        self.requested = trio.Event()
        self.node_scope = trio.CancelScope()  # cancelled by a second signal
        self.signal: str | None = None
        self._boot_scope: trio.CancelScope | None = None

    def boot_phase(self) -> trio.CancelScope:
        """A scope for one boot step; a signal (earlier or during it) cancels it."""
        self._boot_scope = trio.CancelScope()
        if self.requested.is_set():
            self._boot_scope.cancel()
        return self._boot_scope

    def request(self, signum: int) -> None:
        self.signal = signal.Signals(signum).name
        self.requested.set()
        if self._boot_scope is not None:
            self._boot_scope.cancel()

    def booted(self) -> None:
        self._boot_scope = None


async def serve(
    paths: RepoPaths,
    config: NodeConfig,
    key: SigningKey,
    wiring: Wiring | None = None,
) -> None:
    """Boot, serve until SIGINT/SIGTERM, stop. Raises BootCheckFailed."""
    wiring = wiring or Wiring()
    bind(node=key.peer_id)
    stop = _Stop()
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as root:
                root.start_soon(_watch_signals, signals, stop)
                with stop.node_scope:
                    await _run(paths, config, key, wiring, stop)
                root.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Nurseries wrap what their body raises; a failed check is one plain error.
        failed = boot_failure(group)
        if failed is None:
            raise
        raise failed from None
    if stop.node_scope.cancelled_caught:
        _log().warning("shutdown.forced", reason="timeout or second signal")
    _log().info("stopped", signal=stop.signal)


async def _run(
    paths: RepoPaths, config: NodeConfig, key: SigningKey, wiring: Wiring, stop: _Stop
) -> None:
    with stop.boot_phase() as phase:
        store = open_block_store(paths, config)
        probes = await check_ipfs(store)
    if phase.cancelled_caught:
        return
    blocks = BlockService(store)
    ledger = LedgerStore(store, paths)
    critical = _critical_config(paths, config, key)
    host = build_host(key, config.listen, config.limits)
    host.get_network().register_notifee(ConnectionLog())
    async with AsyncExitStack() as stack:
        # Left in reverse: services first, then pubsub, bitswap, the host, the sandbox.
        sandbox = stack.enter_context(Sandbox(store))
        runner = stack.enter_context(LocalRunner(store, ledger, sandbox, key))
        await stack.enter_async_context(host.run(listen_addrs=list(config.listen)))
        bitswap = await stack.enter_async_context(open_bitswap(host, blocks.local))
        gossip = await stack.enter_async_context(open_gossip(host, config.gossip))
        services = await stack.enter_async_context(trio.open_nursery())
        blocks.exchange = bitswap
        partition = Partition(host, services)
        peering = Peering(
            host,
            PeeringSettings(
                max_connections=config.limits.max_connections // 2,
                dial_timeout=config.limits.dial_timeout,
            ),
            allows=partition.allows,
        )
        membership = MembershipService(
            key,
            gossip,
            config.subnets,
            membership_config(config.heartbeat_interval),
            snapshot=paths.peers_snapshot,
            advertise=lambda: advertised_addrs(host),
            on_heard=peering.hint,
            work_tokens=lambda: execs.free_work_tokens(),  # noqa: PLW0108 - execs is made below
        )
        direct = Direct(host)
        execs = ExecService(
            key,
            gossip,
            blocks,
            ledger,
            runner=runner,
            membership=membership,
            direct=direct,
            subnets=config.subnets,
            settings=config.exec,
        )
        if critical is not None:
            # Every certificate links the policy: a DAG walk over a certified record
            # must find it here, not wait on the network for it.
            await blocks.put(critical.policy.to_block())
            execs.critical = CriticalService(
                key.peer_id,
                direct,
                critical,
                journal=LockJournal(paths.ledger / CRITICAL_LOCKS),
                reexecute=execs.reexecute,
                allow=execs.allow_critical,
                evidence=paths.ledger / EQUIVOCATIONS,
            )
        heads = HeadsService(
            key,
            gossip,
            blocks,
            ledger,
            subnets=config.subnets,
            settings=config.ledger_sync,
            withhold=execs.withholds,
            on_merged=execs.ledger_merged,
        )
        rejections = Rejections()
        parts = _Parts(key, host, config, bitswap, gossip, membership, heads, rejections, execs)
        with stop.boot_phase() as phase:
            methods = {
                **node_methods(blocks, status=parts.status, submit=_submitter(execs)),
                **control_methods(_steerer(execs)),
                **exec_methods(
                    ledger,
                    active=lambda: list(execs.replicas),
                    rejected=execs.rejection,
                    refusals=execs.refusals,
                ),
                **(debug_methods(partition) if config.partition_api else {}),
                **task_methods(),
            }
            await _serve_api(services, paths, methods)
            await join_subnets(
                gossip,
                config.subnets,
                wiring.validator_for or rejections.validator,
                services,
                Consumers(membership, heads, execs, rejections),
            )
            probes.append(check_bitswap(host))
            probes += check_libp2p(host, gossip, config.listen, wiring.required_protocols)
        if phase.cancelled_caught:
            services.cancel_scope.cancel()
            return
        stop.booted()
        _log().info(
            "ready",
            peer_id=key.peer_id,
            listen=[str(a) for a in host.get_addrs()],
            subnets=list(config.subnets),
            checks=[_describe(p) for p in probes],
        )
        services.start_soon(membership.run)
        services.start_soon(peering.run)
        services.start_soon(heads.run)
        services.start_soon(execs.run)
        if execs.critical is not None:
            services.start_soon(execs.critical.run)
        services.start_soon(_report_rejections, rejections)
        services.start_soon(
            lambda: maintain_bootstrap(
                host,
                config.bootstrap,
                dial_timeout=config.limits.dial_timeout,
                allows=partition.allows,
            )
        )
        await stop.requested.wait()
        _log().info("shutdown", signal=stop.signal, timeout=config.shutdown_timeout)
        stop.node_scope.deadline = trio.current_time() + config.shutdown_timeout
        services.cancel_scope.cancel()


def _critical_config(
    paths: RepoPaths, config: NodeConfig, key: SigningKey
) -> CriticalConfig | None:
    """The `[critical]` policy and share, checked before the node boots."""
    if config.critical is None:
        return None
    try:
        return load_critical(paths.root, config.critical, key)
    except CriticalSetupError as exc:
        raise BootCheckFailed("repo", "critical", str(exc)) from None


def _steerer(execs: ExecService) -> Steer:
    async def steer(control: Control) -> bool:
        try:
            return await execs.publish_control(control)
        except ControlRefused as exc:
            raise ApiError(REJECTED, str(exc)) from None

    return steer


def _submitter(execs: ExecService) -> Submit:
    async def submit(exec: CID, blocks: list[Block]) -> bool:
        try:
            return await execs.submit(exec, blocks)
        except SubmissionError as exc:
            raise ApiError(REJECTED, str(exc)) from None

    return submit


async def _serve_api(
    services: trio.Nursery, paths: RepoPaths, methods: Mapping[str, Handler]
) -> None:
    # The control socket doubles as the repo's lock: a second node on the same repo
    # finds it answered and refuses to start, before it writes anything.
    try:
        await services.start(serve_api, paths.api_socket, methods)
    except (ApiSocketInUseError, SocketPathTooLongError, OSError) as exc:
        raise BootCheckFailed("repo", "control socket", str(exc)) from None


@dataclass(frozen=True, slots=True)
class _Parts:
    """The running node's services, for `qflow node status`."""

    key: SigningKey
    host: IHost
    config: NodeConfig
    bitswap: Bitswap
    gossip: Gossip
    membership: MembershipService
    heads: HeadsService
    rejections: Rejections
    execs: ExecService

    def status(self) -> dict[str, Any]:
        refused = dict(self.rejections.counts)
        refused.update({f"nodes/{r}": n for r, n in self.membership.rejected.items()})
        return {
            "peer_id": self.key.peer_id,
            "listen": [str(a) for a in self.host.get_addrs()],
            "subnets": list(self.config.subnets),
            "connections": len(self.host.get_network().connections),
            "bitswap": asdict(self.bitswap.stats),
            "gossip": asdict(self.gossip.stats),
            "envelopes_rejected": dict(sorted(refused.items())),
            "ledger_sync": {"merges": self.heads.merges, "rejected": self.heads.rejected},
            "executions": {
                "active": len(self.execs.replicas),
                "slots_done_here": self.execs.completed_slots,
                "batches": self.execs.batch_stats(),
            },
        }


@dataclass(frozen=True, slots=True)
class Consumers:
    """Who reads what arrives on a subnet's topics."""

    membership: MembershipService  # nodes: heartbeats
    heads: HeadsService  # exec: heads announcements
    execs: ExecService  # flows: submissions, rejections; exec: claims, records
    envelopes: Rejections = field(default_factory=Rejections)  # validated: opened already


async def join_subnets(
    gossip: Gossip,
    subnets: Sequence[str],
    validator_for: Callable[[str, TopicKind], Validator],
    services: trio.Nursery,
    consumers: Consumers,
) -> None:
    for subnet in subnets:
        for kind in TOPIC_KINDS:
            name = topic(subnet, kind)
            if kind == "nodes":  # heartbeats: opened once by the service's validator
                membership = consumers.membership
                heartbeats = await gossip.subscribe(name, membership.validator(subnet))
                services.start_soon(membership.consume, subnet, heartbeats)
                continue
            messages = await gossip.subscribe(name, validator_for(subnet, kind))
            services.start_soon(_dispatch, subnet, kind, messages, consumers)


async def _dispatch(
    subnet: str,
    kind: TopicKind,
    messages: trio.MemoryReceiveChannel[GossipMessage],
    consumers: Consumers,
) -> None:
    # The validator verified each message already and kept it opened (with a custom
    # validator, it is opened here).
    async with messages:
        async for message in messages:
            opened = consumers.envelopes.opened(message.data, subnet=subnet, kind=kind)
            if isinstance(opened, Rejected):
                continue
            if isinstance(opened.body, Heads):
                consumers.heads.heard(opened)
            elif isinstance(opened.body, Rejection):
                consumers.execs.heard_rejection(subnet, opened)
            else:
                consumers.execs.heard(subnet, opened)


async def _report_rejections(rejections: Rejections) -> None:
    # Hostile traffic is counted per message but logged once a second at most.
    while True:
        await trio.sleep(1)
        counts = rejections.changed()
        if counts is not None:
            _log().warning("envelope.rejected", counts=counts)


async def _watch_signals(signals: AsyncIterator[int], stop: _Stop) -> None:
    async for signum in signals:
        if stop.requested.is_set():
            _log().warning("shutdown.second_signal", signal=signal.Signals(signum).name)
            stop.node_scope.cancel()
            return
        stop.request(signum)


def _describe(probe: Probe) -> str:
    return f"{probe.part} {probe.name}: {probe.detail}"
