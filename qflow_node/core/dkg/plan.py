"""A DKG ceremony's plan: who takes part, where they listen, when it runs, and the policy
its key will belong to (docs/consensus.md, "Key setup: the DKG over libp2p").

An admin writes it as a JSON file (`qflow subnet dkg-plan`); every validator runs the
ceremony with the same plan. JSON form (all fields required, `schemas/dkg-plan.v1.json`):

    {"v": 1, "type": "qflow/dkg-plan", "subnet": str, "threshold": t,
     "validators": [{"peer": peer id, "addrs": [multiaddr…]}…],
     "members": [peer id…], "modules": [raw CID string…],
     "capability_authority": [did:key…], "rbac": {role: [did:key…]},
     "start_ms": unix ms, "step_ms": ms}

Validator i (1-based, in the order listed) is DKG party i and holds share i. The plan's
id is the CID of its canonical dag-cbor form (lists that the policy sorts are sorted), so
two files that differ only in such order are one plan; every DKG message names it, so a
message of one ceremony cannot be replayed into another.

Timing: every broadcast round (deal, complaint, justification) lasts t steps of
`step_ms` (the relay steps of the broadcast, `ceremony.py`), then confirmations get
`CONFIRM_STEPS` steps. A step must exceed the worst delivery delay between two parties
plus their clock difference.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from qflow_node.codec import CID, CidError, dag_block, parse_cid
from qflow_node.core.critical.fields import (
    FormatError,
    choice,
    fields,
    integer,
    listing,
    show,
    text,
)
from qflow_node.core.critical.statement import check_subnet
from qflow_node.core.policy import PolicyDocument, PolicyError
from qflow_node.core.policy.document import (
    MAX_AUTHORITIES,
    MAX_DID_LEN,
    MAX_MEMBERS,
    MAX_MODULES,
    MAX_PEER_ID_LEN,
    MAX_ROLE_MEMBERS,
    MAX_ROLES,
)
from qflow_node.crypto import MAX_PARTICIPANTS, KeySet, dealer_keygen, seeded_rng
from qflow_node.identity.keys import IdentityError, public_key_from_peer_id

VERSION: Final = 1
PLAN_TYPE: Final = "qflow/dkg-plan"
MIN_STEP_MS: Final = 50
MAX_STEP_MS: Final = 600_000
MAX_START_MS: Final = 2**53 - 1  # exact in JSON numbers
MAX_ADDRS: Final = 8
MAX_ADDR_LEN: Final = 256
MAX_PLAN_SIZE: Final = 1 << 20
CONFIRM_STEPS: Final = 2

PLAN_FIELDS: Final = frozenset(
    {
        "v",
        "type",
        "subnet",
        "threshold",
        "validators",
        "members",
        "modules",
        "capability_authority",
        "rbac",
        "start_ms",
        "step_ms",
    }
)
PARTY_FIELDS: Final = frozenset({"peer", "addrs"})


class PlanError(ValueError):
    """A plan that breaks the rules: what, where, why."""


class Round(enum.IntEnum):
    """The broadcast rounds, in order; the value is the round's position."""

    DEAL = 0
    COMPLAINT = 1
    JUSTIFICATION = 2


@dataclass(frozen=True, slots=True)
class Timeline:
    """When each round opens and closes (unix ms), from the plan's start and step."""

    start_ms: int
    step_ms: int
    steps: int  # relay steps per broadcast round: t

    def opens(self, round_: Round) -> int:
        return self.start_ms + int(round_) * self.steps * self.step_ms

    def closes(self, round_: Round) -> int:
        return self.opens(round_) + self.steps * self.step_ms

    @property
    def confirm_opens(self) -> int:
        return self.closes(Round.JUSTIFICATION)

    @property
    def ends(self) -> int:
        return self.confirm_opens + CONFIRM_STEPS * self.step_ms

    def step_of(self, round_: Round, now_ms: int) -> int | None:
        """The relay step (0-based) of `round_` at `now_ms`: 0 before the round opens
        (a peer's clock may run a little ahead), None once it has closed."""
        if now_ms >= self.closes(round_):
            return None
        return max(0, (now_ms - self.opens(round_)) // self.step_ms)


@dataclass(frozen=True, slots=True)
class PlanParty:
    peer: str
    addrs: tuple[str, ...]

    def to_obj(self) -> dict[str, Any]:
        return {"peer": self.peer, "addrs": list(self.addrs)}


@dataclass(frozen=True, slots=True)
class DkgPlan:
    """A checked plan (`from_obj`, `from_json`); `create` builds the canonical form."""

    subnet: str
    threshold: int
    validators: tuple[PlanParty, ...]
    start_ms: int
    step_ms: int
    members: tuple[str, ...] = ()
    modules: tuple[CID, ...] = ()
    capability_authority: tuple[str, ...] = ()
    rbac: tuple[tuple[str, tuple[str, ...]], ...] = ()
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _keys: dict[int, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(self)
        for i, party in enumerate(self.validators, 1):
            self._index[party.peer] = i
            self._keys[i] = public_key_from_peer_id(party.peer)

    @classmethod
    def create(
        cls,
        *,
        subnet: str,
        threshold: int,
        validators: list[tuple[str, list[str]]],
        start_ms: int,
        step_ms: int,
        members: list[str] | tuple[str, ...] = (),
        modules: list[CID] | tuple[CID, ...] = (),
        capability_authority: list[str] | tuple[str, ...] = (),
        rbac: Mapping[str, list[str] | tuple[str, ...]] | None = None,
    ) -> DkgPlan:
        """The canonical plan: lists the policy sorts are sorted, repeats dropped."""
        return cls(
            subnet=subnet,
            threshold=threshold,
            validators=tuple(PlanParty(peer, tuple(addrs)) for peer, addrs in validators),
            start_ms=start_ms,
            step_ms=step_ms,
            members=tuple(sorted(set(members))),
            modules=tuple(sorted(set(modules), key=lambda cid: str(cid.encode()))),
            capability_authority=tuple(sorted(set(capability_authority))),
            rbac=tuple(
                (role, tuple(sorted(set(dids)))) for role, dids in sorted((rbac or {}).items())
            ),
        )

    # -- derived ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.validators)

    @property
    def timeline(self) -> Timeline:
        return Timeline(self.start_ms, self.step_ms, self.threshold)

    @property
    def cid(self) -> CID:
        return dag_block(self.to_obj()).cid

    def index_of(self, peer: str) -> int | None:
        return self._index.get(peer)

    def party(self, index: int) -> PlanParty:
        return self.validators[index - 1]

    def public_key(self, index: int) -> bytes:
        """Party `index`'s Ed25519 node key (from its peer id)."""
        return self._keys[index]

    def policy_for(self, keys: KeySet) -> PolicyDocument:
        """The policy the ceremony makes with key set `keys`: the same for every party."""
        return PolicyDocument.create(
            subnet=self.subnet,
            validators=[party.peer for party in self.validators],
            keys=keys,
            members=self.members,
            modules=self.modules,
            capability_authority=self.capability_authority,
            rbac=dict(self.rbac),
        )

    # -- forms -----------------------------------------------------------------------------

    def to_obj(self) -> dict[str, Any]:
        """The JSON form (and, encoded as dag-cbor, the bytes the plan's CID names)."""
        return {
            "v": VERSION,
            "type": PLAN_TYPE,
            "subnet": self.subnet,
            "threshold": self.threshold,
            "validators": [party.to_obj() for party in self.validators],
            "members": list(self.members),
            "modules": [str(cid.encode()) for cid in self.modules],
            "capability_authority": list(self.capability_authority),
            "rbac": {role: list(dids) for role, dids in self.rbac},
            "start_ms": self.start_ms,
            "step_ms": self.step_ms,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_obj(), indent=2) + "\n"

    @classmethod
    def from_obj(cls, obj: object, path: str = "plan") -> DkgPlan:
        try:
            return _from_obj(obj, path)
        except FormatError as exc:
            raise PlanError(str(exc)) from None

    @classmethod
    def from_json(cls, data: bytes | str, path: str = "plan") -> DkgPlan:
        if len(data) > MAX_PLAN_SIZE:
            raise PlanError(f"{path}: larger than {MAX_PLAN_SIZE} bytes")
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise PlanError(f"{path}: not JSON: {exc}") from None
        return cls.from_obj(obj, path)


def _from_obj(obj: object, path: str) -> DkgPlan:
    f = fields(obj, path, PLAN_FIELDS)
    if type(f["v"]) is not int or f["v"] != VERSION:
        raise FormatError(f"{path}.v: version {show(f['v'])} is not supported (expected 1)")
    choice(f["type"], f"{path}.type", (PLAN_TYPE,))
    validators = tuple(
        _party(item, f"{path}.validators[{i}]")
        for i, item in enumerate(listing(f["validators"], f"{path}.validators", MAX_PARTICIPANTS))
    )
    modules = []
    for i, item in enumerate(listing(f["modules"], f"{path}.modules", MAX_MODULES)):
        where = f"{path}.modules[{i}]"
        try:
            modules.append(parse_cid(text(item, where, max_len=128)))
        except CidError as exc:
            raise FormatError(f"{where}: {exc}") from None
    rbac = f["rbac"]
    if type(rbac) is not dict or len(rbac) > MAX_ROLES:
        raise FormatError(f"{path}.rbac: expected a map of at most {MAX_ROLES} roles")
    roles = {
        text(role, f"{path}.rbac", max_len=64): _strings(
            dids, f"{path}.rbac.{role}", MAX_ROLE_MEMBERS, MAX_DID_LEN
        )
        for role, dids in rbac.items()
    }
    plan = DkgPlan.create(
        subnet=check_subnet(f["subnet"], f"{path}.subnet"),
        threshold=integer(f["threshold"], f"{path}.threshold", 1, MAX_PARTICIPANTS),
        validators=[(party.peer, list(party.addrs)) for party in validators],
        start_ms=integer(f["start_ms"], f"{path}.start_ms", 1, MAX_START_MS),
        step_ms=integer(f["step_ms"], f"{path}.step_ms", MIN_STEP_MS, MAX_STEP_MS),
        members=_strings(f["members"], f"{path}.members", MAX_MEMBERS, MAX_PEER_ID_LEN),
        modules=modules,
        capability_authority=_strings(
            f["capability_authority"], f"{path}.capability_authority", MAX_AUTHORITIES, MAX_DID_LEN
        ),
        rbac=roles,
    )
    return plan


def _party(obj: object, path: str) -> PlanParty:
    f = fields(obj, path, PARTY_FIELDS)
    peer = text(f["peer"], f"{path}.peer", max_len=MAX_PEER_ID_LEN)
    addrs = _strings(f["addrs"], f"{path}.addrs", MAX_ADDRS, MAX_ADDR_LEN)
    return PlanParty(peer, tuple(addrs))


def _strings(value: object, path: str, max_items: int, max_len: int) -> list[str]:
    return [
        text(item, f"{path}[{i}]", max_len=max_len)
        for i, item in enumerate(listing(value, path, max_items))
    ]


def _check(plan: DkgPlan) -> None:
    """The plan's own rules, then the policy's: a plan is valid only if the policy it
    makes is (checked on a stand-in key set of the same shape)."""
    if not plan.validators:
        raise PlanError("plan.validators: at least one validator is needed")
    if len(plan.validators) > MAX_PARTICIPANTS:
        raise PlanError(f"plan.validators: more than {MAX_PARTICIPANTS}")
    seen: set[str] = set()
    for i, party in enumerate(plan.validators):
        where = f"plan.validators[{i}]"
        try:
            public_key_from_peer_id(party.peer)
        except IdentityError as exc:
            raise PlanError(f"{where}.peer: {exc}") from None
        if party.peer in seen:
            raise PlanError(f"{where}.peer: {party.peer} is listed twice (a node holds one share)")
        seen.add(party.peer)
        if not 1 <= len(party.addrs) <= MAX_ADDRS:
            raise PlanError(f"{where}.addrs: expected 1..{MAX_ADDRS} multiaddrs")
        for j, addr in enumerate(party.addrs):
            if not addr.startswith("/") or len(addr) > MAX_ADDR_LEN or "/p2p/" in addr:
                raise PlanError(
                    f"{where}.addrs[{j}]: {show(addr)} is not a multiaddr without /p2p/"
                    " (the peer id is the entry's peer)"
                )
    n, t = len(plan.validators), plan.threshold
    if type(t) is not int or not n / 2 < t <= n:
        raise PlanError(
            f"plan.threshold: with {n} validator(s) t must be a majority, {n // 2 + 1}..{n}"
        )
    if type(plan.step_ms) is not int or not MIN_STEP_MS <= plan.step_ms <= MAX_STEP_MS:
        raise PlanError(
            f"plan.step_ms: {show(plan.step_ms)} is outside {MIN_STEP_MS}..{MAX_STEP_MS}"
        )
    if type(plan.start_ms) is not int or not 1 <= plan.start_ms <= MAX_START_MS:
        raise PlanError(f"plan.start_ms: {show(plan.start_ms)} is not a unix time in ms")
    stand_in, _ = dealer_keygen(t, n, seeded_rng(b"qflow/dkg-plan/stand-in"))
    try:
        plan.policy_for(stand_in)
    except PolicyError as exc:
        raise PlanError(f"plan: the policy it would make is invalid: {exc}") from None
