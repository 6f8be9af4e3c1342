"""`qflow ledger verify|show|heads`: execution ledgers in the local repo's block store.

Exit codes: 0 ok (verify: the ledger is valid); 1 verify found the ledger invalid (the
report says which record and why), or show/heads found a record missing or invalid;
2 usage or I/O error (no repo, invalid CID, unreadable index). Errors are one line on
stderr; reports and records go to stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from qflow_node.cli.errors import (
    EXIT_CHECK_FAILED,
    cid_argument,
    fail,
    open_block_store,
)
from qflow_node.cli.options import repo_option
from qflow_node.codec.dagjson import to_dag_json
from qflow_node.core.ledger import Record, VerifyReport
from qflow_node.ledger_store import LedgerStore, LedgerStoreError, ParallelSignatureChecker
from qflow_node.repo import RepoPaths
from qflow_node.store import StoreError


def _open(repo: Path) -> LedgerStore:
    return LedgerStore(open_block_store(repo), RepoPaths(repo))


def _emit(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def _record_json(record: Record) -> Any:
    return to_dag_json(record.to_obj())


@click.group("ledger")
def ledger_group() -> None:
    """Verify and inspect execution ledgers (signed, hash-linked records)."""


@ledger_group.command("verify")
@repo_option
@click.option(
    "--exec",
    "exec_text",
    metavar="EXEC",
    help="The execution the records must belong to; without HEAD-CIDs, this node's heads of it.",
)
@click.option(
    "--signatures/--no-signatures",
    default=True,
    show_default=True,
    help="--no-signatures checks links, hashes, fields and clocks only.",
)
@click.option(
    "--links/--no-links",
    default=True,
    show_default=True,
    help="Also require each record's exec, payload and state blocks to be present and intact.",
)
@click.option(
    "--chain-only",
    is_flag=True,
    help="Check hash-chain integrity only: every record present, hashing to its CID, of "
    "this execution (no field, clock or signature checks).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes for signature checks.",
)
@click.option(
    "--reexecute",
    "reexecute",
    metavar="EXEC",
    help="Replay EXEC and re-run each deterministic wasm step, checking that its output "
    "and state delta CIDs match the records.",
)
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@click.argument("heads", nargs=-1, metavar="[HEAD-CID]...")
def verify_command(
    *,
    repo: Path,
    reexecute: str | None,
    exec_text: str | None,
    signatures: bool,
    links: bool,
    chain_only: bool,
    jobs: int,
    as_json: bool,
    heads: tuple[str, ...],
) -> None:
    """Verify the ledger reachable from HEAD-CIDs (or the local heads of --exec).

    Every linked record must be present and hash to its CID, be a well-formed record of
    the same execution, carry a consistent vector clock and a valid signature by its
    node. On failure the report names the first bad record (or missing block) and why.
    """
    if reexecute is not None:
        from qflow_node.cli.replay_cmd import reexecute_command

        reexecute_command(repo, cid_argument(reexecute), as_json=as_json)
        return
    if not heads and exec_text is None:
        fail("give one or more HEAD-CIDs, or --exec EXEC to use this node's heads")
    exec = cid_argument(exec_text) if exec_text is not None else None
    head_cids = [cid_argument(text) for text in heads]
    ledger = _open(repo)
    options: dict[str, Any] = {
        "signatures": signatures,
        "resolve_links": links,
        "chain_only": chain_only,
    }
    try:
        if jobs > 1 and signatures and not chain_only:
            with ParallelSignatureChecker(jobs) as checker:
                report = ledger.verify(exec, head_cids or None, checker=checker, **options)
        else:
            report = ledger.verify(exec, head_cids or None, **options)
    except LedgerStoreError as exc:
        fail(str(exc))
    except (StoreError, OSError) as exc:
        fail(f"cannot read the block store: {exc}")
    if as_json:
        _emit(report.to_json())
    else:
        _print_report(report)
    if not report.ok:
        raise SystemExit(EXIT_CHECK_FAILED)


def _print_report(report: VerifyReport) -> None:
    exec = report.exec.encode() if report.exec else "?"
    if report.ok:
        click.echo(f"ok: {report.records} records of execution {exec}")
        for head in report.heads:
            click.echo(f"head  {head.encode()}")
        return
    failure = report.failure
    assert failure is not None
    click.echo(f"invalid: {failure.reason} at {failure.cid.encode()}")
    click.echo(f"  {failure.message}")
    click.echo(f"  execution  {exec}")
    if failure.index is not None:
        click.echo(f"  replay index  {failure.index}")
    if failure.depth is not None:
        click.echo(f"  depth  {failure.depth} (links from the nearest head)")
    if failure.linked_from is not None:
        click.echo(f"  linked from  {failure.linked_from.encode()}")
    click.echo(f"  records read  {report.records}")


@ledger_group.command("show")
@repo_option
@click.option(
    "--ancestors",
    is_flag=True,
    help="Show CID and every record it reaches, in replay order (verified, without signatures).",
)
@click.argument("cid", metavar="CID")
def show_command(repo: Path, ancestors: bool, cid: str) -> None:
    """Print a record as DAG-JSON: links as {"/": "bafy…"}, bytes as {"/": {"bytes": …}}.

    The output is the record exactly: `qflow block put --codec dag-cbor` gives CID back.
    """
    key = cid_argument(cid)
    ledger = _open(repo)
    try:
        if not ancestors:
            _emit(_record_json(ledger.record(key)))
            return
        report = ledger.verify(heads=[key], signatures=False)
        if not report.ok:
            _print_report(report)
            raise SystemExit(EXIT_CHECK_FAILED)
        _emit([{"cid": c.encode(), "record": _record_json(ledger.record(c))} for c in report.order])
    except LedgerStoreError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    except (StoreError, OSError) as exc:
        fail(f"cannot read the block store: {exc}")


@ledger_group.command("replay")
@repo_option
@click.option("--until", "until_step", metavar="STEP", help="Stop once STEP has finished.")
@click.option("--until-record", "until_record", metavar="CID", help="Stop after this record.")
@click.option("--json", "as_json", is_flag=True, help="The state as one JSON object.")
@click.argument("exec_text", metavar="EXEC")
def replay_command(
    *, repo: Path, until_step: str | None, until_record: str | None, as_json: bool, exec_text: str
) -> None:
    """Rebuild EXEC's state from its records, running nothing, and show it."""
    from qflow_node.cli.replay_cmd import show_replay

    if until_step is not None and until_record is not None:
        fail("give --until or --until-record, not both")
    record = cid_argument(until_record) if until_record is not None else None
    show_replay(repo, cid_argument(exec_text), until_step, record, as_json=as_json)


@ledger_group.command("heads")
@repo_option
@click.argument("exec_text", metavar="[EXEC]", required=False)
def heads_command(repo: Path, exec_text: str | None) -> None:
    """Print this node's heads of EXEC, or every execution it holds with its heads."""
    ledger = _open(repo)
    try:
        executions = [cid_argument(exec_text)] if exec_text is not None else ledger.executions()
        for exec in executions:
            heads = ledger.heads(exec)
            if exec_text is not None and not heads:
                fail(f"no local records of execution {exec.encode()}", EXIT_CHECK_FAILED)
            click.echo(f"{exec.encode()} {' '.join(h.encode() for h in heads)}")
    except LedgerStoreError as exc:
        fail(str(exc))
