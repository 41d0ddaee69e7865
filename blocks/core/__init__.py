"""The block model and the registry it is saved to (layer 1: imports only settings and errors).

Public names: ``Block``, ``SecretDict`` and ``Registry``; everything else here is internal
(``_block`` the model, ``_documents`` how a block becomes a stored document, ``_registry`` the
SQL store, ``_encryption`` and ``_rotation`` the master key, ``_discovery`` user block modules).

Example:
    >>> from blocks.core import Block
    >>> class Warehouse(Block):
    ...     dsn: str
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks._lazy import lazy_exports

if TYPE_CHECKING:
    from blocks.core._block import Block, SecretDict
    from blocks.core._masking import mask_secret
    from blocks.core._registry import Registry

__all__ = ["Block", "Registry", "SecretDict", "mask_secret"]

# Imported on first use: `block ls` reads the registry without loading pydantic, and loading a
# block does not need the SQL layer on SQLite.
_EXPORTS = {
    "Block": "blocks.core._block",
    "SecretDict": "blocks.core._block",
    "Registry": "blocks.core._registry",
    "mask_secret": "blocks.core._masking",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
