"""The subnet policy: validator set, keys and governance of a subnet (pure).

- `document`: the policy block (`PolicyDocument`), strict parsing, canonical form;
- `tolerance`: how many faulty validators a t-of-n set tolerates, and warnings;
- `update`: successor policies, signed by the current quorum (`verify_update`).

docs/consensus.md, "Validator sets and key setup".
"""

from qflow_node.core.policy.document import (
    POLICY_TYPE,
    PolicyDocument,
    PolicyError,
    ValidatorEntry,
    load_policy,
)
from qflow_node.core.policy.tolerance import Tolerance, keeping_tolerance
from qflow_node.core.policy.update import (
    CERTIFICATE_TYPE,
    PARTIAL_TYPE,
    UPDATE_TYPE,
    PolicyUpdate,
    PolicyUpdateError,
    UpdatePartial,
    UpdateStatement,
    combine_update,
    update_statement,
    verify_update,
)

__all__ = [
    "CERTIFICATE_TYPE",
    "PARTIAL_TYPE",
    "POLICY_TYPE",
    "UPDATE_TYPE",
    "PolicyDocument",
    "PolicyError",
    "PolicyUpdate",
    "PolicyUpdateError",
    "Tolerance",
    "UpdatePartial",
    "UpdateStatement",
    "ValidatorEntry",
    "combine_update",
    "keeping_tolerance",
    "load_policy",
    "update_statement",
    "verify_update",
]
