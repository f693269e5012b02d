"""Chemistry-aware search over MOSES train: kiban vs RDKit SubstructLibrary (substructure) and
vs brute-force BulkTanimotoSimilarity and FPSim2 (similarity), same molecules, same session.

    python benchmarks/bench_chemsearch.py                 # all 1,584,663 MOSES train molecules
    python benchmarks/bench_chemsearch.py --limit 100000  # a quicker run

Builds (or reuses) a kiban corpus of MOSES train under --work, its chemistry index
(``kiban index build --chem``), then per SMARTS: kiban's screen + RDKit check vs
``SubstructLibrary(CachedTrustedSmilesMolHolder, PatternHolder)`` given the very same pattern
fingerprints (1 thread each; medians over --repeats). Hits must be identical, except where
SubstructLibrary's trusted molecules (ring membership only, no SSSR) answer a ring-size query
differently from RDKit on sanitised molecules: those molecules are checked against sanitised
RDKit and counted. Similarity: Tanimoto >= 0.7, top 100, for --queries molecules of MOSES
test: identical to BulkTanimotoSimilarity (ties in corpus order) and timed against it and
FPSim2 (when installed; its database is built from the same SMILES).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SMARTS = [
    "c1ccncc1",
    "[CX3](=O)[NX3]",
    "[Cl,Br,I]",
    "c1ccc2[nH]ccc2c1",
    "[$([NX3;H2,H1]);!$(NC=O)]",
    "S(=O)(=O)N",
    "[r5]",
    "C1CCNCC1",
    "[#6]-[#8]-[#6](=O)",
    "c-c",
]


def median_time(function, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def build_corpus(work: Path, limit: int | None) -> Path:
    from kiban.data import moses_smiles

    corpus = work / "corpus"
    if (corpus / "manifest.json").is_file():
        return corpus
    work.mkdir(parents=True, exist_ok=True)
    source = work / "moses_train.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles"])
        writer.writerows([s] for s in moses_smiles("train", limit))
    command = [sys.executable, "-m", "kiban", "corpus", "build", str(source), "--out",
               str(corpus), "--workers", "2", "--vocab-size", "300"]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return corpus


def to_bitvects(words: np.ndarray) -> list:
    """Packed little-endian uint64 rows → RDKit ExplicitBitVects (FPS hex of the same bytes)."""
    from rdkit import DataStructs

    raw = np.ascontiguousarray(words).view(np.uint8)
    return [DataStructs.CreateFromFPSText(row.tobytes().hex()) for row in raw]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N MOSES train molecules")
    parser.add_argument("--work", default=None, help="folder for the corpus (default out/bench)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=5, help="similarity queries")
    parser.add_argument("--out", default=None, help="JSON results file")
    parser.add_argument(
        "--only", choices=("substructure", "similarity"), default=None, help="one half only"
    )
    args = parser.parse_args()
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdSubstructLibrary

    from kiban.chem import morgan_fingerprint
    from kiban.data import moses_smiles
    from kiban.index.chemsearch import ChemIndex, build_chem_index

    size = "full" if args.limit is None else str(args.limit)
    work = Path(args.work or f"out/bench/chemsearch-{size}")
    started = time.perf_counter()
    corpus = build_corpus(work, args.limit)
    corpus_seconds = time.perf_counter() - started
    if not (corpus / "chem" / "chem.json").is_file():
        build_chem_index(corpus, workers=2)
    index = ChemIndex.open(corpus, build=False)
    n = len(index)
    smiles = [index.smiles(i) for i in range(n)]
    print(f"{n:,} molecules; corpus {corpus_seconds:.0f} s (reused if ~0); chemistry index "
          f"{index.meta['seconds']:.0f} s with 2 workers")  # fmt: skip

    # SubstructLibrary with the same pattern fingerprints
    start = time.perf_counter()
    holder = rdSubstructLibrary.CachedTrustedSmilesMolHolder()
    substructure = args.only != "similarity"
    for text in smiles if substructure else []:
        holder.AddSmiles(text)
    patterns = rdSubstructLibrary.PatternHolder(2048)
    for fp in to_bitvects(np.asarray(index.pattern).T) if substructure else []:
        patterns.AddFingerprint(fp)
    library = rdSubstructLibrary.SubstructLibrary(holder, patterns)
    library_seconds = time.perf_counter() - start
    rows = []
    for smarts in SMARTS if substructure else []:
        query = Chem.MolFromSmarts(smarts)
        ours_s, (positions, _, screened) = median_time(
            lambda s=smarts: ChemIndex.open(corpus, build=False).match(s, count=False),
            args.repeats,
        )
        full_s, full = median_time(
            lambda s=smarts: ChemIndex.open(corpus, build=False).substructure(s), args.repeats
        )
        lib_s, lib = median_time(
            lambda q=query: library.GetMatches(
                q, maxResults=n + 1, numThreads=1, useChirality=False
            ),
            args.repeats,
        )
        ours_hits = {smiles[int(i)] for i in positions}
        lib_hits = {smiles[i] for i in lib}
        differ = ours_hits ^ lib_hits
        # molecules where the two disagree: who agrees with RDKit on sanitised molecules?
        ours_right = sum(
            (Chem.MolFromSmiles(s).HasSubstructMatch(query)) == (s in ours_hits) for s in differ
        )
        rows.append(
            {
                "smarts": smarts,
                "molecules": len(ours_hits),
                "matches": full.matches,
                "screened": screened,
                "substructlibrary_molecules": len(lib_hits),
                "differ": len(differ),
                "kiban_right_where_differ": ours_right,
                "kiban_s": round(ours_s, 4),
                "substructlibrary_s": round(lib_s, 4),
                "speed_ratio": round(lib_s / ours_s, 2),
                "kiban_with_match_counts_s": round(full_s, 4),
                "speed_ratio_with_counts": round(lib_s / full_s, 2),
            }
        )
        print(json.dumps(rows[-1]))

    # similarity: kiban vs BulkTanimotoSimilarity (+ FPSim2)
    morgan = np.empty_like(np.asarray(index.morgan))
    morgan[np.asarray(index.morgan_order)] = index.morgan  # rows are stored by popcount
    bitvects = to_bitvects(morgan) if args.only != "substructure" else []
    queries = moses_smiles("test", args.queries) if args.only != "substructure" else []
    fpsim2, fpsim2_reason = None, None
    try:
        from FPSim2 import FPSim2Engine
        from FPSim2.io import create_db_file

        db = work / "fpsim2.h5"
        if not db.is_file():
            create_db_file(
                [[s, i] for i, s in enumerate(smiles)], str(db), "smiles", "Morgan",
                {"radius": 2, "fpSize": 2048},
            )  # fmt: skip
        fpsim2 = FPSim2Engine(str(db))
    except ImportError as error:
        fpsim2_reason = f"FPSim2 not installed ({error})"
    similar = []
    for text in queries:
        fp = morgan_fingerprint(Chem.MolFromSmiles(text))

        def brute(fp=fp):
            values = np.array(DataStructs.BulkTanimotoSimilarity(fp, bitvects))
            above = np.flatnonzero(values >= 0.7)
            return above[np.argsort(-values[above], kind="stable")][:100], values

        ours_s, ours = median_time(
            lambda t=text: index.similar(t, threshold=0.7, top=100, documents=False),
            args.repeats,
        )
        cli_s, _ = median_time(
            lambda t=text: ChemIndex.open(corpus, build=False).similar(t, threshold=0.7, top=100),
            args.repeats,
        )
        brute_s, (order, values) = median_time(brute, args.repeats)
        identical = [h["smiles"] for h in ours.hits] == [smiles[i] for i in order] and [
            h["similarity"] for h in ours.hits
        ] == [round(values[i], 6) for i in order]
        entry = {
            "query": text,
            "above_0.7": ours.above_threshold,
            "identical_to_bulk_tanimoto": identical,
            "kiban_s": round(ours_s, 4),
            "kiban_open_and_documents_s": round(cli_s, 4),
            "bulk_tanimoto_s": round(brute_s, 4),
            "ratio_vs_bulk": round(brute_s / ours_s, 2),
        }
        if fpsim2 is not None:
            fps_s, fps_hits = median_time(
                lambda t=text: fpsim2.similarity(t, threshold=0.7, n_workers=1), args.repeats
            )
            entry["fpsim2_s"] = round(fps_s, 4)
            entry["ratio_vs_fpsim2"] = round(fps_s / ours_s, 2)
            entry["fpsim2_hits"] = len(fps_hits)
        similar.append(entry)
        print(json.dumps(entry))
    arrays = {
        name: os.path.getsize(corpus / "chem" / f"{name}.npy")
        for name in ("pattern", "morgan", "morgan_count", "postings", "postings_offsets")
    }
    arrays["smiles.bin"] = os.path.getsize(corpus / "chem" / "smiles.bin")
    result = {
        "molecules": n,
        "chem_index_seconds": index.meta["seconds"],
        "substructlibrary_build_seconds_given_fingerprints": round(library_seconds, 1),
        "chem_bytes": arrays,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "substructure": rows,
        "substructure_median_ratio": median([r["speed_ratio"] for r in rows]),
        "substructure_median_ratio_with_counts": median(
            [r["speed_ratio_with_counts"] for r in rows]
        ),
        "similarity": similar,
        "similarity_median_ratio_vs_bulk": median([s["ratio_vs_bulk"] for s in similar]),
        "similarity_median_ratio_vs_fpsim2": median([s["ratio_vs_fpsim2"] for s in similar])
        if fpsim2 is not None
        else fpsim2_reason,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("substructure", "similarity")}))
    out = Path(args.out or work / "results.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results in {out}")


if __name__ == "__main__":
    main()
