"""Storage glue for the execution ledger: records in a block store, heads in a journal.

Records are dag-cbor blocks in the node's `BlockStore`. The only other state is, per
execution, its current head set, kept in one append-only heads journal,
`<repo>/ledger/heads.log` (`qflow_node.appendlog`): each entry is dag-cbor
`{"exec": CID, "heads": [CID…], "at": <epoch seconds>}` and replaces the execution's
previous head set (`"heads": []`: the execution is gone). A write appends one entry per
execution changed, a whole `batch` in one write and one fdatasync - no file is created
per write. When the journal has grown to several times what its live entries take, it
is rewritten with one entry per execution (`atomic_write`: the old journal or the whole
new one, at every instant). Repos from before the journal kept one file per execution,
`ledger/heads/<exec>.cbor`: those are read first (their mtime as `at`), the journal
overrides them, and the first compaction takes them in and removes them.

Crash safety: `append` puts the record block (durable when `put` returns) before it
appends its heads, so the journal names only blocks that exist. A crash in between
leaves an unreferenced block nobody was told about; the next append links the old heads
and the orphan is never part of the ledger. A crash during an append leaves a torn tail
(dropped when the journal is read, cut off before the next append) after whole entries:
some head sets of the batch may be kept, each naming durable records only. An entry
that is whole (its CRC matches) but not a heads entry is corruption, an error.

Concurrency: one lock serialises appends and merges within a process. One node process
owns a repo; readers (the CLI) read the journal once. Another writer (`qflow run` on the
repo) must not write over entries it never read: each append holds `ledger/heads.lock`
and reads the journal again first if another wrote it since. Two processes appending to
the same execution may still each replace the other's heads (the ledger stays valid, but
a record may drop out of the head set).

In memory (each under a small lock, never held for I/O, so the trio thread may ask
without waiting behind a merge):

* the whole heads index - every execution's heads and when they last changed - read
  from the journal on first use, then kept by this process's writes: `heads`,
  `executions` and `changed_since` (the active executions) cost no file read. The
  journal changed on disk behind the node's back is seen when the node restarts;
* which records each recent execution's ledger is known to hold (`holds`): every head
  written in this process and every head set a merge accepted. A peer announcing heads
  we already merged through record gossip is then answered without a fetch or a
  verification;
* recently read records (decoded): a record never changes (its CID is its hash). Every
  slot of a busy node re-reads its execution's newest records several times; from
  memory that is no block read, hash check or decode.

The pure logic (building, verifying, ordering records) is `qflow_node.core.ledger`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import multiprocessing
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cachetools import LRUCache

from qflow_node.appendlog import FRAME, MAGIC, AppendLog, LogFormatError, frame, parse
from qflow_node.clock import wall_ms, wall_s
from qflow_node.codec import (
    CID,
    DAG_CBOR,
    RAW,
    Block,
    CodecError,
    decode_dag,
    encode_dag,
    iter_links,
    parse_cid,
)
from qflow_node.core.critical import Certificate
from qflow_node.core.ledger import (
    CorruptBlock,
    Failure,
    Lookup,
    Reason,
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
from qflow_node.fsio import atomic_write, fsync_dir
from qflow_node.identity.keys import SigningKey
from qflow_node.log import get_logger
from qflow_node.repo import RepoPaths
from qflow_node.store import BlockNotFoundError, BlockStore, CorruptBlockError

JOURNAL: Final = "heads.log"  # ledger/heads.log, the heads journal
LOCK_FILE: Final = "heads.lock"  # held by a writer of the journal while it appends
HEADS_DIR: Final = "heads"  # ledger/heads/<exec>.cbor: the heads files of older repos
# ledger/accepted/<exec>: submissions this node accepted and has no record of yet
ACCEPTED_DIR: Final = "accepted"
HEADS_SUFFIX: Final = ".cbor"
COMPACT_MIN_BYTES = 1 << 20  # a journal is rewritten only once larger than this...
COMPACT_RATIO = 4  # ... and than this many times the size of its live entries
KNOWN_EXECUTIONS: Final = 4096  # executions whose held records are remembered (LRU)
KNOWN_PER_EXECUTION: Final = 1024  # records remembered per execution, at most
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


# exec -> (heads, when they changed, the size of its journal entry with its frame)
_Entry = tuple[tuple[CID, ...], float, int]


class LedgerStore:
    """Append to, merge into, read and verify execution ledgers of one node repo."""

    def __init__(self, store: BlockStore, paths: RepoPaths) -> None:
        self.store = store
        self.lookup = store_lookup(store)
        self._journal = paths.ledger / JOURNAL
        self._legacy_dir = paths.ledger / HEADS_DIR
        self._accepted_dir = paths.ledger / ACCEPTED_DIR
        self._lock = threading.RLock()  # re-entered by the appends and merges of a `batch`
        # Heads written inside a `batch`, by the thread running it: durable together at
        # its end. Only that thread sees them before (`heads`).
        self._pending: dict[CID, list[CID]] | None = None
        self._pending_thread = 0
        self._known = KnownRecords()
        # The heads index, read on first use (`_loaded`, under `_load_lock` so that the
        # trio thread's first read never waits behind a batch holding `_lock`).
        self._load_lock = threading.Lock()
        self._index: dict[CID, _Entry] | None = None
        self._cache_lock = threading.Lock()  # for the index and the records; never held for I/O
        self._records: LRUCache[CID, Record] = LRUCache(CACHED_RECORDS)
        # The writer's side, under `_lock` (`_writer`).
        self._lock_fd = -1
        self._log: AppendLog | None = None
        self._close_log: Callable[[], object] = lambda: None
        self._journal_end = 0  # where its whole entries end, as last read or written
        self._seen = (0, 0)  # its (inode, size) then: any other means another wrote it
        self._live_bytes = 0  # what the index's entries take in the journal (`_compact`)
        self._compact_floor = 0  # no compaction below this size (after one failed)
        self._legacy: dict[CID, Path] = {}  # older repos' heads files still on disk

    # -- heads index ----------------------------------------------------------------------

    def heads(self, exec: CID) -> tuple[CID, ...]:
        """The current heads of `exec` (empty if this node knows no record of it)."""
        pending = self._my_pending()
        if pending is not None and exec in pending:
            return tuple(pending[exec])
        index = self._loaded()
        with self._cache_lock:
            entry = index.get(exec)
        return () if entry is None else entry[0]

    def heads_changed_at(self, exec: CID) -> float | None:
        """When the heads of `exec` last changed here (epoch seconds), None if never."""
        index = self._loaded()
        with self._cache_lock:
            entry = index.get(exec)
        return None if entry is None else entry[1]

    def changed_since(self, cutoff: float, limit: int | None = None) -> list[CID]:
        """Executions whose heads changed at or after `cutoff` (epoch seconds, as
        `heads_changed_at`), newest first, at most `limit`. From memory."""
        index = self._loaded()
        with self._cache_lock:
            recent = [(at, exec) for exec, (_, at, _) in index.items() if at >= cutoff]
        recent.sort(key=lambda item: item[0], reverse=True)
        return [exec for _, exec in recent[:limit]]

    def holds(self, exec: CID, heads: Iterable[CID]) -> bool:
        """Whether all of `heads` are known to be in our verified ledger of `exec` (so a
        merge of them changes nothing). From memory, no I/O: safe on the trio thread.
        False means "not known", not "not held"."""
        return self._known.holds(exec, heads)

    def accept(self, exec: CID) -> None:
        """Note durably that this node accepted the submission `exec`: until a record of
        it exists (the start record may be a while coming), a crash must not forget it.
        See `accepted`."""
        self._accepted_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self._accepted_dir / exec.encode(), b"")

    def accepted(self) -> list[CID]:
        """Accepted submissions with no record yet (to open again after a restart);
        the marks of those that have records are dropped."""
        try:
            names = sorted(p.name for p in self._accepted_dir.iterdir())
        except FileNotFoundError:
            return []
        waiting = []
        for name in names:
            try:
                exec = parse_cid(name)
            except ValueError:
                continue  # a temp file of an interrupted `accept`, or not ours
            if self.heads(exec):
                (self._accepted_dir / name).unlink(missing_ok=True)
            else:
                waiting.append(exec)
        return waiting

    def executions(self) -> list[CID]:
        """Executions with heads, sorted by CID string."""
        index = self._loaded()
        with self._cache_lock:
            found = list(index)
        return sorted(found, key=CID.encode)

    def _loaded(self) -> dict[CID, _Entry]:
        """The heads index, read from disk on first use (again after a failed read)."""
        index = self._index
        if index is None:
            with self._load_lock:
                if self._index is None:
                    self._index = self._load()
                index = self._index
        return index

    def _load(self) -> dict[CID, _Entry]:
        """Older repos' heads files, then the journal over them (later entries win)."""
        index: dict[CID, _Entry] = {}
        legacy = self._legacy_files()
        for exec, path in list(legacy.items()):
            try:
                data, at = path.read_bytes(), path.stat().st_mtime
            except FileNotFoundError:
                del legacy[exec]
                continue
            except OSError as exc:
                raise LedgerStoreError(f"cannot read heads index {path}: {exc.strerror}") from None
            heads = _parse_heads(path, data, exec)
            index[exec] = (heads, at, FRAME.size + len(heads_entry(exec, heads, at)))
        try:
            with self._journal.open("rb") as file:
                inode, data = os.fstat(file.fileno()).st_ino, file.read()
        except FileNotFoundError:
            inode, data = 0, b""
        except OSError as exc:
            raise LedgerStoreError(
                f"cannot read heads journal {self._journal}: {exc.strerror}"
            ) from None
        try:
            entries, end = parse(self._journal, data)
        except LogFormatError as exc:
            raise LedgerStoreError(f"heads journal {exc}") from None
        for offset, payload in entries:
            if not payload:
                continue  # zeros after a crash parse as empty entries; we never write one
            exec, heads, at = _parse_entry(self._journal, offset, payload)
            if heads:
                index[exec] = (heads, at, FRAME.size + len(payload))
            else:
                index.pop(exec, None)
        # No write runs while the index is (re)loaded: `_loaded` first, or under `_lock`.
        self._legacy, self._journal_end, self._seen = legacy, end, (inode, end)
        self._live_bytes = sum(size for _, _, size in index.values())
        return index

    def _legacy_files(self) -> dict[CID, Path]:
        try:
            paths = sorted(self._legacy_dir.iterdir())
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LedgerStoreError(
                f"cannot list heads index {self._legacy_dir}: {exc.strerror}"
            ) from None
        found = {}
        for path in paths:
            if path.name.endswith(HEADS_SUFFIX):
                try:
                    found[parse_cid(path.name.removesuffix(HEADS_SUFFIX))] = path
                except ValueError:
                    continue  # not ours (e.g. an editor's backup file)
        return found

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Appends, commits and merges inside write their heads durable together when
        the block ends (one journal append: one fdatasync for the batch). For one worker
        thread's batch: it holds the ledger lock throughout, and if the final write
        fails every head set of the batch is left as it was (the records stay in the
        store, unreferenced)."""
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
        """Make `heads` the head set of `exec` (none: the execution is gone)."""
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
        """Append the head sets to the journal in one durable write, then (only then)
        take them into the index. Under `_lock`."""
        if not heads:
            return
        self._loaded()  # before the first append: the index must not miss it
        at = wall_s()
        payloads = [heads_entry(exec, ordered, at) for exec, ordered in heads.items()]
        with self._journal_locked():
            log = self._writer()
            log.append(payloads)
            self._seen = (self._seen[0], log.size)
            index = self._loaded()
            with self._cache_lock:
                for (exec, ordered), payload in zip(heads.items(), payloads, strict=True):
                    old = index.pop(exec, None)
                    self._live_bytes -= 0 if old is None else old[2]
                    if ordered:
                        index[exec] = (tuple(ordered), at, FRAME.size + len(payload))
                        self._live_bytes += FRAME.size + len(payload)
            self._maybe_compact(log.size)
        for exec, ordered in heads.items():
            if ordered:
                self._known.add(exec, ordered)

    @contextlib.contextmanager
    def _journal_locked(self) -> Iterator[None]:
        """Holds `ledger/heads.lock` (under `_lock`). A node owns its repo, but another
        writer (`qflow run` on it, a second LedgerStore) must not write over entries it
        never read: the journal it changed is read again first (`_writer`)."""
        if self._lock_fd < 0:
            ledger = self._journal.parent
            if not ledger.is_dir():
                ledger.mkdir(exist_ok=True)
                fsync_dir(ledger.parent)  # the new entry survives a crash
            fd = os.open(ledger / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._lock_fd = fd
            weakref.finalize(self, os.close, fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _writer(self) -> AppendLog:
        """The journal's writer, opened on the first write (readers never create or
        truncate anything). Under `_journal_locked`."""
        try:
            stat = self._journal.stat()
            now = (stat.st_ino, stat.st_size)
        except FileNotFoundError:
            now = (0, 0)
        if now != self._seen:  # written by another (or a torn tail): read it again
            self._close_log()
            self._log = None
            with self._load_lock:
                self._index = self._load()
        if self._log is None:
            try:
                log = AppendLog.open(self._journal, self._journal_end)
            except LogFormatError as exc:
                raise LedgerStoreError(f"heads journal {exc}") from None
            self._log, self._seen = log, (self._journal.stat().st_ino, log.size)
            self._close_log = weakref.finalize(self, log.close)  # the fd goes with us
        return self._log

    def _maybe_compact(self, size: int) -> None:
        snapshot = len(MAGIC) + self._live_bytes
        if size <= max(COMPACT_MIN_BYTES, COMPACT_RATIO * snapshot, self._compact_floor):
            return
        try:
            self._compact()
        except OSError as exc:  # the heads are written all the same: retry much later
            self._close_log()  # the rename may have happened: read whichever journal is
            self._log, self._seen = None, (-1, -1)  # there before the next append
            self._compact_floor = size + COMPACT_MIN_BYTES
            get_logger("qflow.ledger").warning(
                "ledger.compaction_failed", journal=str(self._journal), error=str(exc)
            )

    def _compact(self) -> None:
        """Rewrite the journal as one entry per execution, then remove older repos'
        heads files (taken in). Crash-safe: the rename leaves the old journal or the
        whole new one, and the heads files go only after it is durable."""
        index = self._index
        assert index is not None
        payloads = [heads_entry(exec, h, at) for exec, (h, at, _) in index.items()]
        # A heads file whose execution is gone must not come back if a crash keeps it.
        gone = self._legacy.keys() - index.keys()
        payloads += [heads_entry(exec, [], wall_s()) for exec in gone]
        data = MAGIC + b"".join(frame(payload) for payload in payloads)
        atomic_write(self._journal, data)
        # The old file's inode is unlinked: never append to it again (reopened lazily).
        self._close_log()
        self._log, self._journal_end = None, len(data)
        self._seen = (self._journal.stat().st_ino, len(data))
        if self._legacy:
            for path in self._legacy.values():
                path.unlink(missing_ok=True)
            fsync_dir(self._legacy_dir)  # gone for good before the next compaction drops
            self._legacy = {}  # their removal entries
            with contextlib.suppress(OSError):  # not empty: files that are not ours
                self._legacy_dir.rmdir()
                fsync_dir(self._legacy_dir.parent)

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
        quorum: Certificate | Mapping[str, Any] | None = None,
    ) -> Block:
        """Sign a record linking all current heads, store it, make it the only head.

        The first record of an execution must be `exec.started`; it links nothing.
        `quorum`: the validators' certificate of a critical step's step.completed or
        step.failed (a `Certificate` or its map).
        Raises RecordError for a record the format forbids, StoreError/OSError on I/O.
        """
        if ts is None:
            ts = wall_ms()
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
                quorum=quorum,
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
            if not heads:  # the lost record was exec.started: no record of it remains here
                self._known.forget(exec)
            self._write_heads(exec, heads)  # none: a removal entry
        return True

    def merge(
        self, exec: CID, heads: Iterable[CID], *, checker: SignatureChecker | None = None
    ) -> VerifyReport:
        """Adopt heads learnt from a peer: verify the union, keep its antichain.

        The blocks reachable from `heads` must already be in the store (fetch first):
        a record whose submission, payload or state block is missing is refused with
        `missing_block` (fetch its DAG again, not trusting present blocks, and retry),
        and so are the first heads of an execution without its submission's whole DAG
        (flow, inputs: `_missing_submission`).
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
            report = verify_execution(
                [*current, *heads], self.lookup, exec=exec, checker=checker, resolve_links=True
            )
            if report.ok and not current:
                failure = self._missing_submission(exec)
                if failure is not None:
                    report = VerifyReport(False, exec, report.records, (), failure=failure)
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
            record = decode_record(new, data)
        except RecordError:
            return None  # let the full verification name the problem
        if record.prev != (head,):
            return None
        failure = verify_extension(new, data, exec=exec, parent=head, parent_clock=parent.clock)
        if failure is None:
            failure = self._missing_content(new, record)
        if failure is not None:
            return VerifyReport(False, exec, 0, (), failure=failure)
        self._write_heads(exec, [new])
        return VerifyReport(True, exec, sum(parent.clock.values()) + 1, (new,))

    def _missing_content(self, cid: CID, record: Record) -> Failure | None:
        """A record's own blocks (submission, payload, state) must be here before it is a
        head: a replica folding it without its payload would skip its event for good."""
        for link in (record.exec, record.payload, record.state):
            if link is not None and not self.store.has(link):
                return Failure(
                    Reason.MISSING_BLOCK, link, "linked block not found", linked_from=cid
                )
        return None

    def _missing_submission(self, exec: CID) -> Failure | None:
        """An execution's first heads need its submission's whole DAG here: the flow (its
        modules, sub-flows) and the inputs. A node holding records without them can
        neither run the execution nor serve it to others, yet its heads would say it
        holds it (seed 3012: the launcher gone, no survivor had the flow). Later merges
        need not look again: these blocks stay. Only dag-cbor and raw blocks are stored
        (ADR 0005); a link of another codec is not followed."""
        seen = {exec}
        level = [(exec, exec)]
        while level:
            below: list[tuple[CID, CID]] = []
            for cid, parent in level:
                try:
                    data = self.lookup(cid)
                except CorruptBlock:  # quarantined by the store: fetched again
                    data = None
                if data is None:
                    message = "block of the submission's DAG not found"
                    return Failure(Reason.MISSING_BLOCK, cid, message, linked_from=parent)
                if cid.cid_bytes[1] != DAG_CBOR:
                    continue
                try:
                    links = list(iter_links(decode_dag(data)))
                except CodecError:
                    continue  # not for the ledger to judge: opening the replica refuses it
                for link in links:
                    if link not in seen and link.cid_bytes[1] in (DAG_CBOR, RAW):
                        seen.add(link)
                        below.append((link, cid))
            level = below
        return None

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


def heads_entry(exec: CID, heads: Sequence[CID], at: float) -> bytes:
    """The heads-journal entry making `heads` (sorted by `cid_bytes`; none: removed)
    the head set of `exec` at `at` (epoch seconds)."""
    return encode_dag({"exec": exec, "heads": list(heads), "at": float(at)})


def _parse_entry(path: Path, offset: int, payload: bytes) -> tuple[CID, tuple[CID, ...], float]:
    """exec, heads, at of the journal entry at `offset` (whole: its CRC matched)."""
    try:
        obj = decode_dag(payload)
    except CodecError as exc:
        raise LedgerStoreError(
            f"heads journal {path} is corrupt at offset {offset}: {exc}"
        ) from None
    if (
        isinstance(obj, dict)
        and obj.keys() == {"exec", "heads", "at"}
        and isinstance(exec := obj["exec"], CID)
        and isinstance(heads := obj["heads"], list)
        and all(isinstance(h, CID) and h.cid_bytes[1] == DAG_CBOR for h in heads)
        and isinstance(at := obj["at"], float)
    ):
        return exec, tuple(heads), at
    raise LedgerStoreError(
        f"heads journal {path}: the entry at offset {offset} is not a heads entry"
    )


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
