"""The DKG ceremony over libp2p: `core/dkg.Ceremony` driven by trio (docs/consensus.md,
"Key setup: the DKG over libp2p").

One protocol, `/qflow/dkg/1.0.0`, on one long-lived stream per peer and direction
(`net/channel.py`): each request is one signed envelope, answered at once with
`{status, reason}`. The sender of a request is the stream's Noise-authenticated peer id,
which the plan maps to a party; the ceremony checks the rest (plan, signatures, who may
send what, when).

The shell keeps a connection to every party (dialling with backoff from the plan's
addresses), calls `tick` at each deadline of the plan (read from the wall clock, so all
parties agree on it within their clock difference), and sends what the ceremony asks in
a nursery of its own: requests are bounded by the channel's timeout and never cancelled
(a request cut off mid-write breaks the stream to that peer); `run` waits for the last
ones before returning.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Final

import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from qflow_node import clock
from qflow_node.core.dkg import (
    MAX_ANSWER_SIZE,
    MAX_ENVELOPE_SIZE,
    Answer,
    Ceremony,
    DkgPlan,
    Failed,
    Finished,
    MessageError,
    Send,
)
from qflow_node.crypto import Rng
from qflow_node.identity import SigningKey
from qflow_node.log import get_logger
from qflow_node.net.bootstrap import Backoff, maintain_bootstrap
from qflow_node.net.channel import Channel
from qflow_node.net.host import build_host, listening_on
from qflow_node.net.reqresp import Direct, Limits, RequestError

DKG_PROTOCOL: Final = "/qflow/dkg/1.0.0"
# After the plan's end: time for the last requests to finish or time out.
END_GRACE_S: Final = 30.0


def _log() -> Any:
    return get_logger("qflow.dkg")


class DkgError(Exception):
    """The ceremony ended without a key: why (from `Failed`), or why it could not run."""


def dial_addrs(plan: DkgPlan) -> dict[int, list[Multiaddr]]:
    """Each party's plan addresses; DkgError naming a malformed one."""
    found: dict[int, list[Multiaddr]] = {}
    for index, party in enumerate(plan.validators, 1):
        addrs = []
        for j, text in enumerate(party.addrs):
            try:
                addrs.append(Multiaddr(text))
            except Exception as exc:  # multiaddr raises several unrelated types
                raise DkgError(f"plan.validators[{index - 1}].addrs[{j}]: {exc}") from None
        found[index] = addrs
    return found


def dkg_limits(plan: DkgPlan) -> Limits:
    """A request later than a relay step is useless; a short one never waits longer."""
    return Limits(
        timeout=max(1.0, 2 * plan.step_ms / 1000),
        max_request_size=MAX_ENVELOPE_SIZE + 16,
        max_response_size=MAX_ANSWER_SIZE,
    )


class DkgService:
    """Runs `ceremony` on `direct`'s host until it has an outcome."""

    def __init__(self, direct: Direct, ceremony: Ceremony) -> None:
        self.direct = direct
        self.ceremony = ceremony
        self.plan = ceremony.plan
        self.channel: Channel = direct.open_channel(
            DKG_PROTOCOL, self.answer, dkg_limits(self.plan)
        )
        self._addrs = dial_addrs(self.plan)
        self._sends: trio.Nursery | None = None
        self._wake = trio.Event()
        self.serving = trio.Event()  # set once requests can be sent and are answered

    async def run(self) -> Finished:
        """The ceremony's key, or DkgError saying why there is none."""
        me = self.ceremony.index
        peers = [(i, self.plan.party(i).peer) for i in range(1, self.plan.size + 1) if i != me]
        store = self.direct.host.get_peerstore()
        for i, peer in peers:  # permanent: the channel dials from the peer store
            store.add_addrs(ID.from_base58(peer), self._addrs[i], 0)
        bootstrap = [Multiaddr(f"{self._addrs[i][0]}/p2p/{peer}") for i, peer in peers]
        _log().info(
            "dkg.start",
            plan=self.ceremony.plan_cid.encode(),
            party=me,
            parties=self.plan.size,
            threshold=self.plan.threshold,
            start_ms=self.plan.start_ms,
            ends_ms=self.ceremony.timeline.ends,
        )
        async with trio.open_nursery() as background:
            await background.start(self.channel.run)
            self.serving.set()
            background.start_soon(
                partial(
                    maintain_bootstrap,
                    self.direct.host,
                    bootstrap,
                    backoff=Backoff(initial=0.2, maximum=2.0),
                    dial_timeout=5.0,
                    check_interval=1.0,
                )
            )
            async with trio.open_nursery() as sends:
                self._sends = sends
                await self._drive()
            self._sends = None  # every request has finished or timed out
            background.cancel_scope.cancel()
        outcome = self.ceremony.outcome
        if isinstance(outcome, Failed) or outcome is None:
            reason = outcome.reason if outcome is not None else "no outcome"
            _log().warning("dkg.failed", party=me, reason=reason)
            raise DkgError(reason)
        _log().info(
            "dkg.finished",
            party=me,
            policy=outcome.policy.cid.encode(),
            qualified=list(outcome.result.qualified),
            disqualified={str(k): v for k, v in outcome.result.disqualified.items()},
            confirmed_by=list(outcome.confirmed_by),
        )
        return outcome

    async def _drive(self) -> None:
        ceremony = self.ceremony
        while True:
            stage = ceremony.stage
            self._send(ceremony.tick(clock.wall_ms()))
            if ceremony.stage is not stage:
                _log().info("dkg.stage", party=ceremony.index, stage=ceremony.stage.name.lower())
            deadline = ceremony.next_deadline_ms
            if ceremony.outcome is not None or deadline is None:
                return
            self._wake = wake = trio.Event()
            with trio.move_on_after(max(0.0, (deadline - clock.wall_ms()) / 1000)):
                await wake.wait()  # a confirmation that completes the set ends it early

    # -- the network ---------------------------------------------------------------------

    async def answer(self, peer: str, data: bytes) -> bytes:
        """One request from `peer`: the ceremony's answer; relays go out in the background."""
        done = self.ceremony.outcome is not None
        answer, sends = self.ceremony.receive(clock.wall_ms(), peer, data)
        if answer.status in ("refused", "dropped"):
            log = _log().warning if answer.status == "refused" else _log().info
            log(f"dkg.{answer.status}", peer=peer, reason=answer.reason)
        self._send(sends)
        if not done and self.ceremony.outcome is not None:
            self._wake.set()
        return answer.to_bytes()

    def _send(self, sends: Sequence[Send]) -> None:
        nursery = self._sends
        if nursery is None:  # the ceremony is over: nothing more goes out
            return
        for send in sends:
            nursery.start_soon(self._deliver, send)

    async def _deliver(self, send: Send) -> None:
        peer = self.plan.party(send.to).peer
        try:
            data = await self.channel.request(peer, send.data)
            answer = Answer.from_bytes(data)
        except (RequestError, MessageError) as exc:
            _log().info("dkg.send_failed", to=send.to, what=send.what, error=str(exc))
            return
        if answer.status in ("refused", "dropped"):
            _log().info(
                "dkg.not_taken", to=send.to, what=send.what, status=answer.status,
                reason=answer.reason,
            )  # fmt: skip


async def run_ceremony(
    plan: DkgPlan, key: SigningKey, listen: Sequence[Multiaddr], rng: Rng
) -> Finished:
    """A one-shot ceremony on a host of its own (`qflow subnet dkg`), bounded by the
    plan's end."""
    ceremony = Ceremony(plan, key, rng)
    host = build_host(key, listen)
    budget = max(0.0, (ceremony.timeline.ends - clock.wall_ms()) / 1000) + END_GRACE_S
    with trio.fail_after(budget):
        async with host.run(listen_addrs=list(listen)):
            _, failed = listening_on(host, listen)
            if failed:
                raise DkgError(f"cannot listen on {', '.join(failed)}")
            return await DkgService(Direct(host), ceremony).run()
