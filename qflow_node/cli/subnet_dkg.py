"""`qflow subnet dkg-plan` and `qflow subnet dkg`: a subnet's key made by its validators
together, with no dealer (docs/consensus.md, "Key setup: the DKG over libp2p").

- `dkg-plan`: an admin writes the ceremony's plan (validators and their addresses, t,
  the policy's other fields, when it starts and the step length) as a JSON file;
- `dkg`: each validator runs the ceremony once with that plan, on a libp2p host of its
  own with the node's key, and writes the policy block and its share, sealed to its node
  key, in the files `qflow subnet create` writes (so `[critical]` takes them as they are).

Exit codes: 0 ok; 1 the ceremony ended without a key (too few qualified dealers, not
confirmed by t parties, started too late); 2 usage, bad plan or I/O error.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

import click

from qflow_node import clock
from qflow_node.cli.errors import EXIT_CHECK_FAILED, fail, open_block_store
from qflow_node.cli.options import repo_option
from qflow_node.cli.subnet_cmd import (
    POLICY_FILE,
    SHARE_SUFFIX,
    _check_threshold,
    _dids,
    _modules,
    _peers,
    _prepare_out,
    _print_tolerance,
    _read,
    _roles,
    _store,
    _write,
    _write_dealing,
    policy_options,
)
from qflow_node.core.dkg import DkgPlan, Finished, PlanError
from qflow_node.core.dkg.plan import CONFIRM_STEPS, MAX_PLAN_SIZE, MIN_STEP_MS
from qflow_node.identity.keys import IdentityError
from qflow_node.identity.sealed import seal_share
from qflow_node.identity.store import load_node_key
from qflow_node.repo import RepoPaths

DEFAULT_STEP_MS = 2000


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _parse_start(value: str) -> int:
    """`+SECONDS` from now, or an ISO 8601 time with its zone: unix ms."""
    if value.startswith("+"):
        try:
            seconds = float(value[1:])
        except ValueError:
            fail(f"--start {value!r}: expected +SECONDS or an ISO 8601 time with a zone")
        return clock.wall_ms() + int(seconds * 1000)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--start {value!r}: expected +SECONDS or an ISO 8601 time with a zone")
    if moment.tzinfo is None:
        fail(f"--start {value!r}: give the time zone (e.g. 2026-05-01T12:00:00Z)")
    return int(moment.timestamp() * 1000)


def _validator(value: str) -> tuple[str, list[str]]:
    peer, sep, addrs = value.partition("=")
    if not sep or not peer or not addrs:
        fail(f"--validator {value!r}: expected PEER_ID=MULTIADDR[,MULTIADDR...]")
    return peer, [addr.strip() for addr in addrs.split(",")]


def _print_plan(plan: DkgPlan) -> None:
    timeline = plan.timeline
    click.echo(f"plan: {plan.cid.encode()}")
    click.echo(f"subnet: {plan.subnet}, t = {plan.threshold} of n = {plan.size} validators")
    for i, party in enumerate(plan.validators, 1):
        click.echo(f"  {i}  {party.peer}  {', '.join(party.addrs)}")
    click.echo(
        f"runs {_when(plan.start_ms)} to {_when(timeline.ends)} (UTC): 3 rounds of"
        f" {timeline.steps} step(s) of {plan.step_ms} ms, then {CONFIRM_STEPS} to confirm"
    )


def _print_outcome(out: Path, repo: Path, peer: str, done: Finished) -> None:
    result, policy = done.result, done.policy
    click.echo(f"policy: {policy.cid.encode()}")
    click.echo(f"qualified dealers: {', '.join(map(str, result.qualified))}")
    for dealer, why in result.disqualified.items():
        click.echo(f"disqualified: {dealer} ({why})")
    click.echo(f"confirmed by: {', '.join(map(str, done.confirmed_by))}")
    click.echo(f"wrote {out / POLICY_FILE}")
    share_file = out / (peer + SHARE_SUFFIX)
    click.echo(f"share {result.share.index} for {peer}: {share_file}")
    click.echo(f"group key: {policy.group_key.to_bytes().hex()}")
    _print_tolerance(policy.tolerance)
    base = out.resolve()
    with contextlib.suppress(ValueError):  # outside the repo: the config takes it absolute
        base = base.relative_to(repo.resolve())
    click.echo("config (the node's [critical] section):")
    click.echo(f'  policy = "{base / POLICY_FILE}"')
    click.echo(f'  share = "{base / (peer + SHARE_SUFFIX)}"')


@click.command("dkg-plan")
@click.option("--subnet", required=True, help="The subnet's name ([a-z0-9][a-z0-9_-]*).")
@click.option(
    "--validator",
    "validators",
    multiple=True,
    required=True,
    metavar="PEER_ID=MULTIADDR[,MULTIADDR...]",
    help="A validator and where it listens for the ceremony (repeatable); the order gives"
    " the party and share indices 1..n.",
)
@click.option("--threshold", type=int, required=True, help="t: more than half the validators.")
@click.option(
    "--member", "members", multiple=True, metavar="PEER_ID", help="A member (repeatable)."
)
@policy_options
@click.option(
    "--start",
    required=True,
    metavar="+SECONDS|ISO-TIME",
    help="When the ceremony starts: every validator must be running by then.",
)
@click.option(
    "--step-ms",
    type=int,
    default=DEFAULT_STEP_MS,
    show_default=True,
    help=f"One relay step (at least {MIN_STEP_MS}): more than the worst delivery delay"
    " between two validators plus their clock difference.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The plan file to write (JSON).",
)
def dkg_plan_command(
    *,
    subnet: str,
    validators: tuple[str, ...],
    threshold: int,
    members: tuple[str, ...],
    modules: tuple[str, ...],
    authorities: tuple[str, ...],
    roles: tuple[str, ...],
    start: str,
    step_ms: int,
    out: Path,
) -> None:
    """Write the plan of a DKG ceremony for the subnet's validators.

    Give every validator the same file; each runs `qflow subnet dkg --plan FILE` before
    the start time.
    """
    parties = [_validator(v) for v in validators]
    peers = _peers([peer for peer, _ in parties], "--validator")
    _check_threshold(threshold, len(peers))
    if out.exists():
        fail(f"{out} already exists; refusing to overwrite a plan")
    try:
        plan = DkgPlan.create(
            subnet=subnet,
            threshold=threshold,
            validators=parties,
            start_ms=_parse_start(start),
            step_ms=step_ms,
            members=_peers(members, "--member"),
            modules=_modules(modules),
            capability_authority=_dids(authorities, "--authority"),
            rbac=_roles(roles),
        )
    except PlanError as exc:
        fail(str(exc))
    _write(out, plan.to_json().encode())
    _print_plan(plan)
    click.echo(f"wrote {out}")
    click.echo(f"next: each validator runs `qflow subnet dkg --plan {out}` before the start")


@click.command("dkg")
@repo_option
@click.option(
    "--plan",
    "plan_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ceremony's plan (from `qflow subnet dkg-plan`).",
)
@click.option(
    "--listen",
    multiple=True,
    metavar="MULTIADDR",
    help="Where to listen (repeatable; default: this node's addresses in the plan).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the policy and the sealed share (default: REPO/dkg/<plan CID>).",
)
@click.option("--put", is_flag=True, help="Also store and pin the new policy block in the repo.")
def dkg_command(
    *, repo: Path, plan_file: Path, listen: tuple[str, ...], out: Path | None, put: bool
) -> None:
    """Take part in a DKG ceremony as one of its validators; write the policy and this
    node's sealed share, and print the policy CID.

    Runs from the plan's start to its end (about 3t + 2 steps), then exits.
    """
    import trio
    from multiaddr import Multiaddr

    from qflow_node.runtime.dkg_service import DkgError, run_ceremony

    try:
        key = load_node_key(RepoPaths(repo))
    except IdentityError as exc:
        fail(f"{exc} (the node's repo: --repo)")
    try:
        plan = DkgPlan.from_json(_read(plan_file, MAX_PLAN_SIZE, "plan file"), str(plan_file))
    except PlanError as exc:
        fail(str(exc))
    index = plan.index_of(key.peer_id)
    if index is None:
        fail(f"this node ({key.peer_id}) is not a validator of plan {plan.cid.encode()}")
    addrs = listen or plan.party(index).addrs
    try:
        listen_addrs = [Multiaddr(addr) for addr in addrs]
    except Exception as exc:  # multiaddr raises several unrelated types
        fail(f"--listen: {exc}")
    late = plan.start_ms + plan.step_ms
    if clock.wall_ms() >= late:
        fail(f"plan {plan.cid.encode()} started at {_when(plan.start_ms)} (UTC): too late to deal")
    target = out if out is not None else repo / "dkg" / str(plan.cid.encode())
    share_name = key.peer_id + SHARE_SUFFIX
    _prepare_out(target, [POLICY_FILE, share_name])
    store = open_block_store(repo) if put else None
    click.echo(f"plan: {plan.cid.encode()}; this node is party {index} of {plan.size}")
    click.echo(f"waiting for the start at {_when(plan.start_ms)} (UTC)")
    try:
        done = trio.run(run_ceremony, plan, key, listen_addrs, os.urandom)
    except DkgError as exc:
        fail(f"the ceremony failed: {exc}", EXIT_CHECK_FAILED)
    except trio.TooSlowError:
        fail("the ceremony did not end in time", EXIT_CHECK_FAILED)
    policy, share = done.policy, done.result.share
    sealed = seal_share(key.peer_id, policy.subnet, policy.cid, share.index, share.to_bytes())
    _write_dealing(target, policy, [sealed], {})
    _store(store, policy)
    _print_outcome(target, repo, key.peer_id, done)
