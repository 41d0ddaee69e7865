"""Lazy re-exports for a package's `__init__`: each name is imported from its module on first use,
so importing the package stays cheap (`block ls` never loads pydantic, a task never loads SQL).

Example:
    >>> __getattr__, __dir__ = lazy_exports(__name__, {"Block": "blocks.core._block"}, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module `__getattr__` that imports `exports[name]` (a module path) on first use and
    keeps the value in `namespace`, and a `__dir__` that lists the lazy names too."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
