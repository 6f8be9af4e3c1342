#!/usr/bin/env bash
# `make demo`: what Qflow does on one machine, on embedded defaults.
#   1. the centralization sentinel on this repository;
#   2. a network of 3 `qflow node run` processes on loopback (fresh repos in .demo/cluster):
#      a flow is submitted, gossiped to every node and run by whichever nodes claim its
#      steps; the launcher is `kill -9`ed mid-flow and the others finish the flow; their
#      ledgers are verified (every step completed exactly once) and replayed; everything
#      is stopped cleanly (examples/cluster_demo.py);
#   3. one node alone (.demo/local): `qflow run` of a flow with wasm steps, its ledger
#      verified, re-executed and replayed.
set -euo pipefail
cd "$(dirname "$0")/.."
qflow=".venv/bin/qflow"
rm -rf .demo

echo "== 1. sentinel: no central dependencies"
"$qflow" sentinel check .

echo
echo "== 2. a network of 3 nodes on this machine: kill the launcher mid-flow"
.venv/bin/python examples/cluster_demo.py

echo
echo "== 3. one node alone: qflow run, then the ledger verified, re-executed, replayed"
repo=".demo/local"
"$qflow" init --repo "$repo" >/dev/null
inputs='{"images": [{"name": "cat.png", "width": 640, "height": 480},
                    {"name": "map.png", "width": 100, "height": 2000}]}'
report=$("$qflow" run examples/flows/foreach.yaml --repo "$repo" --inputs "$inputs" --json)
echo "$report"
exec_id=$(.venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["exec"])' <<<"$report")
heads=$(.venv/bin/python -c 'import json,sys; print(" ".join(json.load(sys.stdin)["heads"]))' <<<"$report")
# shellcheck disable=SC2086  # heads are CIDs, one word each
"$qflow" ledger verify --repo "$repo" $heads
"$qflow" ledger verify --repo "$repo" --reexecute "$exec_id"
"$qflow" ledger replay --repo "$repo" "$exec_id"
