"""A critical step end to end on five real node processes (docs/consensus.md): the
subnet policy is dealt with `qflow subnet create` (3 of 5), `examples/flows/payment.yaml`
commits its `pay` step with a quorum certificate that verifies under the group key;
with three validators killed, `pay` cannot commit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from chaos.cluster import (
    ROOT,
    Cluster,
    LedgerCheck,
    Node,
    converged_ledgers,
    local_cluster,
    qflow,
)
from qflow_node.codec import parse_cid, raw_block
from qflow_node.core.critical import Certificate, verify_certificate
from qflow_node.core.policy import load_policy
from qflow_node.core.scheduling import Slot
from qflow_node.identity.store import load_node_key
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.store import FileBlockStore

pytestmark = pytest.mark.slow

FLOW = ROOT / "examples" / "flows" / "payment.yaml"
SPIN = ROOT / "examples" / "steps" / "spin.wasm"
TIMEOUT = 60.0


def deal(nodes: Sequence[Node], out: Path) -> None:
    """The dealer: `qflow subnet create` for the five nodes, then each node's
    `[critical]` config names the policy and its sealed share."""
    peers = [load_node_key(RepoPaths(node.repo)).peer_id for node in nodes]
    module = raw_block(SPIN.read_bytes()).cid.encode()
    args = ["subnet", "create", "--subnet", "default", "--threshold", "3", "--module", module]
    args += [arg for peer in peers for arg in ("--validator", peer)]
    done = qflow(*args, "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    for node, peer in zip(nodes, peers, strict=True):
        with (node.repo / "config.toml").open("a", encoding="utf-8") as file:
            policy, share = out / "policy.cbor", out / f"{peer}.share"
            file.write(f'\n[critical]\npolicy = "{policy}"\nshare = "{share}"\n')


def pay_record_certificate(node: Node, exec_id: str) -> tuple[Certificate, Slot]:
    paths = RepoPaths(node.repo)
    ledger = LedgerStore(FileBlockStore(paths.blocks), paths)
    exec = parse_cid(exec_id)
    for _cid, record in ledger.replay(exec):
        if record.kind == "step.completed" and record.step == "pay":
            assert record.quorum is not None, "the critical step's record has no certificate"
            return Certificate.from_obj(record.quorum), Slot(exec, "pay", record.attempt)
    raise AssertionError(f"{node.name} has no record of pay")


def test_a_critical_step_commits_with_a_quorum_and_not_without(tmp_path: Path) -> None:
    dealt = tmp_path / "deal"
    with local_cluster(tmp_path, 5, setup=lambda nodes: deal(nodes, dealt)) as cluster:
        first = cluster.submit(cluster.nodes[0], FLOW, {"rounds": 1000})
        checks = converged_ledgers(cluster, cluster.nodes, first, TIMEOUT, completed=True)
        for name, check in checks.items():
            assert check.verified and check.status == "completed", (name, check.report)
            assert check.completions == {"quote": 1, "pay": 1}, name
        policy = load_policy((dealt / "policy.cbor").read_bytes())
        certificate, slot = pay_record_certificate(cluster.nodes[3], first)
        assert certificate.policy == policy.cid
        assert verify_certificate(certificate, policy.keys, "default", slot)
        # `qflow ledger replay` checks certificates with the repo's `[critical]` policy,
        # as the node does: every record applies, pay's included.
        shown = qflow("ledger", "replay", "--repo", str(cluster.nodes[3].repo), "--json", first)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        replayed = json.loads(shown.stdout)
        assert replayed["rejected"] == [] and replayed["status"] == "completed"
        assert replayed["instances"]["pay"]["status"] == "completed"
        stalled = _with_three_validators_down(cluster)
        for name, check in stalled.items():
            assert check.completions.get("pay") is None, name


def _with_three_validators_down(cluster: Cluster) -> dict[str, LedgerCheck]:
    for node in cluster.nodes[2:]:
        cluster.kill(node)
    survivors = cluster.nodes[:2]
    second = cluster.submit(survivors[0], FLOW, {"rounds": 1000})
    # `pay` comes due once `quote` is recorded; its round then fails for want of a
    # quorum (logged), and no record of it may appear.
    cluster.processes.wait_any(
        lambda _p, event: (
            event.get("event") == "critical.round_failed" and event.get("exec") == second
        ),
        timeout=TIMEOUT,
    )
    return converged_ledgers(cluster, survivors, second, 5.0)
