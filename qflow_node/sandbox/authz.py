"""How the runner asks a step's capability token what the step may do.

The runner depends on this Protocol only; the Biscuit-backed implementation lives in
`qflow_node/core/capability/` and has the same method names. Without an authorizer a
step gets no host functions at all (only `qflow.result`, which does nothing by itself).

Arguments passed to `authorize` are the call's actual arguments:

| operation    | args                                                             |
| ------------ | ---------------------------------------------------------------- |
| `http.fetch` | `host`, `method`, `url`, `bytes` (request body size); after the  |
|              | response a second call with `host`, `method`, `url`,             |
|              | `response_bytes` checks the response size                        |
| `state.get`  | `key`                                                            |
| `state.set`  | `key`, `bytes` (size of the JSON value)                          |
| `block.get`  | `cid` (base32 text)                                              |
| `block.put`  | `codec` ("raw" or "dag-cbor"), `bytes`                           |
| `log`        | `level` (0 debug … 3 error, the ABI's int), `bytes`              |

`host` is the URL's host as the request goes to it: lowercase ASCII (IDNs in their
xn-- form, IPv6 without brackets). A denial whose `code` is "limit_exceeded" (a byte
bound) gives the guest LIMIT_EXCEEDED instead of DENIED.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from qflow_node.core.capability.vocabulary import (
    BLOCK_GET,
    BLOCK_PUT,
    HTTP_FETCH,
    LOG,
    STATE_GET,
    STATE_SET,
)
from qflow_node.core.capability.vocabulary import OPERATIONS as _OPERATION_ORDER

OPERATIONS: Final = frozenset(_OPERATION_ORDER)

HOST_MODULE: Final = "qflow"
# Import name in module "qflow" -> the operation a token must grant for it to exist.
# `result` needs no grant: it only hands back what an authorized call produced.
HOST_IMPORTS: Final[Mapping[str, str | None]] = {
    "log": LOG,
    "http_fetch": HTTP_FETCH,
    "state_get": STATE_GET,
    "state_set": STATE_SET,
    "block_get": BLOCK_GET,
    "block_put": BLOCK_PUT,
    "result": None,
}

AuthArgs = Mapping[str, str | int]


LIMIT_CODE: Final = "limit_exceeded"


class Decision(Protocol):
    """A verdict on one call. `core.capability.AuthDecision` is one (it adds `code`)."""

    @property
    def allowed(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def trap(self) -> bool: ...  # when denied: stop the step (the token's trap_on_deny)


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """A plain `Decision`, for authorizers written without the capability package."""

    allowed: bool
    reason: str = ""
    trap: bool = False
    code: str | None = None  # "limit_exceeded" for a byte bound, like the capability package


class Authorizer(Protocol):
    def granted(self) -> frozenset[str]:
        """The operations the token grants at all ("http.fetch", "state.get", …)."""
        ...

    def authorize(self, operation: str, args: AuthArgs) -> Decision:
        """Whether this call, with these actual arguments, is allowed."""
        ...
