"""Joint-Feldman DKG: honest runs agree and sign; cheating dealers are disqualified."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import replace

import pytest

from qflow_node.codec import encode_dag
from qflow_node.crypto import (
    Complaint,
    Deal,
    DealtShare,
    DecodeError,
    DKGError,
    DkgResult,
    Justification,
    Message,
    Participant,
    Rng,
    combine_verified,
    decode_message,
    encode_message,
    partial_sign,
    public_key,
    recover_secret,
    run_locally,
    verify,
)
from qflow_node.crypto.bls import R, scalar_to_bytes

SeededRng = Callable[[bytes], Rng]
MSG = b"the group signs this"


def wire(msg: Message) -> Message:
    return decode_message(encode_message(msg))


def run(
    t: int,
    n: int,
    rng: Rng,
    *,
    edit_deal: Callable[[Deal], list[Deal]] = lambda deal: [deal],
    edit_share: Callable[[DealtShare], DealtShare | None] = lambda share: share,
    edit_answer: Callable[[Justification], Justification | None] = lambda answer: answer,
    extra_complaints: Iterable[Complaint] = (),
    absent: Iterable[int] = (),
) -> tuple[dict[int, DkgResult], list[bytes]]:
    """Drive every party round by round, each message through its wire form.

    The hooks let a test play a cheating dealer; the transcript is every encoded message.
    """
    parties = {i: Participant(i, t, n) for i in range(1, n + 1) if i not in set(absent)}
    transcript: list[bytes] = []

    def send(msg: Message) -> Message:
        data = encode_message(msg)
        transcript.append(data)
        return decode_message(data)

    deals, private = [], []
    for party in parties.values():
        own, shares = party.deal(rng)
        deals += [send(d) for d in edit_deal(own)]
        private += [send(s) for s in map(edit_share, shares) if s is not None]
    for party in parties.values():
        for deal in deals:
            assert isinstance(deal, Deal)
            party.receive_deal(deal)
    for share in private:
        assert isinstance(share, DealtShare)
        if share.recipient in parties:
            parties[share.recipient].receive_share(share)
    complaints = [send(c) for p in parties.values() for c in (*p.complaints(),)]
    complaints += [send(c) for c in extra_complaints]
    for party in parties.values():
        for complaint in complaints:
            assert isinstance(complaint, Complaint)
            party.receive_complaint(complaint)
    answers = [
        send(a)
        for p in parties.values()
        for a in map(edit_answer, p.justifications())
        if a is not None
    ]
    for party in parties.values():
        for answer in answers:
            assert isinstance(answer, Justification)
            party.receive_justification(answer)
    return {i: party.finish() for i, party in parties.items()}, transcript


def assert_agree_and_sign(results: dict[int, DkgResult], t: int, cheater: int = 0) -> None:
    """One key set at every honest party, and every t of their shares sign for it.

    The cheater's own view is left out: it believes its cheating went unnoticed.
    """
    results = {i: r for i, r in results.items() if i != cheater}
    first = next(iter(results.values()))
    for result in results.values():
        assert result.keys == first.keys
        assert result.qualified == first.qualified
        assert result.disqualified == first.disqualified
        assert result.keys.share_key(result.index) == public_key_of(result)
    shares = {i: r.share for i, r in results.items()}
    secrets = {recover_secret(subset) for subset in itertools.combinations(shares.values(), t)}
    assert len(secrets) == 1
    assert public_key(secrets.pop()) == first.keys.public_key
    for subset in itertools.combinations(sorted(shares), t):
        partials = {i: partial_sign(shares[i], MSG) for i in subset}
        combined = combine_verified(first.keys, MSG, partials)
        assert combined.culprits == ()
        assert verify(first.keys.public_key, MSG, combined.signature)


def public_key_of(result: DkgResult) -> object:
    from qflow_node.crypto import SecretKey

    return public_key(SecretKey(result.share.value))


def test_an_honest_3_of_5_run_agrees_and_signs(seeded: SeededRng) -> None:
    results, _ = run(3, 5, seeded(b"honest"))
    assert_agree_and_sign(results, 3)
    assert results[1].qualified == (1, 2, 3, 4, 5)
    assert results[1].disqualified == {}


def test_run_locally_is_an_honest_run(seeded: SeededRng) -> None:
    results = run_locally(3, 5, seeded(b"local"))
    assert [r.index for r in results] == [1, 2, 3, 4, 5]
    assert_agree_and_sign({r.index: r for r in results}, 3)


def test_the_same_rng_gives_the_same_transcript(seeded: SeededRng) -> None:
    first, transcript = run(3, 5, seeded(b"again"))
    second, again = run(3, 5, seeded(b"again"))
    assert transcript == again
    assert first[1].keys == second[1].keys
    _, other = run(3, 5, seeded(b"different"))
    assert other != transcript


def bad_share_to(dealer: int, recipient: int) -> Callable[[DealtShare], DealtShare]:
    def edit(share: DealtShare) -> DealtShare:
        if (share.dealer, share.recipient) != (dealer, recipient):
            return share
        value = (int.from_bytes(share.share, "big") + 1) % R
        return replace(share, share=scalar_to_bytes(value))

    return edit


def test_a_dealer_that_does_not_justify_is_disqualified(seeded: SeededRng) -> None:
    results, _ = run(
        3, 5, seeded(b"silent"), edit_share=bad_share_to(2, 4), edit_answer=lambda a: None
    )
    assert results[1].qualified == (1, 3, 4, 5)
    assert results[1].disqualified == {2: "did not answer the complaint from 4"}
    assert_agree_and_sign(results, 3, cheater=2)


def test_a_dealer_that_justifies_with_a_bad_share_is_disqualified(seeded: SeededRng) -> None:
    def worse(answer: Justification) -> Justification:
        return replace(answer, share=scalar_to_bytes(12345))

    results, _ = run(3, 5, seeded(b"liar"), edit_share=bad_share_to(2, 4), edit_answer=worse)
    assert results[3].disqualified == {2: "revealed a share for 4 that does not verify"}
    assert_agree_and_sign(results, 3, cheater=2)


def test_a_dealer_that_justifies_correctly_stays(seeded: SeededRng) -> None:
    results, transcript = run(3, 5, seeded(b"fixed"), edit_share=bad_share_to(2, 4))
    assert Complaint(4, 2) in [decode_message(data) for data in transcript]
    assert results[1].qualified == (1, 2, 3, 4, 5)
    assert_agree_and_sign(results, 3)  # party 4 adopted the revealed share


def test_a_missing_share_is_complained_about(seeded: SeededRng) -> None:
    def drop(share: DealtShare) -> DealtShare | None:
        return None if (share.dealer, share.recipient) == (5, 1) else share

    results, transcript = run(3, 5, seeded(b"drop"), edit_share=drop)
    assert Complaint(1, 5) in [decode_message(data) for data in transcript]
    assert results[2].disqualified == {}
    assert_agree_and_sign(results, 3)


@pytest.mark.parametrize("count", [2, 4])
def test_a_deal_with_the_wrong_number_of_commitments_is_disqualified(
    count: int, seeded: SeededRng
) -> None:
    def edit(deal: Deal) -> list[Deal]:
        if deal.dealer != 3:
            return [deal]
        commitments = (deal.commitments * 2)[:count]
        return [replace(deal, commitments=commitments)]

    results, _ = run(3, 5, seeded(b"count"), edit_deal=edit)
    assert results[1].disqualified == {3: f"deal has {count} commitments, expected t = 3"}
    assert results[1].qualified == (1, 2, 4, 5)
    assert_agree_and_sign(results, 3, cheater=3)


def test_a_deal_with_a_bad_point_is_disqualified(
    seeded: SeededRng, g1_outside_subgroup: bytes
) -> None:
    def edit(deal: Deal) -> list[Deal]:
        if deal.dealer != 1:
            return [deal]
        return [replace(deal, commitments=(*deal.commitments[:2], g1_outside_subgroup))]

    results, _ = run(3, 5, seeded(b"point"), edit_deal=edit)
    assert results[2].disqualified == {
        1: "malformed deal: deal from 1, point 2: not in the G1 subgroup"
    }
    assert_agree_and_sign(results, 3, cheater=1)


def test_an_equivocating_dealer_is_disqualified(seeded: SeededRng) -> None:
    def edit(deal: Deal) -> list[Deal]:
        if deal.dealer != 5:
            return [deal]
        reordered = (deal.commitments[1], deal.commitments[0], deal.commitments[2])
        return [deal, replace(deal, commitments=reordered)]

    results, _ = run(3, 5, seeded(b"equivocate"), edit_deal=edit)
    assert results[1].disqualified == {5: "equivocated: sent two different deals"}
    assert_agree_and_sign(results, 3, cheater=5)


def test_an_absent_dealer_is_disqualified(seeded: SeededRng) -> None:
    results, _ = run(3, 5, seeded(b"absent"), absent=[2])
    assert set(results) == {1, 3, 4, 5}
    assert results[1].disqualified == {2: "sent no deal"}
    assert_agree_and_sign(results, 3)


def test_false_complaints_from_t_minus_1_parties_do_not_hurt_an_honest_dealer(
    seeded: SeededRng,
) -> None:
    results, _ = run(3, 5, seeded(b"false"), extra_complaints=[Complaint(4, 1), Complaint(5, 1)])
    assert results[1].qualified == (1, 2, 3, 4, 5)
    assert_agree_and_sign(results, 3)


def test_t_complaints_disqualify_a_dealer(seeded: SeededRng) -> None:
    extra = [Complaint(i, 1) for i in (3, 4, 5)]
    results, _ = run(3, 5, seeded(b"many"), extra_complaints=extra)
    assert results[2].disqualified == {1: "3 complaints (t = 3): 3, 4, 5"}
    assert_agree_and_sign(results, 3)


def test_too_few_qualified_dealers_is_an_error(seeded: SeededRng) -> None:
    with pytest.raises(DKGError, match=r"only 2 dealers qualified \(1, 3\); at least t = 3"):
        run(3, 3, seeded(b"few"), absent=[2])


def test_a_13_party_run_with_t_9(seeded: SeededRng) -> None:
    results = run_locally(9, 13, seeded(b"big"))
    keys = results[0].keys
    assert all(r.keys == keys for r in results)
    partials = {r.index: partial_sign(r.share, MSG) for r in results[4:]}
    assert verify(keys.public_key, MSG, combine_verified(keys, MSG, partials).signature)


def test_rounds_are_enforced(seeded: SeededRng) -> None:
    rng = seeded(b"rounds")
    one, two = Participant(1, 2, 2), Participant(2, 2, 2)
    with pytest.raises(DKGError, match="must deal before it complains"):
        one.complaints()
    _, shares_1 = one.deal(rng)
    deal_2, _ = two.deal(rng)
    with pytest.raises(DKGError, match="already dealt"):
        one.deal(rng)
    with pytest.raises(DKGError, match="cannot finish in phase DEAL"):
        one.finish()
    with pytest.raises(DKGError, match="party 1 got the share meant for 2"):
        one.receive_share(shares_1[0])
    with pytest.raises(DKGError, match=r"party 3 is not in this DKG \(parties are 1\.\.2\)"):
        one.receive_deal(replace(deal_2, dealer=3))
    two.receive_complaint(Complaint(1, 2))  # early complaints wait for their round
    assert one.complaints() == ()  # deal_2 never arrived: dealer 2 is out, no complaint
    with pytest.raises(DKGError, match="party 1: deal from 2 arrived after its round closed"):
        one.receive_deal(deal_2)
    one.justifications()
    with pytest.raises(DKGError, match="complaint from 2 arrived after its round closed"):
        one.receive_complaint(Complaint(2, 1))


def test_every_message_kind_round_trips(seeded: SeededRng) -> None:
    party = Participant(1, 2, 3)
    deal, shares = party.deal(seeded(b"msgs"))
    messages: list[Message] = [
        deal,
        *shares,
        Complaint(2, 1),
        Justification(1, 2, shares[0].share),
    ]
    for msg in messages:
        assert wire(msg) == msg
    assert "share=" not in repr(shares[0])  # private: repr never shows it


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ({"kind": "dkg/nope"}, "unknown kind"),
        ({"dealer": 1}, "expected a map with a string 'kind'"),
        ({"kind": "dkg/complaint", "complainer": 1}, r"fields must be \['complainer', 'dealer'\]"),
        ({"kind": "dkg/complaint", "complainer": 2, "dealer": 2}, "complains about itself"),
        ({"kind": "dkg/complaint", "complainer": 0, "dealer": 2}, "complainer 0 is invalid"),
        ({"kind": "dkg/complaint", "complainer": "1", "dealer": 2}, "complainer '1' is invalid"),
        (
            {"kind": "dkg/share", "dealer": 1, "recipient": 2, "share": bytes(31)},
            "share from 1 to 2: expected 32 bytes",
        ),
        (
            {"kind": "dkg/deal", "dealer": 1, "commitments": [bytes(47)]},
            "commitments must be 48-byte strings",
        ),
        ({"kind": "dkg/deal", "dealer": 1, "commitments": []}, r"0 commitments, expected 1\.\."),
        ({"kind": "dkg/deal", "dealer": 1, "commitments": b""}, "commitments must be a list"),
    ],
)
def test_malformed_messages_are_refused(obj: dict[str, object], problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        decode_message(encode_dag(obj))


def test_non_canonical_bytes_are_refused() -> None:
    with pytest.raises(DecodeError, match="DKG message: invalid or non-canonical dag-cbor"):
        decode_message(b"\xa2\x61b\x01\x61a\x02")  # keys out of order
    with pytest.raises(DecodeError, match="DKG message"):
        decode_message(b"\xff")


def test_a_share_at_or_above_r_is_complained_about(seeded: SeededRng) -> None:
    def edit(share: DealtShare) -> DealtShare:
        if (share.dealer, share.recipient) != (3, 5):
            return share
        return replace(share, share=R.to_bytes(32, "big"))

    results, transcript = run(3, 5, seeded(b"above r"), edit_share=edit)
    assert Complaint(5, 3) in [decode_message(data) for data in transcript]
    assert results[1].qualified == (1, 2, 3, 4, 5)  # it justified with the right share
    assert_agree_and_sign(results, 3)
