"""Compatibility path (Prefect's ``prefect.utilities.annotations``): ``from
blocks.utilities.annotations import allow_failure`` keeps working; `blocks.runtime` is the public
facade."""

from blocks.runtime._annotations import BaseAnnotation, allow_failure, opaque, quote, unmapped

__all__ = ["BaseAnnotation", "allow_failure", "opaque", "quote", "unmapped"]
