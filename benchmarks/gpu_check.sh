#!/usr/bin/env bash
# The GPU checks of issue 4 as one prepared run, for a session lent a GPU machine
# (`run` tool: `bash benchmarks/gpu_check.sh`, results under $OUT). None of it has run yet:
# this task has not been lent a GPU. In order, each step's output kept even if a later one fails:
#   1. generation on CUDA: greedy tokens equal to HF generate on the same GPU, constrained
#      sampling (tests/generate/test_device.py; its CUDA tests skip on CPU machines);
#   2. decoding throughput on the GPU, kiban vs HF generate, bf16, batches 1/32/256;
#   3. training MFU of a 1B Llama (goal >= 45 % bf16), kiban and a plain loop;
#   4. whether vllm imports there (the >= 0.95x vLLM comparison needs it; it travels as wheels
#      only: see the device README).
# That machine's python3 (3.12) has torch (CUDA), transformers, tokenizers, peft and pytest, not
# kiban's other dependencies; fetch those here as wheels, ignored by git, and carry the folder:
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       rdkit pymatgen spglib datasketch selfies pydivsufsort      # ~35 MB (2026-11-29)
#   run: command "bash benchmarks/gpu_check.sh", carry [".whl"]
set -uo pipefail
OUT=${OUT:-benchmarks/results}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -n 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
status=0
$PY -m pytest -q -p no:cacheprovider tests/generate/test_device.py -rs 2>&1 | tee "$OUT/test_device.txt" || status=1
$PY benchmarks/bench_generate.py --device cuda --dtype bfloat16 --batches 1 32 256 --repeats 5 \
    --out "$OUT/generate-cuda-bfloat16.json" 2>&1 | tee "$OUT/generate.txt" || status=1
timeout 420 $PY benchmarks/bench_train.py --device cuda --preset llama-1b --vocab 32000 --seq 2048 \
    --batch 16 --micro 4 --compile --runners kiban,plain --out "$OUT/train-cuda.json" 2>&1 \
    | tail -n 40 | tee "$OUT/train.txt" || status=1
if $PY -c "import vllm" 2>/dev/null; then
    $PY -c "import vllm; print('vllm', vllm.__version__, 'imports; the side-by-side throughput "\
"run against kiban is still to be written')" | tee "$OUT/vllm.txt"
else
    echo "vllm does not import on this machine: the >= 0.95x vLLM comparison needs it" | tee "$OUT/vllm.txt"
fi
exit $status
