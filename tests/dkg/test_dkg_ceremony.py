"""The DKG ceremony (`core/dkg/ceremony.py`) on a simulated network with a virtual clock.

Honest runs agree and sign; cheating, equivocating, absent and cut-off parties are
handled the same way by every honest party; the Dolev-Strong relays make a message
injected late reach every honest party or none; only a policy t parties confirm is
kept; hostile requests are refused with a precise reason and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from qflow_node.codec import CID, DAG_CBOR, cid_for, encode_dag
from qflow_node.core.dkg import (
    Ceremony,
    Envelope,
    Failed,
    Finished,
    Outcome,
    Payload,
    PlanError,
    Round,
    Send,
    Stage,
)
from qflow_node.core.dkg.messages import Body
from qflow_node.core.dkg.testing import Network, WrongShare, ceremonies, make_plan, node_keys
from qflow_node.crypto import (
    Complaint,
    Deal,
    DealtShare,
    Participant,
    combine_verified,
    partial_sign,
    seeded_rng,
    verify,
    verify_share,
)

KEYS = node_keys(6)  # five parties and a stranger
PLAN = make_plan(KEYS[:5], 3)
T0 = PLAN.start_ms
STEP = PLAN.step_ms
MSG = b"the new key signs this"


def finished(outcomes: dict[int, Outcome], parties: range | list[int]) -> list[Finished]:
    done = []
    for i in parties:
        outcome = outcomes.get(i)
        assert isinstance(outcome, Finished), f"party {i}: {outcome}"
        done.append(outcome)
    assert len({o.policy.cid for o in done}) == 1, "honest parties derived different policies"
    assert len({o.transcript for o in done}) == 1, "honest parties hold different transcripts"
    return done


def signed(sender: int, msg: Body, *, by: tuple[int, ...] = (), plan: CID | None = None) -> bytes:
    """An envelope from party `sender` (its key), countersigned by the parties `by`."""
    payload = Payload(plan or PLAN.cid, sender, msg)
    envelope = Envelope.signed(payload, KEYS[sender - 1])
    for j in by:
        envelope = envelope.with_sig(j, payload.sign(KEYS[j - 1]))
    return envelope.to_bytes()


def test_an_honest_ceremony_makes_one_policy_whose_shares_sign() -> None:
    outcomes = Network(list(ceremonies(PLAN, KEYS[:5]))).run()
    done = finished(outcomes, range(1, 6))
    policy = done[0].policy
    assert policy.cid == PLAN.policy_for(policy.keys).cid
    assert all(o.confirmed_by == (1, 2, 3, 4, 5) for o in done)
    assert all(verify_share(o.result.share, policy.keys.commitments) for o in done)
    partials = {o.result.share.index: partial_sign(o.result.share, MSG) for o in done[2:]}
    assert verify(policy.group_key, MSG, combine_verified(policy.keys, MSG, partials).signature)


@pytest.mark.parametrize(
    ("justify", "why"),
    [
        ("none", "did not answer the complaint from 2"),
        ("bad", "revealed a share for 2 that does not verify"),
    ],
)
def test_a_dealer_with_a_bad_share_that_does_not_justify_it_is_disqualified(
    justify: str, why: str
) -> None:
    class Cheat(WrongShare):
        pass

    Cheat.justify = justify
    parties = ceremonies(PLAN, KEYS[:5])
    parties[4] = Cheat(PLAN, KEYS[4], seeded_rng(b"cheat"))
    done = finished(Network(list(parties)).run(), range(1, 5))
    assert all(dict(o.result.disqualified) == {5: why} for o in done)
    assert all(o.result.qualified == (1, 2, 3, 4) for o in done)


def test_an_honest_dealer_answers_a_false_complaint_and_stays() -> None:
    class Liar(Ceremony):
        def _advance(self, now_ms: int) -> list[Send]:
            sends = super()._advance(now_ms)
            if self.stage is Stage.COMPLAIN:  # complain about dealer 1, who dealt well
                sends += self._broadcast(Complaint(self.index, 1))
            return sends

    parties: list[Ceremony | None] = list(ceremonies(PLAN, KEYS[:5]))
    parties[3] = Liar(PLAN, KEYS[3], seeded_rng(b"liar"))
    done = finished(Network(parties).run(), [1, 2, 3, 5])
    assert all(o.result.qualified == (1, 2, 3, 4, 5) for o in done)


def test_an_offline_party_is_disqualified_and_the_rest_finish() -> None:
    parties: list[Ceremony | None] = list(ceremonies(PLAN, KEYS[:5]))
    parties[4] = None
    done = finished(Network(parties).run(), range(1, 5))
    assert all(dict(o.result.disqualified) == {5: "sent no deal"} for o in done)
    assert all(o.confirmed_by == (1, 2, 3, 4) for o in done)


def byzantine_deal(seed: bytes) -> tuple[Deal, tuple[DealtShare, ...]]:
    return Participant(5, 3, 5).deal(seeded_rng(seed))


def test_an_equivocating_dealer_is_disqualified_by_everyone() -> None:
    """Party 5 (scripted) sends one signed deal to parties 1, 2 and another to 3, 4."""
    parties: list[Ceremony | None] = [*ceremonies(PLAN, KEYS[:4]), None]
    network = Network(parties)
    for seed, targets in ((b"a", (1, 2)), (b"b", (3, 4))):
        deal, shares = byzantine_deal(seed)
        for to in targets:
            network.inject(T0 + 1, 5, to, signed(5, deal))
            network.inject(T0 + 1, 5, to, signed(5, shares[to - 1]))
    done = finished(network.run(), range(1, 5))
    assert all(o.result.disqualified[5] == "equivocated: sent two different deals" for o in done)


@pytest.mark.parametrize(("step", "qualified"), [(1, True), (2, False)])
def test_a_late_deal_relayed_by_an_accomplice_reaches_every_honest_party_or_none(
    step: int, qualified: bool
) -> None:
    """Byzantine parties 4 and 5 (f = t - 1 = 2): 5 deals to party 1 alone, late, with 4's
    countersignature. In step 1 that is enough there, and party 1's relay carries it to
    everyone in time; in the last step it is not enough anywhere."""
    parties: list[Ceremony | None] = [*ceremonies(PLAN, KEYS[:3]), None, None]
    network = Network(parties)
    deal, shares = byzantine_deal(b"late")
    for to in (1, 2, 3):
        network.inject(T0 + 1, 5, to, signed(5, shares[to - 1]))
    network.inject(T0 + step * STEP + STEP // 2, 4, 1, signed(5, deal, by=(4,)))
    done = finished(network.run(), range(1, 4))
    for outcome in done:
        assert (5 in outcome.result.qualified) is qualified
        assert outcome.result.disqualified[4] == "sent no deal"
    if not qualified:
        assert any(
            a.reason == "dkg/deal from party 5 arrived in step 3 of the deal round with 2"
            " signature(s); by then it needs 3"
            for *_, a in network.answers
        )


def test_a_party_cut_off_from_the_rounds_fails_loudly_and_the_others_finish() -> None:
    """Nothing reaches party 5 in time: it cannot finish, the others do without it."""

    def slow_to_5(_frm: int, to: int, _send: Send) -> int | None:
        return 100 * STEP if to == 5 else 5

    outcomes = Network(list(ceremonies(PLAN, KEYS[:5])), link=slow_to_5).run()
    done = finished(outcomes, range(1, 5))
    assert all(o.confirmed_by == (1, 2, 3, 4) for o in done)
    failed = outcomes[5]
    assert isinstance(failed, Failed)
    assert failed.reason.startswith("the DKG failed: only 1 dealers qualified (5)")


def test_only_a_policy_confirmed_by_t_parties_is_kept() -> None:
    def no_confirmations_to_1_and_2(frm: int, to: int, send: Send) -> int | None:
        lost = send.what == "dkg/confirm" and to in (1, 2) and frm in (3, 4, 5)
        return None if lost else 5

    outcomes = Network(list(ceremonies(PLAN, KEYS[:5])), link=no_confirmations_to_1_and_2).run()
    finished(outcomes, [3, 4, 5])
    for i in (1, 2):
        failed = outcomes[i]
        assert isinstance(failed, Failed)
        assert "was confirmed by 2 part(ies) (1, 2); t = 3 are needed" in failed.reason
        assert failed.reason.endswith(
            "party 3 sent no confirmation; party 4 sent no confirmation;"
            " party 5 sent no confirmation."
        )


def test_the_timeline_has_t_steps_per_round_then_the_confirmation() -> None:
    timeline = PLAN.timeline
    assert [timeline.opens(r) for r in Round] == [T0, T0 + 3 * STEP, T0 + 6 * STEP]
    assert (timeline.confirm_opens, timeline.ends) == (T0 + 9 * STEP, T0 + 11 * STEP)
    assert timeline.step_of(Round.DEAL, T0 - 50) == 0  # a peer's clock a little ahead
    assert timeline.step_of(Round.DEAL, T0 + 2 * STEP + 99) == 2
    assert timeline.step_of(Round.DEAL, T0 + 3 * STEP) is None
    assert timeline.step_of(Round.JUSTIFICATION, T0 + 3 * STEP) == 0


def test_only_the_plan_s_validators_take_part() -> None:
    with pytest.raises(PlanError, match="is not a validator of the plan"):
        Ceremony(PLAN, KEYS[5], seeded_rng(b"stranger"))


def test_a_party_that_starts_after_the_first_step_does_not_deal() -> None:
    party = ceremonies(PLAN, KEYS[:5])[0]
    assert party.tick(T0 + STEP) == []
    assert isinstance(party.outcome, Failed)
    assert party.outcome.reason.startswith("started too late: the deal round's first step ended")


# -- hostile requests -------------------------------------------------------------------------

OTHER_PLAN = cid_for(b"another ceremony", DAG_CBOR)
GOOD = Complaint(1, 3)


def raw_envelope(**changes: object) -> bytes:
    obj = Envelope.signed(Payload(PLAN.cid, 1, GOOD), KEYS[0]).to_obj()
    for path, value in changes.items():
        target: Any = obj
        *parents, last = path.split("__")
        for key in parents:
            target = target[int(key) if key.isdigit() else key]
        target[int(last) if last.isdigit() else last] = value
    return encode_dag(obj)


def bad_sig() -> bytes:
    obj = Envelope.signed(Payload(PLAN.cid, 1, GOOD), KEYS[0]).to_obj()
    obj["sigs"][0]["sig"] = KEYS[0].sign(b"something else")
    return encode_dag(obj)


def unsigned_relay() -> bytes:
    return Envelope.signed(Payload(PLAN.cid, 1, GOOD), KEYS[0]).to_bytes()


SENDER = KEYS[0].peer_id
HOSTILE: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "not dag-cbor": (SENDER, lambda: b"\xa1\x61x", "dkg message: invalid or non-canonical"),
    "unknown field": (
        SENDER,
        lambda: raw_envelope(extra=1),
        "dkg message: unknown field(s) [\"'extra'\"]",
    ),
    "version 2": (SENDER, lambda: raw_envelope(payload__v=2), "dkg message.payload.v: version 2"),
    "no signatures": (
        SENDER,
        lambda: raw_envelope(sigs=[]),
        "dkg message.sigs: at least the sender's signature is needed",
    ),
    "short signature": (
        SENDER,
        lambda: raw_envelope(sigs__0__sig=b"abc"),
        "dkg message.sigs[0].sig: expected 64 bytes, got 3",
    ),
    "not the sender's signature": (
        SENDER,
        lambda: raw_envelope(sigs__0__by=2),
        "dkg message.sigs: no signature by the sender, party 1",
    ),
    "a party outside the plan": (
        SENDER,
        lambda: raw_envelope(payload__from=9, payload__msg__complainer=9, sigs__0__by=9),
        "party 9 is not in this ceremony (parties are 1..5)",
    ),
    "malformed deal": (
        SENDER,
        lambda: raw_envelope(payload__msg={"kind": "dkg/deal", "dealer": 1, "commitments": [b"x"]}),
        "dkg message.payload.msg: deal from 1: commitments must be 48-byte strings",
    ),
    "another plan": (
        SENDER,
        lambda: signed(1, GOOD, plan=OTHER_PLAN),
        f"a message of plan {OTHER_PLAN.encode()}; this ceremony is plan {PLAN.cid.encode()}",
    ),
    "bad signature": (SENDER, bad_sig, "dkg message.sigs[0]: party 1's signature does not verify"),
    "forged author": (
        SENDER,
        lambda: signed(1, Complaint(3, 4)),
        "a dkg/complaint by party 3 sent as party 1",
    ),
    "relayed without signing": (
        KEYS[2].peer_id,
        unsigned_relay,
        "party 3 relayed a dkg/complaint without signing it",
    ),
    "relayed share": (
        KEYS[2].peer_id,
        lambda: signed(1, DealtShare(1, 2, b"\x01" * 32), by=(3,)),
        "a dkg/share comes only from its sender, party 1, never relayed (this came from"
        " party 3, signed by 1, 3)",
    ),
    "share for another party": (
        SENDER,
        lambda: signed(1, DealtShare(1, 3, b"\x01" * 32)),
        "dkg/share from party 1 is for party 3, not this party (2)",
    ),
    "a stranger": (
        KEYS[5].peer_id,
        unsigned_relay,
        f"peer {KEYS[5].peer_id} is not a party of plan {PLAN.cid.encode()}",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_request_is_refused_precisely_and_changes_nothing(case: str) -> None:
    peer, make, reason = HOSTILE[case]
    party = ceremonies(PLAN, KEYS[:5])[1]
    party.tick(T0)
    held = party.transcript
    answer, sends = party.receive(T0 + 1, peer, make())
    assert answer.status == "refused" and sends == []
    assert answer.reason is not None and answer.reason.startswith(reason), answer.reason
    assert party.transcript == held and party.outcome is None


def test_authentic_but_late_or_surplus_messages_are_dropped() -> None:
    party = ceremonies(PLAN, KEYS[:5])[1]
    party.tick(T0)
    late = party.receive(T0 + 3 * STEP, KEYS[4].peer_id, signed(5, byzantine_deal(b"x")[0]))[0]
    assert late.status == "dropped"
    assert late.reason == "dkg/deal from party 5 arrived after the deal round closed"
    own_deal = Participant(1, 3, 5).deal(seeded_rng(b"1"))[0]
    thin = party.receive(T0 + STEP, SENDER, signed(1, own_deal))[0]
    assert (thin.status, thin.reason) == (
        "dropped",
        "dkg/deal from party 1 arrived in step 2 of the deal round with 1 signature(s);"
        " by then it needs 2",
    )
    versions = [Participant(1, 3, 5).deal(seeded_rng(bytes([s])))[0] for s in range(3)]
    answers = [party.receive(T0 + 1, SENDER, signed(1, deal))[0] for deal in versions]
    assert [a.status for a in answers] == ["accepted", "accepted", "dropped"]
    assert answers[2].reason == (
        "dkg/deal from party 1: two different versions are held already (equivocation)"
    )
    again = party.receive(T0 + 2, SENDER, signed(1, versions[0]))[0]
    assert again.status == "duplicate"


def test_hostile_requests_during_a_ceremony_change_nothing() -> None:
    network = Network(list(ceremonies(PLAN, KEYS[:5])))
    parties = {key.peer_id: j for j, key in enumerate(KEYS[:5], 1)}
    for i, (peer, make, _) in enumerate(HOSTILE.values()):
        if peer in parties:  # the network only carries the parties' own requests
            network.inject(T0 + 10 * i, parties[peer], 2, make())
    done = finished(network.run(), range(1, 6))
    assert all(o.result.qualified == (1, 2, 3, 4, 5) for o in done)
    hostile = [a for frm, to, send, a in network.answers if send.what == "injected"]
    assert len(hostile) == len(HOSTILE) - 1 and all(a.status == "refused" for a in hostile)
