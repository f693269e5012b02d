"""Exact corpus search over the very token shards a model trains on."""

from kiban.index.build import IndexFormatError, build_index
from kiban.index.engine import Match, NextTokens, QueryError, TokenIndex, TraceSpan
from kiban.index.federated import FederatedIndex

__all__ = [
    "FederatedIndex",
    "IndexFormatError",
    "Match",
    "NextTokens",
    "QueryError",
    "TokenIndex",
    "TraceSpan",
    "build_index",
]
