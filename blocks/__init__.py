"""blocks: typed configuration Blocks, encrypted secrets and task result storage.

Example:
    >>> from blocks import flow, task
    >>> from blocks.system import Secret
    >>> Secret(value="s3cr3t").save("my-api-key")
    >>> @task(persist_result=True)
    ... def extract(source: str) -> dict:
    ...     return {"source": source}

Names are imported on first use, so ``from blocks.system import Secret`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # the one version source: pyproject reads it ([tool.hatch.version])

_EXPORTS: dict[str, str] = {
    "Block": "blocks.core._block",
    "SecretDict": "blocks.core._block",
    "flow": "blocks.flows",
    "Flow": "blocks.flows",
    "task": "blocks.tasks",
    "Task": "blocks.tasks",
    "task_input_hash": "blocks.tasks",
    "exponential_backoff": "blocks.tasks",
    "get_run_logger": "blocks.logging",
    "State": "blocks.states",
    "BlocksError": "blocks.errors",
    "ParameterTypeError": "blocks.errors",
    "allow_failure": "blocks.annotations",
    "opaque": "blocks.annotations",
    "quote": "blocks.annotations",
    "unmapped": "blocks.annotations",
}

__all__ = [
    "Block",
    "BlocksError",
    "Flow",
    "ParameterTypeError",
    "SecretDict",
    "State",
    "Task",
    "allow_failure",
    "exponential_backoff",
    "flow",
    "get_run_logger",
    "opaque",
    "quote",
    "task",
    "task_input_hash",
    "unmapped",
]

if TYPE_CHECKING:
    from blocks.annotations import allow_failure, opaque, quote, unmapped
    from blocks.core._block import Block, SecretDict
    from blocks.errors import BlocksError, ParameterTypeError
    from blocks.flows import Flow, flow
    from blocks.logging import get_run_logger
    from blocks.states import State
    from blocks.tasks import Task, exponential_backoff, task, task_input_hash


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
