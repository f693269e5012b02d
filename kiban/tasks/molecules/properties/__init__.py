"""Molecular property prediction: property sets (`load_dataset`, `read_property_file`),
chemprop's scaffold split (`scaffold_split`), two predictors scored on it (`FingerprintForest`,
`PropertyLM` via `finetune_property_model`; `evaluate_split`), and saved property models on a
scientist's own data (`train_property_model`, `PropertyModel`, `predict_file`,
`evaluate_property_data`: the library behind ``kiban property``), with train-time k-fold
cross-validation (`cross_validate`) and columns found as ``corpus build`` finds them
(`detect_columns`)."""

from kiban.tasks.molecules.properties.cross_validation import (
    CV_SPLITS,
    cross_validate,
    cv_folds,
)
from kiban.tasks.molecules.properties.datasets import (
    DATASETS,
    TASKS,
    BadRecord,
    DatasetSpec,
    PropertyDataError,
    PropertyDataset,
    load_dataset,
    read_property_file,
)
from kiban.tasks.molecules.properties.predictors import (
    METHODS,
    METRIC,
    FingerprintForest,
    LMSettings,
    PropertyLM,
    evaluate_split,
    finetune_property_model,
    score,
    summarize_runs,
)
from kiban.tasks.molecules.properties.saved_models import (
    EvaluateOptions,
    FileColumns,
    PropertyModel,
    PropertyModelError,
    TrainOptions,
    detect_columns,
    evaluate_property_data,
    predict_file,
    train_property_model,
)
from kiban.tasks.molecules.properties.scaffold_split import (
    ScaffoldSplit,
    scaffold_split,
)

__all__ = [
    "CV_SPLITS",
    "DATASETS",
    "METHODS",
    "METRIC",
    "TASKS",
    "BadRecord",
    "DatasetSpec",
    "EvaluateOptions",
    "FileColumns",
    "FingerprintForest",
    "LMSettings",
    "PropertyDataError",
    "PropertyDataset",
    "PropertyLM",
    "PropertyModel",
    "PropertyModelError",
    "ScaffoldSplit",
    "TrainOptions",
    "cross_validate",
    "cv_folds",
    "detect_columns",
    "evaluate_property_data",
    "evaluate_split",
    "finetune_property_model",
    "load_dataset",
    "predict_file",
    "read_property_file",
    "scaffold_split",
    "score",
    "summarize_runs",
    "train_property_model",
]
