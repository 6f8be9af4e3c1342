"""Reason codes for refused tokens and denied host calls, and the errors that carry them."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a token was refused or a call denied. The values are stable (logs, CLI, JSON)."""

    # Not a token: empty, too long, not base64url, not a Biscuit, non-canonical encoding.
    MALFORMED = "malformed"
    # A well-formed token whose signatures do not verify under the authority key.
    FORGED = "forged"
    # A valid token, but signed by another authority than the one expected.
    WRONG_AUTHORITY = "wrong_authority"
    # A `time` check failed: the token (or one of its attenuations) has expired.
    EXPIRED = "expired"
    # An attenuation names another execution, flow or step than the one running.
    NOT_FOR_THIS_EXEC = "not_for_this_exec"
    NOT_FOR_THIS_FLOW = "not_for_this_flow"
    NOT_FOR_THIS_STEP = "not_for_this_step"
    # The operation is not granted (by the authority, or removed by an attenuation).
    NOT_GRANTED = "not_granted"
    # An argument is outside the token's bounds.
    HOST_NOT_ALLOWED = "host_not_allowed"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    KEY_NOT_ALLOWED = "key_not_allowed"
    CODEC_NOT_ALLOWED = "codec_not_allowed"
    # A byte count (`bytes`, `response_bytes`) is above the token's bound.
    LIMIT_EXCEEDED = "limit_exceeded"
    # The host passed an unknown operation, a missing/unknown/ill-typed argument.
    BAD_ARGUMENT = "bad_argument"
    # A check outside the Qflow vocabulary failed (hand-written tokens).
    CHECK_FAILED = "check_failed"
    # Biscuit's evaluation limits (facts, iterations, time) were reached: fail closed.
    TOO_COMPLEX = "too_complex"
    # The step runs without any capability token.
    NO_TOKEN = "no_token"


class CapabilityError(ValueError):
    """A token that is refused; `reason` says why, `message` says what exactly."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class GrantError(ValueError):
    """Invalid arguments to `issue` or `attenuate` (a usage error, not a bad token)."""
