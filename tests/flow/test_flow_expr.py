"""CEL analysis: tokens, step references, free names, static URL prefixes."""

from __future__ import annotations

import pytest

from qflow_node.core.flow import step_references
from qflow_node.core.flow.expr import StepRef, analyse, check_syntax, literal_prefix, tokenize


def test_tokens_keep_strings_and_drop_comments() -> None:
    tokens = tokenize("steps.a[\"b\"] + r\"x\\\" // steps.c\n + '''y''' + b\"z\" + 0x1Fu + .5e3")
    assert [(t.kind, t.text, t.value) for t in tokens] == [
        ("ident", "steps", None),
        ("punct", ".", None),
        ("ident", "a", None),
        ("punct", "[", None),
        ("string", '"b"', "b"),
        ("punct", "]", None),
        ("punct", "+", None),
        ("string", 'r"x\\"', "x\\"),
        ("punct", "+", None),
        ("string", "'''y'''", "y"),
        ("punct", "+", None),
        ("bytes", 'b"z"', "z"),
        ("punct", "+", None),
        ("number", "0x1Fu", None),
        ("punct", "+", None),
        ("number", ".5e3", None),
    ]


def test_escaped_strings_have_no_static_value() -> None:
    (token,) = tokenize('"a\\"b"')
    assert token.value is None


def test_references_are_found_by_syntax_not_text() -> None:
    source = 'steps.a.output + "steps.b.output" + steps["c"].error + x.steps.d // steps.e'
    assert analyse(source).refs == (StepRef("a", "output", 0), StepRef("c", "error", 36))
    assert step_references(source) == ["a", "c"]
    assert step_references("has(steps.z.output) ? steps.z.output : steps.y") == ["y", "z"]


def test_dynamic_steps_and_rebinding() -> None:
    analysis = analyse("steps[inputs.k] + [1].map(vars, vars)")
    assert analysis.dynamic == (0,)
    assert analysis.rebound == (("vars", 26),)


def test_free_names_exclude_macro_variables() -> None:
    analysis = analyse("inputs.xs.map(x, x + item).filter(y, y > index)")
    assert dict(analysis.names) == {"inputs": 0, "item": 21, "index": 41}


@pytest.mark.parametrize(
    ("source", "prefix"),
    [
        ('"https://a.example/x"', ("https://a.example/x", True)),
        ('"https://a.example/" + inputs.id', ("https://a.example/", False)),
        ('"https://a.example/" + inputs.id * 2 + f(x < 1)', ("https://a.example/", False)),
        ('"https://a.example/" + x ? "a" : "b"', None),
        ('"https://a.example/" + x == y', None),
        ("inputs.url", None),
        ('"https://a.ex\\u0061mple/"', None),
        ('inputs.base + "/x"', None),
    ],
)
def test_literal_prefix(source: str, prefix: tuple[str, bool] | None) -> None:
    assert literal_prefix(source) == prefix


def test_syntax_errors_carry_their_position() -> None:
    problem = check_syntax("inputs.x +\n  * 2")
    assert problem is not None
    assert (problem.line, problem.column) == (2, 3)
    assert problem.message.startswith("Syntax error: extraneous input '*'")
    assert check_syntax("inputs.x + 1") is None
