"""The one error type of the `serializers` package."""

from __future__ import annotations


class SerializationError(ValueError):
    """A value could not be serialized, or stored bytes could not be deserialized.

    The message names the offending type and suggests what to use instead.
    """
