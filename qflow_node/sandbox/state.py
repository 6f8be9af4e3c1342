"""An execution's CRDT variables as one step sees them (`state.get` / `state.set`).

The variables are a pycrdt (Yjs) `Map` named "vars" whose values are JSON text. A step
works on a private replica built from a snapshot of the execution's document, so a step
that fails leaves nothing behind and steps in other threads never share a `Doc`. What a
successful step changed is one Yjs update (a delta against the state vector the step
started from): the caller stores it as a raw block, references it from the step's record
and applies it to the execution's document.

The replica's Yjs client id is derived from the step's seed, so re-running the same
attempt of a step yields the same delta bytes on every node.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pycrdt import Doc, Map

VARS = "vars"


def client_id_for(seed: bytes) -> int:
    """A Yjs client id (32 bits, as Yjs uses) for the replica of the step with this seed."""
    return int.from_bytes(hashlib.sha256(b"qflow-state-client\0" + seed).digest()[:4], "big")


class StepState:
    def __init__(self, snapshot: bytes = b"", *, client_id: int | None = None) -> None:
        """`snapshot`: the execution document as one update (`doc.get_update()`), or b""."""
        self._doc: Doc[Any] = Doc(client_id=client_id)
        if snapshot:
            self._doc.apply_update(snapshot)
        self._vars: Map[Any] = self._doc.get(VARS, type=Map)
        self._before = self._doc.get_state()
        self._changed = False

    @classmethod
    def of(cls, doc: Doc[Any], *, seed: bytes) -> StepState:
        """A private replica of `doc` for the step with this seed (call in `doc`'s thread)."""
        return cls(doc.get_update(), client_id=client_id_for(seed))

    def get(self, key: str) -> str | None:
        value = self._vars.get(key)
        return value if isinstance(value, str) else None

    def set(self, key: str, json_text: str) -> None:
        self._vars[key] = json_text
        self._changed = True

    def delta(self) -> bytes | None:
        """The step's changes as one Yjs update, or None if it changed nothing."""
        if not self._changed:
            return None
        return bytes(self._doc.get_update(self._before))

    def values(self) -> dict[str, str]:
        """Every variable as JSON text (for tests and the CLI report)."""
        return {key: value for key, value in self._vars.items() if isinstance(value, str)}
