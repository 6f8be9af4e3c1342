"""The committed fixture repositories: exact findings for the failing ones, none for the
passing ones (substring look-alikes, embedded stores, a justified allowlist)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel import Report, load_rules, scan

FIXTURES = Path(__file__).resolve().parent / "fixtures"

Row = tuple[str, int, str, str]  # path, line, rule id, kind


def rows(report: Report) -> list[Row]:
    return [(f.path, f.line, f.rule, f.kind) for f in report.findings]


EXPECTED: dict[str, list[Row]] = {
    "rdbms": [
        (".env", 2, "rdbms.postgres", "url"),
        ("alembic.ini", 4, "rdbms.mysql", "url"),
        ("docker-compose.yml", 3, "rdbms.postgres", "image"),
        ("docker-compose.yml", 7, "rdbms.mysql", "image"),
        ("docker-compose.yml", 9, "rdbms.mssql", "image"),
        ("docker-compose.yml", 11, "rdbms.oracle", "image"),
        ("docker-compose.yml", 15, "rdbms.postgres", "url"),
        ("reporting/db.py", 3, "rdbms.postgres", "import"),
        ("reporting/db.py", 4, "rdbms.mysql", "import"),
        ("reporting/db.py", 5, "rdbms.oracle", "import"),
        ("reporting/db.py", 6, "rdbms.mssql", "import"),
        ("reporting/db.py", 7, "rdbms.mysql", "import"),
        ("reporting/db.py", 10, "rdbms.postgres", "url"),
        ("reporting/db.py", 11, "rdbms.mysql", "url"),
        ("reporting/db.py", 12, "rdbms.mssql", "url"),
        ("reporting/db.py", 13, "rdbms.oracle", "url"),
        ("requirements.txt", 2, "rdbms.postgres", "dependency"),
        ("requirements.txt", 3, "rdbms.mysql", "dependency"),
        ("requirements.txt", 4, "rdbms.mssql", "dependency"),
        ("requirements.txt", 5, "rdbms.oracle", "dependency"),
        ("requirements.txt", 6, "rdbms.postgres", "dependency"),
        ("setup.cfg", 6, "rdbms.postgres", "dependency"),
        ("setup.cfg", 7, "rdbms.mysql", "dependency"),
        ("setup.cfg", 11, "rdbms.oracle", "dependency"),
    ],
    "brokers": [
        ("charts/events/values.yaml", 3, "broker.kafka", "image"),
        ("deploy/k8s/deployment.yaml", 10, "broker.kafka", "image"),
        ("deploy/k8s/deployment.yaml", 12, "broker.kafka", "image"),
        ("deploy/k8s/deployment.yaml", 17, "broker.rabbitmq", "url"),
        ("deploy/k8s/deployment.yaml", 28, "broker.rabbitmq", "image"),
        ("docker-compose.yaml", 3, "broker.redis", "image"),
        ("docker-compose.yaml", 5, "broker.nats", "image"),
        ("docker-compose.yaml", 7, "broker.redis", "image"),
        ("pyproject.toml", 5, "broker.kafka", "dependency"),
        ("pyproject.toml", 6, "broker.kafka", "dependency"),
        ("pyproject.toml", 7, "broker.rabbitmq", "dependency"),
        ("pyproject.toml", 8, "broker.nats", "dependency"),
        ("pyproject.toml", 13, "broker.redis", "dependency"),
        ("pyproject.toml", 16, "broker.kafka", "dependency"),
        ("pyproject.toml", 20, "broker.kafka", "url"),
        ("worker/consume.py", 5, "broker.kafka", "import"),
        ("worker/consume.py", 6, "broker.nats", "import"),
        ("worker/consume.py", 7, "broker.redis", "import"),
        ("worker/consume.py", 8, "broker.kafka", "import"),
        ("worker/consume.py", 10, "broker.rabbitmq", "import"),
        ("worker/consume.py", 12, "broker.rabbitmq", "url"),
        ("worker/consume.py", 13, "broker.nats", "url"),
        ("worker/consume.py", 14, "broker.redis", "url"),
        ("worker/consume.py", 16, "broker.redis", "url"),
    ],
    "queues": [
        ("Pipfile", 7, "cloud.sqs", "dependency"),
        ("Pipfile", 7, "queue.celery", "dependency"),
        ("Pipfile", 11, "queue.rq", "dependency"),
        ("requirements-dev.txt", 2, "broker.redis", "dependency"),
        ("requirements-dev.txt", 2, "queue.celery", "dependency"),
        ("requirements-dev.txt", 3, "queue.rq", "dependency"),
        ("requirements-dev.txt", 5, "broker.rabbitmq", "dependency"),
        ("requirements-dev.txt", 5, "queue.dramatiq", "dependency"),
        ("requirements-dev.txt", 6, "queue.rq", "dependency"),
        ("tasks.py", 3, "queue.celery", "import"),
        ("tasks.py", 4, "queue.rq", "import"),
        ("tasks.py", 5, "queue.dramatiq", "import"),
        ("tasks.py", 7, "broker.rabbitmq", "url"),
    ],
    "coord": [
        ("Dockerfile", 2, "coord.consul", "image"),
        ("app.py", 3, "coord.consul", "import"),
        ("app.py", 4, "coord.etcd", "import"),
        ("app.py", 5, "coord.zookeeper", "import"),
        ("app.py", 7, "coord.zookeeper", "url"),
        ("app.py", 8, "coord.etcd", "url"),
        ("docker-compose.yml", 3, "coord.etcd", "image"),
        ("docker-compose.yml", 5, "coord.consul", "image"),
        ("docker-compose.yml", 7, "coord.zookeeper", "image"),
    ],
    "locks": [
        ("Pipfile.lock", 9, "coord.consul", "dependency"),
        ("Pipfile.lock", 19, "broker.kafka", "dependency"),
        ("poetry.lock", 4, "coord.zookeeper", "dependency"),
        ("pylock.toml", 5, "rdbms.mysql", "dependency"),
        ("uv.lock", 5, "coord.etcd", "dependency"),
        ("uv.lock", 10, "rdbms.postgres", "dependency"),
        ("uv.lock", 15, "rdbms.postgres", "dependency"),
    ],
    "cloud": [
        ("pyproject.toml", 5, "cloud.pubsub", "dependency"),
        ("pyproject.toml", 6, "cloud.servicebus", "dependency"),
        ("pyproject.toml", 8, "cloud.sqs", "dependency"),
        ("queues.py", 5, "cloud.servicebus", "import"),
        ("queues.py", 6, "cloud.pubsub", "import"),
        ("queues.py", 8, "cloud.sqs", "cloud-client"),
        ("queues.py", 10, "cloud.sqs", "cloud-client"),
        ("queues.py", 14, "cloud.sqs", "cloud-client"),
        ("queues.py", 18, "cloud.servicebus", "url"),
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_failing_fixture_reports_exactly_these_findings(name: str) -> None:
    report = scan(FIXTURES / "fail" / name)
    assert report.errors == []
    assert report.warnings == []
    assert rows(report) == EXPECTED[name]
    assert report.suppressed == []
    assert report.status == "findings"
    assert report.exit_code == 1


def test_every_rule_and_family_fires_in_some_fixture() -> None:
    fired = {row[2] for expected in EXPECTED.values() for row in expected}
    rules = load_rules()
    assert fired == set(rules.ids)
    assert {rule_id.split(".")[0] for rule_id in fired} == {
        "rdbms",
        "broker",
        "queue",
        "coord",
        "cloud",
    }


def test_findings_carry_what_matched_and_why() -> None:
    report = scan(FIXTURES / "fail" / "brokers")
    by_place = {(f.path, f.line): f for f in report.findings}
    aliased = by_place[("worker/consume.py", 7)]
    assert aliased.matched == "redis.asyncio"
    assert aliased.family == "broker"
    redis_rule = load_rules().get("broker.redis")
    assert redis_rule is not None
    assert aliased.why == redis_rule.why
    assert by_place[("worker/consume.py", 10)].matched == "pika"
    assert by_place[("charts/events/values.yaml", 3)].matched == "docker.io/bitnami/kafka"
    # Passwords in connection URLs never reach the report.
    assert by_place[("worker/consume.py", 12)].matched == "amqp://guest:***@rabbitmq:5672/%2F"


def test_extras_and_markers_are_understood() -> None:
    report = scan(FIXTURES / "fail" / "queues")
    line2 = [f for f in report.findings if (f.path, f.line) == ("requirements-dev.txt", 2)]
    assert {f.matched for f in line2} == {"celery[redis]"}
    assert {f.rule for f in line2} == {"queue.celery", "broker.redis"}


def test_clean_fixture_has_nothing_to_report() -> None:
    report = scan(FIXTURES / "pass" / "clean")
    assert rows(report) == []
    assert report.errors == []
    assert report.warnings == []
    assert report.files_scanned == 10
    assert report.exit_code == 0
    assert report.status == "clean"


def test_justified_allowlist_suppresses_and_reports_unused_entries() -> None:
    report = scan(FIXTURES / "pass" / "allowlisted")
    assert report.findings == []
    assert report.errors == []
    suppressed = [
        (s.finding.path, s.finding.line, s.finding.rule, s.allow_path) for s in report.suppressed
    ]
    assert suppressed == [
        ("tests/integration/docker-compose.yml", 3, "rdbms.postgres", "tests/integration/**"),
        ("tests/integration/export_check.py", 1, "rdbms.postgres", "tests/integration/**"),
        ("tools/migrate_from_kafka.py", 3, "broker.kafka", "tools/migrate_from_kafka.py"),
        ("tools/migrate_from_kafka.py", 5, "broker.redis", "tools/migrate_from_kafka.py"),
    ]
    assert report.suppressed[0].justification.startswith("Integration tests exercise")
    # vendor/** is excluded: its `import kafka` is neither a finding nor suppressed.
    assert not any(s.finding.path.startswith("vendor/") for s in report.suppressed)
    assert [(w.path, w.line) for w in report.warnings] == [("sentinel.toml", 15)]
    assert "allow entry #3" in report.warnings[0].message
    assert "matched no finding" in report.warnings[0].message
    assert report.exit_code == 0


def test_fixture_findings_without_the_allowlist_would_fail(tmp_path: Path) -> None:
    # The same tree minus sentinel.toml: proves the allowlist, not luck, made it pass.
    source = FIXTURES / "pass" / "allowlisted"
    for path in source.rglob("*"):
        if path.is_file() and path.name != "sentinel.toml":
            target = tmp_path / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    report = scan(tmp_path)
    assert [(f.path, f.rule) for f in report.findings] == [
        ("tests/integration/docker-compose.yml", "rdbms.postgres"),
        ("tests/integration/export_check.py", "rdbms.postgres"),
        ("tools/migrate_from_kafka.py", "broker.kafka"),
        ("tools/migrate_from_kafka.py", "broker.redis"),
        ("vendor/kafka_client/client.py", "broker.kafka"),
    ]
    assert report.exit_code == 1
