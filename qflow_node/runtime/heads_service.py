"""Anti-entropy for execution ledgers: announce our heads, catch up on theirs.

Gossip is lossy, so no ledger may depend on one message arriving. Every
`announce_interval` the node publishes, on each subnet's `exec` topic, the heads of the
active executions it holds (heads index changed within `active_window`; at most
`max_announced` of them, newest first) that `core.announce.AnnouncePlan` says are due:
new heads at once, changed heads once they stayed so for a round, unchanged heads at
growing intervals, and at once again when a peer announces different heads for the
execution. The due executions of a round share `heads` envelopes (`core.announce.pack`:
as few as the size caps allow). A node that hears heads
it does not know fetches what they reach over bitswap - asking the announcer first,
since it certainly has them - and merges: `LedgerStore.merge` verifies the union (hash
links, fields, signatures) and keeps its antichain, so a forged or broken ledger changes
nothing. A node that was down or joined late therefore converges within one interval
after it hears any holder, with nothing lost.

Catch-ups run one at a time per execution (`max_catchups` at once overall); heads
already merged, or ours, are remembered and ignored, and so are heads the ledger holds
already (`LedgerStore.holds`: usually merged meanwhile from record gossip). A fetch
that was interrupted is repaired: if the merge reports a missing block, the walk is
repeated without trusting blocks already present. Heads whose ledger verifies badly are
remembered (a forgery is not fetched again), but not heads refused only for a block
still missing: the next announcement of them tries again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from qflow_node import clock, offload
from qflow_node.codec import CID
from qflow_node.codec.envelope import KIND_MAX_SIZE
from qflow_node.codec.envelope_bodies import Heads
from qflow_node.core.announce import AnnouncePlan, pack
from qflow_node.core.envelopes import Verified, seal_envelope
from qflow_node.identity import SigningKey
from qflow_node.ledger_store import LedgerStore, LedgerStoreError
from qflow_node.log import get_logger
from qflow_node.net.gossip import Gossip
from qflow_node.net.topics import topic
from qflow_node.runtime.merging import fetch_and_merge, missing_block
from qflow_node.store import StoreError
from qflow_node.store.service import BlockService

FINISHED_EVERY: Final = 10  # announce finished executions every tenth round
FINAL_KINDS: Final = frozenset({"exec.completed", "exec.failed", "exec.aborted"})
# Body bytes per heads envelope: the envelope around the body (kind, sender, seq,
# signature) takes under 200 bytes of the kind's cap.
BODY_BUDGET: Final = KIND_MAX_SIZE["heads"] - 1024


def _log() -> Any:
    return get_logger("qflow.ledger.sync")


@dataclass(frozen=True, slots=True)
class HeadsSettings:
    announce_interval: float = 5.0  # seconds between announcement rounds
    active_window: float = 3600.0  # executions whose heads changed this recently
    max_announced: int = 256  # per round, newest first
    max_catchups: int = 8  # executions caught up concurrently
    fetch_within: float = 30.0  # seconds per DAG level fetched

    def __post_init__(self) -> None:
        if self.announce_interval <= 0 or self.active_window <= 0 or self.fetch_within <= 0:
            raise ValueError("ledger announce_interval, active_window and fetch_within must be > 0")
        if self.max_announced < 1 or self.max_catchups < 1:
            raise ValueError("ledger max_announced and max_catchups must be >= 1")


class HeadsService:
    def __init__(
        self,
        key: SigningKey,
        gossip: Gossip,
        blocks: BlockService,
        ledger: LedgerStore,
        *,
        subnets: Sequence[str],
        settings: HeadsSettings | None = None,
        withhold: Callable[[CID], bool] | None = None,
        on_merged: Callable[[CID], None] | None = None,
    ) -> None:
        """`withhold(exec)`: True while the heads of `exec` must not be announced (the
        execution service, until it has checked its own heads after a restart).
        `on_merged(exec)`: called after a catch-up changed the ledger of `exec` (the
        execution service folds the records into its replica)."""
        self.key = key
        self.gossip = gossip
        self.blocks = blocks
        self.ledger = ledger
        self.subnets = tuple(subnets)
        self.settings = settings or HeadsSettings()
        self.withhold = withhold
        self.on_merged = on_merged
        self._seq = clock.wall_ns() // 1000  # grows across restarts, like heartbeats
        self._merged: dict[CID, set[CID]] = {}  # heads known to be in our ledger
        self._busy: set[CID] = set()
        self._slots = trio.CapacityLimiter(self.settings.max_catchups)
        self.merges = 0  # ledgers changed by a catch-up (for tests and status)
        self.rejected = 0  # announced ledgers that failed to verify
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._round = 0
        self._plan = AnnouncePlan()

    # -- announcing -------------------------------------------------------------------

    async def run(self) -> None:
        """Announce every interval, and catch up on what `heard` starts, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                await self.announce_once()
                await trio.sleep(self.settings.announce_interval)

    async def announce_once(self) -> int:
        """One round; returns how many envelopes were published. Finished executions
        (heads ending in exec.completed/failed/aborted) go out only every
        `FINISHED_EVERY`-th round: late joiners still catch up, at a tenth of the cost."""
        self._round += 1
        include_finished = self._round % FINISHED_EVERY == 1
        active = await offload.run_sync(self._active, include_finished)
        if self.withhold is not None:
            active = [(exec, heads) for exec, heads in active if not self.withhold(exec)]
        due = self._plan.due(self._round, active)
        for exec, heads in due:
            self._merged.setdefault(exec, set()).update(heads)
        sent = 0
        for body in pack(due, max_bytes=BODY_BUDGET):
            for subnet in self.subnets:
                self._seq += 1
                data = seal_envelope(self.key, subnet=subnet, seq=self._seq, body=body)
                await self.gossip.publish(topic(subnet, "exec"), data)
                sent += 1
        return sent

    def _active(self, include_finished: bool = True) -> list[tuple[CID, tuple[CID, ...]]]:
        cutoff = clock.wall_s() - self.settings.active_window
        found = []
        for exec in self.ledger.changed_since(cutoff, self.settings.max_announced):
            try:
                heads = self.ledger.heads(exec)
            except LedgerStoreError as exc:
                _log().warning("ledger.heads_unreadable", exec=exec.encode(), error=str(exc))
                continue
            if heads and (include_finished or not self._finished(heads)):
                found.append((exec, heads))
        return found

    def _finished(self, heads: tuple[CID, ...]) -> bool:
        try:
            return len(heads) == 1 and self.ledger.record(heads[0]).kind in FINAL_KINDS
        except LedgerStoreError:
            return False

    # -- catching up --------------------------------------------------------------------

    def heard(self, verified: Verified[Any]) -> None:
        """A verified `heads` envelope: for each execution in it, start a catch-up if it
        names heads neither merged nor held by the ledger."""
        body = verified.body
        if not isinstance(body, Heads) or verified.sender == self.key.peer_id:
            return
        for entry in body.entries:
            self._heard_entry(entry.exec, entry.heads, verified.sender)

    def _heard_entry(self, exec: CID, heads: tuple[CID, ...], announcer: str) -> None:
        self._plan.heard(exec, heads, self._round + 1)
        if self._nursery is None or exec in self._busy:
            return  # not running yet, or already catching up: the next announcement
        if set(heads) <= self._merged.get(exec, set()):
            return
        if self.ledger.holds(exec, heads):  # merged meanwhile, e.g. from record gossip
            self._merged.setdefault(exec, set()).update(heads)
            return
        self._busy.add(exec)
        self._nursery.start_soon(self._catch_up, exec, heads, announcer)

    async def _catch_up(self, exec: CID, heads: tuple[CID, ...], announcer: str) -> None:
        try:
            async with self._slots:
                await self._fetch_and_merge(exec, heads, announcer)
        finally:
            self._busy.discard(exec)
            self._changed.set()
            self._changed = trio.Event()

    async def _fetch_and_merge(self, exec: CID, heads: tuple[CID, ...], announcer: str) -> None:
        log = _log().bind(exec=exec.encode(), announcer=announcer)
        try:
            report, fetched = await fetch_and_merge(
                self.blocks,
                self.ledger,
                exec,
                heads,
                peers=[announcer],
                within=self.settings.fetch_within,
            )
        except StoreError as exc:
            log.info("ledger.catch_up_failed", error=str(exc))
            return
        if report.ok:
            merged = self._merged.setdefault(exec, set())
            merged.update(heads)
            merged.update(report.heads)
            self.merges += 1
            if self.on_merged is not None:
                self.on_merged(exec)
            log.info(
                "ledger.merged",
                heads=[h.encode() for h in report.heads],
                fetched=fetched.fetched,
                fetched_bytes=fetched.fetched_bytes,
            )
            return
        failure = report.failure
        assert failure is not None
        if missing_block(report):
            # Not a forgery: a block nobody reachable gave us yet (a partition, a crash).
            # Unremembered, so that the next announcement of these heads tries again.
            log.info("ledger.catch_up_failed", error=f"{failure.message}: {failure.cid.encode()}")
            return
        self.rejected += 1
        self._merged.setdefault(exec, set()).update(heads)  # don't refetch a forgery
        log.warning(
            "ledger.merge_rejected",
            reason=failure.reason,
            at=failure.cid.encode(),
            error=failure.message,
        )

    async def wait_idle_after(self, merges: int) -> None:
        """Until at least `merges` catch-ups have merged (tests, status)."""
        while self.merges < merges:
            await self._changed.wait()
