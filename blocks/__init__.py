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

from typing import TYPE_CHECKING

from blocks._lazy import lazy_exports

__version__ = "0.1.0"  # the one version source: pyproject reads it ([tool.hatch.version])

_EXPORTS: dict[str, str] = {
    "Block": "blocks.core",
    "SecretDict": "blocks.core",
    "flow": "blocks.runtime",
    "Flow": "blocks.runtime",
    "task": "blocks.runtime",
    "Task": "blocks.runtime",
    "task_input_hash": "blocks.runtime",
    "exponential_backoff": "blocks.runtime",
    "get_run_logger": "blocks.runtime",
    "State": "blocks.runtime",
    "BlocksError": "blocks.errors",
    "ParameterTypeError": "blocks.errors",
    "allow_failure": "blocks.runtime",
    "opaque": "blocks.runtime",
    "quote": "blocks.runtime",
    "unmapped": "blocks.runtime",
    "mask_secret": "blocks.core",
    "deploy": "blocks.deployments",
    "run_deployment": "blocks.deployments",
    "serve": "blocks.deployments",
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
    "deploy",
    "exponential_backoff",
    "flow",
    "get_run_logger",
    "mask_secret",
    "opaque",
    "quote",
    "run_deployment",
    "serve",
    "task",
    "task_input_hash",
    "unmapped",
]

if TYPE_CHECKING:
    from blocks.core import Block, SecretDict, mask_secret
    from blocks.deployments import deploy, run_deployment, serve
    from blocks.errors import BlocksError, ParameterTypeError
    from blocks.runtime import (
        Flow,
        State,
        Task,
        allow_failure,
        exponential_backoff,
        flow,
        get_run_logger,
        opaque,
        quote,
        task,
        task_input_hash,
        unmapped,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
