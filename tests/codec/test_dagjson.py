"""DAG-JSON text to the IPLD data model (the input of `qflow block put --codec dag-cbor`)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from qflow_node.codec import CID, dag_block, parse_cid
from qflow_node.codec.dagjson import DagJsonError, parse_dag_json

EMPTY = "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"


def test_plain_json_values() -> None:
    value = parse_dag_json('{"s": "é", "i": 1, "f": 1.0, "e": 1e3, "n": null, "b": [true, false]}')
    assert value == {"s": "é", "i": 1, "f": 1.0, "e": 1000.0, "n": None, "b": [True, False]}
    assert type(value["i"]) is int
    assert type(value["f"]) is float
    assert type(value["e"]) is float


def test_link_and_bytes() -> None:
    value = parse_dag_json(f'{{"l": {{"/": "{EMPTY}"}}, "b": {{"/": {{"bytes": "aGVsbG8"}}}}}}')
    assert value == {"l": parse_cid(EMPTY), "b": b"hello"}
    assert isinstance(value["l"], CID)


@pytest.mark.parametrize("encoded", ["aGVsbG8", "aGVsbG8="])
def test_bytes_with_or_without_padding(encoded: str) -> None:
    assert parse_dag_json(f'{{"/": {{"bytes": "{encoded}"}}}}') == b"hello"


def test_empty_bytes() -> None:
    assert parse_dag_json('{"/": {"bytes": ""}}') == b""


def test_top_level_link_and_nesting() -> None:
    value = parse_dag_json(f'[{{"/": "{EMPTY}"}}, {{"x": [{{"/": "{EMPTY}"}}]}}]')
    assert value == [parse_cid(EMPTY), {"x": [parse_cid(EMPTY)]}]


def test_known_cid_of_an_empty_map() -> None:
    assert dag_block(parse_dag_json("{}")).cid.encode() == EMPTY


def test_cid_matches_reference_implementation() -> None:
    # Cross-checked with the `dag_cbor` + `multiformats` reference libraries.
    text = f'{{"a": {{"/": "{EMPTY}"}}, "b": {{"/": {{"bytes": "aGVsbG8"}}}}, "f": 1.0, "i": 1}}'
    assert (
        dag_block(parse_dag_json(text)).cid.encode()
        == "bafyreihaanqd3vflob5iqqtv3aa2t6op5l5coxjcjmvsvncsuhza323ci4"
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"/": true, "bar": "baz"}',  # "/" value not a string or bytes form
        '{"/": {"bytes": true}, "bar": "baz"}',
        '{"/": {"abar": "baz", "bytes": "foo"}}',
        '{"/": 5}',
    ],
)
def test_maps_outside_the_reserved_forms_are_plain_maps(text: str) -> None:
    value = parse_dag_json(text)
    assert isinstance(value, dict)
    assert "/" in value


def test_a_key_sorting_before_slash_makes_a_plain_map() -> None:
    assert parse_dag_json('{"!": 1, "/": "foo"}') == {"!": 1, "/": "foo"}
    assert parse_dag_json('{"/": {"a": 1, "bytes": "x"}}') == {"/": {"a": 1, "bytes": "x"}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1,\n "b": }', "invalid JSON at line 2, column 7: Expecting value"),
        ("", "invalid JSON at line 1, column 1: Expecting value"),
        ('{"a": 1} x', "invalid JSON at line 1, column 10: Extra data"),
        ('{"a": 1, "a": 2}', "$: duplicate key 'a'"),
        ('{"x": [1, NaN]}', "$.x[1]: NaN is not a number in the IPLD data model"),
        ('{"x": -Infinity}', "$.x: -Infinity is not a number in the IPLD data model"),
        ('{"x": 1e999}', "$.x: 1e999 is not a number in the IPLD data model"),
        ('{"x": 18446744073709551616}', "$.x: integer 18446744073709551616 is outside"),
        ('{"my key": {"/": "bafynope"}}', '$["my key"]["/"]: invalid link: cannot parse CID'),
        ('{"l": {"/": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}}', '$.l["/"]: invalid'),
        ('{"/": "' + EMPTY + '", "x": 1}', "$: a link {'/': …} cannot have other keys"),
        ('{"/": {"bytes": "aGVsbG8"}, "x": 1}', "$: bytes {'/': {'bytes': …}} cannot have"),
        ('{"/": {"bytes": "aGVsbG8", "x": 1}}', "$: bytes {'/': {'bytes': …}} cannot have"),
        ('{"/": {"bytes": "!!!"}}', '$["/"].bytes: invalid base64'),
        ('{"/": {"bytes": "a", "bytes": "b"}}', "$[\"/\"]: duplicate key 'bytes'"),
    ],
)
def test_errors_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(DagJsonError) as info:
        parse_dag_json(text)
    assert str(info.value).startswith(message)


def test_bounds_of_the_integer_range_are_accepted() -> None:
    assert parse_dag_json("[18446744073709551615, -18446744073709551616]") == [
        2**64 - 1,
        -(2**64),
    ]


def test_non_utf8_input() -> None:
    with pytest.raises(DagJsonError, match=r"input is not UTF-8 \(byte 6\)"):
        parse_dag_json(b'{"a": \xff}')


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(DagJsonError, match="nesting too deep"):
        parse_dag_json("[" * 100_000 + "]" * 100_000)


def test_float_precision_survives() -> None:
    value: Any = parse_dag_json("[0.1, -0.0, 5e-324]")
    assert value[0] == 0.1
    assert math.copysign(1.0, value[1]) == -1.0
    assert value[2] == 5e-324
