"""`qflow subnet`: a subnet's validator set — its policy document, the dealer's key setup,
and updates signed by the current quorum (docs/consensus.md, "Validator sets and key
setup").

- `create`: as the trusted dealer, make a fresh t-of-n key, the policy block
  (`DIR/policy.cbor`) and one sealed share per validator (`DIR/<peer id>.share`);
- `show`: print a policy (`--json`: its DAG-JSON form plus the derived keys);
- `check-share`: a validator opens its sealed share with its node key and checks it
  against the policy's commitments;
- `add-validator`: re-deal for the enlarged set: the next policy (epoch + 1), its shares
  and the update statement (`DIR/update.statement`) the current quorum must sign;
- `sign-update`: a current validator signs that statement with its share (a partial);
- `apply-update`: combine t partials into the update certificate and verify it under the
  old group key; `verify-update` checks a certificate;
- `dkg-plan`, `dkg`: the key made by the validators together, with no dealer
  (`subnet_dkg.py`).

A policy argument is a policy block file, or a CID looked up in the repo's block store
(`--put` stores and pins the policies this command makes). Files are dag-cbor, written
crash-safely; share files are 0600. The dealer's secret is never written: it exists in
this process only, as the shares it seals.

Exit codes: 0 ok; 1 a check failed (a share or an update that does not verify, a
policy CID not in the store); 2 usage, bad input or I/O error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from qflow_node.cli.errors import EXIT_CHECK_FAILED, fail, open_block_store
from qflow_node.cli.main import LazyGroup
from qflow_node.cli.options import repo_option
from qflow_node.codec import CID, MAX_BLOCK_SIZE, CidError, parse_cid
from qflow_node.codec.dagjson import to_dag_json
from qflow_node.core.policy import (
    PolicyDocument,
    PolicyError,
    PolicyUpdate,
    PolicyUpdateError,
    Tolerance,
    UpdatePartial,
    UpdateStatement,
    combine_update,
    keeping_tolerance,
    load_policy,
)
from qflow_node.core.policy.update import MAX_UPDATE_SIZE
from qflow_node.crypto import CryptoError, KeySet, Share, dealer_keygen, verify_share
from qflow_node.fsio import atomic_write, fsync_dir
from qflow_node.identity.keys import IdentityError, public_key_from_did, public_key_from_peer_id
from qflow_node.identity.sealed import (
    MAX_FILE_LEN,
    SealedShare,
    SealedShareError,
    open_share,
    seal_share,
)
from qflow_node.identity.store import load_node_key
from qflow_node.repo import RepoPaths
from qflow_node.store import (
    BlockNotFoundError,
    CorruptBlockError,
    FileBlockStore,
    InvalidBlockError,
)

POLICY_FILE: Final = "policy.cbor"
STATEMENT_FILE: Final = "update.statement"
CERTIFICATE_FILE: Final = "update.cert"
SHARE_SUFFIX: Final = ".share"
PARTIAL_SUFFIX: Final = ".partial"
SHARE_MODE: Final = 0o600
PUBLIC_MODE: Final = 0o644


# -- reading and writing ---------------------------------------------------------------------


def _read(path: Path, limit: int, what: str) -> bytes:
    """At most `limit` bytes of a file; more is an error, not a truncation."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}")
    if len(data) > limit:
        fail(f"{what} {path} is larger than {limit} bytes")
    return data


def read_policy(source: str, repo: Path) -> PolicyDocument:
    """A policy from a block file, or by CID from the repo's block store."""
    path = Path(source)
    if path.exists():
        data = _read(path, MAX_BLOCK_SIZE, "policy file")
        with _bad_input(f"{source}: "):
            return load_policy(data)
    try:
        cid = parse_cid(source.strip())
    except CidError:
        fail(f"{source}: no such policy file, and not a CID")
    store = open_block_store(repo)
    try:
        data = store.get(cid)
    except (BlockNotFoundError, CorruptBlockError) as exc:
        fail(f"policy {source}: {exc}", EXIT_CHECK_FAILED)
    except OSError as exc:
        fail(f"cannot read the block store: {exc}")
    with _bad_input(f"policy {source}: "):
        return load_policy(data, cid)


def _prepare_out(directory: Path, names: Iterable[str]) -> None:
    """Create `directory` if needed; refuse if any of the dealer's files already exist
    there (a second dealing would replace shares validators may already hold)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        fail(f"--out {directory} exists and is not a directory")
    except OSError as exc:
        fail(f"cannot create {directory}: {exc.strerror or exc}")
    taken = [name for name in names if (directory / name).exists()]
    if taken:
        fail(
            f"{directory / taken[0]} already exists; refusing to overwrite a dealing"
            " (choose an empty --out directory)"
        )


def _write(path: Path, data: bytes, mode: int = PUBLIC_MODE, *, sync_dir: bool = True) -> None:
    try:
        atomic_write(path, data, mode=mode, sync_dir=sync_dir)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")


def _write_dealing(
    out: Path, policy: PolicyDocument, sealed: Sequence[SealedShare], extra: dict[str, bytes]
) -> None:
    """Share files first, the policy last (its presence marks a complete dealing), then
    one directory flush."""
    for item in sealed:
        _write(out / f"{item.peer}{SHARE_SUFFIX}", item.to_bytes(), SHARE_MODE, sync_dir=False)
    for name, data in extra.items():
        _write(out / name, data, sync_dir=False)
    _write(out / POLICY_FILE, policy.to_block().data, sync_dir=False)
    try:
        fsync_dir(out)
    except OSError as exc:
        fail(f"cannot flush {out}: {exc.strerror or exc}")


def _store(store: FileBlockStore | None, policy: PolicyDocument) -> None:
    """Put the policy block into the repo's store (opened before anything was written) and
    pin it directly: the modules and the previous policy it links to need not be local."""
    if store is None:
        return
    block = policy.to_block()
    try:
        store.put(block)
        store.pin(block.cid, recursive=False)
    except InvalidBlockError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write to the block store: {exc}")


@contextmanager
def _bad_input(prefix: str = "") -> Iterator[None]:
    """Malformed input: exit 2 with the parser's precise message."""
    try:
        yield
    except (PolicyError, IdentityError, CryptoError) as exc:
        fail(f"{prefix}{exc}")


def _deal(
    subnet: str,
    policy_for: Callable[[KeySet], PolicyDocument],
    validators: Sequence[str],
    threshold: int,
) -> tuple[PolicyDocument, list[SealedShare]]:
    """Deal a fresh t-of-n key with OS randomness, build the policy with `policy_for(keys)`
    and seal share i to validator i. The shares live only in this function."""
    keys, shares = dealer_keygen(threshold, len(validators), os.urandom)
    with _bad_input():
        policy = policy_for(keys)
    cid = policy.cid
    sealed = [
        seal_share(peer, subnet, cid, share.index, share.to_bytes())
        for peer, share in zip(validators, shares, strict=True)
    ]
    return policy, sealed


# -- argument checks -------------------------------------------------------------------------


def _peers(values: Iterable[str], option: str) -> list[str]:
    peers = []
    for value in values:
        try:
            public_key_from_peer_id(value)
        except IdentityError as exc:
            fail(f"{option} {value!r}: {exc}")
        peers.append(value)
    return peers


def _dids(values: Iterable[str], option: str) -> list[str]:
    for value in values:
        try:
            public_key_from_did(value)
        except IdentityError as exc:
            fail(f"{option} {value!r}: {exc}")
    return list(values)


def _roles(pairs: Iterable[str]) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {}
    for pair in pairs:
        role, sep, did = pair.partition("=")
        if not sep or not role or not did:
            fail(f"--role {pair!r}: expected ROLE=DID")
        roles.setdefault(role, []).extend(_dids([did], f"--role {role}="))
    return roles


def _modules(values: Iterable[str]) -> list[CID]:
    modules = []
    for value in values:
        try:
            modules.append(parse_cid(value.strip()))
        except CidError as exc:
            fail(f"--module {value!r}: {exc}")
    return modules


def _check_threshold(threshold: int, size: int) -> None:
    if not size / 2 < threshold <= size:
        fail(
            f"--threshold {threshold}: with {size} validator(s) t must be a majority,"
            f" {size // 2 + 1}..{size} (t > n/2, or two disjoint quorums could certify"
            " conflicting decisions)"
        )


# -- printing --------------------------------------------------------------------------------


def _print_tolerance(tolerance: Tolerance) -> None:
    for line in tolerance.summary():
        click.echo(line)
    for warning in tolerance.warnings():
        click.echo(f"warning: {warning}", err=True)


def _print_dealing(out: Path, policy: PolicyDocument, sealed: Sequence[SealedShare]) -> None:
    click.echo(f"policy: {policy.cid.encode()}")
    click.echo(f"wrote {out / POLICY_FILE}")
    for item in sealed:
        click.echo(f"share {item.index} for {item.peer}: {out / (item.peer + SHARE_SUFFIX)}")
    click.echo(f"group key: {policy.group_key.to_bytes().hex()}")


def _show_json(policy: PolicyDocument) -> dict[str, Any]:
    return {
        "cid": policy.cid.encode(),
        "policy": to_dag_json(policy.to_obj()),
        "group_key": policy.group_key.to_bytes().hex(),
        "validators": [
            {
                "index": v.index,
                "peer": v.peer,
                "share_key": policy.share_key(v.index).to_bytes().hex(),
            }
            for v in policy.validators
        ],
        "tolerance": policy.tolerance.to_obj(),
    }


def _print_policy(policy: PolicyDocument) -> None:
    click.echo(f"policy: {policy.cid.encode()}")
    click.echo(f"subnet: {policy.subnet}")
    click.echo(f"epoch: {policy.epoch}")
    click.echo(f"prev: {'-' if policy.prev is None else policy.prev.encode()}")
    click.echo(f"threshold: t = {policy.threshold} of n = {policy.size}")
    click.echo(f"group key: {policy.group_key.to_bytes().hex()}")
    click.echo("validators (index, peer, share key):")
    for v in policy.validators:
        click.echo(f"  {v.index}  {v.peer}  {policy.share_key(v.index).to_bytes().hex()}")
    validators = {v.peer for v in policy.validators}
    click.echo(f"members ({len(policy.members)}):")
    for peer in policy.members:
        click.echo(f"  {peer}" + ("  (validator)" if peer in validators else ""))
    _print_list("modules", [m.encode() for m in policy.modules])
    _print_list("capability authority", list(policy.capability_authority))
    if not policy.rbac:
        click.echo("rbac: -")
    else:
        click.echo("rbac:")
        for role, dids in policy.rbac:
            click.echo(f"  {role}: {', '.join(dids)}")
    _print_tolerance(policy.tolerance)


def _print_list(name: str, items: list[str]) -> None:
    if not items:
        click.echo(f"{name}: -")
        return
    click.echo(f"{name}:")
    for item in items:
        click.echo(f"  {item}")


# -- commands --------------------------------------------------------------------------------


@click.group(
    "subnet",
    cls=LazyGroup,
    # The DKG commands live in their own module, which uses the helpers here.
    lazy={
        "dkg-plan": "qflow_node.cli.subnet_dkg:dkg_plan_command",
        "dkg": "qflow_node.cli.subnet_dkg:dkg_command",
    },
    epilog="Exit codes: 0 ok, 1 a share or update does not verify (or a policy CID is not"
    " in the store), 2 usage, bad input or I/O error.",
)
def subnet_group() -> None:
    """Validator sets: subnet policies, sealed key shares, updates by the current quorum."""


Command = TypeVar("Command", bound=Callable[..., object])

out_option = click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the policy, the sealed shares (and the update statement).",
)
put_option = click.option(
    "--put", is_flag=True, help="Also store and pin the new policy block in the repo."
)


def policy_options(command: Command) -> Command:
    """The policy's content options `create` and `dkg-plan` share: its modules,
    capability authorities and roles."""
    command = click.option(
        "--role", "roles", multiple=True, metavar="ROLE=DID", help="Give ROLE to DID (repeatable)."
    )(command)
    command = click.option(
        "--authority",
        "authorities",
        multiple=True,
        metavar="DID",
        help="A capability authority's did:key (repeatable).",
    )(command)
    return click.option(
        "--module",
        "modules",
        multiple=True,
        metavar="CID",
        help="A wasm module (raw CID) allowed for critical steps (repeatable).",
    )(command)


@subnet_group.command("create")
@repo_option
@click.option("--subnet", required=True, help="The subnet's name ([a-z0-9][a-z0-9_-]*).")
@click.option(
    "--validator",
    "validators",
    multiple=True,
    required=True,
    metavar="PEER_ID",
    help="A validator's peer id (repeatable); the order gives the share indices 1..n.",
)
@click.option(
    "--member",
    "members",
    multiple=True,
    metavar="PEER_ID",
    help="A member's peer id (repeatable); validators are members too.",
)
@click.option(
    "--threshold",
    type=int,
    required=True,
    help="t: how many validators must sign (more than half of them).",
)
@policy_options
@out_option
@put_option
def create_command(
    *,
    repo: Path,
    subnet: str,
    validators: tuple[str, ...],
    members: tuple[str, ...],
    threshold: int,
    modules: tuple[str, ...],
    authorities: tuple[str, ...],
    roles: tuple[str, ...],
    out: Path,
    put: bool,
) -> None:
    """Deal a fresh t-of-n key as the trusted dealer; write the policy and sealed shares.

    Writes DIR/policy.cbor (the policy block; its CID is printed) and DIR/<peer>.share
    for each validator: its share, sealed to its node key. Send each validator its file;
    the shares are useless to anyone else.
    """
    peers = _peers(validators, "--validator")
    repeated = sorted({p for p in peers if peers.count(p) > 1})
    if repeated:
        fail(f"--validator {repeated[0]} given twice: a node holds one share")
    all_members = _peers(members, "--member")
    _check_threshold(threshold, len(peers))
    module_cids = _modules(modules)
    authority_dids = _dids(authorities, "--authority")
    rbac = _roles(roles)

    def build(keys: KeySet) -> PolicyDocument:
        return PolicyDocument.create(
            subnet=subnet,
            validators=peers,
            keys=keys,
            members=all_members,
            modules=module_cids,
            capability_authority=authority_dids,
            rbac=rbac,
        )

    policy, sealed = _deal(subnet, build, peers, threshold)
    store = open_block_store(repo) if put else None
    _prepare_out(out, [POLICY_FILE, *(p + SHARE_SUFFIX for p in peers)])
    _write_dealing(out, policy, sealed, {})
    _store(store, policy)
    _print_dealing(out, policy, sealed)
    _print_tolerance(policy.tolerance)


@subnet_group.command("show")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the policy as DAG-JSON).")
@click.argument("policy", metavar="POLICY_FILE_OR_CID")
def show_command(repo: Path, as_json: bool, policy: str) -> None:
    """Print a policy: validators and share keys, group key, threshold and tolerance."""
    document = read_policy(policy, repo)
    if as_json:
        click.echo(json.dumps(_show_json(document), sort_keys=True))
        return
    _print_policy(document)


@subnet_group.command("check-share")
@repo_option
@click.option(
    "--share", "share_file", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--policy", "policy_source", required=True, metavar="POLICY_FILE_OR_CID")
def check_share_command(repo: Path, share_file: Path, policy_source: str) -> None:
    """Open this node's sealed share and check it against the policy's commitments.

    The share must be sealed to the repo's node key, for this policy's subnet and CID and
    for this node's validator index, and match its share public key.
    """
    policy = read_policy(policy_source, repo)
    share, peer = _open_for(repo, share_file, policy.subnet, policy.cid)
    if policy.index_of(peer) != share.index:
        fail(
            f"{share_file}: share {share.index}, but this node ({peer}) is validator"
            f" {policy.index_of(peer) or 'none'} of the policy",
            EXIT_CHECK_FAILED,
        )
    if not verify_share(share, policy.keys.commitments):
        fail(
            f"{share_file}: share {share.index} does not match its public key in the policy"
            " (a bad or forged dealing)",
            EXIT_CHECK_FAILED,
        )
    key = policy.share_key(share.index).to_bytes().hex()
    click.echo(f"share {share.index} of {policy.cid.encode()} is valid; share key {key}")


def _open_for(repo: Path, share_file: Path, subnet: str, policy: CID) -> tuple[Share, str]:
    """This node's share in `share_file`, bound to `subnet` and `policy`, and its peer id."""
    try:
        key = load_node_key(RepoPaths(repo))
    except IdentityError as exc:
        fail(f"{exc} (the node's repo: --repo)")
    data = _read(share_file, MAX_FILE_LEN, "share file")
    with _bad_input(f"{share_file}: "):
        sealed = SealedShare.from_bytes(data)
    try:
        raw = open_share(sealed, key, subnet=subnet, policy=policy)
    except SealedShareError as exc:
        fail(f"{share_file}: {exc}", EXIT_CHECK_FAILED)
    with _bad_input(f"{share_file}: "):
        return Share.from_bytes(sealed.index, raw), key.peer_id


@subnet_group.command("add-validator")
@repo_option
@click.option("--policy", "policy_source", required=True, metavar="POLICY_FILE_OR_CID")
@click.option(
    "--validator",
    "validators",
    multiple=True,
    required=True,
    metavar="PEER_ID",
    help="The new validator's peer id (repeatable); it gets the next share index.",
)
@click.option(
    "--threshold",
    type=int,
    default=None,
    help="t for the new set (default: the smallest that keeps the Byzantine tolerance).",
)
@out_option
@put_option
def add_validator_command(
    *,
    repo: Path,
    policy_source: str,
    validators: tuple[str, ...],
    threshold: int | None,
    out: Path,
    put: bool,
) -> None:
    """Re-deal a fresh key for the enlarged validator set, as the dealer.

    Writes the next policy (epoch + 1, prev = the current one) with sealed shares for
    every validator, and DIR/update.statement: t validators of the CURRENT policy sign
    it (`qflow subnet sign-update`) before the new policy counts (`apply-update`).
    """
    old = read_policy(policy_source, repo)
    added = _peers(validators, "--validator")
    for peer in added:
        if old.index_of(peer) is not None or added.count(peer) > 1:
            fail(f"--validator {peer} is already a validator")
    peers = [v.peer for v in old.validators] + added
    chosen = threshold
    if chosen is None:
        chosen = keeping_tolerance(old.tolerance, len(peers))
    _check_threshold(chosen, len(peers))

    def build(keys: KeySet) -> PolicyDocument:
        return old.successor(validators=peers, keys=keys, members=[*old.members, *added])

    new, sealed = _deal(old.subnet, build, peers, chosen)
    statement = UpdateStatement.for_policies(old, new.cid)
    store = open_block_store(repo) if put else None
    _prepare_out(out, [POLICY_FILE, STATEMENT_FILE, *(p + SHARE_SUFFIX for p in peers)])
    _write_dealing(out, new, sealed, {STATEMENT_FILE: statement.to_bytes()})
    _store(store, new)
    _print_dealing(out, new, sealed)
    click.echo(f"replaces: {old.cid.encode()} (epoch {old.epoch} -> {new.epoch})")
    if threshold is None:
        click.echo(f"threshold: t = {chosen} (the smallest keeping f = {old.tolerance.byzantine})")
    click.echo(f"wrote {out / STATEMENT_FILE}")
    _print_tolerance(new.tolerance)
    click.echo(
        f"next: {old.threshold} of the {old.size} current validators run `qflow subnet"
        f" sign-update --statement {out / STATEMENT_FILE} --share <their current share>`;"
        " then `qflow subnet apply-update`"
    )


@subnet_group.command("sign-update")
@repo_option
@click.option(
    "--statement", "statement_file", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--share",
    "share_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="This node's sealed share of the CURRENT policy.",
)
@click.option(
    "--policy",
    "policy_source",
    metavar="POLICY_FILE_OR_CID",
    help="The current policy: check the share against it first (recommended).",
)
@click.option(
    "--next",
    "next_source",
    metavar="POLICY_FILE_OR_CID",
    help="The proposed policy: check it continues the current one (recommended).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the partial (default: <peer id>.partial beside the statement).",
)
def sign_update_command(
    *,
    repo: Path,
    statement_file: Path,
    share_file: Path,
    policy_source: str | None,
    next_source: str | None,
    out: Path | None,
) -> None:
    """Sign an update statement with this node's share of the current key (a partial)."""
    with _bad_input(f"{statement_file}: "):
        statement = UpdateStatement.from_bytes(
            _read(statement_file, MAX_UPDATE_SIZE, "statement file")
        )
    share, peer = _open_for(repo, share_file, statement.subnet, statement.prev)
    if policy_source is not None:
        old = read_policy(policy_source, repo)
        if old.cid != statement.prev:
            fail(f"the statement replaces {statement.prev.encode()}, not {old.cid.encode()}")
        if old.index_of(peer) != share.index or not verify_share(share, old.keys.commitments):
            fail(
                f"{share_file}: not a valid share {share.index} of {old.cid.encode()}",
                EXIT_CHECK_FAILED,
            )
    if next_source is not None:
        new = read_policy(next_source, repo)
        if new.cid != statement.next:
            fail(f"the statement installs {statement.next.encode()}, not {new.cid.encode()}")
        if new.subnet != statement.subnet or new.prev != statement.prev:
            fail(f"{next_source} does not continue {statement.prev.encode()}", EXIT_CHECK_FAILED)
    partial = UpdatePartial.sign(statement, share)
    target = out if out is not None else statement_file.parent / f"{peer}{PARTIAL_SUFFIX}"
    _write(target, partial.to_bytes())
    click.echo(
        f"signed {statement.prev.encode()} -> {statement.next.encode()} as validator"
        f" {share.index}: {target}"
    )


@subnet_group.command("apply-update")
@repo_option
@click.option("--policy", "policy_source", required=True, metavar="POLICY_FILE_OR_CID")
@click.option("--next", "next_source", required=True, metavar="POLICY_FILE_OR_CID")
@click.option(
    "--partial",
    "partial_files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A partial signature file (repeatable; t of them are needed).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the certificate (default: update.cert beside the next policy).",
)
@put_option
def apply_update_command(
    *,
    repo: Path,
    policy_source: str,
    next_source: str,
    partial_files: tuple[Path, ...],
    out: Path | None,
    put: bool,
) -> None:
    """Combine the current validators' partials into the update certificate, verify it
    under the current group key, and write it."""
    old = read_policy(policy_source, repo)
    new = read_policy(next_source, repo)
    statement = UpdateStatement.for_policies(old, new.cid)
    partials: dict[int, bytes] = {}
    for path in partial_files:
        with _bad_input(f"{path}: "):
            partial = UpdatePartial.from_bytes(_read(path, MAX_UPDATE_SIZE, "partial file"))
        if partial.statement != statement:
            fail(f"{path}: signs another update ({partial.statement.next.encode()})")
        if partials.get(partial.index, partial.sig) != partial.sig:
            fail(f"{path}: a second, different partial from share {partial.index}")
        partials[partial.index] = partial.sig
    try:
        update = combine_update(old, statement, partials)
        update.verify(old, new)
    except PolicyUpdateError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    store = open_block_store(repo) if put else None
    if out is None:
        beside = Path(next_source).parent if Path(next_source).exists() else Path()
        out = beside / CERTIFICATE_FILE
    _write(out, update.to_bytes())
    _store(store, new)
    click.echo(f"certified: {old.cid.encode()} -> {new.cid.encode()} (epoch {new.epoch})")
    click.echo(f"wrote {out}")


@subnet_group.command("verify-update")
@repo_option
@click.option("--policy", "policy_source", required=True, metavar="POLICY_FILE_OR_CID")
@click.option("--next", "next_source", required=True, metavar="POLICY_FILE_OR_CID")
@click.option("--cert", "cert_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
def verify_update_command(
    repo: Path, policy_source: str, next_source: str, cert_file: Path
) -> None:
    """Check an update certificate: NEXT validly replaces POLICY (exit 1 if not)."""
    old = read_policy(policy_source, repo)
    new = read_policy(next_source, repo)
    with _bad_input(f"{cert_file}: "):
        update = PolicyUpdate.from_bytes(_read(cert_file, MAX_UPDATE_SIZE, "certificate file"))
    try:
        update.verify(old, new)
    except PolicyUpdateError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    click.echo(f"valid: {new.cid.encode()} replaces {old.cid.encode()} (epoch {new.epoch})")
