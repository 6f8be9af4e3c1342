"""The membership service: publish heartbeats, fold received ones into the pure view.

Every `heartbeat_ms` the node publishes a signed heartbeat on each subnet's `nodes`
topic. `seq` is the wall clock in microseconds at start plus a counter, so it keeps
growing across restarts (peers ignore a seq that is not greater than the last one).
Received heartbeats are opened once, by the topic validator, which keeps the `Verified`
for the consumer; rejections are counted by reason. A tick re-evaluates states, logs
`peer.alive` / `peer.suspect` / `peer.dead` transitions and writes the snapshot that
`qflow peers` reads (`<repo>/run/peers.json`; a local control API replaces it later).
The node itself is not in its view.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import trio

from qflow_node import __version__, clock, offload
from qflow_node.codec.envelope_bodies import LOAD_SCALE, MAX_ADDRS, Manifest
from qflow_node.codec.envelope_bodies import Heartbeat as HeartbeatBody
from qflow_node.core.envelopes import Rejected, Verified, open_envelope, seal_envelope
from qflow_node.core.membership import (
    Heartbeat,
    MembershipConfig,
    MembershipView,
    PeerState,
    observe,
    states,
)
from qflow_node.fsio import atomic_write
from qflow_node.identity import SigningKey
from qflow_node.log import get_logger
from qflow_node.net.gossip import Gossip, GossipMessage, Validator
from qflow_node.net.topics import topic
from qflow_node.sandbox.limits import DEFAULT_MEMORY

# Advertised by a node that runs no execution service (tests, tools): the default
# number of work slots.
FREE_WORK_TOKENS: Final = 4
# Verified heartbeats waiting for the consumer, keyed by their bytes (bounded).
_PENDING_MAX: Final = 1024
SNAPSHOT_VERSION: Final = 1
_TRANSITIONS_KEPT: Final = 4096  # recent transitions, for `wait_for`


def _log() -> Any:
    # Looked up per use: a logger bound at import keeps the format configured then.
    return get_logger("qflow.membership")


def membership_config(heartbeat_interval: float) -> MembershipConfig:
    """Suspect after 3 missed heartbeats, dead after 10."""
    ms = max(1, round(heartbeat_interval * 1000))
    return MembershipConfig(heartbeat_ms=ms, suspect_ms=3 * ms, dead_ms=10 * ms)


def local_manifest(
    free_work_tokens: int = FREE_WORK_TOKENS, load: Callable[[], int] | None = None
) -> Manifest:
    try:
        engine = f"wasmtime/{importlib.metadata.version('wasmtime')}"
    except importlib.metadata.PackageNotFoundError:
        engine = "wasmtime/unknown"
    return Manifest(
        wasm_engine=engine,
        memory_bytes=DEFAULT_MEMORY,
        load=(load or _load_permille)(),
        free_work_tokens=free_work_tokens,
        version=__version__,
    )


def _load_permille() -> int:
    """1-minute load average per CPU, in permille of saturation."""
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0
    return max(0, min(LOAD_SCALE, round(load * LOAD_SCALE)))


@dataclass(frozen=True, slots=True)
class Transition:
    node: str
    state: PeerState
    at_ms: int


class MembershipService:
    """One per node. `validator`/`consume` per subnet, `run` once, in the services nursery."""

    def __init__(
        self,
        key: SigningKey,
        gossip: Gossip,
        subnets: Sequence[str],
        config: MembershipConfig,
        snapshot: Path | None = None,
        *,
        advertise: Callable[[], Sequence[str]] = tuple,
        on_heard: Callable[[str, Sequence[str]], None] | None = None,
        work_tokens: Callable[[], int] = lambda: FREE_WORK_TOKENS,
        load: Callable[[], int] | None = None,
    ) -> None:
        """`work_tokens()`: the work this node can take on now, advertised in every
        heartbeat (the execution service's free work slots and admission tokens).
        `load()`: its load in permille (default: the machine's load average per CPU)."""
        self.key = key
        self.gossip = gossip
        self.subnets = tuple(sorted(set(subnets)))
        self.config = config
        self.snapshot = snapshot
        self.view = MembershipView(config)
        self.rejected: Counter[str] = Counter()
        self.transitions: deque[Transition] = deque(maxlen=_TRANSITIONS_KEPT)
        self._known: dict[str, PeerState] = {}
        self._pending: OrderedDict[bytes, Verified[Any]] = OrderedDict()
        self._changed = trio.Event()
        self._seq = clock.wall_ns() // 1000
        self._logged_rejected: dict[str, int] = {}
        self._advertise = advertise  # our listen addrs for heartbeats
        self._on_heard = on_heard  # (node, its addrs) for every heartbeat heard
        self._work_tokens = work_tokens
        self._load = load

    # --- receiving -------------------------------------------------------------------

    def validator(self, subnet: str) -> Validator:
        """Opens and checks a `nodes` message once; keeps the Verified for `consume`."""

        def validate(data: bytes) -> bool:
            result = open_envelope(data, subnet=subnet, channel="nodes")
            if isinstance(result, Rejected):
                self.rejected[result.reason] += 1
                _log().debug("envelope.rejected", subnet=subnet, reason=result.reason)
                self._notify()
                return False
            self._pending[data] = result
            while len(self._pending) > _PENDING_MAX:
                self._pending.popitem(last=False)
            return True

        return validate

    async def consume(
        self, subnet: str, messages: trio.MemoryReceiveChannel[GossipMessage]
    ) -> None:
        async with messages:
            async for message in messages:
                verified = self._pending.pop(message.data, None)
                if verified is None:  # evicted meanwhile: open it again
                    result = open_envelope(message.data, subnet=subnet, channel="nodes")
                    if isinstance(result, Rejected):
                        continue
                    verified = result
                self.heard(verified)

    def heard(self, verified: Verified[Any]) -> None:
        body = verified.body
        if not isinstance(body, HeartbeatBody) or body.node == self.key.peer_id:
            return
        if self._on_heard is not None:
            self._on_heard(body.node, body.addrs)
        before = self.view
        self.view = observe(self.view, Heartbeat.from_body(body, verified.seq), self.now_ms())
        if self.view is not before:
            self.evaluate()

    # --- ticking ---------------------------------------------------------------------

    @staticmethod
    def now_ms() -> int:
        return clock.mono_ms()

    def evaluate(self) -> None:
        """Log and record every state change since the last evaluation."""
        now = self.now_ms()
        for node, current in states(self.view, now).items():
            if self._known.get(node) is current:
                continue
            self._known[node] = current
            self.transitions.append(Transition(node, current, now))
            member = self.view.members[node]
            _log().info(
                f"peer.{current.value}",
                peer=node,
                silent_ms=now - member.heard_ms,
                subnets=sorted(member.heartbeat.subnets),
            )
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds, re-checked on every tick, transition or rejection."""
        while not predicate():
            await self._changed.wait()

    async def wait_for(self, node: str, state: PeerState) -> Transition:
        """The first transition of `node` to `state` (seen already or still to come)."""
        found: list[Transition] = []

        def seen() -> bool:
            found[:] = [t for t in self.transitions if t.node == node and t.state is state]
            return bool(found)

        await self.wait_until(seen)
        return found[0]

    async def run(self) -> None:
        """Publish and tick every interval until cancelled; the snapshot goes with it."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._publish_loop)
                nursery.start_soon(self._tick_loop)
        finally:
            if self.snapshot is not None:
                self.snapshot.unlink(missing_ok=True)

    async def _publish_loop(self) -> None:
        interval = self.config.heartbeat_ms / 1000
        while True:
            await self.publish_once()
            await trio.sleep(interval)

    async def publish_once(self) -> None:
        self._seq += 1
        addrs = tuple(self._advertise())[:MAX_ADDRS]
        body = HeartbeatBody(
            node=self.key.peer_id,
            subnets=self.subnets,
            manifest=local_manifest(self._work_tokens(), self._load),
            addrs=addrs,
        )
        for subnet in self.subnets:
            data = seal_envelope(self.key, subnet=subnet, seq=self._seq, body=body)
            await self.gossip.publish(topic(subnet, "nodes"), data)

    async def _tick_loop(self) -> None:
        # Twice per interval, so a transition is logged at most half an interval late.
        interval = self.config.heartbeat_ms / 2000
        while True:
            self.evaluate()
            self._log_rejections()
            if self.snapshot is not None:
                data = self.snapshot_bytes()
                await offload.run_sync(_write_snapshot, self.snapshot, data)
            self._notify()
            await trio.sleep(interval)

    def _log_rejections(self) -> None:
        if dict(self.rejected) != self._logged_rejected:
            self._logged_rejected = dict(self.rejected)
            _log().warning("membership.rejected", counts=self._logged_rejected)

    def snapshot_bytes(self) -> bytes:
        now_ms, wall = self.now_ms(), clock.wall_s()
        peers = []
        for node, current in states(self.view, now_ms).items():
            member = self.view.members[node]
            peers.append(
                {
                    "node": node,
                    "state": current.value,
                    "last_seen": wall - (now_ms - member.heard_ms) / 1000,
                    "seq": member.heartbeat.seq,
                    "subnets": sorted(member.heartbeat.subnets),
                    "manifest": msgspec.to_builtins(member.heartbeat.manifest),
                    "addrs": list(member.heartbeat.addrs),
                }
            )
        snapshot = {
            "version": SNAPSHOT_VERSION,
            "node": self.key.peer_id,
            "updated_at": wall,
            "heartbeat_interval": self.config.heartbeat_ms / 1000,
            "subnets": list(self.subnets),
            "peers": peers,
            "rejected": dict(sorted(self.rejected.items())),
        }
        return json.dumps(snapshot, indent=2).encode() + b"\n"


def _write_snapshot(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Rewritten every tick and meaningless after a crash: no directory fsync.
    atomic_write(path, data, sync_dir=False)
