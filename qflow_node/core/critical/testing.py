"""Committees, validators and a message pump for tests and simulations (not used at run time).

Everything is deterministic and in-process: `committee` deals a t-of-n key from a known
secret with a seeded byte stream; `certify` makes the certificate t of its members sign;
`Honest` is a validator node with its lock journal (what the shell would fsync) and its
own outcome of the step; `Byzantine` signs whatever it is asked and answers queries with
a chosen lie; `run_round` wires a coordinator to them over a lossless, in-order network
unless told which sends to drop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from qflow_node.codec import CID, DAG_CBOR, cid_for, raw_block
from qflow_node.core.critical.coordinator import (
    Coordinator,
    CoordinatorAction,
    Send,
)
from qflow_node.core.critical.messages import (
    AbortRequest,
    Answer,
    Prepare,
    Query,
    SignedDecision,
    Vote,
)
from qflow_node.core.critical.statement import Certificate, Decision, Outcome, statement_bytes
from qflow_node.core.critical.validator import Lock, PersistLock, Reply, Validator
from qflow_node.core.scheduling.rank import Slot
from qflow_node.crypto import KeySet, SecretKey, Share, combine, deal, partial_sign, seeded_rng

SUBNET = "dao"
POLICY = cid_for(b"policy: validators 1..n, group key, whitelist", DAG_CBOR)
EXEC = cid_for(b"submission of a payment flow", DAG_CBOR)
SLOT = Slot(EXEC, "pay", 0)
SECRET = SecretKey(0x5EC12E7)


def outcome(value: bytes = b"paid 10", slot: Slot = SLOT) -> Outcome:
    """A completed outcome of `slot` whose output block holds `value`."""
    return Outcome(slot.exec, slot.name, slot.attempt, "completed", raw_block(value).cid)


@dataclass(frozen=True, slots=True)
class Committee:
    keys: KeySet
    shares: tuple[Share, ...]
    secret: SecretKey  # known here so tests can compare with plain BLS signing


def committee(
    threshold: int, size: int, seed: bytes = b"committee", secret: SecretKey = SECRET
) -> Committee:
    shares, commitments = deal(secret, threshold, size, seeded_rng(seed))
    return Committee(KeySet(size, commitments), shares, secret)


def certify(
    group: Committee,
    slot: Slot,
    decision: Decision,
    *,
    subnet: str = SUBNET,
    policy: CID = POLICY,
    signers: tuple[int, ...] | None = None,
) -> Certificate:
    """The certificate t members (`signers`, default the first t) make for `decision` on
    `slot`: partial signatures of the statement, combined."""
    statement = statement_bytes(subnet, policy, slot, decision)
    chosen = signers if signers is not None else tuple(s.index for s in group.shares)
    partials = {
        share.index: partial_sign(share, statement)
        for share in group.shares
        if share.index in chosen[: group.keys.threshold]
    }
    return Certificate(policy, decision, combine(partials, group.keys.threshold).to_bytes())


Request = Prepare | AbortRequest | Query


class Member(Protocol):
    def handle(self, message: Request) -> Vote | Answer | None: ...


@dataclass
class Honest:
    """A validator node: the state machine, its own outcome and its persisted locks."""

    validator: Validator
    own: Outcome | None
    policy_error: str | None = None
    journal: list[Lock] = field(default_factory=list)  # what reached the disk

    def handle(self, message: Request) -> Vote | Answer | None:
        if isinstance(message, Prepare):
            actions = self.validator.on_prepare(message, self.own, self.policy_error)
        elif isinstance(message, AbortRequest):
            actions = self.validator.on_abort(message, self.policy_error)
        else:
            actions = self.validator.on_query(message)
        reply = None
        for action in actions:
            if isinstance(action, PersistLock):
                assert reply is None, "a lock is persisted before the reply leaves"
                self.journal.append(action.lock)
            elif isinstance(action, Reply):
                reply = action.message
        return reply

    def restart(self, share: Share) -> None:
        """Crash and come back: only the journal survives."""
        self.validator = Validator(self.validator.subnet, self.validator.policy, share)
        self.validator.restore(self.journal)


@dataclass
class Byzantine:
    """Signs every decision it is asked for (equivocating freely); answers a query with
    `lie` signed, or nothing."""

    share: Share
    subnet: str = SUBNET
    policy: CID = POLICY
    lie: Decision | None = None

    def sign(self, slot: Slot, decision: Decision) -> SignedDecision:
        statement = statement_bytes(self.subnet, self.policy, slot, decision)
        return SignedDecision(decision, partial_sign(self.share, statement).to_bytes())

    def handle(self, message: Request) -> Vote | Answer | None:
        index = self.share.index
        if isinstance(message, Query):
            signed = None if self.lie is None else self.sign(message.slot, self.lie)
            return Answer(message.subnet, message.policy, message.slot, index, signed)
        if isinstance(message, Prepare):
            signed = self.sign(message.slot, message.decision)
            return Vote(message.subnet, message.policy, message.slot, index, "prepare", signed)
        signed = self.sign(message.slot, Decision.abort())
        return Vote(message.subnet, message.policy, message.slot, index, "abort", signed)


def honest_members(
    group: Committee, own: Outcome | None, *, subnet: str = SUBNET, policy: CID = POLICY
) -> dict[int, Honest]:
    return {share.index: Honest(Validator(subnet, policy, share), own) for share in group.shares}


def deliver(
    coordinator: Coordinator, to: int, reply: Vote | Answer, now_ms: int
) -> tuple[CoordinatorAction, ...]:
    if isinstance(reply, Vote):
        return coordinator.on_vote(to, reply, now_ms)
    return coordinator.on_answer(to, reply, now_ms)


def run_round(
    coordinator: Coordinator,
    members: Mapping[int, Member],
    *,
    now_ms: int = 0,
    drop: Callable[[Send], bool] = lambda send: False,
    max_steps: int = 10_000,
) -> list[CoordinatorAction]:
    """Start `coordinator` and pump messages in order until its round ends.

    A send is lost when `drop(send)` says so, or when its recipient is missing from
    `members` (offline) or answers nothing. With the queue empty, time jumps to the
    coordinator's next timer. Returns every action the coordinator took, in order.
    """
    log: list[CoordinatorAction] = []
    queue: deque[CoordinatorAction] = deque()

    def take(actions: tuple[CoordinatorAction, ...]) -> None:
        log.extend(actions)
        queue.extend(actions)

    take(coordinator.start(now_ms))
    for _ in range(max_steps):
        if queue:
            action = queue.popleft()
            if not isinstance(action, Send) or drop(action):
                continue
            member = members.get(action.to)
            reply = None if member is None else member.handle(action.message)
            if reply is not None:
                take(deliver(coordinator, action.to, reply, now_ms))
            continue
        timer = coordinator.next_timer_ms
        if timer is None:
            return log
        now_ms = max(now_ms, timer)
        take(coordinator.on_timer(now_ms))
    raise AssertionError(f"the round did not end within {max_steps} steps")
