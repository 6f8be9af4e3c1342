"""`qflow flow check|compile` through the real `qflow` entry point (click CliRunner)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qflow_node.cli.main import qflow
from qflow_node.codec import decode_block, parse_cid, raw_block
from qflow_node.codec.dagjson import to_dag_json
from qflow_node.flow_loader import load_flow
from qflow_node.store import FileBlockStore, PinMode

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "flows"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "blocks").mkdir(parents=True)
    return root


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    """A copy of examples/ (flows and the wasm modules they use)."""
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target / "flows")
    (target / "steps").mkdir()
    for name in ("transform", "aggregate", "fetch_store"):
        shutil.copy(EXAMPLES.parent / "steps" / f"{name}.wasm", target / "steps")
    return target / "flows"


def run(*args: str) -> Result:
    return CliRunner().invoke(qflow, ["flow", *args])


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "check" in result.stdout and "compile" in result.stdout


def test_check_prints_each_valid_flows_cid(flows: Path) -> None:
    files = [flows / "greet.yaml", flows / "greet.json", flows / "order-processing.yaml"]
    result = run("check", *map(str, files))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{f}: {load_flow(f).cid.encode()}" for f in files]
    assert result.stderr == ""


def test_check_reports_every_error_of_every_file_and_exits_1(tmp_path: Path, flows: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - id: a\n    retries: 3\n    transform: steps.b.output\n")
    good = flows / "greet.yaml"
    result = run("check", str(bad), str(good))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f'{bad}:4:5: steps[0].retries: unknown key "retries"; did you mean "retry"?',
        f'{bad}:5:16: steps[0].transform: unknown step "b" in steps.b',
        f"{good}: {load_flow(good).cid.encode()}",
    ]
    assert result.stderr == ""


def test_check_an_unreadable_file_is_an_io_error(tmp_path: Path, flows: Path) -> None:
    result = run("check", str(tmp_path / "missing.yaml"), str(flows / "greet.yaml"))
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: cannot read {tmp_path / 'missing.yaml'}: No such file or directory\n"
    )
    assert result.stdout.startswith(f"{flows / 'greet.yaml'}: bafyrei")


def test_check_needs_a_file() -> None:
    assert run("check").exit_code == 2


def test_compile_stores_and_pins_the_flow_and_its_modules(repo: Path, flows: Path) -> None:
    result = run("compile", str(flows / "run.yaml"), "--repo", str(repo))
    assert result.exit_code == 0, result.output
    cid = parse_cid(result.stdout.strip())
    store = FileBlockStore(repo / "blocks")
    ir = decode_block(cid, store.get(cid))
    assert ir == load_flow(flows / "run.yaml").compiled.ir
    for name in ("aggregate", "transform"):
        module = (flows.parent / "steps" / f"{name}.wasm").read_bytes()
        assert store.get(raw_block(module).cid) == module
    assert store.pins() == {cid: PinMode.RECURSIVE}
    assert store.gc().removed == 0


def test_compile_json_prints_the_ir_as_dag_json(repo: Path, flows: Path) -> None:
    result = run("compile", str(flows / "subflow.yaml"), "--repo", str(repo))
    assert result.exit_code == 1  # its sub-flow is not in the store yet
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == (
        f"{flows / 'subflow.yaml'}:7:11: steps[0].flow: sub-flow "
        "bafyreidy63ak75ge5w3uujyzmic5pe6ycij6fpzh4sszncacdth4stmcmq: "
        "not in the block store (compile the sub-flow into this repo first)"
    )
    assert run("compile", str(flows / "greet.yaml"), "--repo", str(repo)).exit_code == 0
    result = run("compile", str(flows / "subflow.yaml"), "--repo", str(repo), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == to_dag_json(load_flow(flows / "subflow.yaml").compiled.ir)


def test_compile_errors_go_to_stderr_and_store_nothing(
    repo: Path, tmp_path: Path, flows: Path
) -> None:
    shutil.copy(flows / "greet.yaml", tmp_path / "greet.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - {id: a, run: ../nope.wasm}\n")
    result = run("compile", str(bad), "--repo", str(repo))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"{bad}:3:18: steps[0].run: module file not found: ../nope.wasm ({tmp_path}/../nope.wasm)\n"
    )
    assert list(FileBlockStore(repo / "blocks").iter_cids()) == []


def test_compile_without_a_repo_says_how_to_make_one(tmp_path: Path, flows: Path) -> None:
    result = run("compile", str(flows / "greet.yaml"), "--repo", str(tmp_path / "none"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: no block store at {tmp_path / 'none' / 'blocks'}")


def test_compile_an_unreadable_file(repo: Path, tmp_path: Path) -> None:
    result = run("compile", str(tmp_path / "missing.yaml"), "--repo", str(repo))
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: cannot read {tmp_path / 'missing.yaml'}: No such file or directory\n"
    )
