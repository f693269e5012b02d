"""Molecule-generation benchmarks."""

from kiban.tasks.molecules.moses import (
    METRIC_NAMES,
    InvalidSample,
    MosesResult,
    evaluate_moses,
    evaluate_moses_file,
    moses_metrics,
    read_samples,
)

__all__ = ["METRIC_NAMES", "InvalidSample", "MosesResult", "evaluate_moses",
           "evaluate_moses_file", "moses_metrics", "read_samples"]
