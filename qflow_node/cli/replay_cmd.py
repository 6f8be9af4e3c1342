"""The bodies of `qflow ledger replay` and `qflow ledger verify --reexecute`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from qflow_node.cli.errors import EXIT_CHECK_FAILED, fail, open_block_store
from qflow_node.codec import CID
from qflow_node.core.critical import CriticalKeys
from qflow_node.core.engine import parse_instance
from qflow_node.core.flow import step_index
from qflow_node.identity.store import load_node_key
from qflow_node.ledger_store import LedgerStore
from qflow_node.repo import RepoPaths
from qflow_node.runtime.config import ConfigError, load_config
from qflow_node.runtime.critical_service import CriticalSetupError, load_policy_file
from qflow_node.runtime.grants import LocalAuthority
from qflow_node.runtime.replay import Check, Replay, ReplayError, open_flow, replay
from qflow_node.runtime.session import flow_modules
from qflow_node.sandbox import Sandbox, SubnetPolicy


def _ledger(repo: Path) -> LedgerStore:
    return LedgerStore(open_block_store(repo), RepoPaths(repo))


def repo_critical_keys(repo: Path) -> CriticalKeys | None:
    """The keys of the subnet policy the repo's node runs under (`[critical] policy` in
    its config), so that a replay checks certificates as the node does; None without."""
    paths = RepoPaths(repo)
    if not paths.config.exists():
        return None
    try:
        files = load_config(paths.config).critical
    except ConfigError as exc:
        fail(f"{paths.config}: {exc}")
    if files is None:
        return None
    try:
        policy = load_policy_file(repo, files)
    except CriticalSetupError as exc:
        fail(str(exc))
    return CriticalKeys(policy.subnet, policy.cid, policy.keys)


def _state_json(result: Replay) -> dict[str, Any]:
    snapshot = result.state.snapshot()
    snapshot["flow"] = result.flow.encode()
    snapshot["exec"] = result.exec.encode()
    snapshot["records"] = {"applied": len(result.applied), "total": result.total}
    snapshot["last_record"] = result.applied[-1][0].encode() if result.applied else None
    snapshot["rejected"] = [{"record": c.encode(), "reason": str(r)} for c, r in result.rejected]
    return snapshot


def show_replay(
    repo: Path, exec: CID, until_step: str | None, until_record: CID | None, *, as_json: bool
) -> None:
    ledger = _ledger(repo)
    try:
        if until_step is not None:
            _, ir = open_flow(ledger, exec)
            parsed = parse_instance(until_step)
            if parsed is None or parsed[0] not in step_index(ir):
                fail(f"--until {until_step}: no such step in the flow of {exec.encode()}")
        result = replay(
            ledger,
            exec,
            until_step=until_step,
            until_record=until_record,
            critical=repo_critical_keys(repo),
        )
    except ReplayError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    data = _state_json(result)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, sort_keys=True))
    else:
        records = data["records"]
        click.echo(f"exec {data['exec']}  flow {data['flow']}")
        click.echo(f"status {data['status']}  records {records['applied']}/{records['total']}")
        for name, inst in data["instances"].items():
            extra = f"  {json.dumps(inst['output'], ensure_ascii=False)}"
            if inst["error"] is not None:
                extra = f"  {inst['error']['kind']}: {inst['error']['message']}"
            click.echo(f"  {name}: {inst['status']} (attempt {inst['attempt']}){extra}")
        click.echo(f"vars {json.dumps(data['vars'], ensure_ascii=False, sort_keys=True)}")
        if data["output"] is not None or data["status"] == "completed":
            click.echo(f"output {json.dumps(data['output'], ensure_ascii=False)}")
        if data["error"] is not None:
            click.echo(f"error {data['error']['kind']}: {data['error']['message']}")
        for item in data["rejected"]:
            click.echo(f"rejected {item['record']}: {item['reason']}")
    if result.rejected:
        raise SystemExit(EXIT_CHECK_FAILED)


def reexecute_command(repo: Path, exec: CID, *, as_json: bool) -> None:
    ledger = _ledger(repo)
    try:
        _, ir = open_flow(ledger, exec)
        checks: list[Check] = []
        policy = SubnetPolicy(allowed_modules=flow_modules(ledger.store, ir))
        authority = LocalAuthority(load_node_key(RepoPaths(repo)))
        with Sandbox(ledger.store, policy=policy) as sandbox:
            result = replay(
                ledger,
                exec,
                reexecute=sandbox,
                authority=authority,
                checks=checks,
                critical=repo_critical_keys(repo),
            )
    except ReplayError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    ok = all(c.ok for c in checks) and not result.rejected
    if as_json:
        report = {
            "ok": ok,
            "exec": exec.encode(),
            "records": result.total,
            "reexecuted": [
                {
                    "record": c.record.encode(),
                    "step": c.step,
                    "attempt": c.attempt,
                    "ok": c.ok,
                    "detail": c.detail,
                }
                for c in checks
            ],
            "rejected": [{"record": c.encode(), "reason": str(r)} for c, r in result.rejected],
        }
        click.echo(json.dumps(report, sort_keys=True))
    else:
        for check in checks:
            mark = "ok" if check.ok else "MISMATCH"
            click.echo(f"{mark}  {check.step} attempt {check.attempt}: {check.detail}")
        for cid, rejection in result.rejected:
            click.echo(f"rejected {cid.encode()}: {rejection}")
        verdict = "ok" if ok else "invalid"
        click.echo(f"{verdict}: {len(checks)} steps re-executed, {result.total} records replayed")
    if not ok:
        raise SystemExit(EXIT_CHECK_FAILED)
