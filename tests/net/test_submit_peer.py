"""`qflow submit --peer`: a client with no node of its own submits straight to a node of
the subnet over libp2p; the cluster runs the flow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.cluster import ROOT, Cluster, local_cluster, qflow
from qflow_node.runtime.testing import make_repo

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with local_cluster(tmp_path / "cluster", 2) as running:
        yield running


def test_a_client_without_a_node_submits_through_a_peer(tmp_path: Path, cluster: Cluster) -> None:
    client = make_repo(tmp_path, "client")  # keys only: no node runs on it
    flow = ROOT / "examples" / "flows" / "greet.yaml"
    done = qflow(
        "submit",
        str(flow),
        "--repo",
        str(client),
        "--peer",
        cluster.nodes[1].addr,
        "--input",
        "who=peer",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # a node wrote exec.started before it returned
    exec_id = json.loads(done.stdout)["exec"]
    for node in cluster.nodes:
        assert node.process is not None
        event = node.process.wait_for("exec.finished", timeout=60, exec=exec_id)
        assert event["status"] == "completed"


def test_an_unreachable_peer_is_an_error(tmp_path: Path) -> None:
    client = make_repo(tmp_path, "client")
    flow = ROOT / "examples" / "flows" / "greet.yaml"
    ghost = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWRReTfAoEkR1c9TkekTSQ4t8193uVHYjhpaE7FfYHY7KJ"
    done = qflow("submit", str(flow), "--repo", str(client), "--peer", ghost, "--input", "who=x")
    assert done.returncode == 1
    assert "--peer" in done.stderr


def test_a_refused_submission_says_why_and_fails(tmp_path: Path, cluster: Cluster) -> None:
    # `who` is required by the flow's input schema: every node refuses the submission and
    # one of them publishes a rejection on the flows topic, which the client hears.
    client = make_repo(tmp_path, "client")
    flow = ROOT / "examples" / "flows" / "greet.yaml"
    done = qflow("submit", str(flow), "--repo", str(client), "--peer", cluster.nodes[0].addr)
    assert done.returncode == 1, done.stderr
    assert "rejected by 12D3KooW" in done.stderr
    assert ": bad_inputs: " in done.stderr
