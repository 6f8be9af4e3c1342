"""Validators in the simulator: the subnet policy every world deals from its seed, the
critical service each node runs (the node's own, watched), and Byzantine validators.

The policy is what `qflow subnet create` makes, with the run's seed as the dealer's
randomness: a t-of-n key over a seeded subset of the nodes (`sizes`), every node a
member, the example modules whitelisted. Each node runs `CriticalService` as
`runtime/daemon.py` wires it; `Watched` reports every round and certificate to the world
(`CriticalWatch`). A Byzantine validator is the same node with its validator side
replaced (`Byzantine`): it forges partials, equivocates, stalls or lies about its
re-execution. Their number stays within what the policy tolerates (`Tolerance.byzantine`:
`f < 2t - n` for safety, `n - f >= t` for liveness), so every invariant must still hold.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import trio

from qflow_node.codec import CID, Block, CodecError, encode_dag, raw_block
from qflow_node.core.critical import (
    AbortRequest,
    Answer,
    CriticalKeys,
    Decided,
    Decision,
    FormatError,
    Outcome,
    Prepare,
    Query,
    Refusal,
    SignedDecision,
    Vote,
    decode_message,
    encode_message,
    statement_bytes,
)
from qflow_node.core.policy import PolicyDocument, Tolerance
from qflow_node.core.scheduling import Slot
from qflow_node.crypto import Share, dealer_keygen, partial_sign, seeded_rng
from qflow_node.crypto.bls import R
from qflow_node.net.reqresp import Direct
from qflow_node.runtime.critical_service import (
    CRITICAL_LIMITS,
    CriticalConfig,
    CriticalError,
    CriticalService,
    LockJournal,
    Reexecute,
)
from qflow_node.runtime.exec_service import ExecService
from qflow_node.sim.trace import Trace

Behaviour = Literal["forge", "equivocate", "stall", "lie"]
BEHAVIOURS: Final[tuple[Behaviour, ...]] = ("forge", "equivocate", "stall", "lie")
ABORT: Final = Decision.abort()
MAX_F: Final = 2  # at most 7 validators (t = 5): enough to mix every behaviour


def sizes(nodes: int) -> tuple[int, int]:
    """(n validators, threshold t) for a cluster of `nodes`: n = 3f + 1 for the largest
    f <= MAX_F the cluster allows, t = 2f + 1 (two quorums overlap in 2t - n = f + 1
    validators, one of them honest); below 4 nodes every node, with a majority."""
    if nodes < 4:
        return nodes, nodes // 2 + 1
    f = min(MAX_F, (nodes - 1) // 3)
    return 3 * f + 1, 2 * f + 1


def tolerated(n: int, t: int) -> int:
    """f: the Byzantine validators a t-of-n policy keeps both safe and live with."""
    return Tolerance(n, t).byzantine


@dataclass(frozen=True, slots=True)
class Dealing:
    """A world's subnet policy, the validators' shares, and who is Byzantine how."""

    policy: PolicyDocument
    shares: dict[str, Share]  # by peer
    byzantine: dict[str, Behaviour]  # by peer, validators only
    seed: int

    def rng(self, peer: str) -> random.Random:
        """A Byzantine validator's own choices (one stream per node and run)."""
        return random.Random(hashlib.sha256(f"{self.seed}/byzantine/{peer}".encode()).digest())

    @property
    def keys(self) -> CriticalKeys:
        return CriticalKeys(self.policy.subnet, self.policy.cid, self.policy.keys)

    def config(self, peer: str) -> CriticalConfig:
        return CriticalConfig(self.policy, self.shares.get(peer))


def deal(
    seed: int,
    subnet: str,
    peers: Sequence[str],
    *,
    modules: Iterable[CID],
    rng: random.Random,
    byzantine: tuple[int, int],
) -> Dealing:
    """The trusted dealer's work (`qflow subnet create`), from the run's seed: validators
    a seeded subset of `peers`, and between `byzantine[0]` and `byzantine[1]` of them
    Byzantine, never more than the policy tolerates."""
    n, t = sizes(len(peers))
    validators = rng.sample(list(peers), n)
    keygen = seeded_rng(hashlib.sha256(f"{seed}/policy".encode()).digest())
    keys, shares = dealer_keygen(t, n, keygen)
    policy = PolicyDocument.create(
        subnet=subnet, validators=validators, keys=keys, members=peers, modules=modules
    )
    count = min(rng.randint(*byzantine), tolerated(n, t))
    bad = rng.sample(validators, count)
    return Dealing(
        policy,
        dict(zip(validators, shares, strict=True)),
        {peer: rng.choice(BEHAVIOURS) for peer in bad},
        seed,
    )


class CriticalWatch:
    """What the world sees of the two-phase commit: rounds begun and how they ended,
    rounds under way per node (a crash then is a coordinator crashing mid-round), votes
    of Byzantine validators; every certificate a coordinator obtains goes to
    `on_certificate` (the `one_certificate` invariant)."""

    def __init__(
        self,
        trace: Trace,
        on_certificate: Callable[[str, Slot, Decided], None],
        on_round: Callable[[str], None],
    ) -> None:
        self.trace = trace
        self.on_certificate = on_certificate
        self.on_round = on_round
        self.counts: Counter[str] = Counter()
        self._under_way: Counter[str] = Counter()

    def mid_round(self, node: str) -> bool:
        return self._under_way[node] > 0

    def began(self, node: str) -> None:
        self.counts["rounds"] += 1
        self._under_way[node] += 1
        self.on_round(node)

    def ended(self, node: str, slot: Slot, result: Decided | CriticalError | None) -> None:
        """A round of `node` ended: certified, without a decision, or (None) cut off by
        the node's crash."""
        self._under_way[node] -= 1
        if result is None:
            return
        if isinstance(result, CriticalError):
            self.counts["rounds without decision"] += 1
            return
        decision = result.decision
        self.counts["certificates"] += 1
        self.counts["abort certificates"] += decision.outcome is None
        shown = show_decision(decision)
        self.trace.add(node, "critical.certified", slot=show_slot(slot), decision=shown)
        self.on_certificate(node, slot, result)

    def byzantine(self, node: str, behaviour: Behaviour, slot: Slot, what: str) -> None:
        self.counts["byzantine votes"] += 1
        self.trace.add(node, f"byzantine.{behaviour}", slot=show_slot(slot), what=what)


class Watched(CriticalService):
    """The node's critical service, its rounds reported to the world."""

    def __init__(
        self,
        me: str,
        direct: Direct,
        config: CriticalConfig,
        *,
        journal: LockJournal,
        reexecute: Reexecute | None,
        allow: Callable[[str, Prepare | AbortRequest], str | None],
        name: str,
        watch: CriticalWatch,
    ) -> None:
        super().__init__(me, direct, config, journal=journal, reexecute=reexecute, allow=allow)
        self.name = name
        self.watch = watch

    async def decide(
        self,
        slot: Slot,
        proposal: Outcome | None,
        blocks: Iterable[Block] = (),
        *,
        query_first: bool = False,
    ) -> Decided:
        self.watch.began(self.name)
        blocks = tuple(blocks)
        try:
            decided = await super().decide(slot, proposal, blocks, query_first=query_first)
        except CriticalError as exc:
            self.watch.ended(self.name, slot, exc)
            raise
        except BaseException:  # cancelled: the node crashed mid-round
            self.watch.ended(self.name, slot, None)
            raise
        self.watch.ended(self.name, slot, decided)
        return decided


class Byzantine(Watched):
    """A Byzantine validator: the node is otherwise the real one (it runs flows and
    coordinates honestly), but its validator side misbehaves:

    - `forge`: every vote and answer carries a partial that does not verify (signed
      with a wrong share);
    - `equivocate`: keeps no locks and signs whatever it is asked (a prepare's commit,
      an abort) or, half the time, abort instead (a prepare refused as `aborted`, a
      query answered with an abort it never gave);
    - `stall`: answers nothing (the asker times out);
    - `lie`: re-executes, then claims another outcome (an honest validator's `mismatch`
      refusal, for an outcome that is not the step's).
    """

    def __init__(
        self,
        me: str,
        direct: Direct,
        config: CriticalConfig,
        *,
        journal: LockJournal,
        reexecute: Reexecute | None,
        allow: Callable[[str, Prepare | AbortRequest], str | None],
        name: str,
        watch: CriticalWatch,
        behaviour: Behaviour,
        rng: random.Random,
    ) -> None:
        if behaviour == "lie" and reexecute is not None:
            reexecute = self._lying(reexecute)
        super().__init__(
            me, direct, config, journal=journal, reexecute=reexecute, allow=allow, name=name,
            watch=watch,
        )  # fmt: skip
        self.behaviour = behaviour
        self.rng = rng
        share = config.share
        assert share is not None, "a Byzantine validator is a validator"
        self.share = share
        # Forged partials: real G2 points, signed with a share that is not this one's.
        self.forger = Share(share.index, (share.value * 3 + 1) % R)
        self._signed: dict[Slot, SignedDecision] = {}  # an equivocator's last commit, in memory

    def _lying(self, reexecute: Reexecute) -> Reexecute:
        async def lie(peer: str, prepare: Prepare) -> Outcome | None:
            await reexecute(peer, prepare)  # not ready, or refused: as an honest node
            self.watch.byzantine(self.name, "lie", prepare.slot, "another outcome")
            return _other_outcome(prepare.outcome)

        return lie

    async def answer(self, peer: str, request: bytes) -> bytes:
        if self.behaviour == "lie":
            return await super().answer(peer, request)
        try:
            message = decode_message(request)
        except (CodecError, FormatError):
            return await super().answer(peer, request)
        if not isinstance(message, Prepare | AbortRequest | Query):
            return await super().answer(peer, request)
        if self.behaviour == "stall":
            self.watch.byzantine(self.name, "stall", message.slot, type(message).__name__)
            await trio.sleep(CRITICAL_LIMITS.timeout + 1)  # the asker has given up by now
            return encode_dag({"error": "stalled"})
        reply = self._misbehave(message)
        shown = "nothing" if reply.signed is None else show_decision(reply.signed.decision)
        self.watch.byzantine(self.name, self.behaviour, message.slot, shown)
        return encode_message(reply)

    def _misbehave(self, message: Prepare | AbortRequest | Query) -> Vote | Answer:
        """A forger's or an equivocator's reply: what it signs (a forger with a share that
        is not its own) is what it is asked, or abort (an equivocator, half the time: it
        claims to hold abort, which counts against the prepared commit)."""
        slot, index = message.slot, self.share.index
        header = (message.subnet, message.policy, slot)
        contrary = self.behaviour == "equivocate" and self.rng.random() < 0.5
        if isinstance(message, Query):
            held = self._signed.get(slot)
            signed = held if held is not None and not contrary else self._sign(header, ABORT)
            return Answer(*header, index, signed)
        if isinstance(message, AbortRequest):
            return Vote(*header, index, "abort", self._sign(header, ABORT))
        if contrary:
            return Vote(*header, index, "prepare", self._sign(header, ABORT), Refusal.ABORTED)
        signed = self._sign(header, message.decision)
        self._signed[slot] = signed
        return Vote(*header, index, "prepare", signed)

    def _sign(self, header: tuple[str, CID, Slot], decision: Decision) -> SignedDecision:
        share = self.forger if self.behaviour == "forge" else self.share
        statement = statement_bytes(*header, decision)
        return SignedDecision(decision, partial_sign(share, statement).to_bytes())


def _other_outcome(outcome: Outcome) -> Outcome:
    """An outcome of the same slot that is not `outcome`."""
    lie = raw_block(b"a lie about " + encode_dag(outcome.to_obj())).cid
    return Outcome(outcome.exec, outcome.step, outcome.attempt, "completed", lie)


def critical_service(
    me: str,
    direct: Direct,
    execs: ExecService,
    journal: LockJournal,
    *,
    name: str,
    dealing: Dealing,
    watch: CriticalWatch,
) -> CriticalService:
    """The node's critical service, wired as `runtime/daemon.py` wires it (its lock
    journal in the repo, so locks survive crashes)."""
    config = dealing.config(me)
    behaviour = dealing.byzantine.get(me)
    if behaviour is None:
        return Watched(
            me, direct, config, journal=journal, reexecute=execs.reexecute,
            allow=execs.allow_critical, name=name, watch=watch,
        )  # fmt: skip
    return Byzantine(
        me, direct, config, journal=journal, reexecute=execs.reexecute,
        allow=execs.allow_critical, name=name, watch=watch,
        behaviour=behaviour, rng=dealing.rng(me),
    )  # fmt: skip


def show_slot(slot: Slot) -> str:
    return f"{slot.exec.encode()[-10:]} {slot.name} attempt {slot.attempt}"


def show_decision(decision: Decision) -> str:
    outcome = decision.outcome
    if outcome is None:
        return "abort"
    shown = outcome.value.encode()[-10:] if outcome.value is not None else outcome.error
    return f"commit({outcome.status} {shown})"
