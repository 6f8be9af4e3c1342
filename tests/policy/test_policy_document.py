"""The subnet policy document: canonical round trips, every refusal naming its field, the
fault-tolerance helper, and updates that count only with the current quorum's signature."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from qflow_node.codec import DAG_CBOR, RAW, cid_for, decode_dag, encode_dag
from qflow_node.core.policy import (
    POLICY_TYPE,
    PolicyDocument,
    PolicyError,
    PolicyUpdate,
    PolicyUpdateError,
    Tolerance,
    UpdatePartial,
    UpdateStatement,
    ValidatorEntry,
    combine_update,
    keeping_tolerance,
    load_policy,
    update_statement,
    verify_update,
)
from qflow_node.crypto import (
    KeySet,
    Share,
    combine,
    dealer_keygen,
    partial_sign,
    public_key,
    seeded_rng,
    verify_share,
)
from qflow_node.crypto.bls import SecretKey
from qflow_node.identity import SigningKey

NODES = [SigningKey(bytes([i]) * 32) for i in range(1, 9)]
PEERS = [key.peer_id for key in NODES]
ACTORS = [SigningKey(bytes([100 + i]) * 32) for i in range(3)]
DIDS = [key.did for key in ACTORS]
MODULES = [cid_for(f"module {i}".encode(), RAW) for i in range(3)]
SUBNET = "dao"


def deal(t: int, n: int, seed: bytes = b"old") -> tuple[KeySet, tuple[Share, ...]]:
    return dealer_keygen(t, n, seeded_rng(seed))


OLD_KEYS, OLD_SHARES = deal(3, 4)
NEW_KEYS, NEW_SHARES = deal(4, 5, b"new")


def policy(**changes: Any) -> PolicyDocument:
    args: dict[str, Any] = {
        "subnet": SUBNET,
        "validators": PEERS[:4],
        "keys": OLD_KEYS,
        "members": [PEERS[5], PEERS[4]],
        "modules": [MODULES[2], MODULES[0]],
        "capability_authority": [DIDS[1], DIDS[0]],
        "rbac": {"approver": [DIDS[2], DIDS[0]], "admin": [DIDS[1]]},
    }
    args.update(changes)
    return PolicyDocument.create(**args)


OLD = policy()
NEW = OLD.successor(validators=PEERS[:5], keys=NEW_KEYS)


# -- building and round trips ------------------------------------------------------------


def test_create_makes_the_canonical_form() -> None:
    p = OLD
    assert p.epoch == 0 and p.prev is None
    assert p.members == tuple(sorted(PEERS[:6]))  # validators are members too
    assert p.validators == tuple(ValidatorEntry(peer, i) for i, peer in enumerate(PEERS[:4], 1))
    assert p.modules == tuple(sorted(MODULES[::2], key=lambda c: c.encode()))
    assert p.capability_authority == tuple(sorted(DIDS[:2]))
    assert p.roles == {"admin": (DIDS[1],), "approver": tuple(sorted([DIDS[0], DIDS[2]]))}
    assert (p.threshold, p.size) == (3, 4)


def test_the_block_is_the_designed_dag_cbor_map() -> None:
    obj = decode_dag(OLD.to_block().data)
    assert obj == {
        "v": 1,
        "type": POLICY_TYPE,
        "subnet": SUBNET,
        "epoch": 0,
        "prev": None,
        "members": list(OLD.members),
        "validators": [{"peer": PEERS[i], "index": i + 1} for i in range(4)],
        "threshold": 3,
        "keys": {"n": 4, "commitments": OLD_KEYS.commitments.to_list()},
        "modules": list(OLD.modules),
        "capability_authority": list(OLD.capability_authority),
        "rbac": {"admin": [DIDS[1]], "approver": sorted([DIDS[0], DIDS[2]])},
    }


@pytest.mark.parametrize("p", [OLD, NEW, policy(modules=[], capability_authority=[], rbac={})])
def test_round_trips(p: PolicyDocument) -> None:
    assert PolicyDocument.from_obj(p.to_obj()) == p
    block = p.to_block()
    assert load_policy(block.data, block.cid) == p
    assert PolicyDocument.from_bytes(block.data) == p
    assert p.cid == block.cid == cid_for(block.data, DAG_CBOR)


def test_one_policy_one_cid_whatever_the_input_order() -> None:
    shuffled = policy(
        members=[PEERS[4], PEERS[5], PEERS[0]],
        modules=[MODULES[0], MODULES[2], MODULES[0]],
        capability_authority=[DIDS[0], DIDS[1]],
        rbac={"admin": [DIDS[1]], "approver": [DIDS[0], DIDS[2], DIDS[0]]},
    )
    assert shuffled.cid == OLD.cid


def test_keys_and_lookups() -> None:
    assert OLD.group_key == OLD_KEYS.public_key
    for share in OLD_SHARES:
        assert OLD.share_key(share.index) == public_key(SecretKey(share.value))
        assert verify_share(share, OLD.keys.commitments)
        assert OLD.validator(share.index).peer == PEERS[share.index - 1]
        assert OLD.index_of(PEERS[share.index - 1]) == share.index
    assert OLD.index_of(PEERS[4]) is None  # a member, not a validator
    assert OLD.is_member(PEERS[4]) and not OLD.is_member(PEERS[7])
    assert OLD.allows_module(MODULES[0]) and not OLD.allows_module(MODULES[1])
    assert OLD.role("admin") == (DIDS[1],) and OLD.role("nobody") == ()
    with pytest.raises(KeyError):
        OLD.validator(5)


def test_successor_keeps_what_it_is_not_given() -> None:
    assert (NEW.epoch, NEW.prev, NEW.subnet) == (1, OLD.cid, SUBNET)
    assert NEW.validators[-1] == ValidatorEntry(PEERS[4], 5)
    assert (NEW.modules, NEW.capability_authority, NEW.rbac) == (
        OLD.modules,
        OLD.capability_authority,
        OLD.rbac,
    )
    assert NEW.members == OLD.members
    assert NEW.group_key == NEW_KEYS.public_key != OLD.group_key


# -- refusals ------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def setting(name: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        obj[name] = copy.deepcopy(value)

    return mutate


def validator_field(position: int, name: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        obj["validators"][position][name] = value

    return mutate


def dropping(name: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        del obj[name]

    return mutate


def keys_of(t: int, n: int) -> dict[str, Any]:
    return deal(t, n, b"other")[0].to_dict()


def members_without_validator_1(obj: dict[str, Any]) -> None:
    obj["members"] = [m for m in obj["members"] if m != PEERS[0]]


def swap_validators(obj: dict[str, Any]) -> None:
    obj["validators"][0], obj["validators"][1] = obj["validators"][1], obj["validators"][0]


def extra_commitment(obj: dict[str, Any]) -> None:
    obj["keys"]["commitments"].append(obj["keys"]["commitments"][0])


SORTED_MEMBERS = sorted(PEERS[:6])
SORTED_MODULES = sorted(MODULES, key=lambda c: c.encode())

REFUSALS: dict[str, tuple[Mutation, str]] = {
    "unknown field": (setting("owner", "me"), "policy: unknown field(s) [\"'owner'\"]"),
    "missing field": (dropping("rbac"), "policy: missing field(s) ['rbac']"),
    "version 2": (setting("v", 2), "policy.v: version 2 is not supported"),
    "version as text": (setting("v", "1"), "policy.v: version '1' is not supported"),
    "wrong type": (setting("type", "qflow/flow"), "policy.type: expected one of"),
    "subnet pattern": (setting("subnet", "Bad Name"), "policy.subnet: 'Bad Name' does not match"),
    "subnet not text": (setting("subnet", 7), "policy.subnet: expected a string"),
    "epoch negative": (setting("epoch", -1), "policy.epoch: -1 is outside"),
    "epoch bool": (setting("epoch", True), "policy.epoch: expected an int, got True"),
    "epoch 0 with prev": (setting("prev", OLD.cid), "policy.prev: the first policy"),
    "prev raw link": (
        setting("prev", MODULES[0]),
        "policy.prev: " + MODULES[0].encode() + " must be a dag-cbor link",
    ),
    "prev not a link": (setting("prev", "bafy"), "policy.prev: expected a CID link"),
    "members not a list": (setting("members", {}), "policy.members: expected a list"),
    "members empty": (setting("members", []), "policy.members: a subnet has at least one member"),
    "member not a peer id": (
        setting("members", ["nonsense", *SORTED_MEMBERS]),
        "policy.members[0]: peer id 'nonsense'",
    ),
    "member a did": (setting("members", [DIDS[0]]), "policy.members[0]"),
    "duplicate member": (
        setting("members", [SORTED_MEMBERS[0], *SORTED_MEMBERS]),
        f"policy.members[1]: duplicate peer {SORTED_MEMBERS[0]!r}",
    ),
    "members unsorted": (
        setting("members", SORTED_MEMBERS[::-1]),
        "policy.members[1]: ",
    ),
    "validators empty": (setting("validators", []), "policy.threshold: t = 3 is outside 1..n"),
    "validators not a list": (setting("validators", "x"), "policy.validators: expected a list"),
    "validator unknown field": (
        validator_field(1, "weight", 2),
        "policy.validators[1]: unknown field(s) [\"'weight'\"]",
    ),
    "validator index text": (
        validator_field(1, "index", "2"),
        "policy.validators[1].index: expected an int, got '2'",
    ),
    "validator index 0": (
        validator_field(0, "index", 0),
        "policy.validators[0].index: 0 is outside 1..n (n = 4)",
    ),
    "validator index n+1": (
        validator_field(3, "index", 5),
        "policy.validators[3].index: 5 is outside 1..n (n = 4)",
    ),
    "duplicate index": (
        validator_field(2, "index", 2),
        "policy.validators[2].index: duplicate index 2 (also policy.validators[1])",
    ),
    "duplicate validator": (
        validator_field(2, "peer", PEERS[0]),
        f"policy.validators[2].peer: duplicate validator {PEERS[0]}",
    ),
    "validators out of order": (swap_validators, "policy.validators[0].index: 2 out of order"),
    "validator bad peer": (
        validator_field(0, "peer", "12D3KooWnope"),
        "policy.validators[0].peer: ",
    ),
    "validator not a member": (
        members_without_validator_1,
        f"policy.validators[0].peer: {PEERS[0]} is not a member",
    ),
    "threshold bool": (setting("threshold", True), "policy.threshold: expected an int, got True"),
    "threshold 0": (setting("threshold", 0), "policy.threshold: t = 0 is outside 1..n (n = 4)"),
    "threshold above n": (setting("threshold", 5), "policy.threshold: t = 5 is outside 1..n"),
    "threshold not a majority": (
        setting("threshold", 2),
        "policy.threshold: t = 2 of n = 4 is not a majority",
    ),
    "threshold differs from the key set": (
        setting("keys", keys_of(4, 4)),
        "policy.keys.commitments: 4 commitments make a 4-of-n key, but policy.threshold is 3",
    ),
    "key set for other n": (
        setting("keys", keys_of(3, 5)),
        "policy.keys.n: 5, but there are 4 validators",
    ),
    "key set shape": (setting("keys", {"n": 4}), "policy.keys: expected a map with keys"),
    "extra commitment": (extra_commitment, "policy.keys.commitments: 4 commitments"),
    "commitment bytes": (
        setting("keys", {"n": 4, "commitments": [b"\x00" * 48] * 3}),
        "policy.keys commitments, point 0",
    ),
    "module dag-cbor link": (
        setting("modules", [OLD.cid]),
        "policy.modules[0]: " + OLD.cid.encode() + " is not a raw (bafk…) link",
    ),
    "module not a link": (setting("modules", ["bafk"]), "policy.modules[0]: expected a CID link"),
    "duplicate module": (
        setting("modules", [SORTED_MODULES[0], SORTED_MODULES[0]]),
        "policy.modules[1]: duplicate module",
    ),
    "modules unsorted": (setting("modules", SORTED_MODULES[::-1]), "policy.modules[1]: "),
    "authority not a did": (
        setting("capability_authority", [PEERS[0]]),
        "policy.capability_authority[0]: ",
    ),
    "duplicate authority": (
        setting("capability_authority", [DIDS[0], DIDS[0]]),
        "policy.capability_authority[1]: duplicate did",
    ),
    "rbac not a map": (setting("rbac", []), "policy.rbac: expected a map"),
    "rbac role name": (
        setting("rbac", {"Admin": [DIDS[0]]}),
        "policy.rbac: role 'Admin' does not match",
    ),
    "rbac empty role": (setting("rbac", {"admin": []}), "policy.rbac.admin: 0 holders"),
    "rbac holder not a did": (setting("rbac", {"admin": ["root"]}), "policy.rbac.admin[0]: "),
    "rbac holders unsorted": (
        setting("rbac", {"admin": sorted(DIDS)[::-1]}),
        "policy.rbac.admin[1]: ",
    ),
    "rbac holders not a list": (
        setting("rbac", {"admin": DIDS[0]}),
        "policy.rbac.admin: expected a list",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_from_obj_refuses(name: str) -> None:
    mutate, message = REFUSALS[name]
    obj = OLD.to_obj()
    mutate(obj)
    with pytest.raises(PolicyError) as info:
        PolicyDocument.from_obj(obj)
    assert message in str(info.value)
    assert str(info.value).startswith("policy")


def test_a_later_epoch_needs_prev() -> None:
    obj = NEW.to_obj()
    obj["prev"] = None
    with pytest.raises(
        PolicyError, match=r"policy\.prev: the first policy \(epoch 0\) has no prev"
    ):
        PolicyDocument.from_obj(obj)


def test_not_a_map_and_not_a_block() -> None:
    with pytest.raises(PolicyError, match=r"policy: expected a map"):
        PolicyDocument.from_obj([1])
    with pytest.raises(PolicyError, match=r"policy: not a dag-cbor block"):
        PolicyDocument.from_bytes(b"\xff\x00")
    with pytest.raises(PolicyError, match=r"policy.v"):
        load_policy(encode_dag({**OLD.to_obj(), "v": 2}))


def test_load_policy_checks_the_cid() -> None:
    with pytest.raises(PolicyError, match=f"not {NEW.cid.encode()}"):
        load_policy(OLD.to_block().data, NEW.cid)


def test_create_refuses_a_repeated_validator_and_a_minority_threshold() -> None:
    with pytest.raises(PolicyError, match=r"duplicate validator"):
        policy(validators=[PEERS[0], PEERS[1], PEERS[2], PEERS[0]])
    with pytest.raises(PolicyError, match=r"t = 2 of n = 4 is not a majority"):
        policy(keys=deal(2, 4)[0])
    with pytest.raises(PolicyError, match=r"policy.keys.n: 4, but there are 3 validators"):
        policy(validators=PEERS[:3])
    with pytest.raises(PolicyError, match=r"policy.epoch"):
        policy(epoch=-1)


# -- fault tolerance -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "t", "offline", "conflicting", "byzantine", "best", "best_ts", "warnings"),
    [
        (4, 3, 1, 1, 1, 1, [3], 0),
        (5, 3, 2, 0, 0, 1, [4], 2),
        (5, 4, 1, 2, 1, 1, [4], 0),
        (7, 5, 2, 2, 2, 2, [5], 0),
        (6, 4, 2, 1, 1, 1, [4, 5], 0),
        (1, 1, 0, 0, 0, 0, [1], 2),
        (3, 3, 0, 2, 0, 0, [2, 3], 1),
        (10, 7, 3, 3, 3, 3, [7], 0),
    ],
)
def test_tolerance(
    n: int,
    t: int,
    offline: int,
    conflicting: int,
    byzantine: int,
    best: int,
    best_ts: list[int],
    warnings: int,
) -> None:
    tol = Tolerance(n, t)
    assert (tol.offline, tol.conflicting, tol.byzantine) == (offline, conflicting, byzantine)
    assert (tol.best_byzantine, list(tol.best_thresholds)) == (best, best_ts)
    assert len(tol.warnings()) == warnings
    assert tol.to_obj()["byzantine"] == byzantine
    assert len(tol.summary()) == 4


def test_t_2f_plus_1_alone_is_not_bft_when_n_is_not_3f_plus_1() -> None:
    tol = Tolerance(5, 3)
    assert tol.meets_2f_plus_1 and tol.byzantine == 0 and not tol.optimal
    assert any("2t - n - 1 = 0" in w for w in tol.warnings())
    assert any("n = 5 allows f = 1, with t = 4" in w for w in tol.warnings())


def test_tolerance_refuses_a_minority() -> None:
    for n, t in ((4, 2), (4, 5), (0, 0)):
        with pytest.raises(ValueError, match=r"not a majority"):
            Tolerance(n, t)


def test_keeping_tolerance_never_lowers_f() -> None:
    assert keeping_tolerance(Tolerance(4, 3), 5) == 4
    assert keeping_tolerance(Tolerance(5, 3), 6) == 4
    assert keeping_tolerance(Tolerance(7, 5), 8) == 6
    assert keeping_tolerance(Tolerance(1, 1), 2) == 2
    for n in range(1, 12):
        for t in range(n // 2 + 1, n + 1):
            old = Tolerance(n, t)
            chosen = Tolerance(n + 1, keeping_tolerance(old, n + 1))
            assert chosen.byzantine >= old.byzantine


# -- updates ------------------------------------------------------------------------------

STATEMENT = UpdateStatement.for_policies(OLD, NEW.cid)


def partials(shares: tuple[Share, ...], statement: UpdateStatement = STATEMENT) -> dict[int, bytes]:
    return {share.index: UpdatePartial.sign(statement, share).sig for share in shares}


def test_the_statement_is_the_designed_dag_cbor_map() -> None:
    data = update_statement(SUBNET, OLD.cid, NEW.cid)
    assert decode_dag(data) == {
        "v": 1,
        "type": "qflow/subnet-policy-update",
        "subnet": SUBNET,
        "prev": OLD.cid,
        "next": NEW.cid,
    }
    assert STATEMENT.to_bytes() == data
    assert UpdateStatement.from_bytes(data) == STATEMENT


def test_an_update_signed_by_the_old_quorum_verifies() -> None:
    update = combine_update(OLD, STATEMENT, partials(OLD_SHARES[:3]))
    verify_update(OLD, NEW.cid, NEW, update.sig)
    update.verify(OLD, NEW)
    assert (update.subnet, update.prev, update.next_cid) == (SUBNET, OLD.cid, NEW.cid)
    assert PolicyUpdate.from_bytes(update.to_bytes()) == update
    # Any t of the n old validators give the same certificate.
    assert combine_update(OLD, STATEMENT, partials(OLD_SHARES[1:])).sig == update.sig


def test_partials_round_trip_and_verify_under_their_share_key() -> None:
    partial = UpdatePartial.sign(STATEMENT, OLD_SHARES[1])
    assert UpdatePartial.from_bytes(partial.to_bytes()) == partial
    assert partial.verify(OLD)
    assert not partial.verify(NEW)  # share 2 of another key
    assert not UpdatePartial(STATEMENT, 3, partial.sig).verify(OLD)  # another share's key
    assert not UpdatePartial(STATEMENT, 9, partial.sig).verify(OLD)  # no such validator


def test_t_minus_1_partials_are_refused() -> None:
    with pytest.raises(PolicyUpdateError, match=r"need 3 partial signatures to combine, got 2"):
        combine_update(OLD, STATEMENT, partials(OLD_SHARES[:2]))
    # Combined as if t were 2, they make a signature that does not verify.
    two = {s.index: partial_sign(s, STATEMENT.to_bytes()) for s in OLD_SHARES[:2]}
    forged = combine(two, 2).to_bytes()
    with pytest.raises(PolicyUpdateError, match=r"does not verify under the group key of the old"):
        verify_update(OLD, NEW.cid, NEW, forged)


def test_an_update_signed_by_the_new_key_only_is_refused() -> None:
    # The new validators sign the right statement with their shares of the NEW key.
    by_new = {s.index: partial_sign(s, STATEMENT.to_bytes()) for s in NEW_SHARES[:4]}
    sig = combine(by_new, NEW.threshold).to_bytes()
    with pytest.raises(PolicyUpdateError, match=r"does not verify under the group key of the old"):
        verify_update(OLD, NEW.cid, NEW, sig)
    # As partials of the old policy, their shares 1..4 are all culprits.
    with pytest.raises(PolicyUpdateError, match=r"partial signatures from shares 1, 2, 3, 4"):
        combine_update(OLD, STATEMENT, {i: p.to_bytes() for i, p in by_new.items()})


def test_bad_partials_are_named_and_good_ones_still_certify() -> None:
    good = partials(OLD_SHARES)
    bad = dict(good)
    bad[2] = partials((NEW_SHARES[1],))[2]
    assert combine_update(OLD, STATEMENT, bad).sig == combine_update(OLD, STATEMENT, good).sig
    bad[4] = partials((NEW_SHARES[3],))[4]
    with pytest.raises(PolicyUpdateError, match=r"shares 2, 4 do not verify; 2 valid of the 3"):
        combine_update(OLD, STATEMENT, bad)
    with pytest.raises(PolicyUpdateError, match=r"the policy has validators 1..4"):
        combine_update(OLD, STATEMENT, {**good, 5: good[1]})
    with pytest.raises(PolicyUpdateError, match=r"not " + OLD.cid.encode()):
        combine_update(OLD, UpdateStatement(SUBNET, NEW.cid, OLD.cid), good)


def certified(new: PolicyDocument) -> bytes:
    """The old quorum's real signature for replacing OLD by `new`, whatever `new` is."""
    statement = UpdateStatement(SUBNET, OLD.cid, new.cid)
    return combine_update(OLD, statement, partials(OLD_SHARES[:3], statement)).sig


def test_continuity_is_checked_even_with_a_valid_signature() -> None:
    wrong_epoch = policy(validators=PEERS[:5], keys=NEW_KEYS, epoch=2, prev=OLD.cid)
    wrong_prev = policy(validators=PEERS[:5], keys=NEW_KEYS, epoch=1, prev=NEW.cid)
    wrong_subnet = policy(
        subnet="other", validators=PEERS[:5], keys=NEW_KEYS, epoch=1, prev=OLD.cid
    )
    cases = [
        (wrong_epoch, "policy.epoch: the new policy has epoch 2; replacing epoch 0 needs epoch 1"),
        (wrong_prev, f"policy.prev: the new policy replaces {NEW.cid.encode()}, not the old"),
        (wrong_subnet, "policy.subnet: the new policy is for subnet 'other'"),
    ]
    for new, message in cases:
        with pytest.raises(PolicyUpdateError, match=message.replace(".", r"\.")):
            verify_update(OLD, new.cid, new, certified(new))


def test_the_cid_must_name_the_new_policy() -> None:
    sig = certified(NEW)
    with pytest.raises(PolicyUpdateError, match=f"the new policy is {NEW.cid.encode()}, not"):
        verify_update(OLD, OLD.cid, NEW, sig)
    with pytest.raises(PolicyUpdateError, match=r"update signature: expected 96 bytes"):
        verify_update(OLD, NEW.cid, NEW, sig[:-1])
    with pytest.raises(PolicyUpdateError, match=r"update signature"):
        verify_update(OLD, NEW.cid, NEW, b"\x00" * 96)
    update = PolicyUpdate(SUBNET, NEW.cid, NEW.cid, sig)
    with pytest.raises(PolicyUpdateError, match=r"update certificate: it replaces"):
        update.verify(OLD, NEW)


def test_update_files_are_parsed_strictly() -> None:
    sig = certified(NEW)
    cert = PolicyUpdate(SUBNET, OLD.cid, NEW.cid, sig).to_bytes()
    partial = UpdatePartial.sign(STATEMENT, OLD_SHARES[0]).to_bytes()
    statement = STATEMENT.to_bytes()
    with pytest.raises(PolicyError, match=r"update statement: unknown field\(s\)"):
        UpdateStatement.from_bytes(cert)
    with pytest.raises(PolicyError, match=r"update statement.type: expected one of"):
        UpdateStatement.from_bytes(encode_dag({**decode_dag(statement), "type": "x"}))
    with pytest.raises(PolicyError, match=r"update certificate: missing field"):
        PolicyUpdate.from_bytes(statement)
    with pytest.raises(PolicyError, match=r"partial: unknown field\(s\) .*'extra'"):
        UpdatePartial.from_bytes(encode_dag({**decode_dag(partial), "extra": 1}))
    with pytest.raises(PolicyError, match=r"partial.index: 0 is outside"):
        UpdatePartial.from_bytes(encode_dag({**decode_dag(partial), "index": 0}))
    with pytest.raises(PolicyError, match=r"update certificate.sig: expected 96 bytes"):
        PolicyUpdate.from_bytes(encode_dag({**decode_dag(cert), "sig": b"x"}))
    with pytest.raises(PolicyError, match=r"update statement.next: a policy cannot replace itself"):
        UpdateStatement.from_bytes(update_statement(SUBNET, OLD.cid, OLD.cid))
    with pytest.raises(PolicyError, match=r"update statement.prev: .* must be a dag-cbor link"):
        UpdateStatement.from_bytes(encode_dag({**decode_dag(statement), "prev": MODULES[0]}))
    with pytest.raises(PolicyError, match=r"update statement.v: version 2"):
        UpdateStatement.from_bytes(encode_dag({**decode_dag(statement), "v": 2}))
    with pytest.raises(PolicyError, match=r"update statement: not a dag-cbor block"):
        UpdateStatement.from_bytes(b"\x00" * 5000)
