"""Distributed execution on a 3-node cluster of real processes: approvals, pause and
resume, abort - signed controls from actors, checked by every node, recorded once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.cluster import ROOT, Cluster, check_ledger, local_cluster, qflow
from qflow_node.codec import parse_cid
from qflow_node.identity import SigningKey
from qflow_node.identity.store import create_actor_key
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore

pytestmark = pytest.mark.slow

FLOWS = ROOT / "examples" / "flows"
TIMEOUT = 60.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with local_cluster(tmp_path, 3) as running:
        yield running


def finished(cluster: Cluster, exec_id: str) -> str:
    """The status every node logs when the execution ends (they must agree)."""
    statuses = set()
    for node in cluster.running():
        assert node.process is not None
        event = node.process.wait_for("exec.finished", timeout=TIMEOUT, exec=exec_id)
        statuses.add(event["status"])
    assert len(statuses) == 1, statuses
    return str(statuses.pop())


def kinds(cluster: Cluster, exec_id: str) -> list[str]:
    check = check_ledger(cluster.nodes[0].repo, exec_id)
    assert check.verified
    paths = RepoPaths(cluster.nodes[0].repo)
    ledger = LedgerStore(FileBlockStore(paths.blocks), paths)
    return [record.kind for _, record in ledger.replay(parse_cid(exec_id))]


def test_approvals_from_the_named_approvers_complete_the_step_and_strangers_are_refused(
    cluster: Cluster,
) -> None:
    n0, n1, n2 = cluster.nodes
    for node, seed in ((n1, 0xB1), (n2, 0xB2)):
        create_actor_key(RepoPaths(node.repo), "approver", SigningKey(bytes([seed]) * 32))
    create_actor_key(RepoPaths(n1.repo), "stranger")
    exec_id = cluster.submit(n0, FLOWS / "approval.yaml", {})
    assert n0.process is not None
    n0.process.wait_for("exec.opened", timeout=TIMEOUT, exec=exec_id)

    refused = qflow("approve", exec_id, "sign_off", "--repo", str(n1.repo), "--as", "stranger")
    assert refused.returncode == 1
    assert "is not one of its approvers nor a subnet admin" in refused.stderr

    # Gossip carries each approval to every node; any node records it.
    for node in (n1, n2):
        done = qflow("approve", exec_id, "sign_off", "--repo", str(node.repo), "--as", "approver")
        assert done.returncode == 0, done.stderr
    assert finished(cluster, exec_id) == "completed"
    assert kinds(cluster, exec_id).count("approval.granted") == 2


def test_the_submitter_pauses_resumes_and_aborts(cluster: Cluster) -> None:
    # An approval step waits until its approvers act, so the execution is still running
    # whenever a control lands, however slowly the CLI processes start on a busy machine.
    n0, n1, n2 = cluster.nodes
    assert n0.process is not None
    for node, seed in ((n1, 0xB1), (n2, 0xB2)):
        create_actor_key(RepoPaths(node.repo), "approver", SigningKey(bytes([seed]) * 32))
    waiting = FLOWS / "approval.yaml"
    exec_id = cluster.submit(n0, waiting, {})
    n0.process.wait_for("exec.opened", timeout=TIMEOUT, exec=exec_id)
    for action in ("pause", "resume"):  # the submitter is n0's node key: allowed
        done = qflow(action, exec_id, "--repo", str(n0.repo))
        assert done.returncode == 0, done.stderr
        accepted = n0.process.wait_for(
            "control.accepted", timeout=TIMEOUT, exec=exec_id, action=action
        )
        recorded_by(cluster, exec_id, accepted["slot"])  # in the ledger before the next
    for node in (n1, n2):
        done = qflow("approve", exec_id, "sign_off", "--repo", str(node.repo), "--as", "approver")
        assert done.returncode == 0, done.stderr
    assert finished(cluster, exec_id) == "completed"
    recorded = kinds(cluster, exec_id)
    assert recorded.index("exec.paused") < recorded.index("exec.resumed")

    other = cluster.submit(n0, waiting, {})
    n0.process.wait_for("exec.opened", timeout=TIMEOUT, exec=other)
    stranger = qflow("abort", other, "--repo", str(n1.repo))  # not the submitter
    assert stranger.returncode == 1
    assert "only the submitter or a subnet admin" in stranger.stderr
    assert qflow("abort", other, "--repo", str(n0.repo)).returncode == 0
    assert finished(cluster, other) == "aborted"
    assert "exec.aborted" in kinds(cluster, other)


def recorded_by(cluster: Cluster, exec_id: str, slot: str) -> None:
    """Until some node has written the record of `slot`."""

    def written(_process: object, event: dict[str, object]) -> bool:
        return (
            event.get("event") == "slot.done"
            and event.get("exec") == exec_id
            and event.get("slot") == slot
        )

    cluster.processes.wait_any(written, TIMEOUT)


def test_the_last_steps_writer_ends_the_execution_in_the_same_slot(cluster: Cluster) -> None:
    """`exec.completed` is written on top of the last step's record by the node that
    ran it, announced with it: nobody claims a `$finish` slot for it."""
    n0 = cluster.nodes[0]
    inputs = {"sensor": "S1", "readings": [1, 2, 4]}
    exec_id = cluster.submit(n0, FLOWS / "run.yaml", inputs)
    assert finished(cluster, exec_id) == "completed"
    assert check_ledger(n0.repo, exec_id).verified
    paths = RepoPaths(n0.repo)
    ledger = LedgerStore(FileBlockStore(paths.blocks), paths)
    (end,) = ledger.heads(parse_cid(exec_id))
    ended = ledger.record(end)
    assert ended.kind == "exec.completed"
    (under,) = ended.prev
    last = ledger.record(under)
    assert (last.kind, last.step) == ("step.completed", "name")
    assert last.node == ended.node
    claimed = [
        event.get("slot")
        for node in cluster.nodes
        if node.process is not None
        for event in node.process.events
        if event.get("event") == "slot.claimed" and event.get("exec") == exec_id
    ]
    assert "$finish" not in claimed and "name" in claimed
    ended_by = [
        event.get("slot")
        for node in cluster.nodes
        if node.process is not None
        for event in node.process.events
        if event.get("event") == "slot.done" and event.get("exec") == exec_id and event["ended"]
    ]
    assert ended_by == ["name"]
