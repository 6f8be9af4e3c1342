"""Threshold BLS benchmark: sign, verify, combine, key generation; medians in ms.

    .venv/bin/python bench/threshold_crypto.py [--rounds 50]

One process, one core. A 7-of-13 key from a trusted dealer for the signature figures.
The DKG figure is a whole Joint-Feldman run with every party in this process (each
message through its dag-cbor wire form), so one party's share of the work is about
the total divided by n; the network rounds come on top. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

from qflow_node.crypto import (
    combine,
    combine_verified,
    dealer_keygen,
    partial_sign,
    run_locally,
    verify,
    verify_partial,
)

MSG = b"qflow: commit step 7 of execution bafyreib..." * 2


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    rounds = parser.parse_args().rounds
    t, n = 7, 13
    keys, shares = dealer_keygen(t, n, os.urandom)
    partials = {s.index: partial_sign(s, MSG) for s in shares}
    chosen = {i: partials[i] for i in range(1, t + 1)}
    signature = combine(chosen, t)
    spoiled = {**chosen, n: partials[n], 1: partials[2]}  # share 1 sends share 2's partial
    figures = {
        "partial sign": lambda: partial_sign(shares[0], MSG),
        "partial verify": lambda: verify_partial(keys.share_key(1), MSG, partials[1]),
        f"combine t={t}": lambda: combine(chosen, t),
        "verify (group key)": lambda: verify(keys.public_key, MSG, signature),
        f"combine + verify t={t}": lambda: combine_verified(keys, MSG, chosen),
        f"… with 1 bad of {t + 1}": lambda: combine_verified(keys, MSG, spoiled),
        f"dealer keygen t={t} n={n}": lambda: dealer_keygen(t, n, os.urandom),
    }
    print(f"threshold BLS (BLS12-381, G2 signatures): medians of {rounds} runs")
    for name, fn in figures.items():
        print(f"  {name:<28} {median_ms(fn, rounds):7.2f} ms")
    for t, n in ((3, 5), (9, 13)):
        total = median_ms(partial(run_locally, t, n, os.urandom), max(rounds // 5, 3))
        name = f"DKG t={t} n={n}, all parties"
        print(f"  {name:<28} {total:7.2f} ms   (~{total / n:.1f} ms per party)")


if __name__ == "__main__":
    main()
