"""Verify an execution's ledger from its heads.

Three passes, each deterministic, so the reported failure depends only on the heads and
the store's contents:

1. collect: breadth-first from the heads (sorted by raw CID bytes; each record's prev in
   stored order). Every block is hashed, decoded strictly and field-checked, its `exec`
   compared, and (optionally) its exec/payload/state blocks resolved; the first failure
   is reported with its depth (0 = a head) and the record whose link led to it.
2. order: sort the records by replay key (clock sum, raw CID bytes).
3. check, in that order: parents come earlier, prev is an antichain, the clock is exactly
   the parents' merged clock with `node` incremented, and last the signature. The first
   failure is reported with its replay index.

Signature checks dominate the cost and are independent, so a caller may hand them to a
`SignatureChecker` (e.g. a process pool); the reported failure stays the same.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from qflow_node.codec import CID, CidError, check_cid, cid_for
from qflow_node.core.ledger.clock import first_difference
from qflow_node.core.ledger.dag import antichain, dominator
from qflow_node.core.ledger.errors import Reason, RecordError
from qflow_node.core.ledger.record import (
    DAG_CBOR_PREFIX,
    check_record,
    decode_obj,
    decode_record,
    signing_message,
)
from qflow_node.identity.keys import IdentityError, public_key_from_peer_id, verify

Lookup = Callable[[CID], bytes | None]
"""Block bytes for a CID, or None when absent. May raise CorruptBlock."""

SignatureItem = tuple[bytes, bytes, bytes]
"""(Ed25519 public key, message, signature)."""

SignatureChecker = Callable[[Sequence[SignatureItem]], int | None]
"""Index of the first item whose signature does not verify, or None if all do."""


class CorruptBlock(Exception):
    """Raised by a lookup whose store found the block's bytes do not match its CID."""


@dataclass(frozen=True, slots=True)
class Failure:
    """The first bad block or record. `cid` names it; `linked_from` names the record whose
    link led to it (None for a head); `index` is its replay position (None when it
    failed before ordering); `depth` is its link distance from the nearest head."""

    reason: Reason
    cid: CID
    message: str
    depth: int | None = None
    index: int | None = None
    linked_from: CID | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": str(self.reason),
            "cid": self.cid.encode(),
            "message": self.message,
            "depth": self.depth,
            "index": self.index,
            "linked_from": self.linked_from.encode() if self.linked_from else None,
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    exec: CID | None
    records: int
    """Records in the DAG when ok; on failure, records read before the verifier stopped."""
    heads: tuple[CID, ...]
    """The given heads minus any that are ancestors of another (empty on failure)."""
    order: tuple[CID, ...] = field(default=(), repr=False)
    """Every record in replay order (empty on failure)."""
    failure: Failure | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exec": self.exec.encode() if self.exec else None,
            "records": self.records,
            "heads": [cid.encode() for cid in self.heads],
            "failure": self.failure.to_json() if self.failure else None,
        }


def check_signatures(items: Sequence[SignatureItem]) -> int | None:
    """The sequential SignatureChecker."""
    for i, (public_key, message, sig) in enumerate(items):
        try:
            verify(public_key, message, sig)
        except IdentityError:
            return i
    return None


# A collected record while verifying: (clock sum, raw CID, CID, bytes, clock, prev, node,
# ts, sig, depth). A plain tuple of only what pass 3 needs: 100k of them are built and
# kept, and holding whole decoded maps cost 15% of hash-only throughput. It sorts by
# replay key as it stands (raw CIDs are unique, so comparison stops there).
_Entry = tuple[int, bytes, CID, bytes, dict[str, int], list[CID], str, int, bytes, int]


_NO_CLOCK: dict[str, int] = {}


def _check_links_only(obj: Any) -> None:
    """What walking the hash chain needs of a record: a map with `exec` and `prev` links."""
    if not isinstance(obj, dict):
        raise RecordError(Reason.BAD_FIELD, "a record is a dag-cbor map")
    prev = obj.get("prev")
    if not isinstance(obj.get("exec"), CID) or not isinstance(prev, list):
        raise RecordError(Reason.BAD_FIELD, "a record needs an `exec` link and a `prev` list")
    for link in prev:
        if not isinstance(link, CID):
            raise RecordError(Reason.BAD_FIELD, "`prev` must hold only links")


class _Stop(Exception):
    def __init__(self, failure: Failure) -> None:
        self.failure = failure


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Keep the cyclic GC from rescanning the growing tables (it halved throughput).

    Verification creates no reference cycles, so nothing is left for the collector.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def verify_execution(
    heads: Iterable[CID],
    lookup: Lookup,
    *,
    exec: CID | None = None,
    signatures: bool = True,
    checker: SignatureChecker | None = None,
    resolve_links: bool = False,
    check_hashes: bool = True,
    max_records: int | None = None,
    chain_only: bool = False,
) -> VerifyReport:
    """Verify the DAG reachable from `heads`; never raises for bad data, only reports.

    `exec`: the execution the records must belong to (default: that of the first head).
    `signatures=False` checks everything but signatures (hash-chain integrity).
    `checker`: run signature checks in one batch through it (default: inline).
    `resolve_links`: also require the `exec`, `payload` and `state` blocks to be present
    and to hash to their CIDs.
    `check_hashes=False` is only for lookups that already hash what they return; without
    it a hostile store could feed the verifier a cycle (still detected, as `cycle`).
    `max_records`: stop with `too_many_records` beyond this many records.
    `chain_only=True` checks hash-chain integrity only: every block reachable through
    `prev` is present, hashes to its CID, is canonical dag-cbor and belongs to `exec`.
    No field, clock or signature checks and no replay order (`order` is empty, `heads`
    are the given heads); `signatures` is ignored.
    Raises ValueError only for a caller error: no heads, or a head that is not a CID.
    """
    unique: dict[bytes, CID] = {}
    for head in heads:
        try:
            check_cid(head)
        except (CidError, AttributeError) as exc:
            raise ValueError(f"not a head CID: {exc}") from None
        unique[head.cid_bytes] = head
    if not unique:
        raise ValueError("verify_execution needs at least one head")
    head_list = [unique[raw] for raw in sorted(unique)]
    with _gc_paused():
        run = _Verification(
            lookup,
            exec,
            check_hashes=check_hashes,
            resolve_links=resolve_links,
            signatures=signatures and not chain_only,
            chain_only=chain_only,
        )
        try:
            run.collect(head_list, max_records)
            if chain_only:
                return VerifyReport(True, run.exec, len(run.entries), tuple(head_list))
            run.entries.sort()
            run.check(checker)
            report = VerifyReport(
                True,
                run.exec,
                len(run.entries),
                antichain(head_list, run.clock_of, run.prev_of, run.node_of),
                tuple(entry[2] for entry in run.entries),
            )
        except _Stop as stop:
            report = VerifyReport(False, run.exec, len(run.entries), (), failure=stop.failure)
        # Free the tables while the collector is off: once it is back on, its first pass
        # would otherwise walk every object they hold just before they die.
        del run
    return report


class _Verification:
    """State of one verify_execution call."""

    def __init__(
        self,
        lookup: Lookup,
        exec: CID | None,
        *,
        check_hashes: bool,
        resolve_links: bool,
        signatures: bool,
        chain_only: bool = False,
    ) -> None:
        self.lookup = lookup
        self.chain_only = chain_only
        self.exec = exec
        self.check_hashes = check_hashes
        self.resolve_links = resolve_links
        self.signatures = signatures
        self.resolved: set[bytes] = set()
        self.entries: list[_Entry] = []
        self._by_raw: dict[bytes, _Entry] | None = None
        # Clocks of the records pass 3 has accepted so far, by raw CID.
        self.clocks: dict[bytes, dict[str, int]] = {}
        self.items: list[SignatureItem] = []
        self.checker: SignatureChecker | None = None

    @property
    def by_raw(self) -> dict[bytes, _Entry]:
        """Entries by raw CID; built on first use (merges, errors), which chains never need."""
        if self._by_raw is None:
            self._by_raw = {entry[1]: entry for entry in self.entries}
        return self._by_raw

    def clock_of(self, cid: CID) -> Mapping[str, int]:
        return self.by_raw[cid.cid_bytes][4]

    def prev_of(self, cid: CID) -> Sequence[CID]:
        return self.by_raw[cid.cid_bytes][5]

    def node_of(self, cid: CID) -> str:
        return self.by_raw[cid.cid_bytes][6]

    # -- pass 1 ---------------------------------------------------------------------------

    def collect(self, heads: list[CID], max_records: int | None) -> None:
        """Read every record reachable from `heads`, breadth-first, level by level."""
        exec_raw = self.exec.cid_bytes if self.exec is not None else None
        entries = self.entries
        seen = {head.cid_bytes for head in heads}
        limit = max_records if max_records is not None else -1
        read = self._read
        signatures = self.signatures
        level = heads
        depth = 0
        while level:
            below: list[CID] = []
            for cid in level:
                try:
                    data, obj = read(cid)
                    if obj["exec"].cid_bytes != exec_raw:
                        if exec_raw is None:
                            self.exec, exec_raw = obj["exec"], obj["exec"].cid_bytes
                        else:
                            raise self._wrong_exec(obj)
                    if len(entries) == limit:
                        message = f"more than {limit} records"
                        raise RecordError(Reason.TOO_MANY_RECORDS, message)  # noqa: TRY301
                except RecordError as exc:
                    linked_from = self._linked_from(cid, depth)
                    failure = Failure(exc.reason, cid, exc.message, depth, linked_from=linked_from)
                    raise _Stop(failure) from None
                if self.resolve_links:
                    self._resolve_links(cid, depth, obj)
                prev = obj["prev"]
                if self.chain_only:
                    # Only what `_linked_from` needs to name a failure's parent.
                    entries.append((0, b"", cid, b"", _NO_CLOCK, prev, "", 0, b"", depth))
                    for link in prev:
                        if (link_raw := link.cid_bytes) not in seen:
                            seen.add(link_raw)
                            below.append(link)
                    continue
                clock = obj["clock"]
                entries.append(
                    (
                        sum(clock.values()),
                        cid.cid_bytes,
                        cid,
                        data,
                        clock,
                        prev,
                        obj["node"],
                        # Kept only if needed: 100k retained objects cost time too.
                        obj["ts"] if signatures else 0,
                        obj["sig"] if signatures else b"",
                        depth,
                    )
                )
                for link in prev:
                    link_raw = link.cid_bytes
                    if link_raw not in seen:
                        seen.add(link_raw)
                        below.append(link)
            level = below
            depth += 1

    def _linked_from(self, cid: CID, depth: int) -> CID | None:
        """The record whose link led the walk to `cid`: the first one read that links it."""
        raw = cid.cid_bytes
        for entry in self.entries:
            if entry[9] == depth - 1 and any(link.cid_bytes == raw for link in entry[5]):
                return entry[2]
        return None

    def _read(self, cid: CID) -> tuple[bytes, dict[str, Any]]:
        """The block's bytes and its checked record map; RecordError if it is no record."""
        raw = cid.cid_bytes
        if raw[:4] != DAG_CBOR_PREFIX:
            raise RecordError(Reason.WRONG_CODEC, "links to a block that is not dag-cbor")
        try:
            data = self.lookup(cid)
        except CorruptBlock as exc:
            message = f"store reports a corrupt block: {exc}"
            raise RecordError(Reason.HASH_MISMATCH, message) from None
        if data is None:
            raise RecordError(Reason.MISSING_BLOCK, "block not found")
        if self.check_hashes and hashlib.sha256(data).digest() != raw[4:]:
            raise RecordError(Reason.HASH_MISMATCH, "block bytes do not hash to its CID")
        obj = decode_obj(data)
        if self.chain_only:
            _check_links_only(obj)
        else:
            check_record(obj)
        return data, obj

    def _wrong_exec(self, obj: dict[str, Any]) -> RecordError:
        assert self.exec is not None
        message = f"record of execution {obj['exec'].encode()}, not {self.exec.encode()}"
        return RecordError(Reason.WRONG_EXEC, message)

    def _resolve_links(self, cid: CID, depth: int, obj: dict[str, Any]) -> None:
        """The exec, payload and state blocks a record links must be present and intact."""
        links = [obj["exec"], obj["payload"]]
        if obj["state"] is not None:
            links.append(obj["state"])
        for link in links:
            if link.cid_bytes in self.resolved:
                continue
            try:
                data = self.lookup(link)
            except CorruptBlock as exc:
                reason, message = Reason.HASH_MISMATCH, f"store reports a corrupt block: {exc}"
            else:
                if data is None:
                    reason, message = Reason.MISSING_BLOCK, "linked block not found"
                elif cid_for(data, link.cid_bytes[1]) != link:
                    reason, message = Reason.HASH_MISMATCH, "block bytes do not hash to its CID"
                else:
                    self.resolved.add(link.cid_bytes)
                    continue
            raise _Stop(Failure(reason, link, message, depth + 1, linked_from=cid))

    # -- pass 3 ---------------------------------------------------------------------------

    def check(self, checker: SignatureChecker | None) -> None:
        """Check every record, in replay order, against its parents."""
        self.checker = checker
        signatures = self.signatures
        clocks = self.clocks
        items = self.items
        for index, (_, raw, _, data, clock, prev, node, ts, sig, _) in enumerate(self.entries):
            if len(prev) == 1 and (parent_clock := clocks.get(prev[0].cid_bytes)) is not None:
                # The common case, a chain link, inline.
                expected = dict(parent_clock)
                expected[node] = parent_clock.get(node, 0) + 1
            else:
                expected = self._expected_clock(index, prev, node)
            if clock != expected:
                peer, got, want = first_difference(clock, expected)
                raise self._fail(
                    index,
                    Reason.CLOCK_INCONSISTENT,
                    f"clock[{peer}] is {got}, expected {want} (parents' clocks merged, "
                    "the writer's entry incremented)",
                )
            if signatures:
                item = (public_key_from_peer_id(node), signing_message(data, ts), sig)
                if checker is not None:
                    items.append(item)
                else:
                    try:
                        verify(*item)
                    except IdentityError as exc:
                        message = f"signature by {node}: {exc}"
                        raise self._fail(index, Reason.BAD_SIGNATURE, message) from None
            clocks[raw] = clock
        self._flush_signatures()

    def _expected_clock(self, index: int, prev: list[CID], node: str) -> dict[str, int]:
        """The clock a record with these parents must carry (genesis, merges, errors)."""
        clocks = self.clocks
        expected: dict[str, int] = {}
        for link in prev:
            parent_clock = clocks.get(link.cid_bytes)
            if parent_clock is None:
                raise self._fail(index, *self._misplaced_parent(index, link))
            for peer, n in parent_clock.items():
                if n > expected.get(peer, 0):
                    expected[peer] = n
        for a in prev:
            b = dominator(a, prev, self.clock_of, self.prev_of, self.node_of)
            if b is not None:
                message = f"prev {a.encode()} is an ancestor of prev {b.encode()}"
                raise self._fail(index, Reason.PREV_NOT_ANTICHAIN, message)
        expected[node] = expected.get(node, 0) + 1
        return expected

    def _misplaced_parent(self, index: int, parent: CID) -> tuple[Reason, str]:
        """A parent that does not come earlier in replay order: a cycle, or a bad clock."""
        clock_sum, target = self.entries[index][:2]
        stack = [parent]
        seen = {parent.cid_bytes}
        while stack:
            raw = stack.pop().cid_bytes
            if raw == target:
                return Reason.CYCLE, f"record is its own ancestor through prev {parent.encode()}"
            for link in self.by_raw[raw][5]:
                if link.cid_bytes not in seen:
                    seen.add(link.cid_bytes)
                    stack.append(link)
        parent_sum = self.by_raw[parent.cid_bytes][0]
        return (
            Reason.CLOCK_INCONSISTENT,
            f"prev {parent.encode()} has clock sum {parent_sum} >= this record's "
            f"{clock_sum}: a record cannot link a parent it could not have seen",
        )

    def _fail(self, index: int, reason: Reason, message: str) -> _Stop:
        """The failure of record `index`, unless a batched signature before it is bad."""
        self._flush_signatures()
        entry = self.entries[index]
        return _Stop(Failure(reason, entry[2], message, entry[9], index))

    def _flush_signatures(self) -> None:
        """Check the batched signatures (those of every record before the current one)."""
        if self.checker is None or not self.items:
            return
        bad = self.checker(self.items)
        self.items.clear()
        if bad is not None:
            entry = self.entries[bad]
            message = f"signature by {entry[6]}: Ed25519 signature does not verify"
            raise _Stop(Failure(Reason.BAD_SIGNATURE, entry[2], message, entry[9], bad))


def verify_extension(
    cid: CID,
    data: bytes | None,
    *,
    exec: CID,
    parent: CID,
    parent_clock: Mapping[str, int],
) -> Failure | None:
    """Check one record that links exactly the single verified head `parent` (with its
    clock): the common case of a ledger growing one record at a time. The same checks
    `verify_execution` applies to that record - hash, fields, execution, the clock
    rule, the signature - without walking the ledger it extends. None if it passes."""
    if data is None:
        return Failure(Reason.MISSING_BLOCK, cid, "block not found", depth=0)
    try:
        record = decode_record(cid, data)
    except RecordError as exc:
        return Failure(exc.reason, cid, str(exc), depth=0)
    if record.exec != exec:
        return Failure(
            Reason.WRONG_EXEC, cid, f"belongs to {record.exec.encode()}, not {exec.encode()}", 0
        )
    if record.prev != (parent,):
        return Failure(Reason.CLOCK_INCONSISTENT, cid, "does not extend the given head", 0)
    expected = dict(parent_clock)
    expected[record.node] = parent_clock.get(record.node, 0) + 1
    if dict(record.clock) != expected:
        peer, got, want = first_difference(dict(record.clock), expected)
        message = f"clock[{peer}] is {got}, expected {want} (parent's clock, writer's entry + 1)"
        return Failure(Reason.CLOCK_INCONSISTENT, cid, message, 0)
    try:
        verify(public_key_from_peer_id(record.node), signing_message(data, record.ts), record.sig)
    except IdentityError as exc:
        return Failure(Reason.BAD_SIGNATURE, cid, f"signature by {record.node}: {exc}", 0)
    return None
