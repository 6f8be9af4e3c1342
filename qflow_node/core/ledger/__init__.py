"""The execution ledger: signed, hash-linked records of what happened in an execution.

Pure: records are built, decoded, verified and ordered here; reading and writing blocks
is the caller's job (`qflow_node.ledger_store`). docs/protocol.md is the spec.
"""

from qflow_node.core.ledger.clock import Clock, concurrent, happened_before, leq, merge, next_clock
from qflow_node.core.ledger.dag import (
    antichain,
    dominator,
    is_ancestor,
    merge_heads,
    replay_key,
    replay_order,
)
from qflow_node.core.ledger.errors import Reason, RecordError
from qflow_node.core.ledger.record import (
    FIELDS,
    GENESIS_KIND,
    KINDS,
    QUORUM_KINDS,
    SIG_DOMAIN,
    VERSION,
    Record,
    check_record,
    decode_record,
    new_record,
    signing_message,
    unsigned_bytes,
)
from qflow_node.core.ledger.verify import (
    CorruptBlock,
    Failure,
    Lookup,
    SignatureChecker,
    SignatureItem,
    VerifyReport,
    check_signatures,
    verify_execution,
    verify_extension,
)

__all__ = [
    "FIELDS",
    "GENESIS_KIND",
    "KINDS",
    "QUORUM_KINDS",
    "SIG_DOMAIN",
    "VERSION",
    "Clock",
    "CorruptBlock",
    "Failure",
    "Lookup",
    "Reason",
    "Record",
    "RecordError",
    "SignatureChecker",
    "SignatureItem",
    "VerifyReport",
    "antichain",
    "check_record",
    "check_signatures",
    "concurrent",
    "decode_record",
    "dominator",
    "happened_before",
    "is_ancestor",
    "leq",
    "merge",
    "merge_heads",
    "new_record",
    "next_clock",
    "replay_key",
    "replay_order",
    "signing_message",
    "unsigned_bytes",
    "verify_execution",
    "verify_extension",
]
