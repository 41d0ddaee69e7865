"""Serializers for task results: JSON (safe, rich types), pickle (anything), compressed,
Parquet (tables), npy (arrays) and auto (chosen per value).

Example:
    >>> from serializers import JSONSerializer, resolve_serializer
    >>> resolve_serializer("json") == JSONSerializer()
    True
"""

from .auto import AutoSerializer
from .base import Serializer
from .compressed import CompressedSerializer
from .errors import SerializationError
from .json import JSONSerializer, register_json_type
from .numpy import NumpySerializer
from .parquet import ParquetSerializer
from .pickle import PickleSerializer
from .registry import resolve_serializer

__all__ = [
    "AutoSerializer",
    "CompressedSerializer",
    "JSONSerializer",
    "NumpySerializer",
    "ParquetSerializer",
    "PickleSerializer",
    "SerializationError",
    "Serializer",
    "register_json_type",
    "resolve_serializer",
]
