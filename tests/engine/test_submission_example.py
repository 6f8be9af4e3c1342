"""docs/submission.md's worked example is what the code computes, and what the reference
IPLD libraries (`dag_cbor`, `multiformats`) and libsodium agree with: the page cannot rot.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import dag_cbor
import multiformats
import nacl.signing
from multiformats import multihash

from qflow_node.codec import parse_cid
from qflow_node.codec.envelope_bodies import Submission as SubmissionBody
from qflow_node.core.envelopes import Verified, open_envelope
from qflow_node.core.flow import compile_flow
from qflow_node.core.submission import verify_submission

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "submission.md").read_text(encoding="utf-8")


def load_script() -> ModuleType:
    path = ROOT / "docs" / "examples" / "submission_example.py"
    spec = importlib.util.spec_from_file_location("submission_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = load_script()
VALUES: dict[str, Any] = SCRIPT.example()


def test_the_page_shows_every_value_the_script_computes() -> None:
    hint = "rerun docs/examples/submission_example.py and update docs/submission.md"
    for name, value in VALUES.items():
        shown = SCRIPT.wrapped(value) if name.endswith("_hex") else str(value)
        assert shown in DOC, f"{name}: the page does not show {shown[:80]!r}…; {hint}"
    flow_lines = ["  " + line if line else line for line in SCRIPT.FLOW_YAML.splitlines()]
    assert "\n".join(flow_lines) in DOC


def test_the_flow_is_the_greet_example() -> None:
    greet = (ROOT / "examples" / "flows" / "greet.yaml").read_text(encoding="utf-8")
    assert compile_flow(greet, syntax="yaml").cid.encode() == VALUES["flow_cid"]


def test_reference_libraries_agree() -> None:
    data = bytes.fromhex(VALUES["dag_cbor_hex"])
    value: Any = dag_cbor.decode(data)
    assert dag_cbor.encode(value) == data  # canonical
    digest = multihash.wrap(hashlib.sha256(data).digest(), "sha2-256")
    assert str(multiformats.CID("base32", 1, "dag-cbor", digest)) == VALUES["exec"]
    unsigned = {k: v for k, v in value.items() if k != "sig"}
    message = b"qflow/submission/v1\x00" + dag_cbor.encode(unsigned)
    assert message.hex() == VALUES["signing_bytes_hex"]
    key = nacl.signing.SigningKey(SCRIPT.SUBMITTER_SEED)
    assert key.sign(message).signature.hex() == VALUES["sig_hex"] == value["sig"].hex()
    key.verify_key.verify(message, bytes.fromhex(VALUES["sig_hex"]))


def test_the_example_verifies_and_its_envelope_opens() -> None:
    exec_cid = parse_cid(VALUES["exec"])
    submission = verify_submission(exec_cid, bytes.fromhex(VALUES["dag_cbor_hex"]))
    assert submission.submitter == VALUES["submitter"]
    opened = open_envelope(bytes.fromhex(VALUES["envelope_hex"]), subnet="default", channel="flows")
    assert isinstance(opened, Verified), opened
    assert opened.sender == VALUES["node_peer_id"]
    body = opened.body
    assert isinstance(body, SubmissionBody)
    assert body.exec == exec_cid
    assert [b.cid.encode() for b in body.blocks] == [
        VALUES["exec"],
        VALUES["flow_cid"],
        VALUES["inputs_cid"],
    ]
