"""The dealerless DKG between a subnet's validators, as a ceremony over a network (pure).

- `plan`: the ceremony's plan (parties, addresses, timing, the policy to make);
- `messages`: signed envelopes of `/qflow/dkg/1.0.0` and their answers;
- `ceremony`: one party's ceremony: the Joint-Feldman state machine of `crypto.dkg`,
  the Dolev-Strong broadcast, deadlines and the final confirmation.

docs/consensus.md, "Key setup: the DKG over libp2p"; the trio shell is
`runtime/dkg_service.py`.
"""

from qflow_node.core.dkg.ceremony import Ceremony, Failed, Finished, Outcome, Send, Stage
from qflow_node.core.dkg.messages import (
    MAX_ANSWER_SIZE,
    MAX_ENVELOPE_SIZE,
    Answer,
    Confirm,
    Envelope,
    MessageError,
    Payload,
    decode_envelope,
)
from qflow_node.core.dkg.plan import PLAN_TYPE, DkgPlan, PlanError, PlanParty, Round, Timeline

__all__ = [
    "MAX_ANSWER_SIZE",
    "MAX_ENVELOPE_SIZE",
    "PLAN_TYPE",
    "Answer",
    "Ceremony",
    "Confirm",
    "DkgPlan",
    "Envelope",
    "Failed",
    "Finished",
    "MessageError",
    "Outcome",
    "Payload",
    "PlanError",
    "PlanParty",
    "Round",
    "Send",
    "Stage",
    "Timeline",
    "decode_envelope",
]
