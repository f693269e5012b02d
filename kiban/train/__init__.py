"""Training: pre-training from scratch, continued pre-training of a local Hugging Face model,
and fine-tuning on a user's own data (see docs/training.md).

Nothing here imports torch or transformers at import time; `kiban.train.run` does when called.
"""

from kiban.train.config import ConfigError, RunConfig, load_config

__all__ = ["ConfigError", "RunConfig", "load_config"]
