"""Policy updates: a successor policy counts only with the current quorum's signature.

The statement the current validators sign (each with its share of the CURRENT group key)
is the canonical dag-cbor of

    {"v": 1, "type": "qflow/subnet-policy-update", "subnet": s, "prev": old CID,
     "next": new CID}

t partials combine into the threshold signature of the statement under the old group key:
the update certificate `{"v", "type": "qflow/subnet-policy-update-certificate",
"subnet", "prev", "next", "sig"}`. `verify_update` is what every node checks before
it follows a policy chain one step: same subnet, epoch + 1, `prev` = the old CID, and the
signature under the old key (a signature by the new validators alone does not count:
they are not in power until the old ones hand over).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from qflow_node.codec import CID, CodecError, decode_dag, encode_dag
from qflow_node.core.critical.fields import FormatError, choice, fields, integer, link, show
from qflow_node.core.critical.statement import check_subnet, decode_signature
from qflow_node.core.policy.document import PolicyDocument, PolicyError, check_version
from qflow_node.crypto import (
    MAX_PARTICIPANTS,
    CryptoError,
    Share,
    Signature,
    combine_verified,
    partial_sign,
    verify,
    verify_partial,
)

UPDATE_TYPE: Final = "qflow/subnet-policy-update"
CERTIFICATE_TYPE: Final = "qflow/subnet-policy-update-certificate"
PARTIAL_TYPE: Final = "qflow/subnet-policy-update-partial"
VERSION: Final = 1
MAX_UPDATE_SIZE: Final = 4096  # statements, partials and certificates are ~200 bytes

_STATEMENT_FIELDS: Final = frozenset({"v", "type", "subnet", "prev", "next"})
_CERTIFICATE_FIELDS: Final = _STATEMENT_FIELDS | {"sig"}
_PARTIAL_FIELDS: Final = _STATEMENT_FIELDS | {"index", "sig"}


class PolicyUpdateError(PolicyError):
    """An update that does not hold: broken continuity, or a signature that fails."""


def update_statement(subnet: str, prev: CID, next: CID) -> bytes:
    """The bytes the current quorum signs to replace policy `prev` by `next`."""
    check_subnet(subnet)
    return encode_dag(_statement_obj(UPDATE_TYPE, subnet, prev, next))


def _statement_obj(kind: str, subnet: str, prev: CID, next: CID) -> dict[str, Any]:
    return {"v": VERSION, "type": kind, "subnet": subnet, "prev": prev, "next": next}


@dataclass(frozen=True, slots=True)
class UpdateStatement:
    """What `update_statement` encodes, read back strictly (the file validators sign)."""

    subnet: str
    prev: CID
    next: CID

    def to_bytes(self) -> bytes:
        return update_statement(self.subnet, self.prev, self.next)

    @classmethod
    def for_policies(cls, old: PolicyDocument, new_cid: CID) -> UpdateStatement:
        return cls(old.subnet, old.cid, new_cid)

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "update statement") -> UpdateStatement:
        f = _decode(data, path, UPDATE_TYPE, _STATEMENT_FIELDS)
        return cls(*_continuity(f, path))


@dataclass(frozen=True, slots=True)
class UpdatePartial:
    """Validator `index`'s partial signature of an update statement (its share's)."""

    statement: UpdateStatement
    index: int
    sig: bytes

    @classmethod
    def sign(cls, statement: UpdateStatement, share: Share) -> UpdatePartial:
        return cls(statement, share.index, partial_sign(share, statement.to_bytes()).to_bytes())

    def verify(self, policy: PolicyDocument) -> bool:
        """Whether the partial verifies under share `index` of `policy` (the old one)."""
        if not 1 <= self.index <= policy.size:
            return False
        try:
            signature = Signature.from_bytes(self.sig)
        except CryptoError:
            return False
        return verify_partial(policy.share_key(self.index), self.statement.to_bytes(), signature)

    def to_bytes(self) -> bytes:
        s = self.statement
        obj = _statement_obj(PARTIAL_TYPE, s.subnet, s.prev, s.next)
        return encode_dag({**obj, "index": self.index, "sig": self.sig})

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "partial") -> UpdatePartial:
        f = _decode(data, path, PARTIAL_TYPE, _PARTIAL_FIELDS)
        statement = UpdateStatement(*_continuity(f, path))
        try:
            index = integer(f["index"], f"{path}.index", 1, MAX_PARTICIPANTS)
            sig = decode_signature(f["sig"], f"{path}.sig").to_bytes()
        except FormatError as exc:
            raise PolicyError(str(exc)) from None
        return cls(statement, index, sig)


@dataclass(frozen=True, slots=True)
class PolicyUpdate:
    """The update certificate: the old quorum's threshold signature on the statement."""

    subnet: str
    prev: CID
    next: CID
    sig: bytes

    @property
    def statement(self) -> UpdateStatement:
        return UpdateStatement(self.subnet, self.prev, self.next)

    @property
    def next_cid(self) -> CID:
        return self.next

    def verify(self, old: PolicyDocument, new: PolicyDocument) -> None:
        """`verify_update` for this certificate (which must name both policies)."""
        if self.prev != old.cid or self.subnet != old.subnet:
            raise PolicyUpdateError(
                f"update certificate: it replaces {self.prev.encode()} of subnet"
                f" {self.subnet!r}, not {old.cid.encode()} of {old.subnet!r}"
            )
        verify_update(old, self.next, new, self.sig)

    def to_bytes(self) -> bytes:
        obj = _statement_obj(CERTIFICATE_TYPE, self.subnet, self.prev, self.next)
        return encode_dag({**obj, "sig": self.sig})

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "update certificate") -> PolicyUpdate:
        f = _decode(data, path, CERTIFICATE_TYPE, _CERTIFICATE_FIELDS)
        subnet, prev, next_ = _continuity(f, path)
        try:
            sig = decode_signature(f["sig"], f"{path}.sig").to_bytes()
        except FormatError as exc:
            raise PolicyError(str(exc)) from None
        return cls(subnet, prev, next_, sig)


def combine_update(
    old: PolicyDocument, statement: UpdateStatement, partials: Mapping[int, bytes]
) -> PolicyUpdate:
    """Combine the partials (share index -> 96 bytes) of the old validators.

    Raises PolicyUpdateError naming the bad shares when fewer than t of them verify, or
    when the statement is not about `old`.
    """
    if statement.prev != old.cid or statement.subnet != old.subnet:
        raise PolicyUpdateError(
            f"the statement replaces {statement.prev.encode()} of subnet"
            f" {statement.subnet!r}, not {old.cid.encode()} of {old.subnet!r}"
        )
    for index in partials:
        if not 1 <= index <= old.size:
            raise PolicyUpdateError(
                f"partial from share {index}: the policy has validators 1..{old.size}"
            )
    try:
        decoded = {
            i: Signature.from_bytes(sig, f"partial from share {i}") for i, sig in partials.items()
        }
        combined = combine_verified(old.keys, statement.to_bytes(), decoded)
    except CryptoError as exc:
        raise PolicyUpdateError(f"cannot certify the update: {exc}") from None
    return PolicyUpdate(
        statement.subnet, statement.prev, statement.next, combined.signature.to_bytes()
    )


def verify_update(
    old_policy: PolicyDocument, new_policy_cid: CID, new_policy: PolicyDocument, sig: bytes
) -> None:
    """Raise PolicyUpdateError unless `new_policy` validly replaces `old_policy`.

    Checks that `new_policy_cid` is the new policy's CID, that it continues the old one
    (same subnet, epoch + 1, prev = the old CID), and that `sig` is the old validators'
    threshold signature (under the OLD group key) of `update_statement`.
    """
    if new_policy.cid != new_policy_cid:
        raise PolicyUpdateError(
            f"the new policy is {new_policy.cid.encode()}, not {new_policy_cid.encode()}"
        )
    old_cid = old_policy.cid
    if new_policy.subnet != old_policy.subnet:
        raise PolicyUpdateError(
            f"policy.subnet: the new policy is for subnet {new_policy.subnet!r}, the old"
            f" one for {old_policy.subnet!r}"
        )
    if new_policy.epoch != old_policy.epoch + 1:
        raise PolicyUpdateError(
            f"policy.epoch: the new policy has epoch {new_policy.epoch}; replacing epoch"
            f" {old_policy.epoch} needs epoch {old_policy.epoch + 1}"
        )
    if new_policy.prev != old_cid:
        shown = "null" if new_policy.prev is None else new_policy.prev.encode()
        raise PolicyUpdateError(
            f"policy.prev: the new policy replaces {shown}, not the old policy {old_cid.encode()}"
        )
    try:
        signature = decode_signature(sig, "update signature")
    except FormatError as exc:
        raise PolicyUpdateError(str(exc)) from None
    statement = update_statement(old_policy.subnet, old_cid, new_policy_cid)
    if not verify(old_policy.group_key, statement, signature):
        raise PolicyUpdateError(
            f"the update signature does not verify under the group key of the old policy"
            f" {old_cid.encode()} (it needs t = {old_policy.threshold} of its"
            f" {old_policy.size} validators)"
        )


def _decode(data: bytes, path: str, kind: str, keys: frozenset[str]) -> dict[str, Any]:
    if type(data) is not bytes:
        raise PolicyError(f"{path}: expected bytes, got {show(data)}")
    try:
        obj = decode_dag(data, max_size=MAX_UPDATE_SIZE)
        f = fields(obj, path, keys)
        check_version(f["v"], f"{path}.v")
        choice(f["type"], f"{path}.type", (kind,))
    except CodecError as exc:
        raise PolicyError(f"{path}: not a dag-cbor block: {exc}") from None
    except FormatError as exc:
        raise PolicyError(str(exc)) from None
    return f


def _continuity(f: Mapping[str, Any], path: str) -> tuple[str, CID, CID]:
    try:
        subnet = check_subnet(f["subnet"], f"{path}.subnet")
        prev = link(f["prev"], f"{path}.prev", dag_cbor_only=True)
        next_ = link(f["next"], f"{path}.next", dag_cbor_only=True)
    except FormatError as exc:
        raise PolicyError(str(exc)) from None
    if prev == next_:
        raise PolicyError(f"{path}.next: a policy cannot replace itself")
    return subnet, prev, next_
