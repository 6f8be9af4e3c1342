"""`qflow step run` through the real `qflow` entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qflow_node.cli.main import qflow
from qflow_node.codec import MAX_BLOCK_SIZE
from qflow_node.sandbox.testing import INPUT, command, host_import

ECHO = command(f"(call $out (i32.const {INPUT}) (call $read_input))", output=None)
LOOP = command("(loop $forever (br $forever))", output=None)
RANDOM = command(
    """(drop (call $random_get (i32.const 2048) (i32.const 1)))
    (i32.store8 (i32.const 2048) (i32.add (i32.const 48)
      (i32.rem_u (i32.load8_u (i32.const 2048)) (i32.const 10))))
    (call $out (i32.const 2048) (i32.const 1))""",
    imports=[
        '(import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) '
        "(result i32)))"
    ],
    output=None,
)
STATE = command(
    "(drop (call $state_set (i32.const 1024) (i32.const 1) (i32.const 1030) (i32.const 4)))",
    imports=[host_import("state_set")],
    data={1024: b"k", 1030: b"true"},
)


@pytest.fixture
def wasm_file(tmp_path: Path) -> Path:
    path = tmp_path / "echo.wasm"
    path.write_bytes(ECHO)
    return path


def step(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(qflow, ["step", "run", *args], input=input)


def assert_error(result: Result, code: int, line: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr == line + "\n"


def test_prints_the_output(wasm_file: Path) -> None:
    result = step(str(wasm_file), "--input", '{"a": [1, 2]}')
    assert result.exit_code == 0, result.stderr
    assert result.stdout == '{"a": [1, 2]}\n'
    assert result.stderr == ""


def test_default_input_is_an_empty_object(wasm_file: Path) -> None:
    assert step(str(wasm_file)).stdout == "{}\n"


def test_input_file_and_stdin(wasm_file: Path, tmp_path: Path) -> None:
    source = tmp_path / "input.json"
    source.write_text('["from", "file"]')
    assert step(str(wasm_file), "--input-file", str(source)).stdout == '["from", "file"]\n'
    assert step(str(wasm_file), "--input-file", "-", input=b"[7]").stdout == "[7]\n"


def test_failure_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "loop.wasm"
    path.write_bytes(LOOP)
    result = step(str(path), "--fuel", "1_000_000")
    assert_error(
        result,
        1,
        "error: out_of_fuel: the step used all of its 1,000,000 fuel (its CPU budget) without "
        "finishing: an endless loop, or raise `fuel` (this subnet allows up to 50,000,000,000)",
    )
    assert result.stdout == ""
    result = step(str(path), "--fuel", "50000000000", "--timeout", "200ms")
    assert_error(
        result,
        1,
        "error: timeout: the step ran longer than its 200 ms wall-clock limit and was stopped",
    )


def test_json_report(tmp_path: Path, wasm_file: Path) -> None:
    result = step(str(wasm_file), "--input", "[1]", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["output"] == [1]
    assert report["failure"] is None
    assert set(report["usage"]) == {"fuel", "memory", "wall_time", "host_calls", "output_bytes"}
    assert report["usage"]["fuel"] > 0

    path = tmp_path / "loop.wasm"
    path.write_bytes(LOOP)
    result = step(str(path), "--fuel", "1000", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["output"] is None
    assert report["failure"]["kind"] == "out_of_fuel"
    assert report["usage"]["fuel"] == 1000
    assert result.stderr.startswith("error: out_of_fuel: ")


def test_memory_and_output_limits(tmp_path: Path, wasm_file: Path) -> None:
    result = step(str(wasm_file), "--input", json.dumps("x" * 100), "--output-limit", "64")
    assert_error(
        result,
        1,
        "error: output_too_large: the step wrote more than its 64 B output limit to stdout",
    )
    result = step(str(wasm_file), "--memory", "64KiB")
    assert_error(
        result,
        1,
        "error: memory_limit: the module starts with 128 KiB of memory, above the step's "
        "memory limit of 64 KiB",
    )


def test_seed_changes_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.wasm"
    path.write_bytes(RANDOM)
    outputs = {step(str(path), "--seed", f"{i:064x}").stdout for i in range(20)}
    assert step(str(path)).stdout == step(str(path), "--seed", "00" * 32).stdout
    assert len(outputs) > 1


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--input", "{"], "error: --input: the input is not one JSON value: Expecting "
         "property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (["--input", "NaN"], "error: --input: the input is not one JSON value: NaN is not JSON"),
        (["--input", "1", "--input-file", "x"],
         "error: give the input with --input or --input-file, not both"),
        (["--memory", "lots"], "error: --memory: 'lots' is not a size (examples: 65536, "
         "64MiB, 512KiB, 1GB)"),
        (["--timeout", "soon"], "error: --timeout: 'soon' is not a duration (examples: 2s, "
         "500ms, 1.5, 1m)"),
        (["--fuel", "0"], "error: --fuel: '0' must be a positive integer"),
        (["--fuel", "x"], "error: --fuel: 'x' is not an integer"),
        (["--seed", "xyz"], "error: --seed: 'xyz' is not hexadecimal bytes (e.g. 00ff…)"),
        (["--cap", "token"], "error: --cap needs --authority DID (or QFLOW_AUTHORITY): the "
         "key that signs tokens"),
        (["--cap", "token", "--authority", "did:key:nope"],
         "error: --authority: 'did:key:nope' is not a did:key with base58btc multibase "
         "(did:key:z…)"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(wasm_file: Path, args: list[str], line: str) -> None:
    assert_error(step(str(wasm_file), *args), 2, line)


def test_unreadable_or_oversized_module(tmp_path: Path) -> None:
    assert_error(
        step(str(tmp_path / "missing.wasm")),
        2,
        f"error: cannot read {tmp_path / 'missing.wasm'}: No such file or directory",
    )
    big = tmp_path / "big.wasm"
    big.write_bytes(b"\0" * (MAX_BLOCK_SIZE + 1))
    assert_error(
        step(str(big)),
        2,
        f"error: {big} is larger than 1 MiB: a step module is one raw block of at most that "
        "size (strip debug info, e.g. `-s` or wasm-opt)",
    )


def test_invalid_module_is_a_step_failure(tmp_path: Path) -> None:
    path = tmp_path / "bad.wasm"
    path.write_bytes(b"not wasm")
    result = step(str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid_module: module bafk")


def test_host_functions_need_a_token(tmp_path: Path) -> None:
    path = tmp_path / "state.wasm"
    path.write_bytes(STATE)
    result = step(str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: capability_denied: the module imports qflow.state_set")


def test_with_a_real_capability_token(tmp_path: Path) -> None:
    from qflow_node.core.capability import Grants, issue
    from qflow_node.core.capability.testing import AUTHORITY, JAN_2030

    path = tmp_path / "state.wasm"
    path.write_bytes(STATE)
    token = issue(AUTHORITY, Grants.build(["state.set"], key_prefixes=[""]), expires=JAN_2030)
    result = step(str(path), "--cap", token, "--authority", AUTHORITY.did, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["output"] == {}
    assert report["denied_calls"] == 0
    assert report["state_delta"]  # the step's state change, as a Yjs update (hex)
    forged = step(str(path), "--cap", token[:-8] + "AAAAAAAA", "--authority", AUTHORITY.did)
    assert forged.exit_code == 2
    assert forged.stderr.startswith("error: --cap: invalid capability token: ")


def test_a_real_process_exits_cleanly(wasm_file: Path) -> None:
    # Exit codes of the real executable (wasmtime threads must not disturb interpreter exit).
    qflow_exe = Path(sys.executable).parent / "qflow"
    for _ in range(3):
        done = subprocess.run(
            [str(qflow_exe), "step", "run", str(wasm_file), "--input", "[1]"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, b"[1]\n", b"")
