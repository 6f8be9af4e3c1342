"""Who is alive, and who may run a step: decisions from heartbeats, with time passed in.

Pure (docs/protocol.md, "Membership"): the driver feeds verified heartbeats with its
monotonic clock in milliseconds and asks for the live set. A node heard within
`suspect_ms` is alive, then suspect until `dead_ms`, then dead. Suspect nodes still
count as live (a late heartbeat is more likely lost gossip than a dead node; claim
leases cover the rest); `eligible` can leave them out.

The view is immutable: `observe` returns a new view, or the same object when it
ignores the heartbeat (a replay or an older one), so a driver can tell and count it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from qflow_node.codec.envelope_bodies import Heartbeat as HeartbeatBody
from qflow_node.codec.envelope_bodies import Manifest


class PeerState(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    heartbeat_ms: int = 1_000  # how often nodes publish (the driver's business)
    suspect_ms: int = 3_000  # three missed heartbeats
    dead_ms: int = 10_000

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_ms <= self.suspect_ms < self.dead_ms:
            raise ValueError("need 0 < heartbeat_ms <= suspect_ms < dead_ms")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A verified heartbeat: `seq` is the envelope's, signed by `node`."""

    node: str
    seq: int
    subnets: frozenset[str]
    manifest: Manifest
    addrs: tuple[str, ...] = ()  # listen multiaddrs, without /p2p/

    @classmethod
    def from_body(cls, body: HeartbeatBody, seq: int) -> Heartbeat:
        return cls(body.node, seq, frozenset(body.subnets), body.manifest, body.addrs)


@dataclass(frozen=True, slots=True)
class Member:
    heartbeat: Heartbeat
    heard_ms: int  # when the newest heartbeat arrived, by the observer's clock


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a step needs from a node; the defaults accept any live node of the subnet."""

    subnet: str
    min_memory_bytes: int = 0
    wasm_engine_prefix: str = ""  # e.g. "wasmtime/"
    max_load: int = 1000  # permille
    needs_work_token: bool = True  # a node with no free work tokens declines anyway
    include_suspect: bool = False

    def accepts(self, heartbeat: Heartbeat) -> bool:
        manifest = heartbeat.manifest
        return (
            self.subnet in heartbeat.subnets
            and manifest.memory_bytes >= self.min_memory_bytes
            and manifest.wasm_engine.startswith(self.wasm_engine_prefix)
            and manifest.load <= self.max_load
            and (manifest.free_work_tokens > 0 or not self.needs_work_token)
        )


@dataclass(frozen=True, slots=True)
class MembershipView:
    config: MembershipConfig = field(default_factory=MembershipConfig)
    members: Mapping[str, Member] = field(default_factory=lambda: MappingProxyType({}))


def observe(view: MembershipView, heartbeat: Heartbeat, now_ms: int) -> MembershipView:
    """`view` with `heartbeat` heard at `now_ms`; `view` itself if it is not newer.

    Per node, only a strictly greater `seq` counts: replays and heartbeats overtaken in
    gossip change nothing. A dead node's last seq is kept, so replaying its old
    heartbeats cannot bring it back. A clock that steps back never moves `heard_ms`
    backwards.
    """
    current = view.members.get(heartbeat.node)
    if current is not None and heartbeat.seq <= current.heartbeat.seq:
        return view
    heard = now_ms if current is None else max(now_ms, current.heard_ms)
    members = dict(view.members)
    members[heartbeat.node] = Member(heartbeat, heard)
    return MembershipView(view.config, MappingProxyType(members))


def state(view: MembershipView, node: str, now_ms: int) -> PeerState | None:
    """The node's state at `now_ms`, None if it was never heard of."""
    member = view.members.get(node)
    if member is None:
        return None
    return _state(view.config, member, now_ms)


def _state(config: MembershipConfig, member: Member, now_ms: int) -> PeerState:
    silent = now_ms - member.heard_ms
    if silent > config.dead_ms:
        return PeerState.DEAD
    if silent > config.suspect_ms:
        return PeerState.SUSPECT
    return PeerState.ALIVE


def states(view: MembershipView, now_ms: int) -> dict[str, PeerState]:
    return {node: _state(view.config, m, now_ms) for node, m in sorted(view.members.items())}


def live(view: MembershipView, now_ms: int) -> frozenset[str]:
    """Nodes alive or suspect at `now_ms`."""
    return frozenset(
        node
        for node, m in view.members.items()
        if _state(view.config, m, now_ms) is not PeerState.DEAD
    )


def eligible(view: MembershipView, requirement: Requirement, now_ms: int) -> tuple[str, ...]:
    """Live nodes that meet `requirement`, sorted (the input of the claim ranking)."""
    allowed = (
        {PeerState.ALIVE, PeerState.SUSPECT} if requirement.include_suspect else {PeerState.ALIVE}
    )
    return tuple(
        sorted(
            node
            for node, m in view.members.items()
            if _state(view.config, m, now_ms) in allowed and requirement.accepts(m.heartbeat)
        )
    )


def forget(view: MembershipView, nodes: Iterable[str]) -> MembershipView:
    """`view` without `nodes` (e.g. dead for an hour). Their old heartbeats count again."""
    gone = set(nodes)
    if not gone & view.members.keys():
        return view
    members = {n: m for n, m in view.members.items() if n not in gone}
    return MembershipView(view.config, MappingProxyType(members))
