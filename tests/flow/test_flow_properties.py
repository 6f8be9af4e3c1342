"""Properties of compilation, checked on generated flows.

* Same meaning, same CID: a flow written two different ways (key order, YAML or JSON,
  comments, defaults spelled out or left out, equivalent spellings of durations, joins,
  literals, hosts …) compiles to the same IR and CID.
* Hostile input never escapes as anything but FlowCompileError.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qflow_node.core.flow import FlowCompileError, compile_flow
from qflow_node.core.flow.testing import FakeModules, to_yaml

DIDS = [
    "did:key:z6MkjEvoemobV2cbn4c6ha61qSckQMjefQKuoRBnNCRakjpR",
    "did:key:z6MkkBPYdMyzcYZ82316KGBobVXJL619wybD692WpZaPQSBg",
    "did:key:z6MkkSy1H4RDT9HPXZmPBrX9tC76uVYzQQoaKW2ryuPJksqa",
]
MODULE = "bafkreihu3kd5uwpw3lhxfz2xclgoz5sqfrq6ypfiq4jseprbwcxvnn2bjq"
HOSTS = ["api.example.com", "b.example", "10.0.0.1"]
UNITS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}

Model = dict[str, Any]
# What spelling helpers draw with: a composite's `draw` or `st.data().draw`.
Draw = Callable[[st.SearchStrategy[Any]], Any]


# -- meanings -----------------------------------------------------------------------------


@st.composite
def step_models(draw: st.DrawFn, ids: list[str], depth: int) -> Model:
    kinds = ["transform", "sleep", "wait_for", "approval", "http", "run"]
    if depth < 2:
        kinds += ["if", "parallel", "foreach"]
    kind = draw(st.sampled_from(kinds))
    ids.append(f"s{len(ids)}")
    model: Model = {
        "kind": kind,
        "id": ids[-1],
        "on_error": draw(st.sampled_from(["fail", "continue"])),
    }
    if kind == "transform":
        model["expr"] = draw(
            st.integers(-(2**40), 2**40) | st.sampled_from(["inputs.x + 1", "true", "null"])
        )
    elif kind == "sleep":
        model["ms"] = draw(st.integers(1, 3).map(lambda n: n * 90_000))
    elif kind == "wait_for":
        model.update(
            topic=draw(st.sampled_from(["a", "b/c"])),
            match=draw(st.sampled_from([None, "event.ok"])),
        )
        model["timeout_ms"] = draw(st.sampled_from([1000, 60_000, 5_400_000]))
    elif kind == "approval":
        approvers = draw(st.lists(st.sampled_from(DIDS), min_size=1, unique=True))
        model.update(
            approvers=approvers, quorum=draw(st.integers(1, len(approvers))), timeout_ms=86_400_000
        )
    elif kind == "http":
        hosts = draw(st.lists(st.sampled_from(HOSTS), min_size=1, unique=True))
        methods = draw(st.lists(st.sampled_from(["GET", "POST"]), min_size=1, unique=True))
        model.update(
            host=draw(st.sampled_from(hosts)),
            hosts=hosts,
            methods=methods,
            method=draw(st.sampled_from(methods)),
            headers=draw(
                st.dictionaries(
                    st.sampled_from(["accept", "x-id"]), st.sampled_from(["inputs.x", "1"])
                )
            ),
            attempts=draw(st.integers(1, 3)),
        )
    elif kind == "run":
        model["with"] = draw(
            st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9) | st.just("inputs"))
        )
        model["critical"] = draw(st.booleans())
    elif kind == "if":
        model["then"] = draw(step_lists(ids, depth + 1, 1))
        model["else"] = draw(step_lists(ids, depth + 1, 0))
    elif kind == "parallel":
        names = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, unique=True))
        model["branches"] = {name: draw(step_lists(ids, depth + 1, 1)) for name in names}
        model["need"] = draw(st.integers(1, len(names)))
    else:
        model.update(
            max_parallel=draw(st.sampled_from([1, 4])),
            max_items=draw(st.sampled_from([1000, 10])),
            policy=draw(st.sampled_from(["stop", "collect"])),
            steps=draw(step_lists(ids, depth + 1, 1)),
        )
    return model


def step_lists(ids: list[str], depth: int, min_size: int) -> st.SearchStrategy[list[Model]]:
    return st.lists(step_models(ids, depth), min_size=min_size, max_size=2)


@st.composite
def flow_models(draw: st.DrawFn) -> Model:
    return {
        "name": draw(st.sampled_from(["f", "order-flow"])),
        "steps": draw(step_lists([], 0, 1)),
        "output": draw(st.sampled_from([None, "inputs"])),
    }


# -- spellings ----------------------------------------------------------------------------


def maybe(draw: Draw, target: dict[str, Any], key: str, value: Any) -> None:
    """Write a default value out, or leave it out."""
    if draw(st.booleans()):
        target[key] = value


def shuffled(draw: Draw, mapping: dict[str, Any]) -> dict[str, Any]:
    keys = draw(st.permutations(list(mapping)))
    return {k: mapping[k] for k in keys}


def duration(draw: Draw, ms: int) -> str:
    spellings = [f"{ms}ms"]
    if ms % 1000 == 0:
        spellings.append(f"{ms // 1000}s")
    parts, rest = [], ms
    for unit, size in UNITS.items():
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    spellings.append("".join(parts))
    spelling: str = draw(st.sampled_from(spellings))
    return spelling


def expression(draw: Draw, value: Any) -> Any:
    """A literal as a YAML scalar or as CEL text, maybe padded with spaces."""
    if isinstance(value, int) and not isinstance(value, bool) and draw(st.booleans()):
        return value
    if value == "true" and draw(st.booleans()):
        return True
    if value == "null" and draw(st.booleans()):
        return None
    text = str(value)
    return draw(st.sampled_from([text, f" {text}", f"{text}\n"]))


def number(draw: Draw, value: Any) -> Any:
    """An integer, or the same as an integral float (`3.0`)."""
    return float(value) if isinstance(value, int) and draw(st.booleans()) else value


def spell_steps(draw: Draw, steps: list[Model]) -> list[dict[str, Any]]:
    return [spell_step(draw, s) for s in steps]


def spell_step(draw: Draw, m: Model) -> dict[str, Any]:
    step: dict[str, Any] = {"id": m["id"]}
    if m["on_error"] != "fail" or draw(st.booleans()):
        step["on_error"] = m["on_error"]
    kind = m["kind"]
    if kind == "transform":
        step["transform"] = expression(draw, m["expr"])
    elif kind == "sleep":
        step["sleep"] = duration(draw, m["ms"])
    elif kind == "wait_for":
        body: dict[str, Any] = {"topic": m["topic"], "timeout": duration(draw, m["timeout_ms"])}
        if m["match"] is not None:
            body["match"] = m["match"]
        else:
            maybe(draw, body, "match", expression(draw, "true"))
        step["wait_for"] = shuffled(draw, body)
    elif kind == "approval":
        body = {
            "approvers": draw(st.permutations(m["approvers"])),
            "timeout": duration(draw, m["timeout_ms"]),
        }
        if m["quorum"] != 1 or draw(st.booleans()):
            body["quorum"] = number(draw, m["quorum"])
        step["approval"] = shuffled(draw, body)
    elif kind == "http":
        spell_http(draw, m, step)
    elif kind == "run":
        step["run"] = MODULE
        if m["with"] or draw(st.booleans()):
            step["with"] = shuffled(draw, {k: expression(draw, v) for k, v in m["with"].items()})
        if m["critical"] or draw(st.booleans()):
            step["critical"] = m["critical"]
    elif kind == "if":
        body = {"condition": expression(draw, "inputs.x > 1"), "then": spell_steps(draw, m["then"])}
        if m["else"] or draw(st.booleans()):
            body["else"] = spell_steps(draw, m["else"])
        step["if"] = shuffled(draw, body)
    elif kind == "parallel":
        count, need = len(m["branches"]), m["need"]
        joins: list[Any] = [{"n_of_m": need}]
        joins += ["all", None] if need == count else []
        joins += ["any"] if need == 1 else []
        body = {
            "branches": shuffled(draw, {k: spell_steps(draw, v) for k, v in m["branches"].items()})
        }
        join = draw(st.sampled_from(joins))
        if join is not None:
            body["join"] = join
        step["parallel"] = shuffled(draw, body)
    else:
        body = {"items": expression(draw, "inputs.list"), "steps": spell_steps(draw, m["steps"])}
        for key, value, default in [
            ("max_parallel", m["max_parallel"], 1),
            ("max_items", m["max_items"], 1000),
            ("on_item_error", m["policy"], "stop"),
        ]:
            if value != default or draw(st.booleans()):
                body[key] = number(draw, value)
        step["foreach"] = shuffled(draw, body)
    return shuffled(draw, step)


def spell_http(draw: Draw, m: Model, step: dict[str, Any]) -> None:
    body: dict[str, Any] = {"url": expression(draw, f'"https://{m["host"]}/x/" + string(inputs.x)')}
    if m["method"] != "GET" or draw(st.booleans()):
        body["method"] = m["method"]
    headers = {
        (k.upper() if draw(st.booleans()) else k): expression(draw, v)
        for k, v in m["headers"].items()
    }
    if headers or draw(st.booleans()):
        body["headers"] = headers
    step["http"] = shuffled(draw, body)
    cap: dict[str, Any] = {
        "op": "http.fetch",
        "hosts": draw(st.permutations([h.title() for h in m["hosts"]])),
    }
    if m["methods"] != ["GET"] or draw(st.booleans()):
        cap["methods"] = draw(st.permutations(m["methods"]))
    step["capabilities"] = [shuffled(draw, cap)]
    if m["attempts"] > 1 or draw(st.booleans()):
        retry: dict[str, Any] = {"max_attempts": m["attempts"]}
        maybe(draw, retry, "backoff", "exponential")
        maybe(draw, retry, "delay", duration(draw, 1000))
        maybe(draw, retry, "jitter", draw(st.sampled_from(["0s", "0ms"])))
        step["retry"] = shuffled(draw, retry)


def spell_flow(draw: Draw, m: Model) -> dict[str, Any]:
    flow: dict[str, Any] = {"name": m["name"], "steps": spell_steps(draw, m["steps"])}
    maybe(draw, flow, "version", 1)
    maybe(draw, flow, "inputs", {"type": "object"})
    maybe(draw, flow, "vars", {})
    if m["output"] is not None:
        flow["output"] = expression(draw, m["output"])
    else:
        maybe(draw, flow, "output", f"steps.{m['steps'][-1]['id']}.output")
    return shuffled(draw, flow)


def render(draw: Draw, flow: dict[str, Any]) -> tuple[str, str]:
    how = draw(st.sampled_from(["json", "json indented", "yaml", "yaml comments", "json as yaml"]))
    if how == "json":
        return json.dumps(flow, ensure_ascii=False), "json"
    if how == "json indented":
        indent: int | str = draw(st.sampled_from([1, "\t"]))
        return json.dumps(flow, indent=indent), "auto"
    if how == "json as yaml":
        return json.dumps(flow, indent=2), "yaml"
    return to_yaml(flow, comments=how == "yaml comments"), "yaml"


@st.composite
def two_spellings(draw: st.DrawFn) -> tuple[tuple[str, str], tuple[str, str]]:
    model = draw(flow_models())
    return render(draw, spell_flow(draw, model)), render(draw, spell_flow(draw, model))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_spellings())
def test_same_meaning_same_cid(pair: tuple[tuple[str, str], tuple[str, str]]) -> None:
    (text_a, syntax_a), (text_b, syntax_b) = pair
    a = compile_flow(text_a, syntax=syntax_a)  # type: ignore[arg-type]
    b = compile_flow(text_b, syntax=syntax_b)  # type: ignore[arg-type]
    assert a.ir == b.ir
    assert a.block == b.block


@settings(max_examples=100, deadline=None)
@given(flow_models(), st.data())
def test_a_different_meaning_is_a_different_cid(model: Model, data: st.DataObject) -> None:
    first = compile_flow(json.dumps(spell_flow(data.draw, model)))
    model["steps"][0]["on_error"] = (
        "continue" if model["steps"][0]["on_error"] == "fail" else "fail"
    )
    assert compile_flow(json.dumps(spell_flow(data.draw, model))).cid != first.cid


# -- hostile input ------------------------------------------------------------------------

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def mutate(value: Any, data: st.DataObject) -> Any:
    """Replace or delete one random node of a plain-data tree."""
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(value)))
        copy = dict(value)
        if data.draw(st.booleans()):
            del copy[key]
        else:
            copy[key] = mutate(copy[key], data)
        return copy
    if isinstance(value, list) and value and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(value) - 1))
        return [*value[:i], mutate(value[i], data), *value[i + 1 :]]
    return data.draw(JUNK)


def compiles_or_reports(text: str, syntax: str = "auto") -> None:
    try:
        compile_flow(text, syntax=syntax, resolve_module=FakeModules())  # type: ignore[arg-type]
    except FlowCompileError as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.line >= 1 and error.column >= 1 and error.message


@settings(max_examples=300, deadline=None)
@given(flow_models(), st.data())
def test_mutated_flows_compile_or_report_errors(model: Model, data: st.DataObject) -> None:
    broken = mutate(spell_flow(data.draw, model), data)
    compiles_or_reports(json.dumps(broken, allow_nan=True))
    if isinstance(broken, dict):
        compiles_or_reports(to_yaml(broken), "yaml")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([*"{}[]:,-'\"&*!|>#% \n\tab1.\\u", "steps", "id: x", "\ud800"])).map(
        "".join
    )
)
def test_arbitrary_text_compiles_or_reports_errors(text: str) -> None:
    compiles_or_reports(text)
    compiles_or_reports(text, "json")
