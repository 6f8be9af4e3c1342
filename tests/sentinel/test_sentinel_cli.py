"""The command line: `qflow sentinel check`, `python -m sentinel`, text and JSON output,
exit codes (0 clean, 1 findings, 2 errors), through click's CliRunner and real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sentinel.cli import sentinel_group

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
REPO = HERE.parents[1]
QFLOW = Path(sys.executable).parent / "qflow"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(sentinel_group, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def test_check_text_report_lists_each_finding_then_a_summary() -> None:
    code, output = run("check", str(FIXTURES / "fail" / "coord"))
    assert code == 1
    lines = output.splitlines()
    assert lines[0] == (
        "Dockerfile:2: coord.consul: image 'hashicorp/consul:1.18' — Consul is a central "
        "service catalogue and KV cluster every node would register with and query."
    )
    assert lines[3].startswith("app.py:5: coord.zookeeper: import 'kazoo.client' — ")
    assert len(lines) == 10
    assert lines[-1] == (
        "sentinel: 9 findings, 0 errors, 0 warnings in 3 files: FAILED (central dependencies found)"
    )


def test_check_clean_exits_0() -> None:
    code, output = run("check", str(FIXTURES / "pass" / "clean"))
    assert code == 0
    assert output.strip() == "sentinel: 0 findings, 0 errors, 0 warnings in 10 files: clean"


def test_check_json_has_the_documented_shape() -> None:
    code, output = run("check", "--format", "json", str(FIXTURES / "fail" / "locks"))
    assert code == 1
    doc = json.loads(output)
    assert doc["version"] == 1
    assert doc["status"] == "findings"
    assert doc["exit_code"] == 1
    assert doc["rules"] == {"source": "sentinel/rules.toml", "version": 1}
    assert doc["files_scanned"] == 4
    assert doc["summary"] == {"findings": 7, "suppressed": 0, "errors": 0, "warnings": 0}
    assert doc["findings"][0] == {
        "path": "Pipfile.lock",
        "line": 9,
        "rule": "coord.consul",
        "family": "coord",
        "kind": "dependency",
        "matched": "python-consul",
        "why": "Consul is a central service catalogue and KV cluster every node would register "
        "with and query.",
    }
    assert doc["suppressed"] == doc["errors"] == doc["warnings"] == []


def test_check_json_reports_suppressed_findings_with_their_justification() -> None:
    code, output = run("check", "--format", "json", str(FIXTURES / "pass" / "allowlisted"))
    assert code == 0
    doc = json.loads(output)
    assert doc["status"] == "clean"
    assert doc["suppressed"][0]["allowed_by"]["path"] == "tests/integration/**"
    assert doc["warnings"] == [
        {
            "path": "sentinel.toml",
            "line": 15,
            "message": "allow entry #3 (rule 'coord.etcd', path 'nowhere/**') matched no "
            "finding; remove it?",
        }
    ]


def test_check_errors_dominate_and_still_print_findings() -> None:
    code, output = run("check", str(FIXTURES / "bad" / "syntax_error"))
    assert code == 2
    lines = output.splitlines()
    assert lines[0].startswith("ok.py:1: broker.rabbitmq: import 'pika' — ")
    assert lines[1] == "broken.py:3: error: Python syntax error: invalid syntax"
    assert "1 finding, 1 error" in lines[-1]


def test_check_missing_path_exits_2_in_json_too(tmp_path: Path) -> None:
    code, output = run("check", "--format", "json", str(tmp_path / "absent"))
    assert code == 2
    doc = json.loads(output)
    assert doc["status"] == "error"
    assert doc["errors"][0]["message"] == "scan root does not exist"


def test_check_bad_rules_file_exits_2_with_the_reason(tmp_path: Path) -> None:
    code, output = run(
        "check", "--rules", str(FIXTURES / "bad" / "rules" / "missing_why.toml"), "."
    )
    assert code == 2
    assert "missing_why.toml: rule #1 ('broker.kafka'): missing or empty `why`" in output


def test_usage_errors_exit_2() -> None:
    code, _ = run("check", "--format", "xml", ".")
    assert code == 2
    code, _ = run("check", "a", "b")
    assert code == 2


def test_rules_command_lists_every_rule() -> None:
    code, output = run("rules")
    assert code == 0
    lines = output.splitlines()
    assert lines[0].startswith("rdbms.postgres ")
    assert lines[-1] == "17 rules (version 1) from sentinel/rules.toml"
    code, output = run("rules", "--format", "json")
    assert code == 0
    assert [rule["id"] for rule in json.loads(output)["rules"]][:2] == [
        "rdbms.postgres",
        "rdbms.mysql",
    ]


@pytest.mark.skipif(not QFLOW.exists(), reason="the qflow console script is not installed")
def test_real_qflow_process_on_a_failing_fixture() -> None:
    proc = subprocess.run(
        [str(QFLOW), "sentinel", "check", "--format", "json", str(FIXTURES / "fail" / "cloud")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(f["path"], f["line"], f["rule"]) for f in doc["findings"]][:3] == [
        ("pyproject.toml", 5, "cloud.pubsub"),
        ("pyproject.toml", 6, "cloud.servicebus"),
        ("pyproject.toml", 8, "cloud.sqs"),
    ]


@pytest.mark.skipif(not QFLOW.exists(), reason="the qflow console script is not installed")
def test_real_qflow_process_default_path_is_the_current_directory() -> None:
    proc = subprocess.run(
        [str(QFLOW), "sentinel", "check"],
        cwd=FIXTURES / "bad" / "invalid_yaml",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "docker-compose.yml:4: error: invalid YAML" in proc.stdout


def test_python_dash_m_sentinel() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel", "check", str(FIXTURES / "pass" / "clean")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(": clean")


def test_the_sentinel_package_itself_is_clean() -> None:
    # rules.toml and the scanners name every forbidden thing, but only as data.
    code, output = run("check", str(REPO / "sentinel"))
    assert code == 0, output
