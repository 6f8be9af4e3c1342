"""Capability tokens (Biscuit): issue, attenuate, parse, authorize, inspect.

Pure: keys, tokens and `now` come in as arguments; the sandbox asks a `StepAuthorizer`
about every host call. docs/capabilities.md specifies the Datalog; ADR 0003 says why
calls are checked against a compiled form of the token.
"""

from qflow_node.core.capability.authorizer import (
    ALLOWED,
    AuthDecision,
    Engine,
    StepAuthorizer,
    verify,
)
from qflow_node.core.capability.datalog import POLICIES, Grants, Restriction
from qflow_node.core.capability.errors import CapabilityError, GrantError, Reason
from qflow_node.core.capability.instants import (
    AwareDateTime,
    Instant,
    format_rfc3339,
    parse_rfc3339,
    to_seconds,
)
from qflow_node.core.capability.scope import Scope
from qflow_node.core.capability.token import (
    INSPECT_FORMAT,
    MAX_BLOCKS,
    MAX_TOKEN_CHARS,
    Token,
    attenuate,
    inspect,
    issue,
    parse_token,
)
from qflow_node.core.capability.vocabulary import ARGUMENTS, CODECS, OPERATIONS

__all__ = [
    "ALLOWED",
    "ARGUMENTS",
    "CODECS",
    "INSPECT_FORMAT",
    "MAX_BLOCKS",
    "MAX_TOKEN_CHARS",
    "OPERATIONS",
    "POLICIES",
    "AuthDecision",
    "AwareDateTime",
    "CapabilityError",
    "Engine",
    "GrantError",
    "Grants",
    "Instant",
    "Reason",
    "Restriction",
    "Scope",
    "StepAuthorizer",
    "Token",
    "attenuate",
    "format_rfc3339",
    "inspect",
    "issue",
    "parse_rfc3339",
    "parse_token",
    "to_seconds",
    "verify",
]
