"""StepState: a private replica of the execution's variables and the delta of a step."""

from __future__ import annotations

from typing import Any

import pycrdt

from qflow_node.sandbox import StepState, client_id_for


def vars_of(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    return dict(doc.get("vars", type=pycrdt.Map))


def test_unchanged_state_has_no_delta() -> None:
    state = StepState()
    assert state.get("x") is None
    assert state.delta() is None


def test_delta_carries_only_the_steps_changes() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("vars", type=pycrdt.Map)["kept"] = '"old"'
    state = StepState.of(doc, seed=b"seed")
    assert state.get("kept") == '"old"'
    state.set("new", "[1]")
    state.set("kept", '"changed"')
    assert state.values() == {"kept": '"changed"', "new": "[1]"}
    assert vars_of(doc) == {"kept": '"old"'}  # the execution's document is untouched
    delta = state.delta()
    assert delta is not None
    doc.apply_update(delta)
    assert vars_of(doc) == {"kept": '"changed"', "new": "[1]"}


def test_the_same_step_gives_the_same_delta_bytes() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("vars", type=pycrdt.Map)["a"] = "1"

    def delta(seed: bytes) -> bytes | None:
        state = StepState.of(doc, seed=seed)
        state.set("b", "2")
        return state.delta()

    assert delta(b"attempt-1") == delta(b"attempt-1") != delta(b"attempt-2")
    assert client_id_for(b"x") == client_id_for(b"x") < 2**32


def test_concurrent_branches_merge() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    left, right = StepState.of(doc, seed=b"l"), StepState.of(doc, seed=b"r")
    left.set("l", "1")
    right.set("r", "2")
    for delta in (right.delta(), left.delta()):
        assert delta is not None
        doc.apply_update(delta)
    assert vars_of(doc) == {"l": "1", "r": "2"}
