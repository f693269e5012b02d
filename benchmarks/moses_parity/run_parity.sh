#!/usr/bin/env bash
# Full parity run: samples, molsets' get_all_metrics (reference venv), kiban, comparison tables.
#   bash benchmarks/moses_parity/setup_reference_env.sh   # once: creates .venv-moses-ref
#   bash benchmarks/moses_parity/run_parity.sh
# Run on an otherwise idle machine: the wall times go into the tables.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
HERE=benchmarks/moses_parity
.venv/bin/python $HERE/make_samples.py
for size in 30k 2k; do
  .venv-moses-ref/bin/python $HERE/run_reference.py $HERE/samples/samples-$size.smi \
    --out $HERE/results/reference-$size.json --n-jobs 2 > /dev/null
  .venv/bin/python $HERE/compare.py $HERE/samples/samples-$size.smi \
    --reference $HERE/results/reference-$size.json --out $HERE/results/parity-$size
done
