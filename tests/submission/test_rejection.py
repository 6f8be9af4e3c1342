"""Who answers a refused submission with a `rejection`, and what it says (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qflow_node.codec import dag_block, raw_block
from qflow_node.codec.envelope_bodies import MAX_REJECTION_MESSAGE, Rejection
from qflow_node.core.envelopes import Verified, open_envelope, seal_envelope
from qflow_node.core.rejection import (
    DEFINITIVE,
    REJECT_SLOT,
    REPEAT_MS,
    definitive,
    publisher,
    rejection_message,
    why_not_publish,
)
from qflow_node.core.scheduling import Slot, ranking
from qflow_node.identity import SigningKey

EXEC = dag_block({"format": "qflow.submission/1", "nonce": b"\x01" * 16}).cid
NODES = tuple(SigningKey(bytes([i]) * 32).peer_id for i in range(1, 6))
SENDER = SigningKey(b"\x09" * 32).peer_id
NOW = 1_000_000


def decide(
    me: str,
    *,
    reason: str = "bad_inputs",
    sender: str = SENDER,
    nodes: list[str] | None = None,
    blocks_here: bool = True,
    last_ms: int | None = None,
) -> str | None:
    """`me`'s decision; by default every other node of NODES is alive."""
    return why_not_publish(
        EXEC,
        reason,
        me=me,
        sender=sender,
        nodes=[n for n in NODES if n != me] if nodes is None else nodes,
        blocks_here=blocks_here,
        last_ms=last_ms,
        now_ms=NOW,
    )


def test_exactly_one_node_publishes_the_first_by_rendezvous() -> None:
    publishing = [me for me in NODES if decide(me) is None]
    first = ranking(Slot(EXEC, REJECT_SLOT, 0), NODES)[0]
    assert publishing == [first]
    assert publisher(EXEC, sender=SENDER, nodes=NODES) == first
    for me in NODES:
        if me != first:
            assert decide(me) == f"{first} publishes it"


def test_the_sender_is_never_the_publisher() -> None:
    first = publisher(EXEC, sender=SENDER, nodes=NODES)
    assert first is not None
    # A member of the subnet that sent the submission itself knows what it sent.
    second = publisher(EXEC, sender=first, nodes=NODES)
    assert second not in (None, first)
    assert decide(first, sender=first) == f"{second} publishes it"
    assert decide(second, sender=first) is None
    assert publisher(EXEC, sender=NODES[0], nodes=[NODES[0]]) is None


def test_a_node_alone_publishes() -> None:
    assert decide(NODES[0], nodes=[]) is None


def test_only_facts_about_the_blocks_are_published() -> None:
    for reason in DEFINITIVE:
        assert definitive(reason, blocks_here=False)
    for reason in ("hash_mismatch", "missing", "wrong_subnet", "anything_else"):
        assert not definitive(reason, blocks_here=True)
        assert decide(NODES[0], nodes=[], reason=reason) == (
            f"{reason} is not a fact about the submission"
        )
    # A flow that does not compile is a fact, a flow that did not arrive is not.
    assert definitive("unusable", blocks_here=True)
    assert not definitive("unusable", blocks_here=False)
    assert decide(NODES[0], nodes=[], reason="unusable", blocks_here=False) is not None


def test_not_again_within_the_repeat_window() -> None:
    me = publisher(EXEC, sender=SENDER, nodes=NODES)
    assert me is not None
    assert decide(me, last_ms=NOW - REPEAT_MS + 1) == "rejected less than 30 s ago"
    assert decide(me, last_ms=NOW - REPEAT_MS) is None
    assert decide(me, last_ms=NOW + 5) is not None  # a clock that went back: still recent


def test_an_exec_that_is_not_dag_cbor_is_never_answered() -> None:
    raw = raw_block(b"x").cid
    why = why_not_publish(
        raw,
        "bad_field",
        me=NODES[0],
        sender=SENDER,
        nodes=[],
        blocks_here=True,
        last_ms=None,
        now_ms=NOW,
    )
    assert why == "exec is not a dag-cbor CID"


@given(me=st.sampled_from(NODES), others=st.sets(st.sampled_from(NODES)))
def test_the_decision_does_not_depend_on_the_order_of_the_view(me: str, others: set[str]) -> None:
    forward = decide(me, nodes=sorted(others))
    assert decide(me, nodes=sorted(others, reverse=True)) == forward
    assert decide(me, nodes=[*others, *others, me]) == forward  # duplicates, itself


def test_messages_are_cut_and_cleaned() -> None:
    assert rejection_message("inputs: 'who' is required", "bad_inputs") == (
        "inputs: 'who' is required"
    )
    assert rejection_message("  \n", "bad_inputs") == "bad_inputs"
    assert rejection_message("a\x1b[31mb\n\tc\x9bd", "x") == "a?[31mb c?d"
    long = rejection_message("é" * 2000, "x")
    assert len(long) == MAX_REJECTION_MESSAGE and long.endswith("…")


@given(st.text(max_size=2000), st.sampled_from(sorted(DEFINITIVE)))
def test_every_message_makes_a_valid_rejection(text: str, reason: str) -> None:
    key = SigningKey(b"\x01" * 32)
    body = Rejection(exec=EXEC, reason=reason, message=rejection_message(text, reason))
    data = seal_envelope(key, subnet="dao-1", seq=1, body=body)
    assert open_envelope(data, subnet="dao-1", channel="flows") == Verified(
        "rejection", key.peer_id, 1, body
    )
