"""`qflow subnet` through the real command group: the dealer's setup, every validator
opening its share with its node key, threshold signatures under the group key, and an
update signed by the current quorum; plus the refusals."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from jsonschema import Draft202012Validator

from qflow_node.cli.init_cmd import init_repo
from qflow_node.cli.main import qflow
from qflow_node.codec import DAG_CBOR, RAW, cid_for, decode_dag
from qflow_node.core.policy import (
    PolicyDocument,
    PolicyUpdate,
    UpdatePartial,
    UpdateStatement,
    load_policy,
    update_statement,
    verify_update,
)
from qflow_node.crypto import Share, combine_verified, partial_sign, verify
from qflow_node.identity import SigningKey
from qflow_node.identity.sealed import SealedShare, open_share
from qflow_node.identity.store import create_actor_key
from qflow_node.repo import RepoPaths

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "subnet-policy.v1.json"
SCHEMA = Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
MODULE = cid_for(b"\0asm critical step", RAW).encode()


def run(*args: str) -> Result:
    return CliRunner().invoke(qflow, ["subnet", *args], catch_exceptions=False)


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def assert_error(result: Result, code: int, fragment: str) -> None:
    """Exit `code`, one `error: …` line on stderr naming the problem, nothing on stdout."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0], lines[0]


@dataclass
class Node:
    repo: Path
    key: SigningKey

    @property
    def peer(self) -> str:
        return self.key.peer_id


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> list[Node]:
    root = tmp_path_factory.mktemp("nodes")
    return [Node(root / f"n{i}", init_repo(root / f"n{i}")) for i in range(6)]


@pytest.fixture(scope="module")
def dealer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The dealer's repo (a block store for --put) and an admin actor's did."""
    repo = tmp_path_factory.mktemp("dealer") / "repo"
    init_repo(repo)
    return repo, create_actor_key(RepoPaths(repo), "admin").did


def create(nodes: list[Node], out: Path, *extra: str, t: int = 3, n: int = 4) -> Result:
    validators = [arg for node in nodes[:n] for arg in ("--validator", node.peer)]
    return run(
        "create", "--subnet", "dao", *validators, "--threshold", str(t), "--out", str(out), *extra
    )


def share_file(out: Path, node: Node) -> Path:
    return out / f"{node.peer}.share"


def open_as(node: Node, out: Path, policy: PolicyDocument) -> Share:
    sealed = SealedShare.from_bytes(share_file(out, node).read_bytes())
    index = policy.index_of(node.peer)
    raw = open_share(sealed, node.key, subnet=policy.subnet, policy=policy.cid, index=index)
    return Share.from_bytes(sealed.index, raw)


# -- the whole flow ----------------------------------------------------------------------------


def test_create_show_open_sign_add_validator_and_update(
    nodes: list[Node], dealer: tuple[Path, str], tmp_path: Path
) -> None:
    repo, admin = dealer
    out0 = tmp_path / "epoch0"
    created = create(
        nodes,
        out0,
        "--member", nodes[4].peer,
        "--module", MODULE,
        "--authority", admin,
        "--role", f"approver={admin}",
        "--repo", str(repo),
        "--put",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert created.stderr == ""  # 3 of 4: nothing to warn about
    data = (out0 / "policy.cbor").read_bytes()
    cid = cid_for(data, DAG_CBOR)
    lines = created.stdout.splitlines()
    assert lines[0] == f"policy: {cid.encode()}"
    assert "bft: f = 1 Byzantine validator(s) tolerated for both" in created.stdout
    old = load_policy(data, cid)
    assert (old.subnet, old.epoch, old.threshold, old.size) == ("dao", 0, 3, 4)
    assert [v.peer for v in old.validators] == [node.peer for node in nodes[:4]]
    assert old.is_member(nodes[4].peer) and old.allows_module(cid_for(b"\0asm critical step", RAW))
    assert old.capability_authority == (admin,) and old.role("approver") == (admin,)
    # Only the policy and the sealed shares (0600) are written: no secret, no share in clear.
    files = sorted(p.name for p in out0.iterdir())
    assert files == sorted(["policy.cbor", *(f"{node.peer}.share" for node in nodes[:4])])
    for node in nodes[:4]:
        assert stat.S_IMODE(share_file(out0, node).stat().st_mode) == 0o600

    # show: human, JSON (schema-valid), and by CID from the repo's store (--put).
    shown = ok("show", str(out0 / "policy.cbor")).stdout
    assert old.group_key.to_bytes().hex() in shown
    for v in old.validators:
        assert old.share_key(v.index).to_bytes().hex() in shown
    assert "threshold: t = 3 of n = 4" in shown
    as_json = json.loads(ok("show", "--json", str(out0 / "policy.cbor")).stdout)
    assert as_json["cid"] == cid.encode()
    SCHEMA.validate(as_json["policy"])
    assert as_json["group_key"] == old.group_key.to_bytes().hex()
    assert as_json["tolerance"]["byzantine"] == 1
    assert [v["share_key"] for v in as_json["validators"]] == [
        old.share_key(i).to_bytes().hex() for i in range(1, 5)
    ]
    assert ok("show", "--repo", str(repo), cid.encode()).stdout == shown

    # Each validator opens its share with its own node key, and checks it.
    shares = [open_as(node, out0, old) for node in nodes[:4]]
    assert [s.index for s in shares] == [1, 2, 3, 4]
    for node in nodes[:4]:
        checked = ok("check-share", "--repo", str(node.repo),
                     "--share", str(share_file(out0, node)),
                     "--policy", str(out0 / "policy.cbor"))  # fmt: skip
        assert f"share {old.index_of(node.peer)} of {cid.encode()} is valid" in checked.stdout
    for share in shares:
        assert share.to_bytes() not in b"".join(p.read_bytes() for p in out0.iterdir())

    # Any t shares threshold-sign for the group key.
    message = b"commit slot 7"
    partials = {s.index: partial_sign(s, message) for s in shares[1:]}
    combined = combine_verified(old.keys, message, partials)
    assert combined.culprits == ()
    assert verify(old.group_key, message, combined.signature)

    # add-validator: a fresh dealing for 5, and the statement the current quorum signs.
    out1 = tmp_path / "epoch1"
    added = ok("add-validator", "--policy", str(out0 / "policy.cbor"),
               "--validator", nodes[4].peer, "--out", str(out1))  # fmt: skip
    new_data = (out1 / "policy.cbor").read_bytes()
    new = load_policy(new_data)
    assert (new.epoch, new.prev, new.size, new.threshold) == (1, cid, 5, 4)
    assert "threshold: t = 4 (the smallest keeping f = 1)" in added.stdout
    assert new.group_key != old.group_key
    assert (out1 / "update.statement").read_bytes() == update_statement("dao", cid, new.cid)
    assert open_as(nodes[4], out1, new).index == 5

    # Two partials are not enough; three of the current validators certify the update.
    signers = [nodes[0], nodes[2], nodes[3]]
    partial_files = []
    for node in signers:
        signed = ok(
            "sign-update", "--repo", str(node.repo),
            "--statement", str(out1 / "update.statement"),
            "--share", str(share_file(out0, node)),
            "--policy", str(out0 / "policy.cbor"),
            "--next", str(out1 / "policy.cbor"),
        )  # fmt: skip
        partial_files.append(out1 / f"{node.peer}.partial")
        assert str(partial_files[-1]) in signed.stdout
    apply = ["apply-update", "--policy", str(out0 / "policy.cbor"),
             "--next", str(out1 / "policy.cbor")]  # fmt: skip
    too_few = run(*apply, "--partial", str(partial_files[0]), "--partial", str(partial_files[1]))
    assert_error(too_few, 1, "need 3 partial signatures to combine, got 2")
    assert not (out1 / "update.cert").exists()
    applied = ok(*apply, *(arg for p in partial_files for arg in ("--partial", str(p))))
    assert f"certified: {cid.encode()} -> {new.cid.encode()} (epoch 1)" in applied.stdout
    cert = PolicyUpdate.from_bytes((out1 / "update.cert").read_bytes())
    verify_update(old, new.cid, new, cert.sig)
    verified = ok("verify-update", "--policy", str(out0 / "policy.cbor"),
                  "--next", str(out1 / "policy.cbor"),
                  "--cert", str(out1 / "update.cert"))  # fmt: skip
    assert verified.stdout.startswith("valid: ")

    # The new validators alone cannot certify it: their shares are of the new key.
    statement = UpdateStatement.for_policies(old, new.cid)
    forged = []
    for node in nodes[:4]:
        target = tmp_path / f"{node.peer}.forged"
        target.write_bytes(UpdatePartial.sign(statement, open_as(node, out1, new)).to_bytes())
        forged.append(target)
    refused = run(*apply, "--out", str(tmp_path / "forged.cert"),
                  *(a for p in forged for a in ("--partial", str(p))))  # fmt: skip
    assert_error(refused, 1, "partial signatures from shares 1, 2, 3, 4 do not verify")
    assert not (tmp_path / "forged.cert").exists()


def test_sign_update_refuses_a_share_of_another_policy(nodes: list[Node], tmp_path: Path) -> None:
    out0, out1 = tmp_path / "a", tmp_path / "b"
    ok_create = create(nodes, out0)
    assert ok_create.exit_code == 0
    ok("add-validator", "--policy", str(out0 / "policy.cbor"), "--validator", nodes[4].peer,
       "--out", str(out1))  # fmt: skip
    result = run("sign-update", "--repo", str(nodes[0].repo),
                 "--statement", str(out1 / "update.statement"),
                 "--share", str(share_file(out1, nodes[0])))  # fmt: skip
    assert_error(result, 1, "the share was sealed for another context")


def test_three_of_five_warns_about_byzantine_validators(nodes: list[Node], tmp_path: Path) -> None:
    result = create(nodes, tmp_path / "out", t=3, n=5)
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert warnings and all(line.startswith("warning: ") for line in warnings)
    assert "2t - n - 1 = 0" in result.stderr
    assert "n = 5 allows f = 1, with t = 4" in result.stderr


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "t", "message"),
    [
        ((), 2, "--threshold 2: with 4 validator(s) t must be a majority, 3..4"),
        ((), 5, "--threshold 5: with 4 validator(s) t must be a majority"),
        (("--member", "12D3KooWnope"), 3, "--member '12D3KooWnope': "),
        (("--authority", "did:web:example.com"), 3, "--authority 'did:web:example.com': "),
        (("--role", "approver"), 3, "--role 'approver': expected ROLE=DID"),
        (("--module", "bafy-nope"), 3, "--module 'bafy-nope': "),
    ],
)
def test_create_refuses_bad_input(
    nodes: list[Node], tmp_path: Path, extra: tuple[str, ...], t: int, message: str
) -> None:
    assert_error(create(nodes, tmp_path / "out", *extra, t=t), 2, message)
    assert not (tmp_path / "out").exists()


def test_create_refuses_policy_level_problems(nodes: list[Node], tmp_path: Path) -> None:
    assert_error(
        create(nodes, tmp_path / "out", "--module", cid_for(b"x", DAG_CBOR).encode()),
        2,
        "policy.modules[0]: ",
    )
    twice = run("create", "--subnet", "dao", "--validator", nodes[0].peer, "--validator",
                nodes[0].peer, "--threshold", "2", "--out", str(tmp_path / "o"))  # fmt: skip
    assert_error(twice, 2, f"--validator {nodes[0].peer} given twice")
    bad_subnet = run("create", "--subnet", "Bad Name", "--validator", nodes[0].peer,
                     "--threshold", "1", "--out", str(tmp_path / "p"))  # fmt: skip
    assert_error(bad_subnet, 2, "policy.subnet: ")
    assert not (tmp_path / "p").exists()  # nothing written for a refused policy
    no_store = create(nodes, tmp_path / "r", "--put", "--repo", str(tmp_path / "norepo"))
    assert_error(no_store, 2, "no block store at")
    assert not (tmp_path / "r").exists()
    bad_peer = run("create", "--subnet", "dao", "--validator", "did:key:z6Mk",
                   "--threshold", "1", "--out", str(tmp_path / "q"))  # fmt: skip
    assert_error(bad_peer, 2, "--validator 'did:key:z6Mk': ")


def test_create_never_overwrites_a_dealing(nodes: list[Node], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert create(nodes, out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert_error(create(nodes, out), 2, "already exists; refusing to overwrite a dealing")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "file").write_text("x")
    not_a_dir = create(nodes, tmp_path / "file")
    assert not_a_dir.exit_code == 2 and "is a file" in not_a_dir.stderr


def test_show_refuses_bad_sources(tmp_path: Path, dealer: tuple[Path, str]) -> None:
    repo, _ = dealer
    assert_error(
        run("show", str(tmp_path / "missing.cbor")), 2, "no such policy file, and not a CID"
    )
    garbage = tmp_path / "garbage.cbor"
    garbage.write_bytes(b"\xa1\x61x\x01")
    assert_error(run("show", str(garbage)), 2, "policy: missing field(s)")
    garbage.write_bytes(b"\xff\xff")
    assert_error(run("show", str(garbage)), 2, "policy: not a dag-cbor block")
    unknown = cid_for(b"not stored", DAG_CBOR).encode()
    assert_error(run("show", "--repo", str(repo), unknown), 1, unknown)
    assert_error(run("show", "--repo", str(tmp_path / "norepo"), unknown), 2, "no block store")


def test_check_share_refuses_another_node_and_a_foreign_policy(
    nodes: list[Node], tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert create(nodes, a).exit_code == 0
    assert create(nodes, b).exit_code == 0
    policy_a = str(a / "policy.cbor")
    wrong_node = run("check-share", "--repo", str(nodes[1].repo),
                     "--share", str(share_file(a, nodes[0])), "--policy", policy_a)  # fmt: skip
    assert_error(wrong_node, 1, f"sealed to peer {nodes[0].peer}; this node is {nodes[1].peer}")
    other_dealing = run("check-share", "--repo", str(nodes[0].repo),
                        "--share", str(share_file(b, nodes[0])), "--policy", policy_a)  # fmt: skip
    assert_error(other_dealing, 1, "the share was sealed for another context")
    no_repo = run("check-share", "--repo", str(tmp_path / "none"),
                  "--share", str(share_file(a, nodes[0])), "--policy", policy_a)  # fmt: skip
    assert_error(no_repo, 2, "does not exist")
    not_a_share = run("check-share", "--repo", str(nodes[0].repo),
                      "--share", policy_a, "--policy", policy_a)  # fmt: skip
    assert_error(not_a_share, 2, "share file: ")


def test_add_validator_and_apply_update_refusals(nodes: list[Node], tmp_path: Path) -> None:
    out0, out1 = tmp_path / "a", tmp_path / "b"
    assert create(nodes, out0).exit_code == 0
    policy0 = str(out0 / "policy.cbor")
    again = run("add-validator", "--policy", policy0, "--validator", nodes[1].peer,
                "--out", str(out1))  # fmt: skip
    assert_error(again, 2, f"--validator {nodes[1].peer} is already a validator")
    minority = run("add-validator", "--policy", policy0, "--validator", nodes[4].peer,
                   "--threshold", "2", "--out", str(out1))  # fmt: skip
    assert_error(minority, 2, "--threshold 2: with 5 validator(s)")
    ok("add-validator", "--policy", policy0, "--validator", nodes[4].peer,
       "--validator", nodes[5].peer, "--threshold", "5", "--out", str(out1))  # fmt: skip
    new = load_policy((out1 / "policy.cbor").read_bytes())
    assert (new.size, new.threshold) == (6, 5)
    # A partial of another update, and a partial file that is not one.
    statement = UpdateStatement.from_bytes((out1 / "update.statement").read_bytes())
    other = tmp_path / "other"
    assert create(nodes, other).exit_code == 0
    stray = tmp_path / "stray.partial"
    ok("sign-update", "--repo", str(nodes[0].repo), "--statement", str(out1 / "update.statement"),
       "--share", str(share_file(out0, nodes[0])), "--out", str(stray))  # fmt: skip
    wrong_update = run("apply-update", "--policy", str(other / "policy.cbor"),
                       "--next", str(out1 / "policy.cbor"), "--partial", str(stray))  # fmt: skip
    assert_error(wrong_update, 2, f"signs another update ({statement.next.encode()})")
    not_partial = run("apply-update", "--policy", policy0, "--next", str(out1 / "policy.cbor"),
                      "--partial", str(out1 / "update.statement"))  # fmt: skip
    assert_error(not_partial, 2, "partial: missing field(s)")
    # A certificate for another pair of policies does not verify.
    not_cert = run("verify-update", "--policy", policy0, "--next", str(out1 / "policy.cbor"),
                   "--cert", str(stray))  # fmt: skip
    assert_error(not_cert, 2, "update certificate: ")


def test_the_share_file_is_the_documented_dag_cbor(nodes: list[Node], tmp_path: Path) -> None:
    assert create(nodes, tmp_path).exit_code == 0
    policy = load_policy((tmp_path / "policy.cbor").read_bytes())
    header = decode_dag(share_file(tmp_path, nodes[2]).read_bytes())
    assert {k: v for k, v in header.items() if k != "box"} == {
        "v": 1,
        "type": "qflow/sealed-share",
        "peer": nodes[2].peer,
        "subnet": "dao",
        "policy": policy.cid,
        "index": 3,
    }
