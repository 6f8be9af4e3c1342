"""Deterministic ledgers for tests and simulations (like `trio.testing`; not used at run time).

`World` holds the blocks of one execution and lets several `Replica`s append and merge
as real nodes would; `sign_obj` signs any record map as-is, valid or not, for tests of
what verification refuses (byzantine writers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qflow_node.codec import CID, DAG_CBOR, Block, cid_for, dag_block, encode_dag, raw_block
from qflow_node.core.ledger import (
    SIG_DOMAIN,
    Record,
    decode_record,
    merge_heads,
    new_record,
    unsigned_bytes,
)
from qflow_node.identity.keys import SigningKey

# Fixed seeds: reproducible peer ids and CIDs across runs.
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(8)]
SUBMISSION = dag_block({"flow": "test", "nonce": 1})
OTHER_SUBMISSION = dag_block({"flow": "test", "nonce": 2})
PAYLOAD = raw_block(b"step output")


@dataclass
class Replica:
    key: SigningKey
    heads: tuple[CID, ...] = ()


@dataclass
class World:
    """Several replicas of one execution; every block they write lands in `blocks`."""

    exec: CID = SUBMISSION.cid
    blocks: dict[bytes, bytes] = field(default_factory=dict)
    records: dict[CID, Record] = field(default_factory=dict)
    appended: list[CID] = field(default_factory=list)
    ts: int = 1_700_000_000_000

    def __post_init__(self) -> None:
        self.put(SUBMISSION)
        self.put(PAYLOAD)

    def put(self, block: Block) -> None:
        self.blocks[block.cid.cid_bytes] = block.data

    def lookup(self, cid: CID) -> bytes | None:
        return self.blocks.get(cid.cid_bytes)

    def append(self, replica: Replica, kind: str | None = None, **fields: Any) -> CID:
        if kind is None:
            kind = "exec.started" if not replica.heads else "step.completed"
        if kind.startswith(("step.", "approval.")):
            fields.setdefault("step", f"s{len(self.appended)}")
        if kind.startswith("approval.") or kind in {"exec.paused", "exec.resumed", "exec.aborted"}:
            fields.setdefault("actor", KEYS[-1].did)
        self.ts += 1
        block, record = new_record(
            self.exec,
            kind,
            parents={h: self.records[h].clock for h in replica.heads},
            payload=PAYLOAD.cid,
            key=replica.key,
            ts=self.ts,
            **fields,
        )
        self.put(block)
        self.records[block.cid] = record
        self.appended.append(block.cid)
        replica.heads = (block.cid,)
        return block.cid

    def sync(self, into: Replica, source: Replica) -> None:
        into.heads = merge_heads(into.heads, source.heads, self.records)


def chain(length: int, key: SigningKey = KEYS[0]) -> tuple[World, Replica]:
    world = World()
    replica = Replica(key)
    for _ in range(length):
        world.append(replica)
    return world, replica


def diamond() -> tuple[World, Replica, Replica]:
    """genesis by A; A and B each append on it; B merges A and appends: 4 records."""
    world = World()
    a, b = Replica(KEYS[0]), Replica(KEYS[1])
    world.append(a)
    world.sync(b, a)
    world.append(a)
    world.append(b)
    world.sync(b, a)
    world.append(b)
    return world, a, b


def record_obj(world: World, cid: CID) -> dict[str, Any]:
    return world.records[cid].to_obj()


def sign_obj(obj: Mapping[str, Any], key: SigningKey) -> Block:
    """Sign any record map as-is (no field or clock checks): for crafting bad records."""
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    signed = {**unsigned, "sig": key.sign(SIG_DOMAIN + unsigned_bytes(unsigned))}
    data = encode_dag(signed)
    return Block(cid_for(data, DAG_CBOR), data)


def put_obj(world: World, obj: Mapping[str, Any], key: SigningKey) -> CID:
    """Sign, store and register a crafted record; returns its CID."""
    block = sign_obj(obj, key)
    world.put(block)
    return block.cid


def store_raw(world: World, data: bytes) -> CID:
    """Store arbitrary bytes as a dag-cbor block under their own CID."""
    cid = cid_for(data, DAG_CBOR)
    world.blocks[cid.cid_bytes] = data
    return cid


def reread(world: World, cid: CID) -> Record:
    data = world.lookup(cid)
    assert data is not None
    return decode_record(cid, data)
