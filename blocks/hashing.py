"""Compatibility path: ``from blocks.hashing import ...`` keeps working.

The code lives in `blocks.runtime.keys._hashing`; `blocks.runtime` is the public facade.
"""

from blocks.runtime.keys._hashing import CacheKeyWarning, Unhashable, digest, register_hasher

__all__ = ["CacheKeyWarning", "Unhashable", "digest", "register_hasher"]
