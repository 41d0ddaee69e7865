"""Compatibility path: ``from blocks.context import ...`` keeps working.

As Prefect's ``prefect.context``. The code lives in `blocks.runtime._context`; `blocks.runtime` is
the public facade.
"""

from blocks.runtime._context import (
    FlowRun,
    RunName,
    TaskRun,
    check_run_name,
    current_flow_run,
    current_run,
    current_task_run,
    render_run_name,
)

__all__ = [
    "FlowRun",
    "RunName",
    "TaskRun",
    "check_run_name",
    "current_flow_run",
    "current_run",
    "current_task_run",
    "render_run_name",
]
