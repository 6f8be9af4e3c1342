"""Storage glue for the execution ledger: records in a block store, heads on disk.

Records are dag-cbor blocks in the node's `BlockStore`. The only other state is, per
execution, its current head set, kept in `<repo>/ledger/heads/<exec>.cbor` (dag-cbor
`{"exec": CID, "heads": [CID…]}`), replaced atomically (`atomic_write`).

Crash safety: `append` puts the record block (durable when `put` returns) before it
replaces the heads file, so after a crash the index names only blocks that exist. A
crash in between leaves an unreferenced block nobody was told about; the next append
links the old heads and the orphan is never part of the ledger.

Concurrency: one lock serialises appends and merges within a process. One node process
owns a repo; two processes appending to the same execution would each overwrite the
other's heads file (the ledger stays valid, but a record may drop out of the head set).

In memory, beside the files (each under a small lock of its own, never held for I/O, so
the trio thread may ask without waiting behind a merge):

* which records each recent execution's ledger is known to hold (`holds`): every head
  written in this process and every head set a merge accepted. A peer announcing heads
  we already merged through record gossip is then answered without a fetch or a
  verification;
* when each execution's heads last changed (`changed_since`): read from the files once,
  then kept by this process's writes, so finding the active executions costs no
  directory scan;
* the current heads of recent executions, and recently read records (decoded): this
  process is the repo's only writer, so the heads it wrote or read are the file's, and
  a record never changes (its CID is its hash). Every slot of a busy node re-reads its
  execution's heads and newest records several times; from memory that is no file
  read, hash check or decode. A heads file changed on disk behind the node's back is
  seen when the node restarts.

The pure logic (building, verifying, ordering records) is `qflow_node.core.ledger`.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cachetools import LRUCache

from qflow_node.codec import CID, DAG_CBOR, Block, CodecError, decode_dag, encode_dag, parse_cid
from qflow_node.core.ledger import (
    CorruptBlock,
    Lookup,
    Record,
    RecordError,
    SignatureChecker,
    SignatureItem,
    VerifyReport,
    antichain,
    check_signatures,
    decode_record,
    new_record,
    verify_execution,
    verify_extension,
)
from qflow_node.fsio import atomic_write, atomic_write_many, fsync_dir
from qflow_node.identity.keys import SigningKey
from qflow_node.repo import RepoPaths
from qflow_node.store import BlockNotFoundError, BlockStore, CorruptBlockError

HEADS_DIR: Final = "heads"
HEADS_SUFFIX: Final = ".cbor"
KNOWN_EXECUTIONS: Final = 4096  # executions whose held records are remembered (LRU)
KNOWN_PER_EXECUTION: Final = 1024  # records remembered per execution, at most
CACHED_HEADS: Final = 4096  # executions whose current heads are kept in memory (LRU)
CACHED_RECORDS: Final = 8192  # decoded records kept in memory (LRU)


class LedgerStoreError(Exception):
    """The ledger index or a head record is missing, corrupt or unusable."""


def store_lookup(store: BlockStore) -> Lookup:
    """A `Lookup` for the verifier over a BlockStore (absent -> None, corrupt -> signal)."""

    def lookup(cid: CID) -> bytes | None:
        try:
            return store.get(cid)
        except BlockNotFoundError:
            return None
        except CorruptBlockError as exc:
            raise CorruptBlock(exc.reason) from None

    return lookup


class KnownRecords:
    """exec -> CIDs of records known to be in this node's verified ledger, for the
    `capacity` executions used last (and at most `KNOWN_PER_EXECUTION` each: a full set
    starts over from the heads being added). Forgetting is always safe (a miss only
    costs a merge); a CID must be dropped here before it can leave the ledger (`rewind`)."""

    def __init__(self, capacity: int = KNOWN_EXECUTIONS) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._sets: OrderedDict[CID, set[CID]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, exec: CID, cids: Iterable[CID]) -> None:
        with self._lock:
            known = self._sets.get(exec)
            if known is None:
                known = self._sets[exec] = set()
                if len(self._sets) > self._capacity:
                    self._sets.popitem(last=False)
            else:
                self._sets.move_to_end(exec)
                if len(known) >= KNOWN_PER_EXECUTION:  # a long ledger: keep the newest only
                    known.clear()
            known.update(cids)

    def discard(self, exec: CID, cid: CID) -> None:
        with self._lock:
            known = self._sets.get(exec)
            if known is not None:
                known.discard(cid)

    def forget(self, exec: CID) -> None:
        with self._lock:
            self._sets.pop(exec, None)

    def holds(self, exec: CID, cids: Iterable[CID]) -> bool:
        """Whether every one of `cids` (at least one) is known to be held."""
        wanted = set(cids)
        with self._lock:
            known = self._sets.get(exec)
            if known is None or not wanted or not wanted <= known:
                return False
            self._sets.move_to_end(exec)
            return True


class ChangeTimes:
    """exec -> when its heads last changed (epoch seconds, the heads file's mtime).

    Filled by `scan` (reading the heads files) on first use, then kept by the writes of
    this process; a write before that first use is left to the scan, which sees it.
    """

    def __init__(self, scan: Callable[[], dict[CID, float]]) -> None:
        self._scan = scan
        self._times: dict[CID, float] | None = None
        self._lock = threading.Lock()  # held through the one scan: no write slips past it

    def set(self, exec: CID, at: float) -> None:
        with self._lock:
            if self._times is not None:
                self._times[exec] = at

    def drop(self, exec: CID) -> None:
        with self._lock:
            if self._times is not None:
                self._times.pop(exec, None)

    def since(self, cutoff: float, limit: int | None = None) -> list[CID]:
        """Executions changed at or after `cutoff`, newest first, at most `limit`."""
        with self._lock:
            if self._times is None:
                self._times = self._scan()
            recent = [(at, exec) for exec, at in self._times.items() if at >= cutoff]
        recent.sort(key=lambda item: item[0], reverse=True)
        return [exec for _, exec in recent[:limit]]


class LedgerStore:
    """Append to, merge into, read and verify execution ledgers of one node repo."""

    def __init__(self, store: BlockStore, paths: RepoPaths) -> None:
        self.store = store
        self.lookup = store_lookup(store)
        self._dir = paths.ledger / HEADS_DIR
        self._lock = threading.RLock()  # re-entered by the appends and merges of a `batch`
        # Heads written inside a `batch`, by the thread running it: durable together at
        # its end. Only that thread sees them before (`heads`).
        self._pending: dict[CID, list[CID]] | None = None
        self._pending_thread = 0
        self._known = KnownRecords()
        self._changes = ChangeTimes(self._scan_changes)
        self._cache_lock = threading.Lock()  # for the two caches; never held for I/O
        self._heads: LRUCache[CID, tuple[CID, ...]] = LRUCache(CACHED_HEADS)
        self._heads_writes = 0  # heads files written or removed so far (see `heads`)
        self._records: LRUCache[CID, Record] = LRUCache(CACHED_RECORDS)

    # -- heads index ----------------------------------------------------------------------

    def _heads_path(self, exec: CID) -> Path:
        return self._dir / f"{exec.encode()}{HEADS_SUFFIX}"

    def heads(self, exec: CID) -> tuple[CID, ...]:
        """The current heads of `exec` (empty if this node knows no record of it)."""
        pending = self._my_pending()
        if pending is not None and exec in pending:
            return tuple(pending[exec])
        with self._cache_lock:
            cached = self._heads.get(exec)
            writes = self._heads_writes
        if cached is not None:
            return cached
        path = self._heads_path(exec)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise LedgerStoreError(f"cannot read heads index {path}: {exc.strerror}") from None
        heads = _parse_heads(path, data, exec)
        with self._cache_lock:
            # Kept only if no heads file changed while we read: what we read may be
            # older than a write that finished meanwhile (and left the cache since).
            if self._heads_writes == writes:
                self._heads[exec] = heads
        return heads

    def _cache_heads(self, exec: CID, heads: tuple[CID, ...] | None) -> None:
        """After the heads file of `exec` was written (or removed: None)."""
        with self._cache_lock:
            self._heads_writes += 1
            if heads is None:
                self._heads.pop(exec, None)
            else:
                self._heads[exec] = heads

    def heads_changed_at(self, exec: CID) -> float | None:
        """When the heads of `exec` last changed here (epoch seconds), None if never."""
        try:
            return self._heads_path(exec).stat().st_mtime
        except FileNotFoundError:
            return None

    def changed_since(self, cutoff: float, limit: int | None = None) -> list[CID]:
        """Executions whose heads changed at or after `cutoff` (epoch seconds, as
        `heads_changed_at`), newest first, at most `limit`. From memory after the first
        call (which reads every heads file once)."""
        return self._changes.since(cutoff, limit)

    def _scan_changes(self) -> dict[CID, float]:
        times = {}
        for exec in self.executions():
            changed = self.heads_changed_at(exec)
            if changed is not None:
                times[exec] = changed
        return times

    def holds(self, exec: CID, heads: Iterable[CID]) -> bool:
        """Whether all of `heads` are known to be in our verified ledger of `exec` (so a
        merge of them changes nothing). From memory, no I/O: safe on the trio thread.
        False means "not known", not "not held"."""
        return self._known.holds(exec, heads)

    def executions(self) -> list[CID]:
        """Executions with a heads index, sorted by CID string."""
        try:
            names = sorted(p.name for p in self._dir.iterdir() if p.name.endswith(HEADS_SUFFIX))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            try:
                found.append(parse_cid(name.removesuffix(HEADS_SUFFIX)))
            except ValueError:
                continue  # not ours (e.g. an editor's backup file)
        return found

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Appends, commits and merges inside write their heads durable together when
        the block ends (`atomic_write_many`: two `syncfs` for the batch, not two fsyncs
        per execution). For one worker thread's batch: it holds the ledger lock
        throughout, and if the final write fails every head set of the batch is left as
        it was (the records stay in the store, unreferenced)."""
        with self._lock:
            if self._pending is not None:  # nested: the outer batch writes them
                yield
                return
            self._pending, self._pending_thread = {}, threading.get_ident()
            try:
                yield
                written = self._pending
            finally:
                self._pending = None
            self._store_heads(written)

    def _write_heads(self, exec: CID, heads: Sequence[CID]) -> None:
        ordered = sorted(heads, key=lambda cid: cid.cid_bytes)
        pending = self._my_pending()
        if pending is not None:
            pending[exec] = ordered
        else:
            self._store_heads({exec: ordered})

    def _my_pending(self) -> dict[CID, list[CID]] | None:
        """The heads written so far by the `batch` this thread runs, if it runs one."""
        pending = self._pending
        return pending if self._pending_thread == threading.get_ident() else None

    def _store_heads(self, heads: Mapping[CID, list[CID]]) -> None:
        if not heads:
            return
        for directory in (self._dir.parent, self._dir):  # ledger/, ledger/heads/
            if not directory.is_dir():
                directory.mkdir(exist_ok=True)
                fsync_dir(directory.parent)  # the new entry survives a crash
        files = [
            (self._heads_path(exec), encode_dag({"exec": exec, "heads": ordered}))
            for exec, ordered in heads.items()
        ]
        try:
            if len(files) == 1:
                atomic_write(*files[0])
            else:
                atomic_write_many(files)
        except BaseException:
            for exec in heads:  # some files may be written: read them again
                self._cache_heads(exec, None)
            raise
        for (path, _), (exec, ordered) in zip(files, heads.items(), strict=True):
            self._cache_heads(exec, tuple(ordered))
            self._known.add(exec, ordered)
            try:
                changed = path.stat().st_mtime  # what heads_changed_at will say
            except OSError:
                changed = time.time()
            self._changes.set(exec, changed)

    # -- records --------------------------------------------------------------------------

    def record(self, cid: CID) -> Record:
        """One record from the store, hash- and field-checked (not signature-checked)."""
        with self._cache_lock:
            cached = self._records.get(cid)
        if cached is not None:
            return cached
        record = self._read_record(cid)
        with self._cache_lock:
            self._records[cid] = record
        return record

    def _read_record(self, cid: CID) -> Record:
        try:
            data = self.lookup(cid)
        except CorruptBlock as exc:
            raise LedgerStoreError(
                f"record {cid.encode()} is corrupt in the store: {exc}"
            ) from None
        if data is None:
            raise LedgerStoreError(f"record {cid.encode()} is not in the block store")
        try:
            return decode_record(cid, data)
        except RecordError as exc:
            raise LedgerStoreError(f"record {cid.encode()}: {exc.reason}: {exc}") from None

    def append(
        self,
        exec: CID,
        kind: str,
        *,
        payload: CID,
        key: SigningKey,
        ts: int | None = None,
        step: str | None = None,
        attempt: int = 0,
        state: CID | None = None,
        actor: str | None = None,
    ) -> Block:
        """Sign a record linking all current heads, store it, make it the only head.

        The first record of an execution must be `exec.started`; it links nothing.
        Raises RecordError for a record the format forbids, StoreError/OSError on I/O.
        """
        if ts is None:
            ts = time.time_ns() // 1_000_000
        with self._lock:
            parents = {head: self.record(head).clock for head in self.heads(exec)}
            block, _ = new_record(
                exec,
                kind,
                parents=parents,
                payload=payload,
                key=key,
                ts=ts,
                step=step,
                attempt=attempt,
                state=state,
                actor=actor,
            )
            self.store.put(block)
            self._write_heads(exec, [block.cid])
        return block

    def commit(self, exec: CID, blocks: Sequence[Block], heads: Sequence[CID]) -> None:
        """Store a batch of blocks (records built with `new_record` by a writer that
        tracks its own heads, and their payload and state blocks) in one `put_many`, then
        make `heads` the head set. The blocks are durable before the index names them,
        as in `append`; the caller must be the execution's only writer in this repo."""
        with self._lock:
            self.store.put_many(blocks)
            self._write_heads(exec, heads)

    def commit_next(
        self,
        exec: CID,
        expected: Sequence[CID],
        build: Callable[[dict[CID, Mapping[str, int]]], tuple[Sequence[Block], Block]],
    ) -> Block | None:
        """Write the record `build(parents)` returns (with the blocks it needs) as the
        only head, if the heads are still `expected`; None (nothing written) if they
        moved - a merge came in since the caller looked, and it must look again.

        A compare-and-set on the head set: a writer that decided on a state never
        links records it has not seen, and never appends after a record that settled
        its work already. `parents` maps each current head to its clock.
        """
        with self._lock:
            current = self.heads(exec)
            if set(current) != set(expected):
                return None
            blocks, record = build({head: self.record(head).clock for head in current})
            self.store.put_many([*blocks, record])
            self._write_heads(exec, [record.cid])
        return record

    def rewind(self, exec: CID, head: CID, parents: Sequence[CID]) -> bool:
        """Replace `head` in the head set by its `parents` (records under it, verified
        when they were heads). For a record that never left this node after a crash;
        False (nothing changed) if `head` is no longer a head."""
        with self._lock:
            current = self.heads(exec)
            if head not in current:
                return False
            # The parents may lie under another head (merged since): keep the antichain.
            # Each record is read (and hash-checked) once, however often the walk asks.
            record = functools.cache(self.record)
            heads = antichain(
                [*(h for h in current if h != head), *parents],
                lambda cid: record(cid).clock,
                lambda cid: record(cid).prev,
                lambda cid: record(cid).node,
            )
            self._known.discard(exec, head)  # before it leaves the ledger
            if heads:
                self._write_heads(exec, heads)
            else:  # the lost record was exec.started: no record of it remains here
                self._known.forget(exec)
                if self._pending is not None:
                    self._pending.pop(exec, None)
                self._heads_path(exec).unlink(missing_ok=True)
                self._cache_heads(exec, None)
                self._changes.drop(exec)
        return True

    def merge(
        self, exec: CID, heads: Iterable[CID], *, checker: SignatureChecker | None = None
    ) -> VerifyReport:
        """Adopt heads learnt from a peer: verify the union, keep its antichain.

        The blocks reachable from `heads` must already be in the store (fetch first).
        Nothing changes unless the whole union verifies. One record extending our only
        head - the ledger growing a record at a time - is checked alone: everything
        below it was verified when it became our head.

        Heads we already hold (`holds`, or among our current heads) change nothing: the
        report is ok and names the current heads, with `records` 0 (nothing was read),
        and nothing is verified or written.
        """
        heads = tuple(heads)
        if self.holds(exec, heads):  # before the lock: not behind another's verification
            current = self.heads(exec)
            if current:
                return VerifyReport(True, exec, 0, current)
        with self._lock:
            current = self.heads(exec)
            if heads and set(heads) <= set(current):
                self._known.add(exec, current)
                return VerifyReport(True, exec, 0, current)
            extended = self._extend(exec, current, heads)
            if extended is not None:
                return extended
            report = verify_execution([*current, *heads], self.lookup, exec=exec, checker=checker)
            if report.ok:
                if report.heads != current:
                    self._write_heads(exec, report.heads)
                self._known.add(exec, heads)
        return report

    def _extend(
        self, exec: CID, current: tuple[CID, ...], heads: tuple[CID, ...]
    ) -> VerifyReport | None:
        """The fast path of `merge`: one new record on top of our single verified head
        is checked alone (`verify_extension`) instead of re-verifying the whole ledger.
        None when the case does not apply (the full verification decides)."""
        if len(current) != 1 or len(heads) != 1 or heads[0] == current[0]:
            return None
        (head,) = current
        (new,) = heads
        try:
            parent = self.record(head)
            data = self.lookup(new)
        except (LedgerStoreError, CorruptBlock):
            return None
        if data is None:
            return None
        try:
            if decode_record(new, data).prev != (head,):
                return None
        except RecordError:
            return None  # let the full verification name the problem
        failure = verify_extension(new, data, exec=exec, parent=head, parent_clock=parent.clock)
        if failure is not None:
            return VerifyReport(False, exec, 0, (), failure=failure)
        self._write_heads(exec, [new])
        return VerifyReport(True, exec, sum(parent.clock.values()) + 1, (new,))

    def verify(
        self,
        exec: CID | None = None,
        heads: Iterable[CID] | None = None,
        **options: Any,
    ) -> VerifyReport:
        """Verify from `heads`, or from the local heads of `exec`. Options as verify_execution."""
        if heads is None:
            if exec is None:
                raise ValueError("verify needs heads or an execution id")
            heads = self.heads(exec)
            if not heads:
                raise LedgerStoreError(f"no local records of execution {exec.encode()}")
        return verify_execution(heads, self.lookup, exec=exec, **options)

    def replay(self, exec: CID) -> Iterator[tuple[CID, Record]]:
        """The verified records of `exec`, in replay order. LedgerStoreError if invalid."""
        report = self.verify(exec)
        if not report.ok:
            assert report.failure is not None
            failure = report.failure
            raise LedgerStoreError(
                f"ledger of {exec.encode()} is invalid: {failure.reason} at "
                f"{failure.cid.encode()}: {failure.message}"
            )
        for cid in report.order:
            yield cid, self.record(cid)


def _parse_heads(path: Path, data: bytes, exec: CID) -> tuple[CID, ...]:
    try:
        obj = decode_dag(data)
    except CodecError as exc:
        raise LedgerStoreError(f"heads index {path} is corrupt: {exc}") from None
    heads = obj.get("heads") if isinstance(obj, dict) else None
    if (
        not isinstance(obj, dict)
        or obj.keys() != {"exec", "heads"}
        or obj["exec"] != exec
        or not isinstance(heads, list)
        or not heads
        or any(not isinstance(h, CID) or h.cid_bytes[1] != DAG_CBOR for h in heads)
    ):
        raise LedgerStoreError(f"heads index {path} is not a heads index of {exec.encode()}")
    return tuple(heads)


# -- parallel signature checks ------------------------------------------------------------


def _check_chunk(job: tuple[int, Sequence[SignatureItem]]) -> int | None:
    offset, items = job
    bad = check_signatures(items)
    return None if bad is None else offset + bad


class ParallelSignatureChecker:
    """A SignatureChecker that spreads Ed25519 checks over worker processes.

    Signature checks are ~85% of full verification and independent of each other;
    everything else stays in the calling process. Results are taken in chunk order, so
    the index returned is the first bad one, as with the sequential checker. Batches
    under `min_batch` are checked in-process (IPC would cost more). Use as a context
    manager, or call `close()`.
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        chunk: int = 2048,
        min_batch: int = 256,
        start_method: str = "forkserver",
    ) -> None:
        self.processes = processes or os.cpu_count() or 1
        self._chunk = chunk
        self._min_batch = min_batch
        # forkserver: safe in a process that already runs threads (trio's, the store's).
        context = multiprocessing.get_context(start_method)
        self._pool = context.Pool(self.processes)

    def __call__(self, items: Sequence[SignatureItem]) -> int | None:
        if len(items) < self._min_batch:
            return check_signatures(items)
        jobs = [
            (start, list(items[start : start + self._chunk]))
            for start in range(0, len(items), self._chunk)
        ]
        for bad in self._pool.imap(_check_chunk, jobs):
            if bad is not None:
                return bad
        return None

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()

    def __enter__(self) -> ParallelSignatureChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
