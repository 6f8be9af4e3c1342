"""Wire envelope benchmark: seal and open (size check, decode, Ed25519 verify, body
decode) per kind; prints medians in µs. `.venv/bin/python bench/envelope_codec.py`

The floor is one Ed25519 verify (~55 µs here); everything else should be a few µs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

from qflow_node.codec import dag_block
from qflow_node.codec.envelope_bodies import Body, Claim, InlineBlock, RecordAnnouncement
from qflow_node.core.envelopes import Verified, open_envelope, seal_envelope
from qflow_node.identity.keys import SigningKey, verify

KEY = SigningKey(b"\x01" * 32)
SUBNET = "bench"
ROUNDS = 2000


def median_us(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    record = dag_block({"kind": "step.completed", "pad": "x" * 120})
    bodies: dict[str, Body] = {
        "record with inline block": RecordAnnouncement(
            record=record.cid, blocks=(InlineBlock(cid=record.cid, data=record.data),)
        ),
        "record, CID only": RecordAnnouncement(record=record.cid, blocks=()),
        "claim": Claim(exec=record.cid, step="fetch", attempt=1, lease_ms=30_000, rank=0),
    }
    signature = KEY.sign(b"m" * 300)
    floor = median_us(lambda: verify(KEY.public_key, b"m" * 300, signature))
    print(f"envelopes: medians of {ROUNDS:,} runs; Ed25519 verify alone {floor:.1f} µs")
    for name, body in bodies.items():
        data = seal_envelope(KEY, subnet=SUBNET, seq=1, body=body)
        assert isinstance(open_envelope(data, subnet=SUBNET), Verified)
        opened = median_us(partial(open_envelope, data, subnet=SUBNET))
        sealed = median_us(partial(seal_envelope, KEY, subnet=SUBNET, seq=1, body=body))
        print(f"  {name:<26} {len(data):>4} B   open {opened:6.1f} µs   seal {sealed:6.1f} µs")
    huge = b"\x86" + bytes(100 * 1024 * 1024)
    rejected = median_us(lambda: open_envelope(huge, subnet=SUBNET), rounds=200)
    print(f"  reject a 100 MB input by its size      {rejected:6.1f} µs")


if __name__ == "__main__":
    main()
