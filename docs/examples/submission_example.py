"""The worked example of docs/submission.md: every value it shows, computed.

Run it from the repository root to print them:

    .venv/bin/python docs/examples/submission_example.py

`tests/engine/test_submission_example.py` runs `example()` and checks that the document
shows exactly these values, so the document cannot drift from the code.
"""

from __future__ import annotations

import json
from typing import Any, Final

from qflow_node.codec import decode_dag
from qflow_node.codec.dagjson import to_dag_json
from qflow_node.codec.envelope_bodies import InlineBlock, Submission
from qflow_node.core.engine.records import json_block
from qflow_node.core.envelopes import seal_envelope
from qflow_node.core.flow import compile_flow
from qflow_node.core.submission import build_submission, signing_message
from qflow_node.identity.keys import SigningKey

SUBMITTER_SEED: Final = bytes([0x01]) * 32
NODE_SEED: Final = bytes([0x02]) * 32  # the node that relays it on gossip
NONCE: Final = bytes(range(16))
TS: Final = 1_700_000_000_000
DEADLINE: Final = TS + 300_000  # five minutes later
SEQ: Final = 1_700_000_000_000_000  # the node's envelope sequence number
FLOW_YAML: Final = """\
name: greet
inputs:
  type: object
  required: [who]
  properties:
    who: {type: string}
steps:
  - id: greeting
    transform: '"Hello, " + inputs.who + "!"'
"""
INPUTS: Final = {"who": "Ada"}


def example() -> dict[str, Any]:
    """Every value the document shows, by name."""
    submitter = SigningKey(SUBMITTER_SEED)
    flow = compile_flow(FLOW_YAML, syntax="yaml").block
    inputs = json_block(INPUTS)
    submission = build_submission(
        submitter,
        flow=flow.cid,
        inputs=inputs.cid,
        nonce=NONCE,
        ts=TS,
        priority="normal",
        deadline=DEADLINE,
        subnet="default",
    )
    obj = decode_dag(submission.data)
    message = signing_message(obj)
    body = Submission(
        exec=submission.cid,
        blocks=tuple(InlineBlock(b.cid, b.data) for b in (submission, flow, inputs)),
    )
    node = SigningKey(NODE_SEED)
    envelope = seal_envelope(node, subnet="default", seq=SEQ, body=body)
    return {
        "submitter": submitter.did,
        "flow_cid": flow.cid.encode(),
        "flow_size": len(flow.data),
        "inputs_bytes": inputs.data.decode(),
        "inputs_cid": inputs.cid.encode(),
        "dag_json": dag_json(obj),
        "dag_cbor_hex": submission.data.hex(),
        "signing_bytes_hex": message.hex(),
        "sig_hex": obj["sig"].hex(),
        "exec": submission.cid.encode(),
        "node_peer_id": node.peer_id,
        "envelope_size": len(envelope),
        "envelope_hex": envelope.hex(),
    }


def dag_json(obj: dict[str, Any]) -> str:
    """DAG-JSON, keys sorted, one top-level field a line (valid JSON, easy to read)."""
    form = to_dag_json(obj)
    lines = [
        f"  {json.dumps(k)}: {json.dumps(form[k], separators=(', ', ': '))}" for k in sorted(form)
    ]
    return "{\n" + ",\n".join(lines) + "\n}"


def wrapped(hex_text: str, width: int = 64) -> str:
    """Hex as the document shows it: lines of `width` characters."""
    return "\n".join(hex_text[i : i + width] for i in range(0, len(hex_text), width))


if __name__ == "__main__":
    for name, value in example().items():
        text = wrapped(value) if name.endswith("_hex") else str(value)
        print(f"{name}:\n{text}\n")
