"""The control API's execution methods: `exec.status`, `exec.list`, `exec.records`
(docs/api.md). What `qflow watch|status|logs` read.

Everything is computed from the verified ledger (`runtime.exec_view`) in a worker
thread. Views and record lists are cached per execution under its heads: a client
polling an execution that has not moved costs a look-up of its heads in memory, not
a verification of its whole ledger.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Final, Generic, TypeVar

import trio

from qflow_node.api.errors import BAD_REQUEST, NOT_FOUND, STORE_ERROR, ApiError
from qflow_node.api.params import cid_param, expect
from qflow_node.api.server import Handler
from qflow_node.codec import CID
from qflow_node.core.ledger import Record
from qflow_node.ledger_store import LedgerStore, LedgerStoreError
from qflow_node.runtime.exec_view import (
    REJECTED,
    ExecNotFoundError,
    exec_view,
    is_terminal,
    pending_view,
    record_json,
    rejected_view,
)
from qflow_node.runtime.replay import ReplayError
from qflow_node.store import StoreError

RECENT_S: Final = 3600.0  # exec.list shows executions finished this recently by default
MAX_RECORDS_PAGE: Final = 1000  # records per exec.records answer (`more` says if cut)
_CACHED_VIEWS: Final = 256
_CACHED_LEDGERS: Final = 16  # record lists are larger than views
INVALID: Final = "invalid"  # exec.list status of a ledger that cannot be replayed

_T = TypeVar("_T")


Rejection = Mapping[str, str]  # `reason`, `message`, `by`: a refused submission


def _never_rejected(_exec: CID) -> Rejection | None:
    return None


def exec_methods(
    ledger: LedgerStore,
    *,
    active: Callable[[], Sequence[CID]],
    rejected: Callable[[CID], Rejection | None] = _never_rejected,
    refusals: Callable[[], Sequence[tuple[CID, int]]] = tuple,
) -> dict[str, Handler]:
    """The execution methods over the node's ledger; `active()` names the executions the
    node is driving now, `rejected(exec)` why a submission was refused, if it was, and
    `refusals()` the refused ones it knows with when it learned (wall ms) - all called on
    the trio thread: they may read the runtime's state."""
    views = _Views(ledger)

    async def exec_status(params: dict[str, Any]) -> dict[str, Any]:
        expect(params, "exec.status", "exec")
        exec = cid_param(params, "exec")
        driving = exec in set(active())
        refused = None if driving else rejected(exec)
        return await trio.to_thread.run_sync(views.status, exec, driving, refused)

    async def exec_list(params: dict[str, Any]) -> dict[str, Any]:
        expect(params, "exec.list", "all")
        show_all = params.get("all", False)
        if not isinstance(show_all, bool):
            raise ApiError(BAD_REQUEST, "params.all must be true or false")
        driving = frozenset(active())
        refused = {
            exec: (at_ms, why) for exec, at_ms in refusals() if (why := rejected(exec)) is not None
        }
        listing = partial(
            views.listing, driving, refused=refused, show_all=show_all, now=time.time()
        )
        return {"executions": await trio.to_thread.run_sync(listing)}

    async def exec_records(params: dict[str, Any]) -> dict[str, Any]:
        expect(params, "exec.records", "exec", "after")
        exec = cid_param(params, "exec")
        after = params.get("after", -1)
        if isinstance(after, bool) or not isinstance(after, int) or after < -1:
            raise ApiError(BAD_REQUEST, "params.after must be a record index (an integer >= -1)")
        driving = exec in set(active())
        refused = None if driving else rejected(exec)
        return await trio.to_thread.run_sync(views.records, exec, after, driving, refused)

    return {"exec.status": exec_status, "exec.list": exec_list, "exec.records": exec_records}


class _Cache(Generic[_T]):
    """Values per execution, valid while its heads stay the same; least recently used
    first out."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[CID, tuple[tuple[CID, ...], _T]] = OrderedDict()
        self._lock = threading.Lock()  # worker threads share it

    def get(self, exec: CID, heads: tuple[CID, ...], compute: Callable[[], _T]) -> _T:
        with self._lock:
            hit = self._items.get(exec)
            if hit is not None and set(hit[0]) == set(heads):
                self._items.move_to_end(exec)
                return hit[1]
        # Computed outside the lock (a replay takes a while); `heads` were read first,
        # so a value newer than its key is only recomputed once more, never stale.
        value = compute()
        with self._lock:
            self._items[exec] = (heads, value)
            self._items.move_to_end(exec)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


class _Views:
    """The methods' bodies, run in worker threads."""

    def __init__(self, ledger: LedgerStore) -> None:
        self.ledger = ledger
        self._views: _Cache[dict[str, Any]] = _Cache(_CACHED_VIEWS)
        self._ledgers: _Cache[list[tuple[CID, Record]]] = _Cache(_CACHED_LEDGERS)

    def status(self, exec: CID, driving: bool, refused: Rejection | None = None) -> dict[str, Any]:
        with _ledger_errors(exec):
            heads = self.ledger.heads(exec)
            if not heads:
                # A ledger or a replica wins over a rejection: a peer's is only advisory.
                if driving:
                    return pending_view(self.ledger, exec)
                if refused is not None:
                    return rejected_view(
                        exec, reason=refused["reason"], message=refused["message"], by=refused["by"]
                    )
                raise _not_found(exec)
            try:
                return self._views.get(exec, heads, partial(exec_view, self.ledger, exec))
            except ExecNotFoundError:
                raise _not_found(exec) from None

    def records(
        self, exec: CID, after: int, driving: bool, refused: Rejection | None = None
    ) -> dict[str, Any]:
        view = self.status(exec, driving, refused)
        with _ledger_errors(exec):
            heads = self.ledger.heads(exec)
            ordered = (
                self._ledgers.get(exec, heads, lambda: list(self.ledger.replay(exec)))
                if heads
                else []
            )
            start = after + 1
            page = ordered[start : start + MAX_RECORDS_PAGE]
            store = self.ledger.store
            return {
                "records": [
                    record_json(store, start + i, cid, record)
                    for i, (cid, record) in enumerate(page)
                ],
                "status": view["status"],
                "total": len(ordered),
                # A record merged late from a concurrent writer can sort before records
                # already listed: a follower compares this with the CID it saw at `after`.
                "after_cid": ordered[after][0].encode() if 0 <= after < len(ordered) else None,
                "more": start + len(page) < len(ordered),
            }

    def listing(
        self,
        driving: frozenset[CID],
        *,
        refused: Mapping[CID, tuple[int, Rejection]] | None = None,
        show_all: bool,
        now: float,
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        held = {*self.ledger.executions(), *driving}
        for exec, (at_ms, _why) in (refused or {}).items():
            # A refused submission has no ledger: listed by when the refusal was learnt,
            # like a finished execution (a ledger or a replica wins, as in exec.status).
            if exec not in held and (show_all or now - at_ms / 1000 <= RECENT_S):
                rows.append(
                    {"exec": exec.encode(), "updated_at": at_ms, "status": REJECTED, "records": 0}
                )
        for exec in sorted(held, key=CID.encode):
            changed = self.ledger.heads_changed_at(exec)
            # The heads change last when the execution ends: older heads, older end.
            recent = changed is not None and now - changed <= RECENT_S
            if not (show_all or recent or exec in driving):
                continue
            row: dict[str, Any] = {
                "exec": exec.encode(),
                "updated_at": None if changed is None else int(changed * 1000),
            }
            try:
                view = self.status(exec, exec in driving)
            except ApiError as exc:
                if exc.code == NOT_FOUND:
                    continue  # gone since the directory was listed
                rows.append({**row, "status": INVALID, "records": None, "error": exc.message})
                continue
            if show_all or exec in driving or is_terminal(view["status"]):
                rows.append({**row, "status": view["status"], "records": view["records"]})
        # Newest first; pending executions (no heads yet) are the newest of all.
        rows.sort(key=lambda r: (r["updated_at"] is not None, -(r["updated_at"] or 0)))
        return rows


def _not_found(exec: CID) -> ApiError:
    return ApiError(
        NOT_FOUND,
        f"this node holds no records of execution {exec.encode()} and is not running it "
        "(another repo, or a submission this node has not heard of?)",
    )


@contextmanager
def _ledger_errors(exec: CID) -> Iterator[None]:
    """An invalid or unreadable ledger as `store_error`, naming the execution."""
    try:
        yield
    except (ReplayError, LedgerStoreError, StoreError, OSError) as exc:
        raise ApiError(
            STORE_ERROR, f"the ledger of {exec.encode()} cannot be read: {exc}"
        ) from None
