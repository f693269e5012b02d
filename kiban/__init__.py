"""kiban: transparent scientific foundation models."""

from kiban.document import Document, DocumentError, Segment, Span

__version__ = "0.1.0"
__all__ = ["Document", "DocumentError", "Segment", "Span", "__version__"]
