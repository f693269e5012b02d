"""Molecule design: oracles with a call budget (`Oracle`, `get_oracle`, PMO's `top_k_auc`), the
graph GA (`graph_ga`), a kiban model in the loop (`optimize_with_model`), REINVENT's augmented
likelihood (`optimize_augmented_likelihood`), and property-conditioned prompting
(`evaluate_conditioning`); a REINVENT 4-like scoring function (`ScoringFunction`, `COMPONENTS`)
and the ``kiban design`` run around the loops (`read_config`, `run_design`)."""

from kiban.tasks.molecules.design.campaign import DesignConfig, read_config, run_design
from kiban.tasks.molecules.design.conditioned import (
    DEFAULT_SPECS,
    PropertyRange,
    RangeSpec,
    Reference,
    conditioning_prompt,
    evaluate_conditioning,
)
from kiban.tasks.molecules.design.optimize import (
    ORACLES,
    BudgetExhausted,
    GAConfig,
    LoopConfig,
    Oracle,
    get_oracle,
    graph_ga,
    optimize_with_model,
    top_k_auc,
)
from kiban.tasks.molecules.design.reinvent import (
    AugmentedConfig,
    DiversityFilter,
    optimize_augmented_likelihood,
)
from kiban.tasks.molecules.design.scoring import COMPONENTS, ScoringConfig, ScoringFunction

__all__ = [
    "COMPONENTS",
    "DesignConfig",
    "ScoringConfig",
    "ScoringFunction",
    "read_config",
    "run_design",
    "DEFAULT_SPECS",
    "ORACLES",
    "AugmentedConfig",
    "BudgetExhausted",
    "DiversityFilter",
    "GAConfig",
    "LoopConfig",
    "Oracle",
    "PropertyRange",
    "RangeSpec",
    "Reference",
    "conditioning_prompt",
    "evaluate_conditioning",
    "get_oracle",
    "graph_ga",
    "optimize_augmented_likelihood",
    "optimize_with_model",
    "top_k_auc",
]
