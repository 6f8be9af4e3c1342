"""The scope rule: which `steps.<id>` each expression may read, and why not."""

from __future__ import annotations

import pytest

from qflow_node.core.flow import FlowCompileError, compile_flow

FLOW = """\
name: scope
steps:
  - id: a
    transform: 1
  - id: fan
    parallel:
      branches:
        left:
          - {{id: l1, transform: '{left1}'}}
          - {{id: l2, transform: '{left2}'}}
        right:
          - id: each
            foreach:
              items: '{items}'
              steps:
                - {{id: body1, transform: '{body1}'}}
                - {{id: body2, transform: '{body2}'}}
  - id: choose
    if:
      condition: '{condition}'
      then: [{{id: t, transform: '{then}'}}]
      else: [{{id: e, transform: '{else_}'}}]
  - id: charge
    run: bafkreihu3kd5uwpw3lhxfz2xclgoz5sqfrq6ypfiq4jseprbwcxvnn2bjq
    compensate:
      run: bafkreihu3kd5uwpw3lhxfz2xclgoz5sqfrq6ypfiq4jseprbwcxvnn2bjq
      with: '{compensation}'
output: '{output}'
"""
VISIBLE = {
    "left1": "steps.a.output",
    "left2": "steps.l1.output + steps.a.output",
    "items": "[steps.a.output]",
    "body1": "item + index + steps.a.output",
    "body2": "steps.body1.output",
    "condition": "steps.fan.output.left == 1",
    "then": "steps.fan.output",
    "else_": "steps.a.output",
    "compensation": "steps.charge.output",
    "output": "steps.choose.output + steps.charge.output",
}

LATER = "only steps that completed before can be read"
OUTSIDE = "not visible outside it; read steps.fan.output instead"


def message(slot: str, expression: str) -> str:
    text = FLOW.format(**{**VISIBLE, slot: expression})
    with pytest.raises(FlowCompileError) as info:
        compile_flow(text)
    (error,) = info.value.errors
    return error.message


def test_everything_visible_compiles() -> None:
    compile_flow(FLOW.format(**VISIBLE))


@pytest.mark.parametrize(
    ("slot", "expression", "expected"),
    [
        (
            "left1",
            "steps.l2.output",
            'step "l2" has not run yet at this point (it comes later, at '
            f"steps[1].parallel.branches.left[1]); {LATER}",
        ),
        ("left1", "steps.l1.output", "a step cannot read its own output"),
        (
            "left2",
            "steps.fan.output",
            'step "fan" encloses this expression and has not completed when it runs',
        ),
        (
            "left1",
            "steps.body1.output",
            'step "body1" is in branch "right" of parallel step "fan"; '
            "branches run concurrently and cannot read each other",
        ),
        (
            "items",
            "steps.body1.output",
            'step "body1" is inside step "each", which has not completed when this expression runs',
        ),
        (
            "body1",
            "steps.body2.output",
            'step "body2" has not run yet at this point (it comes later, at '
            f"steps[1].parallel.branches.right[0].foreach.steps[1]); {LATER}",
        ),
        (
            "condition",
            "steps.t.output",
            'step "t" is inside step "choose", which has not completed when this expression runs',
        ),
        (
            "else_",
            "steps.t.output",
            'step "t" is in the then branch of if step "choose", '
            "which never runs together with this one",
        ),
        (
            "then",
            "steps.l1.output",
            f'step "l1" is inside step "fan" and {OUTSIDE}',
        ),
        (
            "output",
            "steps.body2.output",
            f'step "body2" is inside step "fan" and {OUTSIDE}',
        ),
        (
            "compensation",
            "steps.charge.error + steps.nope.output",
            'unknown step "nope" in steps.nope',
        ),
        (
            "output",
            "steps.charge.result",
            'steps.charge has no field "result" (a step has output and error)',
        ),
        ("then", "item", '"item" is only defined inside a foreach body'),
        (
            "output",
            "steps[vars.which]",
            'steps must be followed by .<id> or ["<id>"]: step references must be static',
        ),
        (
            "output",
            "[1].map(steps, steps)",
            '"steps" cannot be used as a macro variable; choose another name',
        ),
    ],
)
def test_not_visible(slot: str, expression: str, expected: str) -> None:
    assert message(slot, expression) == expected
