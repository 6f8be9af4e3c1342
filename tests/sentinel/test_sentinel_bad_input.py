"""Bad input: a clear error naming the file and what is wrong, no crash, and the rest of
the tree is still scanned (so the other file's finding is still reported)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sentinel import Report, scan

BAD = Path(__file__).resolve().parent / "fixtures" / "bad"


def errors(report: Report) -> list[tuple[str, int | None]]:
    return [(e.path, e.line) for e in report.errors]


def findings(report: Report) -> list[tuple[str, int, str]]:
    return [(f.path, f.line, f.rule) for f in report.findings]


def test_invalid_toml_is_an_error_and_the_rest_is_scanned() -> None:
    report = scan(BAD / "invalid_toml")
    assert errors(report) == [("pyproject.toml", 3)]
    assert report.errors[0].message.startswith("invalid TOML: ")
    assert "line 3" in report.errors[0].message
    assert findings(report) == [("requirements.txt", 1, "rdbms.postgres")]
    assert report.exit_code == 2
    assert report.status == "error"


def test_invalid_yaml_is_an_error_and_the_rest_is_scanned() -> None:
    report = scan(BAD / "invalid_yaml")
    assert errors(report) == [("docker-compose.yml", 4)]
    assert report.errors[0].message.startswith("invalid YAML: ")
    assert findings(report) == [(".env", 1, "broker.redis")]
    assert report.exit_code == 2


def test_python_syntax_error_is_an_error_and_the_rest_is_scanned() -> None:
    report = scan(BAD / "syntax_error")
    assert errors(report) == [("broken.py", 3)]
    assert report.errors[0].message.startswith("Python syntax error")
    # broken.py's own `import kafka` cannot be seen; ok.py's import still is.
    assert findings(report) == [("ok.py", 1, "broker.rabbitmq")]
    assert report.exit_code == 2


def test_invalid_ini_is_an_error_and_the_rest_is_scanned() -> None:
    report = scan(BAD / "invalid_ini")
    assert errors(report) == [("tox.ini", 1)]
    assert "[section]" in report.errors[0].message
    assert findings(report) == [("ok.py", 1, "broker.nats")]


def test_allowlist_entries_without_justification_are_errors_and_not_applied() -> None:
    report = scan(BAD / "missing_justification")
    assert errors(report) == [("sentinel.toml", 3), ("sentinel.toml", 7), ("sentinel.toml", 12)]
    first, second, third = (e.message for e in report.errors)
    assert "allow entry #1" in first and "missing justification" in first
    assert "'TODO' is a placeholder" in second
    assert "rule 'broker.redsi' matches no rule" in third
    # The invalid entries do not hide anything.
    assert findings(report) == [
        ("app.py", 1, "broker.redis"),
        ("cache/client.py", 1, "broker.redis"),
    ]
    assert report.suppressed == []
    assert report.exit_code == 2


def write(root: Path, name: str, content: str | bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_broken_symlink_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").symlink_to(tmp_path / "gone.txt")
    write(tmp_path, "app.py", "import etcd3\n")
    report = scan(tmp_path)
    assert errors(report) == [("requirements.txt", None)]
    assert "broken symlink" in report.errors[0].message
    assert "gone.txt" in report.errors[0].message
    assert findings(report) == [("app.py", 1, "coord.etcd")]
    assert report.exit_code == 2


def test_broken_symlink_with_an_irrelevant_name_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "notes.md").symlink_to(tmp_path / "gone.md")
    assert scan(tmp_path).exit_code == 0


def test_invalid_utf8_is_an_error_with_the_offset(tmp_path: Path) -> None:
    write(tmp_path, "requirements.txt", b"requests\npsyco\xffpg2\n")
    write(tmp_path, ".env", "BROKER=amqp://rabbit\n")
    report = scan(tmp_path)
    assert errors(report) == [("requirements.txt", None)]
    assert report.errors[0].message == "not valid UTF-8: byte 0xff at offset 14 (line 2)"
    assert findings(report) == [(".env", 1, "broker.rabbitmq")]


def test_invalid_utf8_in_python_is_a_syntax_error(tmp_path: Path) -> None:
    write(tmp_path, "mod.py", b"x = '\xff'\n")
    report = scan(tmp_path)
    assert errors(report) == [("mod.py", 1)]
    assert "can't decode byte 0xff" in report.errors[0].message
    assert report.exit_code == 2


def test_null_bytes_in_python_are_an_error(tmp_path: Path) -> None:
    write(tmp_path, "mod.py", b"import os\x00\n")
    report = scan(tmp_path)
    assert [e.path for e in report.errors] == ["mod.py"]
    assert report.exit_code == 2


def test_directory_named_like_a_file_is_walked_not_read(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml/inner/requirements.txt", "pika\n")
    report = scan(tmp_path)
    assert report.errors == []
    assert findings(report) == [("pyproject.toml/inner/requirements.txt", 1, "broker.rabbitmq")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_skipped_with_a_warning_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "requirements.txt")  # reading it would block forever
    report = scan(tmp_path)
    assert [(w.path, w.message) for w in report.warnings] == [
        ("requirements.txt", "not a regular file; skipped")
    ]
    assert report.exit_code == 0


def test_oversized_file_is_skipped_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, "requirements.txt", "psycopg2\n" * 20)
    write(tmp_path, "small.py", "import kazoo\n")
    report = scan(tmp_path, max_file_size=100)
    assert [w.path for w in report.warnings] == ["requirements.txt"]
    assert "over the 100-byte limit" in report.warnings[0].message
    assert findings(report) == [("small.py", 1, "coord.zookeeper")]
    assert report.files_scanned == 1


def test_invalid_pipfile_lock_json_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, "Pipfile.lock", '{\n  "default": {\n    "pika": {,}\n  }\n}\n')
    report = scan(tmp_path)
    assert errors(report) == [("Pipfile.lock", 3)]
    assert report.errors[0].message.startswith("invalid JSON")


def test_yaml_template_is_a_warning_and_scanned_line_by_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        "chart/templates/redis.yaml",
        "apiVersion: apps/v1\n"
        "kind: StatefulSet\n"
        "metadata:\n"
        "  name: {{ .Release.Name }}-redis\n"
        "spec:\n"
        "  template:\n"
        "    spec:\n"
        "      containers:\n"
        "        - name: redis\n"
        "          image: redis:7.2\n",
    )
    report = scan(tmp_path)
    assert report.errors == []
    assert [w.path for w in report.warnings] == ["chart/templates/redis.yaml"]
    assert "template" in report.warnings[0].message
    assert findings(report) == [("chart/templates/redis.yaml", 10, "broker.redis")]


def test_invalid_allowlist_toml_is_an_error_but_the_scan_goes_on(tmp_path: Path) -> None:
    write(tmp_path, "sentinel.toml", "[[allow]\nrule = 'x'\n")
    write(tmp_path, "app.py", "import nats\n")
    report = scan(tmp_path)
    assert errors(report) == [("sentinel.toml", 1)]
    assert report.errors[0].message.startswith("invalid TOML")
    assert findings(report) == [("app.py", 1, "broker.nats")]
    assert report.exit_code == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("verison = 1\n", "unknown key(s) verison"),
        ("version = 2\n", "unsupported allowlist version 2"),
        ("exclude = 'vendor'\n", "`exclude` must be a list of path globs"),
        ("exclude = ['/abs/**']\n", "must be a non-empty path relative to the scanned root"),
        (
            "[[allow]]\nrule = '*'\npath = 'a/[b'\njustification = 'a real reason here'\n",
            "unclosed '['",
        ),
        (
            "[[allow]]\nrule = '*'\npath = 'a'\njustfication = 'typo in the key name'\n",
            "unknown key(s) justfication",
        ),
        ("[[allow]]\npath = 'a'\njustification = 'a real reason here'\n", "missing `rule`"),
        ("[[allow]]\nrule = '*'\njustification = 'a real reason here'\n", "missing `path`"),
        ("[[allow]]\nrule = 'rdbms.*'\npath = 'a'\njustification = '   '\n", "missing just"),
    ],
)
def test_allowlist_schema_errors_are_reported(tmp_path: Path, content: str, message: str) -> None:
    write(tmp_path, "sentinel.toml", content)
    report = scan(tmp_path)
    assert [e.path for e in report.errors] == ["sentinel.toml"]
    assert message in report.errors[0].message
    assert report.exit_code == 2


def test_missing_scan_root_is_an_error(tmp_path: Path) -> None:
    report = scan(tmp_path / "nope")
    assert [(e.path, e.message) for e in report.errors] == [
        (str(tmp_path / "nope"), "scan root does not exist")
    ]
    assert report.exit_code == 2


def test_scan_root_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    target = write(tmp_path, "requirements.txt", "pika\n")
    report = scan(target)
    assert report.errors[0].message == "scan root is not a directory"
    assert report.exit_code == 2
