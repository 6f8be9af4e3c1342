"""`qflow subnet dkg-plan` and `qflow subnet dkg`: writing a plan, the refusals, and (slow)
the ceremony as five real processes on loopback whose outputs a node boots with."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qflow_node import clock
from qflow_node.cli.init_cmd import init_repo
from qflow_node.cli.main import qflow
from qflow_node.codec import RAW, cid_for
from qflow_node.core.dkg import DkgPlan
from qflow_node.core.policy import load_policy
from qflow_node.crypto import combine_verified, partial_sign, verify, verify_share
from qflow_node.identity import SigningKey
from qflow_node.runtime.config import CriticalFiles
from qflow_node.runtime.critical_service import load_critical
from qflow_node.runtime.testing import QFLOW

MODULE = cid_for(b"\0asm critical step", RAW).encode()
DID = SigningKey(b"\x33" * 32).did


def run(*args: str) -> Result:
    return CliRunner().invoke(qflow, ["subnet", *args], catch_exceptions=False)


def assert_error(result: Result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and fragment in result.stderr, result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def repos(tmp_path: Path, n: int) -> list[tuple[Path, SigningKey]]:
    return [(tmp_path / f"v{i}", init_repo(tmp_path / f"v{i}")) for i in range(1, n + 1)]


def plan_args(nodes: list[tuple[Path, SigningKey]], ports: list[int]) -> list[str]:
    args = ["--subnet", "dao", "--threshold", "3", "--module", MODULE, "--authority", DID]
    for (_, key), port in zip(nodes, ports, strict=True):
        args += ["--validator", f"{key.peer_id}=/ip4/127.0.0.1/tcp/{port}"]
    return args


def test_dkg_plan_writes_a_plan_every_validator_reads_the_same(tmp_path: Path) -> None:
    nodes = repos(tmp_path, 5)
    out = tmp_path / "plan.json"
    args = plan_args(nodes, [4001 + i for i in range(5)])
    role = ["--role", f"approver={DID}"]
    result = run("dkg-plan", *args, *role, "--start", "+60", "--out", str(out))
    assert result.exit_code == 0, result.output
    plan = DkgPlan.from_json(out.read_bytes())
    assert f"plan: {plan.cid.encode()}" in result.stdout
    assert [p.peer for p in plan.validators] == [key.peer_id for _, key in nodes]
    assert plan.threshold == 3 and plan.step_ms == 2000 and dict(plan.rbac) == {"approver": (DID,)}
    assert abs(plan.start_ms - clock.wall_ms() - 60_000) < 60_000
    assert_error(run("dkg-plan", *args, "--start", "+60", "--out", str(out)), 2, "already exists")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (["--validator", "nonsense"], "expected PEER_ID=MULTIADDR"),
        (["--threshold", "2"], "t must be a majority, 3..5"),
        (["--start", "tomorrow"], "expected +SECONDS or an ISO 8601 time"),
        (["--start", "2030-01-01T00:00:00"], "give the time zone"),
        (["--step-ms", "10"], "plan.step_ms: 10 is outside 50..600000"),
    ],
)
def test_dkg_plan_refuses_bad_arguments(tmp_path: Path, change: list[str], fragment: str) -> None:
    nodes = repos(tmp_path, 5)
    args = [*plan_args(nodes, [4001 + i for i in range(5)]), "--start", "+60", *change]
    assert_error(run("dkg-plan", *args, "--out", str(tmp_path / "p.json")), 2, fragment)


def test_dkg_refuses_a_stranger_a_bad_plan_and_a_late_start(tmp_path: Path) -> None:
    nodes = repos(tmp_path, 4)
    plan = tmp_path / "plan.json"
    args = plan_args(nodes[:3], [4001, 4002, 4003])
    assert run("dkg-plan", *args, "--start", "+60", "--out", str(plan)).exit_code == 0
    stranger = nodes[3][0]
    assert_error(run("dkg", "--repo", str(stranger), "--plan", str(plan)), 2, "is not a validator")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**json.loads(plan.read_text()), "threshold": 1}))
    assert_error(run("dkg", "--repo", str(nodes[0][0]), "--plan", str(broken)), 2, "plan.threshold")
    late = tmp_path / "late.json"
    late.write_text(json.dumps({**json.loads(plan.read_text()), "start_ms": 1_000_000}))
    assert_error(run("dkg", "--repo", str(nodes[0][0]), "--plan", str(late)), 2, "too late")


# -- the ceremony as real processes ----------------------------------------------------------

CEREMONY_TIMEOUT = 90.0


@pytest.mark.slow
def test_five_validator_processes_make_a_key_a_node_boots_with(tmp_path: Path) -> None:
    nodes = repos(tmp_path, 5)
    plan_file = tmp_path / "plan.json"
    ports = [free_port() for _ in nodes]
    # Every process must be up before the start: Python and libp2p take a few seconds.
    args = [*plan_args(nodes, ports), "--start", "+15", "--step-ms", "500", "--out", str(plan_file)]
    assert run("dkg-plan", *args).exit_code == 0
    procs: list[subprocess.Popen[str]] = []
    try:
        for repo, _ in nodes:
            command = [*QFLOW, "subnet", "dkg", "--repo", str(repo), "--plan", str(plan_file)]
            procs.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + CEREMONY_TIMEOUT
        outputs = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, stdout + stderr
            outputs.append(stdout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    plan = DkgPlan.from_json(plan_file.read_bytes())
    cids = {line for out in outputs for line in out.splitlines() if line.startswith("policy: ")}
    assert len(cids) == 1, outputs
    shares = []
    for repo, key in nodes:
        out = repo / "dkg" / str(plan.cid.encode())
        files = CriticalFiles(out / "policy.cbor", out / f"{key.peer_id}.share")
        loaded = load_critical(repo, files, key)  # what a node checks at boot
        assert loaded.share is not None and f"policy: {loaded.cid.encode()}" in cids
        assert verify_share(loaded.share, loaded.policy.keys.commitments)
        shares.append(loaded.share)
    policy = load_policy(files.policy.read_bytes())
    assert policy.modules == (cid_for(b"\0asm critical step", RAW),)
    assert policy.capability_authority == (DID,)
    partials = {s.index: partial_sign(s, b"dkg") for s in shares[:3]}
    assert verify(
        policy.group_key, b"dkg", combine_verified(policy.keys, b"dkg", partials).signature
    )
