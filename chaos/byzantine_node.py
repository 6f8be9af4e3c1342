"""A real `qflow node run` with one Byzantine behaviour patched in, for the chaos scenarios.

    .venv/bin/python -m chaos.byzantine_node --mode MODE [--validator-only] -- run --repo R ...

The arguments after `--` are those of `qflow node`. The patches are made in this wrapper
process only, before the node starts (the production code has no test hooks); the node is
otherwise the real one: libp2p host, gossip, ledger, sandbox, critical service.

Modes (chaos/README.md; docs/testing.md, "Byzantine faults"):

- `lie`: the node computes a wrong result for every critical step. As the coordinator
  it proposes it; as a validator its re-execution disagrees with the honest outcome.
- `stall`: the validator never answers a request of the two-phase commit (a hung
  validator: its host and every other service keep running).
- `forge`: everything the node signs for the subnet is forged: claims, records,
  submissions and their announcements are signed with a key that is not the one their
  peer id names, and its votes carry partials made with a wrong share; it votes yes at
  once, without re-executing.
- `equivocate`: the validator forgets each lock as soon as it signs (each request is
  judged afresh), and when asked what it signed it answers with a freshly signed abort:
  a commit in one round, an abort in the next.

`--validator-only`: the node never takes a slot's lease (it neither coordinates nor runs
steps; it still validates, keeps its replicas and serves blocks), so the coordinator
facing a Byzantine validator is an honest node.

A node started this way logs `byzantine.mode` (its mode) before anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio

from qflow_node.cli.main import main as qflow
from qflow_node.core.critical import (
    Answer,
    Decision,
    Outcome,
    Prepare,
    Query,
    Reply,
    SignedDecision,
    Validator,
    ValidatorAction,
    statement_bytes,
)
from qflow_node.core.critical import validator as validator_module
from qflow_node.core.engine import RunStep
from qflow_node.core.scheduling import Leave
from qflow_node.crypto import Share, Signature, partial_sign
from qflow_node.crypto.bls import R
from qflow_node.identity import SigningKey
from qflow_node.runtime import exec_service
from qflow_node.runtime.critical_service import CriticalService
from qflow_node.runtime.executors import StepOutcome
from qflow_node.runtime.local import LocalRunner

MODES: Final = ("lie", "stall", "forge", "equivocate")
# What a liar says its critical steps produced.
LIE: Final = {"byzantine": "a result no honest node computes"}
# The key a forger signs with: not the one its peer id names.
STRANGER: Final = SigningKey(b"\x66" * 32)


def patch(owner: Any, name: str, value: object) -> None:
    """Replace `owner.name`, which must exist: a renamed target fails loudly here
    instead of leaving the node honest without a word."""
    if not hasattr(owner, name):
        raise AttributeError(f"{owner!r} has no {name!r} to patch")
    setattr(owner, name, value)


# -- lie ------------------------------------------------------------------------------------


def lie() -> None:
    honest = LocalRunner.execute

    def execute(self: LocalRunner, action: RunStep, exec: Any, state: Any) -> StepOutcome:
        if action.step.get("critical", False):
            return StepOutcome.ok(LIE)
        return honest(self, action, exec, state)

    patch(LocalRunner, "execute", execute)


# -- stall ----------------------------------------------------------------------------------


def stall() -> None:
    async def answer(self: CriticalService, peer: str, request: bytes) -> bytes:
        await trio.sleep_forever()

    patch(CriticalService, "answer", answer)


# -- forge ----------------------------------------------------------------------------------


class WrongKey(SigningKey):
    """This node's identity (peer id, did:key) signing with another key's secret: every
    signature it makes fails to verify under the public key it claims."""

    def sign(self, message: bytes) -> bytes:
        return STRANGER.sign(message)


def forge() -> None:
    honest_init = exec_service.ExecService.__init__

    def init(self: exec_service.ExecService, key: SigningKey, *args: Any, **kwargs: Any) -> None:
        honest_init(self, key, *args, **kwargs)
        self.key = WrongKey(key.seed)  # claims, records and their envelopes

    def forged_partial(share: Share, message: bytes) -> Signature:
        # Signed with a scalar next to the dealt share (never zero): a well-formed
        # partial that does not verify under the share's public key.
        return partial_sign(Share(share.index, share.value % (R - 1) + 1), message)

    def on_prepare(
        self: Validator, prepare: Prepare, own: Outcome | None, policy_error: str | None = None
    ) -> tuple[ValidatorAction, ...]:
        return self._sign(prepare, "prepare", prepare.decision)

    patch(exec_service.ExecService, "__init__", init)
    patch(validator_module, "partial_sign", forged_partial)
    patch(Validator, "needs_outcome", lambda self, prepare: False)  # no re-execution
    patch(Validator, "on_prepare", on_prepare)


# -- equivocate -----------------------------------------------------------------------------


def equivocate() -> None:
    def on_query(self: Validator, query: Query) -> tuple[ValidatorAction, ...]:
        abort = Decision.abort()
        statement = statement_bytes(self.subnet, self.policy, query.slot, abort)
        signed = SignedDecision(abort, partial_sign(self._share, statement).to_bytes())
        return (Reply(Answer(query.subnet, query.policy, query.slot, self.index, signed)),)

    patch(Validator, "_hold", lambda self, lock: None)  # signs, then forgets
    patch(Validator, "on_query", on_query)


def validator_only() -> None:
    def decide(*args: Any, **kwargs: Any) -> Leave:
        return Leave("ineligible")

    patch(exec_service, "decide", decide)


BEHAVIOURS: Final[dict[str, Callable[[], None]]] = {
    "lie": lie,
    "stall": stall,
    "forge": forge,
    "equivocate": equivocate,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--validator-only", action="store_true")
    parser.add_argument("node", nargs=argparse.REMAINDER, help="-- then `qflow node` arguments")
    args = parser.parse_args(argv)
    node_args = args.node[1:] if args.node[:1] == ["--"] else args.node
    BEHAVIOURS[args.mode]()
    if args.validator_only:
        validator_only()
    # A JSON line as the node's own are, so a test can check which node is Byzantine.
    event = {"event": "byzantine.mode", "mode": args.mode, "validator_only": args.validator_only}
    print(json.dumps(event), file=sys.stderr, flush=True)
    sys.argv = ["qflow", "node", *node_args]
    qflow()


if __name__ == "__main__":
    main()
