"""`qflow peers`: reads the running node's snapshot; missing or stale says so."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from qflow_node.cli.main import qflow

PEER = "12D3KooWPeerPeerPeerPeerPeerPeerPeerPeerPeerPeerPeer"


def _snapshot(repo: Path, updated_at: float) -> dict[str, Any]:
    data = {
        "version": 1,
        "node": "12D3KooWSelf",
        "updated_at": updated_at,
        "heartbeat_interval": 1.0,
        "subnets": ["default"],
        "peers": [
            {
                "node": PEER,
                "state": "alive",
                "last_seen": updated_at - 0.4,
                "seq": 7,
                "subnets": ["default"],
                "manifest": {
                    "wasm_engine": "wasmtime/50.0.1",
                    "memory_bytes": 67108864,
                    "load": 120,
                    "free_work_tokens": 4,
                    "version": "0.1.0",
                },
            }
        ],
        "rejected": {},
    }
    (repo / "run").mkdir(parents=True)
    (repo / "run" / "peers.json").write_text(json.dumps(data), encoding="utf-8")
    return data


def test_no_node_running(tmp_path: Path) -> None:
    result = CliRunner().invoke(qflow, ["peers", "--repo", str(tmp_path)])
    assert result.exit_code == 1
    assert "error: no node is running on this repo" in result.output


def test_fresh_snapshot_as_table_and_json(tmp_path: Path) -> None:
    data = _snapshot(tmp_path, time.time())
    table = CliRunner().invoke(qflow, ["peers", "--repo", str(tmp_path)])
    assert table.exit_code == 0, table.output
    row = table.output.splitlines()[-1].split()
    assert row[:2] == [PEER, "alive"]
    assert row[-2:] == ["wasmtime/50.0.1", "default"]
    result = CliRunner().invoke(qflow, ["peers", "--repo", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["stale"] is False
    assert shown["peers"] == data["peers"]


def test_stale_snapshot_says_the_node_is_probably_not_running(tmp_path: Path) -> None:
    _snapshot(tmp_path, time.time() - 60)
    result = CliRunner().invoke(qflow, ["peers", "--repo", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output.split("error:")[0])["stale"] is True
    assert "(node not running?)" in result.output


def test_not_a_snapshot(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "peers.json").write_text("[]", encoding="utf-8")
    result = CliRunner().invoke(qflow, ["peers", "--repo", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a peers snapshot" in result.output
