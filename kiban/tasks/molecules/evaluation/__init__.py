"""Evaluation of generated molecules: every MOSES metric (`evaluate_moses`) and the HTML report
of a trained model (`molecule_report`)."""

from kiban.tasks.molecules.evaluation.moses import (
    METRIC_NAMES,
    InvalidSample,
    MosesResult,
    evaluate_moses,
    evaluate_moses_file,
    moses_metrics,
    read_samples,
)
from kiban.tasks.molecules.evaluation.report import molecule_report

__all__ = [
    "METRIC_NAMES",
    "InvalidSample",
    "MosesResult",
    "evaluate_moses",
    "evaluate_moses_file",
    "molecule_report",
    "moses_metrics",
    "read_samples",
]
