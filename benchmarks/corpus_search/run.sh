#!/usr/bin/env bash
# kiban TokenIndex vs infini-gram 2.6.0 vs tokengrams 0.3.3 through the peer harness
# (../shared/peers/corpus-search beside the checkout, or $KIBAN_SHARED/peers/corpus-search),
# same token stream, same queries, one session.
#
# Usage: bash benchmarks/corpus_search/run.sh [TOKENS] [STAGES]
#   TOKENS  default 10000000 (the 100M run: 100000000)
#   STAGES  default "setup build bench batch compare"; also: rerun (kiban 1 shard + infini-gram
#           no-prefetch once more, back to back, keeping the first run as *_run1.json), profile
#           (kiban hot spots + build phases)
# Big data lives under $CSB (default /tmp/csb), never in the repository; the small result files
# are copied to benchmarks/corpus_search/results/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KIBAN=$(cd "$HERE/../.." && pwd)
SHARED=${KIBAN_SHARED:-$KIBAN/../shared}
PEER=$SHARED/peers/corpus-search
CSB=${CSB:-/tmp/csb}
TOK=${1:-10000000}; TAG=c$((TOK/1000000))m
STAGES=${2:-"setup build bench batch compare"}
H=$CSB/corpus-search
PY=$H/venv/bin/python
RES=$HERE/results
export PYTHONPATH=$HERE:$KIBAN:$H/harness
has() { [[ " $STAGES " == *" $1 "* ]]; }
log() { echo "== $(date -u +%H:%M:%S) loadavg $(cut -d' ' -f1-3 /proc/loadavg) :: $*"; }
mkdir -p "$CSB" "$RES"

if has setup; then
  # harness copy (the shared one is read-only) + its venv (+ numba/tqdm for kiban)
  [ -d "$PEER" ] || { echo "no peer harness at $PEER: set KIBAN_SHARED to the shared folder" >&2; exit 2; }
  [ -d "$H" ] || { cp -r "$PEER" "$CSB/"; chmod -R u+w "$H"; }
  [ -x "$PY" ] || { python3 -m venv "$H/venv"; "$H/venv/bin/pip" install -q infini-gram==2.6.0 \
      tokengrams==0.3.3 pydivsufsort==0.0.20 numpy numba tqdm; }
  cd "$H"; mkdir -p data idx results logs
  [ -f data/$TAG/tokens.u16 ] || $PY harness/gen_corpus.py --out data/$TAG --tokens $TOK --heldout_tokens 2000000
  [ -f data/q_$TAG.npz ] || $PY harness/make_queries.py --corpus data/$TAG --out data/q_$TAG.npz --k 1200 --trace_k 200
fi
cd "$H"

if has build; then
  # builds back to back: infini-gram (harness step 3), kiban 1 shard / 8 shards, tokengrams
  log "ig build $TAG"
  rm -rf idx/ig_$TAG
  /usr/bin/time -v $PY harness/ig_build.py --corpus data/$TAG --index idx/ig_$TAG --cpus 2 --mem 16 > logs/build_ig_$TAG.txt 2>&1
  cp idx/ig_$TAG/build_report.json "$RES/build_ig_$TAG.json"
  log "kiban build $TAG 1 shard"
  $PY "$HERE/prepare_kiban.py" --data data/$TAG --out $CSB/kiban/${TAG}_s1 --shards 1 --workers 1 \
      --report "$RES/build_kiban_${TAG}_s1.json" > logs/build_kiban_${TAG}_s1.txt
  log "kiban build $TAG 8 shards, 2 workers"
  $PY "$HERE/prepare_kiban.py" --data data/$TAG --out $CSB/kiban/${TAG}_s8 --shards 8 --workers 2 \
      --report "$RES/build_kiban_${TAG}_s8.json" > logs/build_kiban_${TAG}_s8.txt
  log "tg build $TAG"
  rm -rf idx/tg_$TAG
  $PY harness/tg_build.py --ig_index idx/ig_$TAG --index idx/tg_$TAG > logs/build_tg_$TAG.txt
  cp idx/tg_$TAG/build_report.json "$RES/build_tg_$TAG.json"
fi

if has bench; then
  # same flags for every engine: --warm_pass (steady state), --heavy_limit 100 (n=1 ntd = the
  # whole unigram distribution, the same query 1200 times)
  B="harness/bench.py --queries data/q_$TAG.npz --warm_pass --heavy_limit 100"
  log "bench kiban 1 shard";  $PY $B --engine kiban_adapter:KibanAdapter --index $CSB/kiban/${TAG}_s1 --out results/kiban_${TAG}_s1.json > logs/bench_kiban_${TAG}_s1.txt
  log "bench ig prefetch";    $PY $B --index idx/ig_$TAG --out results/ig_${TAG}_mmap.json > logs/bench_ig_${TAG}_mmap.txt
  log "bench ig no prefetch"; $PY $B --index idx/ig_$TAG --no_prefetch --out results/ig_${TAG}_noprefetch.json > logs/bench_ig_${TAG}_noprefetch.txt
  log "bench kiban 8 shards"; $PY $B --engine kiban_adapter:KibanAdapter --index $CSB/kiban/${TAG}_s8 --out results/kiban_${TAG}_s8.json > logs/bench_kiban_${TAG}_s8.txt
  log "bench tokengrams";     $PY $B --engine adapters_tokengrams:TokengramsAdapter --index idx/tg_$TAG --out results/tg_${TAG}.json > logs/bench_tg_${TAG}.txt
  log "bench done"
  for f in results/*_${TAG}*.json; do cp "$f" "$RES/bench_$(basename "$f")"; done
fi

if has batch; then
  log "batch throughput"
  $PY "$HERE/batch_bench.py" --kiban $CSB/kiban/${TAG}_s1 --kiban $CSB/kiban/${TAG}_s8 --ig idx/ig_$TAG \
      --tg idx/tg_$TAG --queries data/q_$TAG.npz --out "$RES/batch_$TAG.json" > logs/batch_$TAG.txt
fi

if has rerun; then
  # the first 100M run of infini-gram no-prefetch met loadavg 15-28 from other users of the host:
  # kiban 1 shard and infini-gram no-prefetch again, back to back, in a quieter moment
  B="harness/bench.py --queries data/q_$TAG.npz --warm_pass --heavy_limit 100"
  for f in kiban_${TAG}_s1 ig_${TAG}_noprefetch; do
    cp results/$f.json results/${f}_run1.json; cp results/$f.outputs.npz results/${f}_run1.outputs.npz
    cp results/$f.json "$RES/bench_${f}_run1.json"
  done
  log "rerun kiban 1 shard"; $PY $B --engine kiban_adapter:KibanAdapter --index $CSB/kiban/${TAG}_s1 --out results/kiban_${TAG}_s1.json > logs/bench_kiban_${TAG}_s1.txt
  log "rerun ig no prefetch"; $PY $B --index idx/ig_$TAG --no_prefetch --out results/ig_${TAG}_noprefetch.json > logs/bench_ig_${TAG}_noprefetch.txt
  for f in kiban_${TAG}_s1 ig_${TAG}_noprefetch; do cp results/$f.json "$RES/bench_$f.json"; done
fi

if has profile; then
  log "profile"
  $PY "$HERE/profile_kiban.py" --index $CSB/kiban/${TAG}_s1 --queries data/q_$TAG.npz --out "$RES/profile_${TAG}_s1.json" --build_phases data/$TAG > logs/profile_${TAG}_s1.txt
  $PY "$HERE/profile_kiban.py" --index $CSB/kiban/${TAG}_s8 --queries data/q_$TAG.npz --out "$RES/profile_${TAG}_s8.json" > logs/profile_${TAG}_s8.txt
  # peak memory of the build's suffix sort: the plain pydivsufsort call, and kiban's own
  /usr/bin/time -f "%M KiB maxrss %e s" $PY -c "import sys, numpy as np, pydivsufsort; pydivsufsort.divsufsort(np.fromfile(sys.argv[1], dtype=np.uint16))" \
      $CSB/kiban/${TAG}_s1/shards/tokens-000000.bin 2>&1 | tee "$RES/sa_memory_${TAG}.txt"
  /usr/bin/time -f "%M KiB maxrss %e s" $PY -c "import sys, numpy as np; from kiban.index.build import _suffix_array; _suffix_array(np.fromfile(sys.argv[1], dtype=np.uint16))" \
      $CSB/kiban/${TAG}_s1/shards/tokens-000000.bin 2>&1 | tee -a "$RES/sa_memory_${TAG}.txt"
fi

if has compare; then
  for other in kiban_${TAG}_s1 kiban_${TAG}_s8 tg_${TAG} ig_${TAG}_mmap; do
    $PY harness/compare.py results/ig_${TAG}_noprefetch.json results/$other.json > "$RES/compare_ig_noprefetch_vs_$other.md"
  done
  $PY "$HERE/summarize.py" --tag $TAG --results "$RES" --out "$RES/summary_$TAG.md"
  ls "$RES"/summary_c*.md | sed 's/.*summary_\(c[0-9]*m\).md/\1/' | sort -V | paste -sd, | \
      xargs -I{} $PY "$HERE/summarize.py" --headline {} --results "$RES" --out "$RES/summary.md" > /dev/null
fi
log "done"
