"""Evaluation tasks: benchmarks a generator's output is scored on (``kiban eval …``)."""
