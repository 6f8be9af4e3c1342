"""Return codes of the `qflow.*` host functions (negative = error), as in docs/steps.md."""

from typing import Final

DENIED: Final = -1  # the capability token does not allow this call
INVALID_ARGUMENT: Final = -2  # bad pointer, encoding, JSON, CID or codec
NOT_FOUND: Final = -3  # no such state key or block
LIMIT_EXCEEDED: Final = -4  # over a byte bound (the token's or the host's)
UNAVAILABLE: Final = -5  # network error or timeout; the block store failed
NO_PENDING_RESULT: Final = -6  # `result` called with nothing pending
