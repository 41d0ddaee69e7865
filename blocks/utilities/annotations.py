"""``from blocks.utilities.annotations import allow_failure``: Prefect's import path."""

from blocks.annotations import BaseAnnotation, allow_failure, opaque, quote, unmapped

__all__ = ["BaseAnnotation", "allow_failure", "opaque", "quote", "unmapped"]
