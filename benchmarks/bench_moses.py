"""The MOSES benchmark through the kiban pipeline: sample from a model trained on the MOSES
corpus and score the samples with `kiban eval moses`.

    kiban corpus build configs/moses-corpus.toml --out out/moses/corpus --workers 2
    kiban train configs/moses.toml [--max-steps N --out DIR]
    .venv/bin/python benchmarks/bench_moses.py out/moses/model/model --n 30000

Writes ``samples.smi`` (one generated SMILES per line; a sample whose span never closed or does
not parse is written as generated and counts as invalid) and ``moses.json`` (the metrics, the
sampling settings and times, the training summary of the model's run) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model directory (OUT/model of a kiban train run)")
    parser.add_argument("--n", type=int, default=30000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "moses"))
    args = parser.parse_args()

    from kiban.generate import load_generator
    from kiban.tasks.molecules.evaluation.moses import evaluate_moses_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = load_generator(args.model)
    began = time.perf_counter()
    lines, tokens = [], 0
    for first in range(0, args.n, args.batch):
        batch = generator.generate(
            "<mol>",
            n=min(args.batch, args.n - first),
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed + first,
        )
        for completion in batch:
            text = completion.spans[0].text if completion.spans else completion.completion
            lines.append(text.replace("\n", " ").strip())
            tokens += completion.completion_tokens
        print(f"sampled {len(lines):,}/{args.n:,}", file=sys.stderr, flush=True)
    sampling_s = time.perf_counter() - began
    samples = out / "samples.smi"
    samples.write_text("".join(line + "\n" for line in lines))
    began = time.perf_counter()
    result = evaluate_moses_file(samples, n_jobs=args.n_jobs)
    evaluation_s = time.perf_counter() - began
    run = Path(args.model).parent
    summary = (
        json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else None
    )
    report = {
        "model": str(args.model),
        "samples": args.n,
        "temperature": args.temperature,
        "seed": args.seed,
        "generated_tokens": tokens,
        "sampling_s": sampling_s,
        "evaluation_s": evaluation_s,
        "metrics": dict(result.values),
        "not_computable": dict(result.reasons),
        "training": summary,
    }
    (out / "moses.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "training"}, indent=1, default=str))


if __name__ == "__main__":
    main()
