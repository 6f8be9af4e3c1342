"""Sub-flow references: each must resolve to a compiled flow, and none may lead back to
a flow on its own path (a cycle would recurse forever at run time).

Content addressing makes a true cycle impossible to build with honest hashes; the check
is a guard against resolvers that name flows some other way (a registry, a corrupt or
hostile store) and bounds how deep sub-flows may nest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from qflow_node.codec import CID
from qflow_node.core.flow.errors import FlowError, Path, ResolveError
from qflow_node.core.flow.ir import FORMAT, subflow_links
from qflow_node.core.flow.source import Document

# Returns the decoded IR of the flow with this CID, or None if it is not available.
FlowResolver = Callable[[CID], Any]

MAX_SUBFLOW_DEPTH: Final = 16


def subflow_errors(
    doc: Document, refs: Sequence[tuple[Path, CID]], resolve: FlowResolver, root: CID | None
) -> list[FlowError]:
    """One error per reference that is missing, not a flow, cyclic or nested too deep.
    `root` is the compiling flow's own CID when known, so a path back to it is a cycle."""
    walker = _Walker(resolve, root)
    errors: list[FlowError] = []
    for path, cid in refs:
        problem = walker.problem([cid])
        if problem is not None:
            errors.append(doc.error(path, problem))
    return errors


class _Walker:
    def __init__(self, resolve: FlowResolver, root: CID | None) -> None:
        self.resolve = resolve
        self.root = root
        self.links: dict[bytes, list[CID] | str] = {}  # a flow's sub-flows, or why not
        self.clean: set[bytes] = set()  # flows whose whole sub-tree was checked fine

    def problem(self, chain: list[CID]) -> str | None:
        cid = chain[-1]
        key = bytes(cid.cid_bytes)
        if key in self.clean:
            return None
        earlier = [bytes(c.cid_bytes) for c in chain[:-1]]
        if self.root is not None and key == bytes(self.root.cid_bytes):
            return "sub-flow cycle: " + " → ".join(
                ["this flow", *(c.encode() for c in chain[:-1]), "this flow"]
            )
        if key in earlier:
            start = earlier.index(key)
            return "sub-flow cycle: " + " → ".join(c.encode() for c in chain[start:])
        if len(chain) > MAX_SUBFLOW_DEPTH:
            return f"sub-flows nest deeper than {MAX_SUBFLOW_DEPTH} levels: " + " → ".join(
                c.encode() for c in chain
            )
        links = self._links(cid)
        if isinstance(links, str):
            where = " → ".join(c.encode() for c in chain)
            return f"sub-flow {where}: {links}"
        for nested in links:
            found = self.problem([*chain, nested])
            if found is not None:
                return found
        self.clean.add(key)
        return None

    def _links(self, cid: CID) -> list[CID] | str:
        key = bytes(cid.cid_bytes)
        if key not in self.links:
            try:
                flow = self.resolve(cid)
            except ResolveError as exc:
                self.links[key] = str(exc)
            else:
                if flow is None:
                    self.links[key] = "not found"
                elif not isinstance(flow, dict) or flow.get("format") != FORMAT:
                    self.links[key] = f"not a compiled flow (no format {FORMAT!r})"
                else:
                    self.links[key] = subflow_links(flow)
        return self.links[key]
