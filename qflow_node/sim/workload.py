"""What the simulated users do: submit flows to nodes' APIs at seeded times, and answer
approvals. The flows are real flow files from `examples/` (compiled once per process),
their modules real wasm run by the real sandbox.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

from qflow_node.codec import CID, Block
from qflow_node.codec.envelope_bodies import Control
from qflow_node.core.engine.records import json_block
from qflow_node.core.envelopes import sign_control
from qflow_node.core.submission import NONCE_LEN, build_submission
from qflow_node.flow_loader import LoadedFlow, load_flow
from qflow_node.identity import SigningKey

EXAMPLES: Final = Path(__file__).resolve().parents[2] / "examples"

# The approvers named in examples/sim/sign-off.yaml (and examples/flows/approval.yaml).
APPROVERS: Final = (SigningKey(b"\xb1" * 32), SigningKey(b"\xb2" * 32))


@dataclass(frozen=True, slots=True)
class FlowKind:
    name: str
    path: str  # under examples/
    inputs: Callable[[random.Random], dict[str, Any]]
    approvals: bool = False
    # Finishes within seconds when nothing fails, without the validators: for launcher kills.
    short: bool = False


KINDS: Final = (
    FlowKind(
        "spin-chain",
        "flows/spin-chain.yaml",
        lambda r: {"rounds": r.randrange(100, 5000)},
        short=True,
    ),
    FlowKind("parallel", "flows/parallel.yaml", lambda r: {"base": r.randrange(10, 1000)}),
    FlowKind(
        "foreach",
        "flows/foreach.yaml",
        lambda r: {
            "images": [
                {"name": f"i{i}", "width": r.randrange(1, 4000), "height": r.randrange(1, 4000)}
                for i in range(r.randrange(1, 12))
            ]
        },
    ),
    FlowKind("if", "flows/if.yaml", lambda r: {"weight_kg": r.uniform(0, 60)}, short=True),
    FlowKind(
        "validate",
        "flows/validate.yaml",
        lambda r: {"user": {"email": "a@b.c", "age": r.randrange(10, 40)}},
        short=True,
    ),
    FlowKind("nap", "sim/nap.yaml", lambda r: {"label": f"l{r.randrange(1000)}"}),
    FlowKind("saga", "sim/saga.yaml", lambda r: {}),
    FlowKind("sign-off", "sim/sign-off.yaml", lambda r: {}, approvals=True),
    # Critical steps: each settled by the validators' two-phase commit. Not `short`: with
    # its launcher killed, a flow that needs t validators may find fewer among the survivors.
    FlowKind("payment", "flows/payment.yaml", lambda r: {"rounds": r.randrange(100, 5000)}),
    FlowKind("settle", "sim/settle.yaml", lambda r: {"rounds": r.randrange(100, 5000)}),
)


@cache
def compiled(path: str) -> LoadedFlow:
    return load_flow(EXAMPLES / path)


def modules() -> list[CID]:
    """Every module the workload's flows run: the subnet policy's whitelist."""
    found = {block.cid for kind in KINDS for block in compiled(kind.path).modules.values()}
    return sorted(found, key=lambda cid: cid.encode())


@dataclass
class Submitted:
    exec: CID
    kind: FlowKind
    at: float  # virtual seconds
    node: str  # the node whose API took it (its launcher)
    accepted: bool | None = None  # None until the API answered
    error: str | None = None
    launcher_killed: bool = False
    approvals: list[tuple[float, int, str]] = field(default_factory=list)  # (at, approver, action)


def submission(
    kind: FlowKind, rng: random.Random, submitter: SigningKey, ts_ms: int
) -> tuple[CID, list[Block]]:
    """A signed submission of `kind` and every block a node needs to run it."""
    loaded = compiled(kind.path)
    inputs = json_block(kind.inputs(rng))
    block = build_submission(
        submitter,
        flow=loaded.cid,
        inputs=inputs.cid,
        nonce=rng.randbytes(NONCE_LEN),
        ts=ts_ms,
    )
    return block.cid, [block, loaded.compiled.block, inputs, *loaded.modules.values()]


def approval(exec: CID, approver: SigningKey, action: str, ts_ms: int, nonce: bytes) -> Control:
    unsigned = Control(
        exec=exec,
        action="approve" if action == "approve" else "deny",
        step="sign_off",
        actor=approver.did,
        ts=ts_ms,
        nonce=nonce,
        sig=bytes(64),
    )
    return sign_control(approver, unsigned)
