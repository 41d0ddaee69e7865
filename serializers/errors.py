"""The errors of the `serializers` package, and the root of the whole distribution's errors.

`serializers` imports nothing from `blocks`, yet `except BlocksError` must catch a
`SerializationError`: so the root class lives here, in the lowest package, and
`blocks.errors` re-exports it. ``blocks.errors.BlocksError is serializers.errors.BlocksError``:
one class, no wrapping, no virtual subclassing (``except`` ignores ``__subclasscheck__``).
The whole tree is drawn at the top of `blocks/errors.py`.
"""

from __future__ import annotations


class BlocksError(Exception):
    """Root of every error raised on purpose by `blocks` and `serializers`.

    Import it from `blocks.errors` (or `blocks`); it is defined here only so that
    `SerializationError` can sit under it without `serializers` importing `blocks`.
    """


class SerializationError(BlocksError, ValueError):
    """A value could not be serialized, or stored bytes could not be deserialized.

    The message names the offending type and suggests what to use instead.
    """
