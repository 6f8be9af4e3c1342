"""Scanner details, one file at a time: requirements syntax, Python AST cases, YAML marks,
Dockerfiles, URL handling, globs and which files are read at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel import Report, load_rules, scan
from sentinel.allowlist import GlobError, compile_glob
from sentinel.scanners import FileKind, classify, scan_file
from sentinel.scanners.base import LineFinder, iter_urls

RULES = load_rules()


def one_file(kind: FileKind, name: str, text: str) -> list[tuple[int, str, str]]:
    out = scan_file(kind, name, text.encode(), RULES)
    assert out.errors == []
    return sorted((f.line, f.rule, f.matched) for f in out.findings)


def tree(tmp_path: Path, files: dict[str, str]) -> Report:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return scan(tmp_path)


# --- requirements -------------------------------------------------------------------------


def test_requirements_syntax() -> None:
    text = (
        "# comment with psycopg2\n"  # 1
        "--index-url https://pypi.example/simple\n"  # 2
        "-c constraints.txt\n"  # 3
        "pika==1.3 \\\n"  # 4
        "    --hash=sha256:00 \\\n"  # 5
        "    --hash=sha256:11\n"  # 6
        "aiokafka ; python_version >= '3.8'  # trailing comment\n"  # 7
        "asyncpg @ https://example.org/asyncpg-0.29.tar.gz\n"  # 8
        "-e git+https://github.com/example/kazoo.git#egg=kazoo\n"  # 9
        "https://example.org/wheels/etcd3-0.12-py3-none-any.whl\n"  # 10
        "./vendored/consul\n"  # 11
        "requests\n"  # 12
    )
    assert one_file("requirements", "requirements.txt", text) == [
        (4, "broker.rabbitmq", "pika"),
        (7, "broker.kafka", "aiokafka"),
        (8, "rdbms.postgres", "asyncpg"),
        (9, "coord.zookeeper", "kazoo"),
    ]


def test_invalid_requirement_warns_but_its_name_is_still_checked() -> None:
    out = scan_file("requirements", "requirements.txt", b"redis >=> 4\n", RULES)
    assert [(w.line, w.message) for w in out.warnings] == [
        (1, "not a valid PEP 508 requirement: 'redis >=> 4'")
    ]
    assert [(f.line, f.rule) for f in out.findings] == [(1, "broker.redis")]


@pytest.mark.parametrize(
    ("parts", "kind"),
    [
        (("requirements.txt",), "requirements"),
        (("requirements-dev.txt",), "requirements"),
        (("requirements", "base.txt"), "requirements"),
        (("requirements.in",), "requirements"),
        (("constraints.txt",), "requirements"),
        (("pyproject.toml",), "pyproject"),
        (("sub", "pyproject.toml"), "pyproject"),
        (("setup.cfg",), "setup-cfg"),
        (("Pipfile",), "pipfile"),
        (("Pipfile.lock",), "pipfile-lock"),
        (("poetry.lock",), "toml-lock"),
        (("uv.lock",), "toml-lock"),
        (("pdm.lock",), "toml-lock"),
        (("pylock.toml",), "toml-lock"),
        (("pylock.dev.toml",), "toml-lock"),
        (("config.toml",), "toml"),
        (("compose.yaml",), "yaml"),
        (("k8s", "deploy.yml"), "yaml"),
        (("tox.ini",), "ini"),
        (("alembic.ini",), "ini"),
        ((".env",), "dotenv"),
        ((".env.production",), "dotenv"),
        (("prod.env",), "dotenv"),
        (("Dockerfile",), "dockerfile"),
        (("Dockerfile.worker",), "dockerfile"),
        (("worker.Dockerfile",), "dockerfile"),
        (("Containerfile",), "dockerfile"),
        (("app.py",), "python"),
        (("README.md",), None),
        (("notes.txt",), None),
        (("yarn.lock",), None),
        ((".envrc",), None),
        (("data.json",), None),
    ],
)
def test_classify(parts: tuple[str, ...], kind: FileKind | None) -> None:
    assert classify(parts) == kind


def test_pyproject_poetry_pdm_uv_hatch_and_build_requires() -> None:
    text = (
        "[build-system]\n"  # 1
        'requires = ["hatchling", "psycopg2"]\n'  # 2
        "[tool.poetry.dependencies]\n"  # 3
        'python = "^3.11"\n'  # 4
        'celery = {version = "^5", extras = ["redis"]}\n'  # 5
        "[tool.poetry.group.dev.dependencies]\n"  # 6
        '"kazoo" = "*"\n'  # 7
        "[tool.pdm.dev-dependencies]\n"  # 8
        'test = ["etcd3"]\n'  # 9
        "[tool.uv]\n"  # 10
        'dev-dependencies = ["pika"]\n'  # 11
        "[tool.hatch.envs.bench]\n"  # 12
        'extra-dependencies = ["nats-py"]\n'  # 13
    )
    assert one_file("pyproject", "pyproject.toml", text) == [
        (2, "rdbms.postgres", "psycopg2"),
        (5, "broker.redis", "celery[redis]"),
        (5, "queue.celery", "celery[redis]"),
        (7, "coord.zookeeper", "kazoo"),
        (9, "coord.etcd", "etcd3"),
        (11, "broker.rabbitmq", "pika"),
        (13, "broker.nats", "nats-py"),
    ]


def test_pyproject_line_found_when_toml_escapes_change_the_text() -> None:
    # The parsed requirement has plain quotes; the raw TOML has escaped ones.
    text = (
        "[project]\n"  # 1
        'name = "x"\n'  # 2
        'dependencies = ["requests", "aiokafka>=0.8 ; python_version>\\"3.9\\""]\n'  # 3
    )
    assert one_file("pyproject", "pyproject.toml", text) == [
        (3, "broker.kafka", "aiokafka"),
    ]


def test_toml_urls_skip_comments_and_find_repeated_values() -> None:
    text = (
        '# url = "redis://old"\n'  # 1
        "[a]\n"  # 2
        'url = "redis://cache"\n'  # 3
        "[b]\n"  # 4
        'url = "redis://cache"  # same again\n'  # 5
    )
    assert one_file("toml", "app.toml", text) == [
        (3, "broker.redis", "redis://cache"),
        (5, "broker.redis", "redis://cache"),
    ]


# --- Python -------------------------------------------------------------------------------


def test_python_ast_cases() -> None:
    text = (
        '"""Module docstring: postgres://not-a-finding."""\n'  # 1
        "from importlib import import_module as load\n"  # 2
        "import importlib as il\n"  # 3
        "\n"  # 4
        "from . import redis\n"  # 5
        "from .kafka import Producer\n"  # 6
        "from azure import servicebus\n"  # 7
        "from mysql import connector\n"  # 8
        "from kafka import *\n"  # 9
        "\n"  # 10
        "def f(user: str) -> None:\n"  # 11
        '    """Docstrings are skipped: amqp://nope."""\n'  # 12
        '    load("nats")\n'  # 13
        '    il.import_module(name="pymysql")\n'  # 14
        '    __import__("kazoo.client")\n'  # 15
        '    import_module(".relative", "pkg")\n'  # 16
        '    dsn = f"postgresql://{user}@db/app"\n'  # 17
        '    sql = """\n'  # 18
        "    select 1;\n"  # 19
        "    -- mysql://inside-a-multiline-string\n"  # 20
        '    """\n'  # 21
        '    name = "import redis"\n'  # 22
    )
    assert one_file("python", "mod.py", text) == [
        (7, "cloud.servicebus", "azure.servicebus"),
        (8, "rdbms.mysql", "mysql.connector"),
        (9, "broker.kafka", "kafka"),
        (13, "broker.nats", "nats"),
        (14, "rdbms.mysql", "pymysql"),
        (15, "coord.zookeeper", "kazoo.client"),
        (17, "rdbms.postgres", "postgresql://"),
        (20, "rdbms.mysql", "mysql://inside-a-multiline-string"),
    ]


def test_aws_clients_need_a_visible_sdk_import_and_a_literal_service() -> None:
    with_sdk = (
        "import boto3\n"  # 1
        "svc = 'sqs'\n"  # 2
        "a = boto3.client(svc)\n"  # 3: not a literal: not guessed
        "b = boto3.client('sqs')\n"  # 4
        "c = boto3.Session().resource('sqs')\n"  # 5
        "d = boto3.client('sns')\n"  # 6
    )
    assert one_file("python", "a.py", with_sdk) == [
        (4, "cloud.sqs", 'client("sqs")'),
        (5, "cloud.sqs", 'resource("sqs")'),
    ]
    assert one_file("python", "b.py", "x.client('sqs')\n") == []


def test_duplicate_matches_on_one_line_are_reported_once(tmp_path: Path) -> None:
    report = tree(tmp_path, {"a.py": "from google.cloud import pubsub, pubsub_v1\n"})
    assert [(f.line, f.rule) for f in report.findings] == [(1, "cloud.pubsub")]


# --- YAML, INI, .env, Dockerfile -----------------------------------------------------------


def test_yaml_marks_block_scalars_anchors_and_multiple_documents() -> None:
    text = (
        "x-common: &common\n"  # 1
        "  image: redis:7\n"  # 2
        "services:\n"  # 3
        "  a: *common\n"  # 4
        "  b:\n"  # 5
        "    command: |\n"  # 6
        "      echo start\n"  # 7
        "      connect amqp://rabbit:5672\n"  # 8
        "---\n"  # 9
        "image:\n"  # 10
        "  repository: confluentinc/cp-zookeeper\n"  # 11
        "  tag: 7.6.0\n"  # 12
        "env: [{value: 'nats://nats:4222'}]\n"  # 13
    )
    assert one_file("yaml", "compose.yaml", text) == [
        (2, "broker.redis", "redis:7"),
        (8, "broker.rabbitmq", "amqp://rabbit:5672"),
        (11, "coord.zookeeper", "confluentinc/cp-zookeeper"),
        (13, "broker.nats", "nats://nats:4222"),
    ]


def test_yaml_custom_tags_are_fine_for_compose() -> None:
    text = "Resources:\n  Queue: !GetAtt [Q, Arn]\n  Url: !Sub 'redis://${Host}'\n"
    assert one_file("yaml", "template.yaml", text) == [(3, "broker.redis", "redis://${Host}")]


def test_dotenv_lines() -> None:
    text = (
        "# BROKER=amqp://commented\n"  # 1
        "export CELERY_BROKER_URL='redis://cache:6379/1'\n"  # 2
        "DB=sqlite:///local.db\n"  # 3
        'OTHER="postgresql+psycopg://u:p@db/x"\n'  # 4
    )
    assert one_file("dotenv", ".env", text) == [
        (2, "broker.redis", "redis://cache:6379/1"),
        (4, "rdbms.postgres", "postgresql+psycopg://u:***@db/x"),
    ]


def test_dockerfile_from_lines() -> None:
    text = (
        "FROM python:3.11-slim AS build\n"  # 1
        "# FROM postgres:16\n"  # 2
        "from --platform=$BUILDPLATFORM docker.io/library/redis:7 as cache\n"  # 3
        "ENV BROKER_URL=amqp://rabbit\n"  # 4
        "FROM build\n"  # 5
    )
    assert one_file("dockerfile", "Dockerfile", text) == [
        (3, "broker.redis", "docker.io/library/redis:7"),
        (4, "broker.rabbitmq", "amqp://rabbit"),
    ]


def test_setup_cfg_extras_and_url_values() -> None:
    text = (
        "[options]\n"  # 1
        "install_requires = requests; aiokafka\n"  # 2
        "[options.extras_require]\n"  # 3
        "queue =\n"  # 4
        "    # dramatiq\n"  # 5
        "    dramatiq[redis]\n"  # 6
        "[tool:pytest]\n"  # 7
        "env = BROKER=nats://localhost\n"  # 8
    )
    assert one_file("setup-cfg", "setup.cfg", text) == [
        (2, "broker.kafka", "aiokafka"),
        (6, "broker.redis", "dramatiq[redis]"),
        (6, "queue.dramatiq", "dramatiq[redis]"),
        (8, "broker.nats", "nats://localhost"),
    ]


# --- URLs, lines, globs, walking ------------------------------------------------------------


def test_urls_need_a_scheme_at_a_word_boundary() -> None:
    text = "a my_postgres://x b postgres://y c.redis://z jdbc:mysql://h"
    assert [u.scheme for u in iter_urls(text)] == ["my_postgres", "postgres", "c.redis", "mysql"]
    assert [RULES.match_url_scheme(u.scheme) is None for u in iter_urls(text)] == [
        True,
        False,
        True,
        False,
    ]


def test_line_finder_cursor_and_comments() -> None:
    finder = LineFinder("# pika\npika\nx\npika\n")
    assert finder.find("pika") == 2
    assert finder.find("pika") == 4
    assert finder.find("pika") is None
    assert finder.first("absent", "x") == 3
    assert finder.first("absent") == 1


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("tests/sentinel/fixtures/**", "tests/sentinel/fixtures/fail/a/b.py", True),
        ("tests/sentinel/fixtures/**", "tests/sentinel/fixtures", True),
        ("tests/sentinel/fixtures/**", "tests/sentinel/fixtures2/a.py", False),
        ("tests/*.py", "tests/a.py", True),
        ("tests/*.py", "tests/sub/a.py", False),
        ("**/docker-compose.yml", "docker-compose.yml", True),
        ("**/docker-compose.yml", "deploy/dev/docker-compose.yml", True),
        ("deploy/**/values.yaml", "deploy/values.yaml", True),
        ("deploy/**/values.yaml", "deploy/a/b/values.yaml", True),
        ("docker-compose.yml", "sub/docker-compose.yml", False),
        ("app?.py", "app1.py", True),
        ("app[!0-9].py", "app1.py", False),
        ("app[!0-9].py", "appx.py", True),
        ("./tools/x.py", "tools/x.py", True),
    ],
)
def test_globs(glob: str, path: str, matches: bool) -> None:
    assert bool(compile_glob(glob).fullmatch(path)) is matches


@pytest.mark.parametrize("glob", ["", "/etc/**", "../x", "a/../b", "a[b"])
def test_bad_globs(glob: str) -> None:
    with pytest.raises(GlobError):
        compile_glob(glob)


def test_default_skips_virtualenvs_and_excludes(tmp_path: Path) -> None:
    files = {
        name: "import pika\n"
        for name in [
            ".git/hooks/x.py",
            ".venv/lib/x.py",
            "venv/lib/x.py",
            "node_modules/x/x.py",
            "pkg/__pycache__/x.py",
            "build/lib/x.py",
            "dist/x.py",
            "pkg.egg-info/x.py",
            ".tox/py311/x.py",
            "myenv/lib/x.py",
            "vendored/x.py",
            "src/kept.py",
        ]
    }
    files["myenv/pyvenv.cfg"] = "home = /usr/bin\n"
    files["sentinel.toml"] = 'exclude = ["vendored/**"]\n'
    report = tree(tmp_path, files)
    assert [f.path for f in report.findings] == ["src/kept.py"]
    assert report.files_scanned == 1


def test_root_sentinel_toml_is_valid_and_every_entry_is_used() -> None:
    repo = Path(__file__).resolve().parents[2]
    full = scan(repo)
    assert [e for e in full.errors if e.path == "sentinel.toml"] == []
    assert [w for w in full.warnings if w.path == "sentinel.toml"] == []
