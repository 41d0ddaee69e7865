"""Compatibility path: ``from blocks.tasks import ...`` keeps working.

As Prefect's ``prefect.tasks``. The code lives in `blocks.runtime._tasks`; `blocks.runtime` is the
public facade.
"""

from blocks.runtime._tasks import Task, exponential_backoff, task, task_input_hash, unmapped

__all__ = ["Task", "exponential_backoff", "task", "task_input_hash", "unmapped"]
