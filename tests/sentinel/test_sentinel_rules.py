"""The rule set: the packaged rules.toml, exact (never substring) matching, and clear
errors for malformed rules files passed through the API."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel import RulesError, load_rules, scan
from sentinel.rules import image_names, normalize_dist, parse_rules

BAD_RULES = Path(__file__).resolve().parent / "fixtures" / "bad" / "rules"

RULE_IDS = [
    "rdbms.postgres",
    "rdbms.mysql",
    "rdbms.mssql",
    "rdbms.oracle",
    "broker.kafka",
    "broker.rabbitmq",
    "broker.nats",
    "broker.redis",
    "queue.celery",
    "queue.rq",
    "queue.dramatiq",
    "coord.zookeeper",
    "coord.etcd",
    "coord.consul",
    "cloud.sqs",
    "cloud.pubsub",
    "cloud.servicebus",
]


def test_packaged_rules_are_version_1_with_the_documented_ids() -> None:
    rules = load_rules()
    assert rules.version == 1
    assert rules.source == "sentinel/rules.toml"
    assert rules.ids == RULE_IDS
    assert rules.families == ["broker", "cloud", "coord", "queue", "rdbms"]
    for rule in rules.rules:
        assert rule.id.startswith(rule.family + ".")
        assert rule.why and "\n" not in rule.why


def test_a_rules_file_path_loads_the_same_rules() -> None:
    packaged = Path(__file__).resolve().parents[2] / "sentinel" / "rules.toml"
    assert load_rules(packaged).ids == RULE_IDS


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("psycopg2", "rdbms.postgres"),
        ("psycopg2_binary", "rdbms.postgres"),
        ("Psycopg2.Binary", "rdbms.postgres"),
        ("PyMySQL", "rdbms.mysql"),
        ("mysql_connector_python", "rdbms.mysql"),
        ("cx_Oracle", "rdbms.oracle"),
        ("confluent_kafka", "broker.kafka"),
        ("aio_pika", "broker.rabbitmq"),
        ("redis", "broker.redis"),
        ("google-cloud-pubsub", "cloud.pubsub"),
    ],
)
def test_distribution_names_match_after_pep503_normalisation(name: str, rule: str) -> None:
    found = load_rules().match_distribution(name)
    assert found is not None and found.id == rule


@pytest.mark.parametrize(
    "name",
    ["redistribute", "redis-py-notes", "kafkaesque", "natsort", "celery-notes", "pikachu", "boto3"],
)
def test_distribution_names_never_match_by_substring(name: str) -> None:
    assert load_rules().match_distribution(name) is None


@pytest.mark.parametrize(
    ("module", "rule"),
    [
        ("kafka", "broker.kafka"),
        ("kafka.producer", "broker.kafka"),
        ("mysql.connector", "rdbms.mysql"),
        ("mysql.connector.pooling", "rdbms.mysql"),
        ("google.cloud.pubsub_v1.subscriber", "cloud.pubsub"),
        ("azure.servicebus.aio", "cloud.servicebus"),
        ("MySQLdb", "rdbms.mysql"),
    ],
)
def test_import_roots_and_dotted_prefixes_match(module: str, rule: str) -> None:
    found = load_rules().match_import(module)
    assert found is not None and found.id == rule


@pytest.mark.parametrize(
    "module",
    [
        "my_kafka_notes",
        "kafka_utils",
        "mysql",  # only the mysql.connector package is listed, not its namespace
        "mysql_tools",
        "google.cloud",
        "google.cloud.storage",
        "azure",
        "mypackage.redis",
        "mysqldb",  # import names are case-sensitive
        "sqlite3",
        "duckdb",
        "boto3",
    ],
)
def test_imports_never_match_by_substring_or_suffix(module: str) -> None:
    assert load_rules().match_import(module) is None


@pytest.mark.parametrize(
    ("scheme", "rule"),
    [
        ("postgres", "rdbms.postgres"),
        ("postgresql+asyncpg", "rdbms.postgres"),
        ("mysql+pymysql", "rdbms.mysql"),
        ("mssql+pyodbc", "rdbms.mssql"),
        ("oracle+cx_oracle", "rdbms.oracle"),
        ("REDIS", "broker.redis"),
        ("sqla+postgresql", "rdbms.postgres"),
    ],
)
def test_url_schemes_match_whole_components(scheme: str, rule: str) -> None:
    found = load_rules().match_url_scheme(scheme)
    assert found is not None and found.id == rule


@pytest.mark.parametrize(
    "scheme",
    ["sqlite", "sqlite+aiosqlite", "duckdb", "https", "my_postgres", "postgresx", "git+ssh"],
)
def test_embedded_and_unrelated_schemes_do_not_match(scheme: str) -> None:
    assert load_rules().match_url_scheme(scheme) is None


@pytest.mark.parametrize(
    ("reference", "rule"),
    [
        ("postgres", "rdbms.postgres"),
        ("postgres:16-alpine", "rdbms.postgres"),
        ("docker.io/library/postgres:16", "rdbms.postgres"),
        ("library/redis", "broker.redis"),
        ("postgres@sha256:0123abcd", "rdbms.postgres"),
        ("localhost:5000/bitnami/kafka:3.7", "broker.kafka"),
        ("${REGISTRY}/rabbitmq:3-management", "broker.rabbitmq"),
        ("quay.io/coreos/etcd:v3.5.13", "coord.etcd"),
        ("mcr.microsoft.com/mssql/server:2022-latest", "rdbms.mssql"),
        ("Confluentinc/CP-Kafka", "broker.kafka"),
    ],
)
def test_images_match_without_tag_digest_or_registry(reference: str, rule: str) -> None:
    found = load_rules().match_image(reference)
    assert found is not None and found.id == rule


@pytest.mark.parametrize(
    "reference",
    [
        "redis-commander",
        "rediscommander/redis-commander",
        "oliver006/redis_exporter",
        "example/postgres",
        "postgres-backup",
        "python:3.11-slim",
        "coreos/etcd",  # listed only under quay.io
        "",
    ],
)
def test_images_never_match_by_substring(reference: str) -> None:
    assert load_rules().match_image(reference) is None


def test_image_names() -> None:
    assert image_names("docker.io/library/postgres:16@sha256:ab") == [
        "docker.io/library/postgres",
        "library/postgres",
        "postgres",
    ]
    assert image_names("bitnami/kafka") == ["bitnami/kafka"]


def test_extras_claim_their_rule() -> None:
    rules = load_rules()
    matched = [
        (rule.id, extra) for rule, extra in rules.match_extras("Celery", ["Redis", "msgpack"])
    ]
    assert matched == [("broker.redis", "Redis")]
    assert rules.match_extras("sqlalchemy", ["aiosqlite"]) == []


def test_aws_services_and_sdk_modules() -> None:
    rules = load_rules()
    sqs = rules.match_aws_service("sqs")
    assert sqs is not None and sqs.id == "cloud.sqs"
    assert rules.match_aws_service("s3") is None
    assert rules.is_aws_sdk_module("boto3")
    assert rules.is_aws_sdk_module("aiobotocore.session")
    assert not rules.is_aws_sdk_module("boto3_helpers")


def test_normalize_dist() -> None:
    assert normalize_dist("Foo.Bar__baz-_-qux") == "foo-bar-baz-qux"


GOOD_RULE = """
[[rule]]
id = "broker.kafka"
family = "broker"
why = "a broker cluster"
imports = ["kafka"]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 1\n[[rule]\n", "invalid TOML"),
        (GOOD_RULE, "missing `version`"),
        ("version = 2\n" + GOOD_RULE, "unsupported rules version 2"),
        ("version = true\n" + GOOD_RULE, "unsupported rules version True"),
        ("version = 1\n", "no rules"),
        ("version = 1\nextra = 1\n" + GOOD_RULE, "unknown top-level key(s): extra"),
        ("version = 1\n[aws]\nsdk = []\n" + GOOD_RULE, "[aws]: unknown key(s): sdk"),
        (
            "version = 1\n" + GOOD_RULE.replace('why = "a broker cluster"', ""),
            "missing or empty `why`",
        ),
        ("version = 1\n" + GOOD_RULE.replace('"a broker cluster"', '"""a\nb"""'), "single line"),
        ("version = 1\n" + GOOD_RULE.replace('"broker.kafka"', '"kafka"'), "id must look like"),
        (
            "version = 1\n" + GOOD_RULE.replace('"broker.kafka"', '"queue.kafka"'),
            "id must look like",
        ),
        ("version = 1\n" + GOOD_RULE.replace('family = "broker"', 'family = "Broker"'), "family"),
        ("version = 1\n" + GOOD_RULE.replace("imports", "imprts"), "unknown key(s): imprts"),
        ("version = 1\n" + GOOD_RULE.replace('imports = ["kafka"]', ""), "no matchers"),
        ("version = 1\n" + GOOD_RULE.replace('["kafka"]', '"kafka"'), "must be a list of strings"),
        ("version = 1\n" + GOOD_RULE.replace('["kafka"]', '["kafka-python"]'), "not a valid name"),
        (
            "version = 1\n" + GOOD_RULE.replace('imports = ["kafka"]', 'url_schemes = ["Kafka"]'),
            "`url_schemes` entry 'Kafka' is not a valid name",
        ),
        ("version = 1\n" + GOOD_RULE + GOOD_RULE, "duplicate rule id 'broker.kafka'"),
        (
            "version = 1\n" + GOOD_RULE + GOOD_RULE.replace("broker.kafka", "broker.other"),
            "imports entry 'kafka' is claimed by both 'broker.kafka' and 'broker.other'",
        ),
    ],
)
def test_malformed_rules_files_give_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_committed_bad_rules_fixture_names_the_file_and_the_field() -> None:
    path = BAD_RULES / "missing_why.toml"
    with pytest.raises(RulesError, match=r"missing_why\.toml: rule #1 \('broker\.kafka'\)"):
        load_rules(path)


def test_unreadable_rules_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "absent.toml")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(RulesError, match=r"dir\.toml: cannot read rules file"):
        load_rules(tmp_path / "dir.toml")


def test_custom_rules_drive_the_scan(tmp_path: Path) -> None:
    rules = parse_rules(
        'version = 1\n[[rule]]\nid = "store.mongo"\nfamily = "store"\n'
        'why = "a central document database"\ndistributions = ["pymongo"]\n'
        'imports = ["pymongo"]\nurl_schemes = ["mongodb"]\n',
        source="custom",
    )
    (tmp_path / "app.py").write_text(
        'import pymongo\nimport psycopg2\nURL = "mongodb+srv://db"\n', encoding="utf-8"
    )
    report = scan(tmp_path, rules=rules)
    assert [(f.line, f.rule) for f in report.findings] == [(1, "store.mongo"), (3, "store.mongo")]
    assert report.rules_source == "custom"
