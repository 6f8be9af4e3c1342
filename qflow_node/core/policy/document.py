"""The subnet policy document: who governs a subnet, and with which keys.

A versioned dag-cbor block (docs/consensus.md, "Validator sets and key setup"):

    {"v": 1, "type": "qflow/subnet-policy", "subnet": str, "epoch": int,
     "prev": CID | null, "members": [peer id…], "validators": [{"peer", "index"}…],
     "threshold": t, "keys": {"n", "commitments"}, "modules": [CID…],
     "capability_authority": [did:key…], "rbac": {role: [did:key…]}}

`keys` is the validators' t-of-n `KeySet` (Feldman commitments): the group public key
and every validator's share public key are derived from it, so they cannot disagree.
Validator `index` i holds share i of that key. A policy names the one it replaces
(`prev`, epoch + 1); `update.py` says when a successor is valid.

Pure and strict: `from_obj` refuses anything but the canonical form (every list sorted
and without repeats, validators in index order), so one policy has exactly one CID, and
every refusal names the field (`policy.validators[2].index: ...`). Not to be confused
with the sandbox's local `qflow_node.sandbox.policy.SubnetPolicy` (resource limits).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from qflow_node.codec import CID, RAW, Block, CodecError, dag_block, decode_dag
from qflow_node.core.critical.fields import (
    FormatError,
    choice,
    fields,
    integer,
    link,
    listing,
    show,
    text,
)
from qflow_node.core.critical.statement import check_subnet
from qflow_node.core.policy.tolerance import Tolerance
from qflow_node.crypto import MAX_PARTICIPANTS, DecodeError, KeySet, PublicKey
from qflow_node.identity.keys import IdentityError, public_key_from_did, public_key_from_peer_id

VERSION: Final = 1
POLICY_TYPE: Final = "qflow/subnet-policy"
MAX_EPOCH: Final = 2**63 - 1
MAX_MEMBERS: Final = 4096
MAX_MODULES: Final = 1024
MAX_AUTHORITIES: Final = 64
MAX_ROLES: Final = 64
MAX_ROLE_MEMBERS: Final = 1024
MAX_PEER_ID_LEN: Final = 64
MAX_DID_LEN: Final = 128
ROLE_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_.-]{0,63}\Z")

POLICY_FIELDS: Final = frozenset(
    {
        "v",
        "type",
        "subnet",
        "epoch",
        "prev",
        "members",
        "validators",
        "threshold",
        "keys",
        "modules",
        "capability_authority",
        "rbac",
    }
)
VALIDATOR_FIELDS: Final = frozenset({"peer", "index"})


class PolicyError(ValueError):
    """A policy document (or an update of one) that breaks the rules: what, where, why."""


@dataclass(frozen=True, slots=True)
class ValidatorEntry:
    """Validator `index` (1..n) of a policy: the node `peer` holds share `index`."""

    peer: str
    index: int

    def to_obj(self) -> dict[str, Any]:
        return {"peer": self.peer, "index": self.index}


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A subnet's governance, checked on construction (`PolicyError` naming the field).

    Use `create` (or `successor`) to build one from unsorted input; the constructor and
    `from_obj` accept only the canonical form. `rbac` is a tuple of `(role, dids)` pairs
    sorted by role; `roles` gives it as a dict.
    """

    subnet: str
    epoch: int
    prev: CID | None
    members: tuple[str, ...]
    validators: tuple[ValidatorEntry, ...]
    keys: KeySet
    modules: tuple[CID, ...] = ()
    capability_authority: tuple[str, ...] = ()
    rbac: tuple[tuple[str, tuple[str, ...]], ...] = ()
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(self)
        self._index.update((v.peer, v.index) for v in self.validators)

    # -- building --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        subnet: str,
        validators: Sequence[str],
        keys: KeySet,
        members: Iterable[str] = (),
        modules: Iterable[CID] = (),
        capability_authority: Iterable[str] = (),
        rbac: Mapping[str, Iterable[str]] | None = None,
        epoch: int = 0,
        prev: CID | None = None,
    ) -> PolicyDocument:
        """The canonical policy: validator i (1-based, in the order given) holds share i of
        `keys`; validators are members too; lists are sorted and repeats dropped (a
        repeated validator is an error: it would hold two shares)."""
        return cls(
            subnet=subnet,
            epoch=epoch,
            prev=prev,
            members=tuple(sorted({*members, *validators})),
            validators=tuple(ValidatorEntry(peer, i) for i, peer in enumerate(validators, 1)),
            keys=keys,
            modules=tuple(sorted(set(modules), key=_cid_key)),
            capability_authority=tuple(sorted(set(capability_authority))),
            rbac=tuple(
                (role, tuple(sorted(set(dids)))) for role, dids in sorted((rbac or {}).items())
            ),
        )

    def successor(
        self,
        *,
        validators: Sequence[str],
        keys: KeySet,
        members: Iterable[str] | None = None,
        modules: Iterable[CID] | None = None,
        capability_authority: Iterable[str] | None = None,
        rbac: Mapping[str, Iterable[str]] | None = None,
    ) -> PolicyDocument:
        """The policy replacing this one (epoch + 1, prev = this CID); fields not given are
        kept. It takes effect only with the current quorum's signature (`update.py`)."""
        return PolicyDocument.create(
            subnet=self.subnet,
            validators=validators,
            keys=keys,
            members=self.members if members is None else members,
            modules=self.modules if modules is None else modules,
            capability_authority=(
                self.capability_authority if capability_authority is None else capability_authority
            ),
            rbac=self.roles if rbac is None else rbac,
            epoch=self.epoch + 1,
            prev=self.cid,
        )

    # -- reading -----------------------------------------------------------------------------

    @property
    def threshold(self) -> int:
        return self.keys.threshold

    @property
    def size(self) -> int:
        """n: the number of validators (and of shares)."""
        return self.keys.size

    @property
    def group_key(self) -> PublicKey:
        return self.keys.public_key

    @property
    def roles(self) -> dict[str, tuple[str, ...]]:
        return dict(self.rbac)

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(self.size, self.threshold)

    def share_key(self, index: int) -> PublicKey:
        return self.keys.share_key(index)

    def index_of(self, peer: str) -> int | None:
        """The share index of validator `peer`, or None if it is not a validator."""
        return self._index.get(peer)

    def validator(self, index: int) -> ValidatorEntry:
        if type(index) is not int or not 1 <= index <= self.size:
            raise KeyError(index)
        return self.validators[index - 1]

    def is_member(self, peer: str) -> bool:
        return peer in self.members

    def allows_module(self, module: CID) -> bool:
        return module in self.modules

    def role(self, name: str) -> tuple[str, ...]:
        """The did:keys holding role `name` (empty for a role the policy does not name)."""
        return self.roles.get(name, ())

    # -- encoding ----------------------------------------------------------------------------

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "type": POLICY_TYPE,
            "subnet": self.subnet,
            "epoch": self.epoch,
            "prev": self.prev,
            "members": list(self.members),
            "validators": [v.to_obj() for v in self.validators],
            "threshold": self.threshold,
            "keys": self.keys.to_dict(),
            "modules": list(self.modules),
            "capability_authority": list(self.capability_authority),
            "rbac": {role: list(dids) for role, dids in self.rbac},
        }

    def to_block(self) -> Block:
        return dag_block(self.to_obj())

    @property
    def cid(self) -> CID:
        return self.to_block().cid

    @classmethod
    def from_obj(cls, obj: object, path: str = "policy") -> PolicyDocument:
        """Parse a decoded policy map; PolicyError naming the field for anything else."""
        try:
            return _from_obj(obj, path)
        except FormatError as exc:
            raise PolicyError(str(exc)) from None

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "policy") -> PolicyDocument:
        """Parse a policy block's bytes (canonical dag-cbor)."""
        try:
            obj = decode_dag(data)
        except CodecError as exc:
            raise PolicyError(f"{path}: not a dag-cbor block: {exc}") from None
        return cls.from_obj(obj, path)


def load_policy(data: bytes, cid: CID | None = None, path: str = "policy") -> PolicyDocument:
    """A policy from its block bytes; with `cid`, the bytes must be that block."""
    policy = PolicyDocument.from_bytes(data, path)
    block = policy.to_block()
    if block.data != data:  # decode_dag and from_obj only pass the canonical form
        raise PolicyError(f"{path}: not the canonical encoding of a policy")
    if cid is not None and block.cid != cid:
        raise PolicyError(f"{path}: the block is {block.cid.encode()}, not {cid.encode()}")
    return policy


def _cid_key(cid: CID) -> str:
    """Module links are sorted by their string (base32) form, as JSON shows them."""
    return str(cid.encode())


# -- parsing ---------------------------------------------------------------------------------


def _from_obj(obj: object, path: str) -> PolicyDocument:
    f = fields(obj, path, POLICY_FIELDS)
    check_version(f["v"], f"{path}.v")
    choice(f["type"], f"{path}.type", (POLICY_TYPE,))
    subnet = check_subnet(f["subnet"], f"{path}.subnet")
    epoch = integer(f["epoch"], f"{path}.epoch", 0, MAX_EPOCH)
    prev = None if f["prev"] is None else link(f["prev"], f"{path}.prev", dag_cbor_only=True)
    members = tuple(
        text(item, f"{path}.members[{i}]", max_len=MAX_PEER_ID_LEN)
        for i, item in enumerate(listing(f["members"], f"{path}.members", MAX_MEMBERS))
    )
    validators = tuple(
        _validator(item, f"{path}.validators[{i}]")
        for i, item in enumerate(listing(f["validators"], f"{path}.validators", MAX_PARTICIPANTS))
    )
    threshold = f["threshold"]
    if type(threshold) is not int:
        raise FormatError(f"{path}.threshold: expected an int, got {show(threshold)}")
    _check_threshold(threshold, len(validators), path)
    try:
        keys = KeySet.from_dict(f["keys"], f"{path}.keys")
    except DecodeError as exc:
        raise FormatError(str(exc)) from None
    if keys.threshold != threshold:
        raise FormatError(
            f"{path}.keys.commitments: {keys.threshold} commitments make a"
            f" {keys.threshold}-of-n key, but {path}.threshold is {threshold}"
        )
    modules = tuple(
        link(item, f"{path}.modules[{i}]")
        for i, item in enumerate(listing(f["modules"], f"{path}.modules", MAX_MODULES))
    )
    authorities = tuple(
        text(item, f"{path}.capability_authority[{i}]", max_len=MAX_DID_LEN)
        for i, item in enumerate(
            listing(f["capability_authority"], f"{path}.capability_authority", MAX_AUTHORITIES)
        )
    )
    rbac = _rbac(f["rbac"], f"{path}.rbac")
    try:
        return PolicyDocument(
            subnet, epoch, prev, members, validators, keys, modules, authorities, rbac
        )
    except PolicyError as exc:
        raise FormatError(str(exc).replace("policy", path, 1)) from None


def check_version(version: object, path: str) -> None:
    if type(version) is not int or version != VERSION:
        raise FormatError(f"{path}: version {show(version)} is not supported (expected {VERSION})")


def _validator(obj: object, path: str) -> ValidatorEntry:
    f = fields(obj, path, VALIDATOR_FIELDS)
    peer = text(f["peer"], f"{path}.peer", max_len=MAX_PEER_ID_LEN)
    index = f["index"]
    if type(index) is not int:
        raise FormatError(f"{path}.index: expected an int, got {show(index)}")
    return ValidatorEntry(peer, index)


def _rbac(obj: object, path: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if type(obj) is not dict:
        raise FormatError(f"{path}: expected a map of role -> [did:key], got {show(obj)}")
    if len(obj) > MAX_ROLES:
        raise FormatError(f"{path}: {len(obj)} roles exceeds the cap of {MAX_ROLES}")
    roles = []
    for role in obj:
        if type(role) is not str:
            raise FormatError(f"{path}: role names are strings, got {show(role)}")
    for role in sorted(obj):
        where = f"{path}.{role}" if ROLE_PATTERN.match(role) else f"{path}[{show(role)}]"
        dids = tuple(
            text(item, f"{where}[{i}]", max_len=MAX_DID_LEN)
            for i, item in enumerate(listing(obj[role], where, MAX_ROLE_MEMBERS))
        )
        roles.append((role, dids))
    return tuple(roles)


# -- the rules -------------------------------------------------------------------------------


def _check_threshold(threshold: int, size: int, path: str = "policy") -> None:
    if not 1 <= threshold <= size:
        raise FormatError(f"{path}.threshold: t = {threshold} is outside 1..n (n = {size})")
    if 2 * threshold <= size:
        raise FormatError(
            f"{path}.threshold: t = {threshold} of n = {size} is not a majority: t must be"
            f" more than n/2 (at least {size // 2 + 1}), or two disjoint quorums could"
            " certify conflicting decisions"
        )


def _check(p: PolicyDocument) -> None:
    """Raise PolicyError unless `p` follows every rule (its fields are the right types)."""
    try:
        _check_fields(p)
    except FormatError as exc:
        raise PolicyError(str(exc)) from None


def _check_fields(p: PolicyDocument) -> None:
    check_subnet(p.subnet, "policy.subnet")
    integer(p.epoch, "policy.epoch", 0, MAX_EPOCH)
    if (p.epoch == 0) != (p.prev is None):
        raise FormatError(
            "policy.prev: the first policy (epoch 0) has no prev; every later one names"
            " the policy it replaces"
        )
    if p.prev is not None:
        link(p.prev, "policy.prev", dag_cbor_only=True)
    # Members.
    if not p.members:
        raise FormatError("policy.members: a subnet has at least one member")
    for i, peer in enumerate(p.members):
        _check_peer(peer, f"policy.members[{i}]")
    _check_canonical(p.members, "policy.members", "peer", str)
    _check_validators(p)
    _check_governance(p)


def _check_validators(p: PolicyDocument) -> None:
    """Validators, their indices and the key set."""
    n = len(p.validators)
    if not 1 <= n <= MAX_PARTICIPANTS:
        raise FormatError(f"policy.validators: {n} validators, expected 1..{MAX_PARTICIPANTS}")
    seen_peers: dict[str, int] = {}
    seen_indices: dict[int, int] = {}
    for position, v in enumerate(p.validators):
        where = f"policy.validators[{position}]"
        _check_peer(v.peer, f"{where}.peer")
        if v.peer in seen_peers:
            raise FormatError(
                f"{where}.peer: duplicate validator {v.peer} (also policy.validators"
                f"[{seen_peers[v.peer]}]): a node holds one share"
            )
        seen_peers[v.peer] = position
        if type(v.index) is not int or not 1 <= v.index <= n:
            raise FormatError(f"{where}.index: {show(v.index)} is outside 1..n (n = {n})")
        if v.index in seen_indices:
            raise FormatError(
                f"{where}.index: duplicate index {v.index} (also policy.validators"
                f"[{seen_indices[v.index]}])"
            )
        seen_indices[v.index] = position
    for position, v in enumerate(p.validators):
        if v.index != position + 1:
            raise FormatError(
                f"policy.validators[{position}].index: {v.index} out of order: validators"
                " are listed by index, 1..n (canonical form)"
            )
    members = set(p.members)
    for position, v in enumerate(p.validators):
        if v.peer not in members:
            raise FormatError(
                f"policy.validators[{position}].peer: {v.peer} is not a member"
                " (validators must be listed in policy.members too)"
            )
    if not isinstance(p.keys, KeySet):
        raise FormatError(f"policy.keys: expected a KeySet, got {show(p.keys)}")
    _check_threshold(p.keys.threshold, n)
    if p.keys.size != n:
        raise FormatError(f"policy.keys.n: {p.keys.size}, but there are {n} validators")


def _check_governance(p: PolicyDocument) -> None:
    """Modules, capability authority, RBAC."""
    if len(p.modules) > MAX_MODULES:
        raise FormatError(f"policy.modules: {len(p.modules)} exceeds the cap of {MAX_MODULES}")
    for i, module in enumerate(p.modules):
        link(module, f"policy.modules[{i}]")
        if module.cid_bytes[1] != RAW:
            raise FormatError(
                f"policy.modules[{i}]: {module.encode()} is not a raw (bafk…) link:"
                " wasm modules are raw blocks"
            )
    _check_canonical(p.modules, "policy.modules", "module", _cid_key)
    if len(p.capability_authority) > MAX_AUTHORITIES:
        raise FormatError(
            f"policy.capability_authority: {len(p.capability_authority)} exceeds the cap"
            f" of {MAX_AUTHORITIES}"
        )
    for i, did in enumerate(p.capability_authority):
        _check_did(did, f"policy.capability_authority[{i}]")
    _check_canonical(p.capability_authority, "policy.capability_authority", "did", str)
    if len(p.rbac) > MAX_ROLES:
        raise FormatError(f"policy.rbac: {len(p.rbac)} roles exceeds the cap of {MAX_ROLES}")
    for role, _ in p.rbac:
        if type(role) is not str or not ROLE_PATTERN.match(role):
            raise FormatError(
                f"policy.rbac: role {show(role)} does not match {ROLE_PATTERN.pattern}"
            )
    _check_canonical([role for role, _ in p.rbac], "policy.rbac", "role", str)
    for role, dids in p.rbac:
        where = f"policy.rbac.{role}"
        if not 1 <= len(dids) <= MAX_ROLE_MEMBERS:
            raise FormatError(
                f"{where}: {len(dids)} holders, expected 1..{MAX_ROLE_MEMBERS} (omit an empty role)"
            )
        for i, did in enumerate(dids):
            _check_did(did, f"{where}[{i}]")
        _check_canonical(dids, where, "did", str)


def _check_peer(peer: object, path: str) -> None:
    if type(peer) is not str:
        raise FormatError(f"{path}: expected a peer id string, got {show(peer)}")
    try:
        public_key_from_peer_id(peer)
    except IdentityError as exc:
        raise FormatError(f"{path}: {exc}") from None


def _check_did(did: object, path: str) -> None:
    if type(did) is not str:
        raise FormatError(f"{path}: expected a did:key string, got {show(did)}")
    try:
        public_key_from_did(did)
    except IdentityError as exc:
        raise FormatError(f"{path}: {exc}") from None


def _check_canonical(items: Sequence[Any], path: str, what: str, key: Any) -> None:
    """Sorted ascending by `key`, each item once (items already checked: short strings)."""
    keys = [key(item) for item in items]
    for i in range(1, len(keys)):
        if keys[i] == keys[i - 1]:
            raise FormatError(f"{path}[{i}]: duplicate {what} {keys[i]!r}")
        if keys[i] < keys[i - 1]:
            raise FormatError(
                f"{path}[{i}]: {keys[i]!r} is out of order: the list must be sorted"
                " (canonical form)"
            )
