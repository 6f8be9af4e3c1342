"""Plans, cheating parties and a simulated network for DKG tests (not used at run time).

`make_plan` writes a plan for given node keys; `WrongShare` is a dealer that sends one
party a bad share and then does not justify, or justifies with another bad share;
`Network` runs ceremonies over a virtual clock with per-link delays, dropping or
holding back what a test says, and records every answer.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from qflow_node.core.dkg.ceremony import Ceremony, Outcome, Send
from qflow_node.core.dkg.messages import Answer
from qflow_node.core.dkg.plan import DkgPlan
from qflow_node.crypto import Deal, DealtShare, Justification, seeded_rng
from qflow_node.crypto.bls import R, scalar_to_bytes
from qflow_node.identity.keys import SigningKey

SUBNET = "dao"


def node_keys(n: int, seed: int = 1) -> list[SigningKey]:
    return [SigningKey(bytes([seed + i]) * 32) for i in range(n)]


def make_plan(
    keys: Sequence[SigningKey],
    threshold: int,
    *,
    start_ms: int = 1_000_000,
    step_ms: int = 100,
    addrs: Sequence[str] | None = None,
) -> DkgPlan:
    """A plan for `keys` (party i is keys[i-1]), listening where `addrs` says."""
    where = addrs or [f"/ip4/127.0.0.1/tcp/{4001 + i}" for i in range(len(keys))]
    return DkgPlan.create(
        subnet=SUBNET,
        threshold=threshold,
        validators=[(key.peer_id, [addr]) for key, addr in zip(keys, where, strict=True)],
        start_ms=start_ms,
        step_ms=step_ms,
    )


def ceremonies(plan: DkgPlan, keys: Sequence[SigningKey], seed: bytes = b"dkg") -> list[Ceremony]:
    return [Ceremony(plan, key, seeded_rng(seed + bytes([i]))) for i, key in enumerate(keys)]


def _corrupt(share: bytes) -> bytes:
    return scalar_to_bytes((int.from_bytes(share, "big") + 1) % R)


class WrongShare(Ceremony):
    """A dealer that sends party `victim` a share off by one, and then answers the
    complaint with nothing (`justify="none"`) or with another bad share (`"bad"`)."""

    victim = 2
    justify = "none"

    def _deal(self) -> tuple[Deal, tuple[DealtShare, ...]]:
        deal, shares = super()._deal()
        return deal, tuple(
            replace(s, share=_corrupt(s.share)) if s.recipient == self.victim else s for s in shares
        )

    def _justifications(self) -> tuple[Justification, ...]:
        answers = super()._justifications()
        if self.justify == "none":
            return ()
        return tuple(replace(a, share=_corrupt(_corrupt(a.share))) for a in answers)


Link = Callable[[int, int, Send], int | None]
"""Delay in ms of a send from party `frm` to party `to` (None: it is lost)."""


@dataclass
class Network:
    """Ceremonies (party i is `parties[i-1]`; None: offline) on a virtual clock."""

    parties: list[Ceremony | None]
    link: Link = lambda _frm, _to, _send: 5
    now: int = 0
    answers: list[tuple[int, int, Send, Answer]] = field(default_factory=list)
    _queue: list[tuple[int, int, int, int, bytes, Send]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def inject(self, at: int, frm: int, to: int, data: bytes, what: str = "injected") -> None:
        """Deliver `data` to party `to` at `at`, as if party `frm` sent it."""
        heapq.heappush(self._queue, (at, next(self._seq), frm, to, data, Send(to, data, what)))

    def _post(self, frm: int, sends: list[Send]) -> None:
        for send in sends:
            delay = self.link(frm, send.to, send)
            if delay is not None:
                self.inject(self.now + delay, frm, send.to, send.data, send.what)

    def run(self, limit_ms: int = 10**9) -> dict[int, Outcome]:
        live = {i: c for i, c in enumerate(self.parties, 1) if c is not None}
        self.now = min(c.timeline.start_ms for c in live.values()) - 1
        while True:
            deadlines = [d for c in live.values() if (d := c.next_deadline_ms) is not None]
            if not deadlines and not self._queue:
                break
            at = min([*deadlines, *(self._queue[0][:1] if self._queue else ())])
            if at > limit_ms:
                raise AssertionError(f"the ceremony runs past {limit_ms}")
            self.now = max(self.now, at)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, frm, to, data, send = heapq.heappop(self._queue)
                party = live.get(to)
                if party is None:
                    continue
                sender = party.plan.party(frm).peer
                answer, relays = party.receive(self.now, sender, data)
                self.answers.append((frm, to, send, answer))
                self._post(to, relays)
            for i, party in live.items():
                self._post(i, party.tick(self.now))
        return {i: c.outcome for i, c in live.items() if c.outcome is not None}
