"""Compatibility path: ``from blocks.annotations import ...`` keeps working.

As Prefect's ``prefect.utilities.annotations``. The code lives in `blocks.runtime._annotations`;
`blocks.runtime` is the public facade.
"""

from blocks.runtime._annotations import BaseAnnotation, allow_failure, opaque, quote, unmapped

__all__ = ["BaseAnnotation", "allow_failure", "opaque", "quote", "unmapped"]
