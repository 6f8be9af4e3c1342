"""Param checks shared by the control API's method modules (methods.py, exec_methods.py).

Every check raises ApiError(bad_request) with a message naming the param, so a client
learns exactly which part of its request is wrong.
"""

from __future__ import annotations

from typing import Any

from qflow_node.api.errors import BAD_REQUEST, ApiError
from qflow_node.codec import CID, CidError, parse_cid


def expect(params: dict[str, Any], method: str, *names: str) -> None:
    """Refuse unknown params: a misspelt optional param must not be silently ignored."""
    unknown = sorted(set(params) - set(names))
    if unknown:
        expected = ", ".join(names) if names else "none"
        raise ApiError(
            BAD_REQUEST, f"unknown params for {method}: {', '.join(unknown)} (expected: {expected})"
        )


def cid_param(params: dict[str, Any], name: str = "cid") -> CID:
    """The CID in `params[name]`, as `parse_cid` accepts it."""
    text = params.get(name)
    if not isinstance(text, str):
        raise ApiError(BAD_REQUEST, f"params.{name} must be a CID string (e.g. bafy…)")
    try:
        return parse_cid(text)
    except CidError as exc:
        raise ApiError(BAD_REQUEST, f"params.{name}: {exc}") from None
