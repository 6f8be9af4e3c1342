#!/usr/bin/env bash
# `make demo`: what Qflow does today on one machine, on embedded defaults.
#   1. the centralization sentinel on this repository;
#   2. a fresh node repo (.demo/), and a flow with wasm steps run through the real
#      engine, sandbox, block store and signed ledger;
#   3. the ledger verified (hashes, clocks, signatures), re-executed and replayed.
set -euo pipefail
cd "$(dirname "$0")/.."
qflow=".venv/bin/qflow"
repo=".demo"

echo "== 1. sentinel: no central dependencies"
"$qflow" sentinel check .

echo
echo "== 2. a flow, run locally (every record signed and persisted in $repo)"
rm -rf "$repo"
"$qflow" init --repo "$repo"
inputs='{"images": [{"name": "cat.png", "width": 640, "height": 480},
                    {"name": "map.png", "width": 100, "height": 2000}]}'
report=$("$qflow" run examples/flows/foreach.yaml --repo "$repo" --inputs "$inputs" --json)
echo "$report"
exec_id=$(.venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["exec"])' <<<"$report")
heads=$(.venv/bin/python -c 'import json,sys; print(" ".join(json.load(sys.stdin)["heads"]))' <<<"$report")

echo
echo "== 3. the ledger: verified, re-executed, replayed"
# shellcheck disable=SC2086  # heads are CIDs, one word each
"$qflow" ledger verify --repo "$repo" $heads
"$qflow" ledger verify --repo "$repo" --reexecute "$exec_id"
"$qflow" ledger replay --repo "$repo" "$exec_id"
