"""Reading flow text: YAML 1.2 scalars, strict JSON with positions, hostile input."""

from __future__ import annotations

import time

import pytest

from qflow_node.core.flow import MAX_NESTING, MAX_SOURCE_BYTES, FlowCompileError, parse_source
from qflow_node.core.flow.source import Pos


def errors(text: str, syntax: str = "auto") -> list[str]:
    with pytest.raises(FlowCompileError) as info:
        parse_source(text, syntax)  # type: ignore[arg-type]
    return [str(e) for e in info.value.errors]


def test_yaml_plain_scalars_follow_yaml_1_2_core() -> None:
    text = (
        "a: [yes, no, on, off, y, 1:30, 0o17, 0x1F, 1e3, -2.5, .5, +7, ~, null, '', true, False]\n"
    )
    assert parse_source(text).value == {
        "a": [
            "yes",
            "no",
            "on",
            "off",
            "y",
            "1:30",
            15,
            31,
            1000.0,
            -2.5,
            0.5,
            7,
            None,
            None,
            "",
            True,
            False,
        ]
    }


def test_quoted_and_block_scalars_are_strings() -> None:
    text = "a: '1'\nb: \"true\"\nc: |\n  x\n  y\nd: >-\n  p\n  q\ne:\n"
    assert parse_source(text).value == {"a": "1", "b": "true", "c": "x\ny\n", "d": "p q", "e": None}


def test_keys_are_their_text() -> None:
    assert parse_source("1: a\ntrue: b\nnull: c\n").value == {"1": "a", "true": "b", "null": "c"}


def test_positions_of_values_and_keys() -> None:
    doc = parse_source("name: x\nsteps:\n  - id: a\n    transform: '1'\n")
    assert doc.positions[("steps", 0, "transform")] == Pos(4, 16, 40)
    assert doc.key_positions[("steps", 0, "transform")] == Pos(4, 5, 29)
    assert doc.pos(("steps", 0, "nope", 3)) == Pos(3, 5, 19)  # nearest existing ancestor
    assert doc.inner_pos(("steps", 0, "transform"), 0) == Pos(4, 17, 41)  # inside the quotes


def test_json_reads_the_same_data_with_positions() -> None:
    text = '{\n\t"a": [1, 2.0, -0, 1e3, true, null],\n\t"b": {"c": "\\ud83d\\ude00\\u2028\\/"}\n}'
    doc = parse_source(text)
    assert doc.value == {"a": [1, 2.0, 0, 1000.0, True, None], "b": {"c": "😀\u2028/"}}
    assert doc.positions[("b", "c")] == Pos(3, 13, 51)
    assert doc.key_positions[("b",)] == Pos(3, 2, 40)


def test_a_yaml_flow_mapping_is_not_taken_for_broken_json() -> None:
    assert parse_source("{name: x, steps: [a]}").value == {"name": "x", "steps": ["a"]}
    assert errors("{name: x, steps: [a}") == [
        "1:2: JSON syntax error: expected a string key, got 'n'"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1,}', "1:9: JSON syntax error: expected a string key, got '}'"),
        ('{"a": 01}', "1:8: JSON syntax error: expected ',' or '}', got '1'"),
        ('{"a": [1 2]}', "1:10: JSON syntax error: expected ',' or ']', got '2'"),
        ('{"a": "x}', "1:7: JSON syntax error: unterminated string starting at"),
        ('{"a": tru}', "1:7: JSON syntax error: expected a value, got 't'"),
        ('{"a": 1} 2', "1:10: JSON syntax error: extra text after the JSON value"),
        ('{"a" 1}', "1:6: JSON syntax error: expected ':' after the key"),
        ("", "1:1: JSON syntax error: expected a value, got the end of the text"),
        ('{"a": "\\ud800"}', "1:7: a: string contains an unpaired UTF-16 surrogate"),
        (
            '{"a": 1e400, "b": 9223372036854775808}',
            "1:7: a: numbers must be finite (no infinity or NaN)",
        ),
    ],
)
def test_json_errors(text: str, message: str) -> None:
    assert errors(text, "json")[0] == message


def test_every_hostile_yaml_feature_is_reported_at_once() -> None:
    text = "a: &x 1\nb: *x\nc: !!str 3\n<<: {d: 1}\na: 2\n"
    assert errors(text) == [
        "1:4: a: YAML anchors (&name) are not allowed",
        "2:4: b: YAML aliases (*name) are not allowed",
        "3:4: c: YAML tags (tag:yaml.org,2002:str) are not allowed",
        '4:1: ["<<"]: YAML merge keys (<<) are not allowed',
        '5:1: a: duplicate key "a" (first at 1:1)',
    ]


def test_other_yaml_refusals() -> None:
    assert errors("a: 1\n---\nb: 2\n") == ["2:1: a flow file holds one YAML document"]
    assert errors("? [a]\n: b\n") == ["1:3: mapping keys must be strings"]
    assert errors("a: 99999999999999999999\nb: .inf\nc: '\\ud800'\nd: \"\\ud800\"\n") == [
        "1:4: a: integer outside the 64-bit range",
        "2:4: b: numbers must be finite (no infinity or NaN)",
        "4:4: d: string contains an unpaired UTF-16 surrogate",
    ]
    assert errors("a: \x07\n") == [
        "1:4: YAML syntax error: unacceptable character #x0007: special characters are not allowed"
    ]


def test_a_billion_laughs_never_expands() -> None:
    text = "a: &a [x, x]\n" + "".join(
        f"{n}: &{n} [*{p}, *{p}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    assert len(errors(text)) == 9 + 16  # every anchor and alias, nothing expanded


@pytest.mark.parametrize("syntax", ["yaml", "json"])
def test_nesting_is_capped_quickly(syntax: str) -> None:
    text = "[" * 200_000 + "]" * 200_000
    start = time.monotonic()
    (message,) = errors(text, syntax)
    assert message.endswith(f"nesting deeper than {MAX_NESTING} levels")
    assert time.monotonic() - start < 2


def test_size_is_capped() -> None:
    text = "a: '" + "x" * MAX_SOURCE_BYTES + "'\n"
    assert errors(text) == [
        f"1:1: flow source is {len(text)} bytes; the limit is {MAX_SOURCE_BYTES}"
    ]
    assert errors("a: " + "é" * (MAX_SOURCE_BYTES // 2)) == [
        f"1:1: flow source is {MAX_SOURCE_BYTES + 3} bytes; the limit is {MAX_SOURCE_BYTES}"
    ]


def test_a_byte_order_mark_is_ignored() -> None:
    assert parse_source("\ufeffa: 1\n").value == {"a": 1}
