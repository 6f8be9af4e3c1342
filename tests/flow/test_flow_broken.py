"""The corpus of broken flows: each `broken/<name>.yaml|json` fails with exactly the
errors of `broken/<name>.expected` (one `LINE:COL: path: message` per line, `{dir}`
standing for the corpus folder), through the real loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from qflow_node.codec import parse_cid
from qflow_node.core.flow import FORMAT, FlowCompileError
from qflow_node.core.flow.testing import DictFlows
from qflow_node.flow_loader import load_flow

BROKEN = Path(__file__).resolve().parent / "broken"
CASES = sorted(p for p in BROKEN.iterdir() if p.suffix in (".yaml", ".json"))
# broken/subflow-cycle.yaml runs this CID; the resolver says it is a flow running itself.
LOOP = parse_cid("bafyreiez3ochm2xa4cwdexyr3avjqxjglijiceoyhl42x53mbhojq5gwam")
FLOWS = DictFlows(
    {LOOP: {"format": FORMAT, "steps": [{"id": "again", "kind": "flow", "flow": LOOP}]}}
)


def test_the_corpus_covers_every_required_case() -> None:
    assert {p.stem for p in CASES} >= {
        "syntax-error",
        "unknown-key",
        "wrong-type",
        "duplicate-id",
        "unknown-step-reference",
        "later-sibling-reference",
        "invalid-cel",
        "n-of-m-too-many",
        "foreach-without-items",
        "max-parallel-zero",
        "retry-zero-attempts",
        "bad-did-key",
        "quorum-too-large",
        "subflow-not-a-cid",
        "subflow-cycle",
        "http-without-capability",
        "run-path-missing",
        "unknown-step-kind",
        "critical-not-run",
    }
    assert all(p.with_suffix(".expected").is_file() for p in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_broken_flow_reports_exactly_the_expected_errors(case: Path) -> None:
    expected = (
        case.with_suffix(".expected").read_text(encoding="utf-8").replace("{dir}", str(BROKEN))
    )
    with pytest.raises(FlowCompileError) as info:
        load_flow(case, resolve_flow=FLOWS)
    assert "\n".join(str(e) for e in info.value.errors) + "\n" == expected
    assert str(info.value) + "\n" == expected


def test_the_issue_example_message() -> None:
    with pytest.raises(FlowCompileError) as info:
        load_flow(BROKEN / "n-of-m-too-many.yaml")
    (error,) = info.value.errors
    assert f"{error.path}: {error.message}" == (
        "steps[3].parallel.join: n_of_m requires n ≤ number of branches (got 4 > 3)"
    )
