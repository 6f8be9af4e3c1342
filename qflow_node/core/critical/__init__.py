"""Critical steps: the pure two-phase-commit state machines (docs/consensus.md).

- `statement`: outcomes, decisions, the bytes validators sign, certificates;
- `messages`: prepare / abort / query and the vote / answer, strict wire forms;
- `validator`: one validator's locks (never two decisions per slot) and answers;
- `coordinator`: one round for one slot: query, commit and abort phases, verification
  of every partial, equivocation proofs, and the certificate. It aborts only on proof
  (`n - t + 1` validators shown not to sign its proposal); a timeout ends the round
  without a decision, never in an abort;
- `replica`: what a replica checks before applying a critical step's record: the outcome
  a recorded event stands for (`outcome_of`), the policy keys it checks certificates
  with (`CriticalKeys`), and the check (`quorum_problem`); the same for a decision on
  a timed step (`decision_outcome`, `decision_problem`);
- `fields`: the strict readers behind every `from_obj`;
- `testing`: committees, honest and Byzantine validators, a message pump (tests only).
"""

from qflow_node.core.critical.coordinator import (
    Coordinator,
    CoordinatorAction,
    Decided,
    Equivocation,
    InvalidPartial,
    Phase,
    Rejected,
    RoundFailed,
    Send,
    Settings,
)
from qflow_node.core.critical.fields import FormatError
from qflow_node.core.critical.messages import (
    MAX_MESSAGE_SIZE,
    AbortRequest,
    Answer,
    Message,
    Prepare,
    Query,
    Refusal,
    SignedDecision,
    Vote,
    decode_message,
    encode_message,
    message_from_obj,
)
from qflow_node.core.critical.replica import (
    ABORTED,
    DECISION_KINDS,
    CriticalKeys,
    decision_block,
    decision_event_fields,
    decision_outcome,
    decision_problem,
    outcome_of,
    quorum_problem,
)
from qflow_node.core.critical.statement import (
    STATEMENT_TYPE,
    Certificate,
    Decision,
    Outcome,
    error_object,
    error_text,
    outcome_digest,
    statement_bytes,
    verify_certificate,
)
from qflow_node.core.critical.validator import (
    Lock,
    PersistLock,
    Reply,
    Validator,
    ValidatorAction,
)

__all__ = [
    "ABORTED",
    "DECISION_KINDS",
    "MAX_MESSAGE_SIZE",
    "STATEMENT_TYPE",
    "AbortRequest",
    "Answer",
    "Certificate",
    "Coordinator",
    "CoordinatorAction",
    "CriticalKeys",
    "Decided",
    "Decision",
    "Equivocation",
    "FormatError",
    "InvalidPartial",
    "Lock",
    "Message",
    "Outcome",
    "PersistLock",
    "Phase",
    "Prepare",
    "Query",
    "Refusal",
    "Rejected",
    "Reply",
    "RoundFailed",
    "Send",
    "Settings",
    "SignedDecision",
    "Validator",
    "ValidatorAction",
    "Vote",
    "decision_block",
    "decision_event_fields",
    "decision_outcome",
    "decision_problem",
    "decode_message",
    "encode_message",
    "error_object",
    "error_text",
    "message_from_obj",
    "outcome_digest",
    "outcome_of",
    "quorum_problem",
    "statement_bytes",
    "verify_certificate",
]
