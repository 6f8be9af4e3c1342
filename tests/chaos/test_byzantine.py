"""Byzantine validators and coordinators against critical steps (chaos/byzantine.py) as
CI tests: five real node processes on loopback, 3 of 5 validators, some nodes started
through `chaos/byzantine_node.py` with one behaviour patched in (forge, equivocate,
stall, lie). The scenario runs once (one cluster for the Byzantine nodes, a fresh one
for the partition); each test checks one claim."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chaos.byzantine import Outcome, run
from qflow_node.core.critical import statement_bytes
from qflow_node.crypto import Signature, verify_partial

pytestmark = pytest.mark.slow

STALLED, LIAR, EQUIVOCATED, MAJORITY = (
    "n3 offline, n4 stalled",
    "a liar coordinating",
    "n1, n2 back after n4 equivocated",
    "the majority of a partition",
)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    result = run(tmp_path_factory.mktemp("byzantine"))
    print(result.summary())  # shown with -s, and on failure
    yield result


def committed_once(outcome: Outcome, label: str) -> None:
    """Every checked node holds the same verified, completed ledger of the flow, with one
    record of `pay` whose certificate verifies under the group key, the same everywhere."""
    checks = outcome.checks[label]
    for name, check in checks.items():
        assert check.verified and check.status == "completed", (label, name, check.report)
        assert check.completions.get("pay") == 1, (label, name, check.completions)
    assert len({check.heads for check in checks.values()}) == 1, label
    assert len(outcome.certificates[label]) == 1 and outcome.certified[label], label


def test_forged_records_claims_and_votes_are_refused_and_honest_flows_commit(
    outcome: Outcome,
) -> None:
    # The forger's submission (flows topic), claims and record announcements (exec
    # topic) never verified; neither did the ledger it announced.
    assert outcome.bad_signatures.get("flows", 0) > 0, outcome.bad_signatures
    assert outcome.bad_signatures.get("exec", 0) > 0, outcome.bad_signatures
    assert outcome.forgeries_refused > 0
    assert outcome.forger_records == 0 and outcome.forger_flow_records == 0
    # Its votes were named as forged (a partial named so is never counted), no one else's.
    assert outcome.forged_votes_named == {outcome.forger_index}
    committed_once(outcome, EQUIVOCATED)
    assert set(outcome.checks[EQUIVOCATED]) == {"n0", "n1", "n2", "n4"}


def test_a_wrong_result_is_outvoted_and_reported(outcome: Outcome) -> None:
    """The liar coordinated the first attempt with its wrong result: the validators
    re-executed, disagreed and signed abort, so the liar had to write an abort-certified
    failure (the report, in every ledger); the retry committed the honest result."""
    first, second = outcome.liar_attempts
    assert (first.attempt, first.kind, first.error_kind) == (1, "step.failed", "aborted")
    assert (first.decision, first.certified, first.writer) == ("abort", True, "n3")
    assert (second.attempt, second.kind, second.decision, second.certified) == (
        2,
        "step.completed",
        "commit",
        True,
    )
    assert outcome.honest_locks_first == {"abort"}  # no honest validator signed the lie
    lie = outcome.liar_lock_first
    assert lie is not None and lie.outcome is not None  # the liar signed its own result
    assert lie.outcome.value != second.value
    committed_once(outcome, LIAR)


def test_n_minus_t_validators_stalled_or_offline_still_commit(outcome: Outcome) -> None:
    committed_once(outcome, STALLED)
    assert outcome.stalled_locks == 0  # n4 was there and signed nothing: it stalled


def test_an_equivocating_validator_is_named_with_both_signed_votes_as_proof(
    outcome: Outcome,
) -> None:
    reports = outcome.equivocations
    assert reports and {e["validator"] for e in reports} == {outcome.equivocator_index}
    proof, path = outcome.proof, outcome.proof_path
    assert proof is not None and path is not None and path.is_file()
    assert proof.index == outcome.equivocator_index
    assert proof.first.decision != proof.second.decision
    assert proof.holds(outcome.keys)
    # The same check by hand: each vote is the equivocator's own BLS signature.
    key = outcome.keys.share_key(proof.index)
    for vote in (proof.first, proof.second):
        statement = statement_bytes(proof.subnet, proof.policy, proof.slot, vote.decision)
        assert verify_partial(key, statement, Signature.from_bytes(vote.partial))
    # Counting neither of them, n0 needed n1 and n2 back to commit: it did, once.
    assert outcome.paid_short == 0
    committed_once(outcome, EQUIVOCATED)


def test_a_minority_partition_cannot_commit_and_the_majority_can(outcome: Outcome) -> None:
    assert outcome.paid_by_minority == 0
    committed_once(outcome, MAJORITY)
    assert set(outcome.checks[MAJORITY]) == {"n0", "n1", "n2"}


def test_the_honest_nodes_stop_cleanly_and_the_summary_reports_no_problem(
    outcome: Outcome,
) -> None:
    honest = ["n0", "n1", "n2"] + [f"partition/n{i}" for i in range(5)]
    assert outcome.stops == dict.fromkeys(honest, 0)
    assert not outcome.problems, outcome.summary()
