"""Serializers for task results: JSON (safe, rich types), pickle (anything), compressed.

Example:
    >>> from serializers import JSONSerializer, resolve_serializer
    >>> resolve_serializer("json") == JSONSerializer()
    True
"""

from .base import Serializer
from .compressed import CompressedSerializer
from .errors import SerializationError
from .json import JSONSerializer, register_json_type
from .pickle import PickleSerializer
from .registry import resolve_serializer

__all__ = [
    "CompressedSerializer",
    "JSONSerializer",
    "PickleSerializer",
    "SerializationError",
    "Serializer",
    "register_json_type",
    "resolve_serializer",
]
