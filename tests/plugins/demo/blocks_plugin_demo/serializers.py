"""The plugin's serializer, found through its ``blocks.serializers`` entry point: JSON whose
bytes are stored reversed (so a record written by it reads back only through it)."""

from __future__ import annotations

import json
from typing import Any

from serializers import SerializationError, Serializer


class ReversedJSONSerializer(Serializer):
    """JSON, bytes reversed."""

    type = "demo-reversed"

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type}

    def dumps(self, obj: Any) -> bytes:
        try:
            return json.dumps(obj).encode()[::-1]
        except TypeError as exc:
            raise SerializationError(str(exc)) from None

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data[::-1])
        except ValueError as exc:
            raise SerializationError(str(exc)) from None
