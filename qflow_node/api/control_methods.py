"""The `control` method: an actor's signed pause/resume/abort/approve/deny, given to the
node to check and gossip (docs/api.md). The CLI signs with the actor's key; the node
never holds actor keys, and verifies the signature like any peer would."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from qflow_node.api.errors import BAD_REQUEST, ApiError
from qflow_node.api.server import Handler
from qflow_node.codec.envelope import EnvelopeError, decode_body
from qflow_node.codec.envelope_bodies import Control
from qflow_node.core.envelopes import Rejected, check_control

Steer = Callable[[Control], Awaitable[bool]]
"""Checks the actor may, queues and gossips the control; True if it was new."""


def control_methods(steer: Steer) -> dict[str, Handler]:
    async def control(params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - {"body_b64"})
        if unknown:
            raise ApiError(BAD_REQUEST, f"unknown params for control: {', '.join(unknown)}")
        text = params.get("body_b64")
        if not isinstance(text, str):
            raise ApiError(BAD_REQUEST, "params.body_b64 must be the control body, base64")
        try:
            data = base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ApiError(BAD_REQUEST, f"params.body_b64 is not base64: {exc}") from None
        try:
            body = decode_body("control", data)
        except EnvelopeError as exc:
            raise ApiError(BAD_REQUEST, f"params.body_b64: {exc.reason}: {exc.message}") from None
        assert isinstance(body, Control)
        problem = check_control(body)
        if isinstance(problem, Rejected):
            raise ApiError(BAD_REQUEST, f"control: {problem.reason}: {problem.message}")
        new = await steer(body)
        return {"exec": body.exec.encode(), "action": body.action, "duplicate": not new}

    return {"control": control}
