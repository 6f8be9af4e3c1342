"""`qflow ledger verify|show|heads` through the real `qflow` entry point (click CliRunner)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qflow_node import appendlog
from qflow_node.cli.main import qflow
from qflow_node.codec import CID, DAG_CBOR, cid_for, raw_block
from qflow_node.codec.dagjson import to_dag_json
from qflow_node.core.ledger.testing import KEYS, PAYLOAD, SUBMISSION, sign_obj
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore

EXEC = SUBMISSION.cid


@dataclass
class Repo:
    root: Path
    paths: RepoPaths
    store: FileBlockStore
    ledger: LedgerStore
    records: list[CID]

    def damage(self, cid: CID, change: Callable[[bytes], bytes]) -> None:
        """Store wrong bytes for the block, in a valid pack entry (damage no CRC catches)
        in a pack named after the others, so that a store opened afterwards reads them."""
        data = change(self.store.get(cid))
        key = cid.cid_bytes
        pack = self.paths.blocks / "packs" / f"{time.time_ns():020d}-1.pack"
        pack.write_bytes(appendlog.MAGIC + appendlog.frame(bytes((1, len(key))) + key + data))


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A repo made by hand (no `qflow init`): a block store and a 3-record ledger."""
    paths = RepoPaths(tmp_path / "repo")
    paths.blocks.mkdir(parents=True)
    store = FileBlockStore(paths.blocks)
    store.put_many([SUBMISSION, PAYLOAD])
    ledger = LedgerStore(store, paths)
    records = [ledger.append(EXEC, "exec.started", payload=PAYLOAD.cid, key=KEYS[0], ts=1).cid]
    for i in range(2):
        block = ledger.append(
            EXEC, "step.completed", payload=PAYLOAD.cid, key=KEYS[1], ts=2 + i, step=f"s{i}"
        )
        records.append(block.cid)
    return Repo(paths.root, paths, store, ledger, records)


def run(repo: Repo | Path, *args: str, input: str | None = None) -> Result:
    root = repo.root if isinstance(repo, Repo) else repo
    command, *rest = args
    return CliRunner().invoke(qflow, ["ledger", command, "--repo", str(root), *rest], input=input)


def assert_error(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr


# -- verify ------------------------------------------------------------------------------


def test_verify_from_a_head(repo: Repo) -> None:
    head = repo.records[-1]
    result = run(repo, "verify", head.encode())
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok: 3 records of execution {EXEC.encode()}\nhead  {head.encode()}\n"


def test_verify_the_local_heads_of_an_execution_as_json(repo: Repo) -> None:
    result = run(repo, "verify", "--exec", EXEC.encode(), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": True,
        "exec": EXEC.encode(),
        "records": 3,
        "heads": [repo.records[-1].encode()],
        "failure": None,
    }


def test_verify_with_parallel_signature_checks(repo: Repo) -> None:
    result = run(repo, "verify", "--jobs", "2", repo.records[-1].encode())
    assert result.exit_code == 0, result.output


def test_verify_reports_a_flipped_bit_on_disk(repo: Repo) -> None:
    target = repo.records[1]
    repo.damage(target, lambda data: data[:30] + bytes([data[30] ^ 0x10]) + data[31:])
    result = run(repo, "verify", repo.records[-1].encode())
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"invalid: hash_mismatch at {target.encode()}"
    assert f"  linked from  {repo.records[2].encode()}" in lines
    assert "  depth  1 (links from the nearest head)" in lines


def test_verify_json_report_of_a_forged_head(repo: Repo) -> None:
    obj = repo.ledger.record(repo.records[-1]).to_obj()
    obj.update(prev=[repo.records[-1]], clock={**obj["clock"], KEYS[1].peer_id: 3}, step="x")
    forged = sign_obj(obj, KEYS[2])
    repo.store.put(forged)
    result = run(repo, "verify", "--json", forged.cid.encode())
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["records"] == 4
    assert report["failure"] == {
        "reason": "bad_signature",
        "cid": forged.cid.encode(),
        "message": f"signature by {KEYS[1].peer_id}: Ed25519 signature does not verify",
        "depth": 0,
        "index": 3,
        "linked_from": None,
    }
    assert run(repo, "verify", "--no-signatures", forged.cid.encode()).exit_code == 0


def test_verify_chain_only_checks_hashes_but_not_clocks(repo: Repo) -> None:
    obj = repo.ledger.record(repo.records[-1]).to_obj()
    obj.update(prev=[repo.records[-1]], clock={KEYS[1].peer_id: 99}, step="x")
    forged = sign_obj(obj, KEYS[1])
    repo.store.put(forged)
    ok = run(repo, "verify", "--chain-only", forged.cid.encode())
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith(f"ok: 4 records of execution {EXEC.encode()}\n")
    assert run(repo, "verify", forged.cid.encode()).exit_code == 1
    repo.damage(repo.records[0], lambda data: data[:-1])
    broken = run(repo, "verify", "--chain-only", forged.cid.encode())
    assert broken.exit_code == 1
    assert broken.stdout.splitlines()[0].startswith("invalid: hash_mismatch at ")


def test_verify_resolves_payloads_unless_told_not_to(repo: Repo) -> None:
    repo.store.delete(PAYLOAD.cid)
    head = repo.records[-1].encode()
    result = run(repo, "verify", head)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"invalid: missing_block at {PAYLOAD.cid.encode()}\n")
    assert run(repo, "verify", "--no-links", head).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give one or more HEAD-CIDs"),
        (("not-a-cid",), "cannot parse CID"),
        (("--exec", cid_for(b"unknown", DAG_CBOR).encode()), "no local records of execution"),
    ],
)
def test_verify_usage_errors(repo: Repo, args: tuple[str, ...], message: str) -> None:
    assert_error(run(repo, "verify", *args), 2, message)


def test_verify_without_a_repo(tmp_path: Path) -> None:
    head = cid_for(b"x", DAG_CBOR).encode()
    assert_error(run(tmp_path / "nowhere", "verify", head), 2, "no block store")


# -- show --------------------------------------------------------------------------------


def test_show_prints_the_record_as_dag_json_that_round_trips(repo: Repo) -> None:
    head = repo.records[-1]
    result = run(repo, "show", head.encode())
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    record = repo.ledger.record(head)
    assert shown == to_dag_json(record.to_obj())
    assert shown["prev"] == [{"/": repo.records[1].encode()}]
    assert set(shown["sig"]["/"]) == {"bytes"}
    put = CliRunner().invoke(
        qflow,
        ["block", "put", "--repo", str(repo.root), "--codec", "dag-cbor", "-"],
        input=result.stdout,
    )
    assert put.exit_code == 0, put.output
    assert put.stdout.strip() == head.encode()


def test_show_ancestors_in_replay_order(repo: Repo) -> None:
    result = run(repo, "show", "--ancestors", repo.records[-1].encode())
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [item["cid"] for item in shown] == [cid.encode() for cid in repo.records]
    assert [item["record"]["kind"] for item in shown] == ["exec.started"] + ["step.completed"] * 2


def test_show_ancestors_of_a_broken_ledger(repo: Repo) -> None:
    repo.store.delete(repo.records[0])
    result = run(repo, "show", "--ancestors", repo.records[-1].encode())
    assert result.exit_code == 1
    assert result.stdout.startswith(f"invalid: missing_block at {repo.records[0].encode()}")


def test_show_refuses_what_is_not_a_record(repo: Repo) -> None:
    missing = cid_for(b"absent", DAG_CBOR)
    assert_error(run(repo, "show", missing.encode()), 1, "is not in the block store")
    raw = raw_block(b"opaque")
    repo.store.put(raw)
    assert_error(run(repo, "show", raw.cid.encode()), 1, "wrong_codec")
    assert_error(run(repo, "show", SUBMISSION.cid.encode()), 1, "bad_field")
    assert_error(run(repo, "show", "bafy"), 2, "cannot parse CID")


# -- heads -------------------------------------------------------------------------------


def test_heads(repo: Repo) -> None:
    line = f"{EXEC.encode()} {repo.records[-1].encode()}\n"
    listed = run(repo, "heads")
    assert listed.exit_code == 0 and listed.stdout == line
    one = run(repo, "heads", EXEC.encode())
    assert one.exit_code == 0 and one.stdout == line
    unknown = cid_for(b"unknown", DAG_CBOR).encode()
    assert_error(run(repo, "heads", unknown), 1, "no local records")
