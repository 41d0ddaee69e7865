"""Compatibility path: ``from blocks.registry import Registry`` (now ``blocks.core``)."""

from blocks.core._registry import Registry

__all__ = ["Registry"]
