"""The one exception the generation package raises for bad input."""

from __future__ import annotations


class GenerationError(ValueError):
    """Bad generation input: a sampling parameter out of range, an incomplete model directory,
    a tokenizer that does not fit the model. The message names the field or file and the value."""
