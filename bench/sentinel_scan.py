"""Benchmark: the sentinel scanning a synthetic repository.

Generates, in a temporary directory, 2,000 Python modules (one in 50 imports a central
client) plus dependency, lock, compose, Kubernetes, .env, INI and TOML files, scans it a
few times and prints files/s and wall time. Prints figures only; asserts nothing.

    .venv/bin/python bench/sentinel_scan.py [--python-files N] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sentinel import load_rules, scan

MODULE = '''"""Synthetic module {i}."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
{extra_import}

DB_URL = "sqlite:///state-{i}.db"


@dataclass
class Record{i}:
    key: str
    value: int

    def to_json(self) -> str:
        return json.dumps({{"key": self.key, "value": self.value}})


def load_{i}(path: str) -> list[Record{i}]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("select key, value from records").fetchall()
    return [Record{i}(k, v) for k, v in rows]


def total_{i}(records: list[Record{i}]) -> int:
    return sum(r.value for r in records if r.value > {i} % 7)
'''

COMPOSE = """services:
  app{i}:
    image: ghcr.io/example/app{i}:1.0
    environment:
      STORE_URL: "sqlite:////data/app{i}.db"
      BROKER_URL: "{broker}"
  cache{i}:
    image: {image}
"""

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: svc{i}
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: svc{i}
          image: ghcr.io/example/svc{i}:2.1
          env:
            - name: MODE
              value: peer
"""


def build(root: Path, python_files: int) -> int:
    """Write the synthetic tree; return how many files the sentinel will read."""
    central = ["import psycopg2", "from kafka import KafkaProducer", "import redis.asyncio"]
    for i in range(python_files):
        package = root / "src" / f"pkg{i // 100}"
        package.mkdir(parents=True, exist_ok=True)
        extra = central[i % 3] if i % 50 == 0 else ""
        (package / f"mod{i}.py").write_text(MODULE.format(i=i, extra_import=extra))
    configs = 0
    for i in range(50):
        deploy = root / "deploy" / f"env{i}"
        deploy.mkdir(parents=True)
        is_central = i % 10 == 0
        (deploy / "docker-compose.yml").write_text(
            COMPOSE.format(
                i=i,
                broker="amqp://rabbit:5672" if is_central else "p2p://gossip",
                image="redis:7" if is_central else "ghcr.io/example/cache:1",
            )
        )
        (deploy / "deployment.yaml").write_text(DEPLOYMENT.format(i=i))
        (deploy / ".env").write_text(f"STORE_URL=sqlite:///env{i}.db\nLOG_LEVEL=info\n")
        (deploy / "app.ini").write_text(f"[app]\nname = env{i}\nstore = sqlite:///x.db\n")
        (deploy / "settings.toml").write_text(f'[app]\nname = "env{i}"\npeers = 8\n')
        configs += 5
    requirements = ["click>=8", "pyyaml>=6", "duckdb", "lmdb", "celery[redis]>=5", "requests"]
    (root / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "synthetic"\nversion = "0"\ndependencies = ["click", "asyncpg"]\n'
    )
    lock = (
        "".join(f'[[package]]\nname = "dep{i}"\nversion = "1.0"\n\n' for i in range(300))
        + '[[package]]\nname = "psycopg"\nversion = "3.2"\n'
    )
    (root / "uv.lock").write_text("version = 1\n\n" + lock)
    return python_files + configs + 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rules = load_rules()
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp:
        root = Path(tmp)
        expected = build(root, args.python_files)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        timings: list[float] = []
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            report = scan(root, rules=rules)
            timings.append(time.perf_counter() - start)
        best, median = min(timings), statistics.median(timings)
        print(f"synthetic repo: {expected} files to scan, {size / 1e6:.1f} MB")
        print(
            f"scanned {report.files_scanned} files: {len(report.findings)} findings, "
            f"{len(report.errors)} errors, exit code {report.exit_code}"
        )
        print(f"runs: {args.repeat}; best {best:.3f} s, median {median:.3f} s")
        print(
            f"throughput: {report.files_scanned / best:,.0f} files/s best, "
            f"{report.files_scanned / median:,.0f} files/s median, "
            f"{size / 1e6 / median:.1f} MB/s median"
        )


if __name__ == "__main__":
    main()
