"""One valid body of every envelope kind, and a way to sign anything (hostile peers)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qflow_node.codec import dag_block, raw_block
from qflow_node.codec.envelope import encode_envelope, signing_message
from qflow_node.codec.envelope_bodies import (
    Body,
    Claim,
    Claims,
    Control,
    Heads,
    HeadsEntry,
    Heartbeat,
    InlineBlock,
    Manifest,
    RecordAnnouncement,
    Records,
    Rejection,
    Submission,
)
from qflow_node.core.envelopes import seal_envelope, sign_control
from qflow_node.identity.keys import SigningKey

KEY = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)
ACTOR = SigningKey(b"\x03" * 32)
SUBNET = "dao-1"
SEQ = 1_700_000_000_000_000

Forge = Callable[..., bytes]


def make_bodies() -> dict[str, Body]:
    submission = dag_block({"format": "qflow.submission/0", "nonce": b"\x07" * 16})
    inputs = raw_block(b'{"k":"v"}')
    record = dag_block({"kind": "step.completed", "pad": "x" * 120})
    other_record = dag_block({"kind": "step.completed", "pad": "y" * 120})
    heads = sorted([record.cid, submission.cid], key=lambda c: c.cid_bytes)
    other = dag_block({"format": "qflow.submission/0", "nonce": b"\x08" * 16})
    entries = sorted(
        [HeadsEntry(exec=submission.cid, heads=tuple(heads)), HeadsEntry(other.cid, (record.cid,))],
        key=lambda entry: entry.exec.cid_bytes,
    )
    control = Control(
        exec=submission.cid,
        action="approve",
        step="review",
        actor=ACTOR.did,
        ts=1_700_000_000_123,
        nonce=b"\x05" * 16,
        sig=bytes(64),
    )
    return {
        "heartbeat": Heartbeat(
            node=KEY.peer_id,
            subnets=("dao-1", "team_b"),
            manifest=Manifest(
                wasm_engine="wasmtime/50.0.1",
                memory_bytes=1 << 30,
                load=250,
                free_work_tokens=3,
                version="0.1.0",
            ),
            addrs=("/ip4/192.0.2.7/tcp/4001", "/ip6/2001:db8::7/tcp/4001"),
        ),
        "submission": Submission(
            exec=submission.cid,
            blocks=(
                InlineBlock(cid=submission.cid, data=submission.data),
                InlineBlock(cid=inputs.cid, data=inputs.data),
            ),
        ),
        "claim": Claim(exec=submission.cid, step="fetch", attempt=2, lease_ms=30_000, rank=1),
        "claims": Claims(
            claims=(
                Claim(exec=submission.cid, step="fetch", attempt=2, lease_ms=30_000, rank=1),
                Claim(exec=submission.cid, step="resize", attempt=0, lease_ms=30_000, rank=0),
            )
        ),
        "record": RecordAnnouncement(
            record=record.cid, blocks=(InlineBlock(cid=record.cid, data=record.data),)
        ),
        "records": Records(
            records=(
                RecordAnnouncement(
                    record=record.cid, blocks=(InlineBlock(cid=record.cid, data=record.data),)
                ),
                RecordAnnouncement(record=other_record.cid, blocks=()),
            )
        ),
        "heads": Heads(entries=tuple(entries)),
        "control": sign_control(ACTOR, control),
        "rejection": Rejection(
            exec=submission.cid,
            reason="bad_inputs",
            message="inputs: 'who' is a required property",
        ),
    }


@pytest.fixture(scope="session")
def bodies() -> dict[str, Body]:
    return make_bodies()


@pytest.fixture(scope="session")
def sealed(bodies: dict[str, Body]) -> dict[str, bytes]:
    return {
        kind: seal_envelope(KEY, subnet=SUBNET, seq=SEQ + i, body=body)
        for i, (kind, body) in enumerate(bodies.items())
    }


def forge_envelope(
    body: bytes,
    *,
    kind: str = "claim",
    key: SigningKey = KEY,
    sender: str | None = None,
    seq: int = SEQ,
    subnet: str = SUBNET,
) -> bytes:
    """An envelope whose signature is valid for whatever `body` holds (a hostile peer)."""
    sig = key.sign(signing_message(subnet, kind, seq, body))
    return encode_envelope(kind, sender or key.peer_id, seq, body, sig)


@pytest.fixture(scope="session")
def forge() -> Forge:
    return forge_envelope
