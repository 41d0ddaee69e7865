"""Compatibility path: ``from blocks.states import ...`` keeps working.

As Prefect's ``prefect.states``. The code lives in `blocks.runtime._states`; `blocks.runtime` is the
public facade.
"""

from blocks.runtime._states import (
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    NotReady,
    Pending,
    Running,
    State,
    StateDetails,
    StateType,
    TimedOut,
    is_state_iterable,
    return_value_to_state,
)

__all__ = [
    "Cached",
    "Cancelled",
    "Completed",
    "Crashed",
    "Failed",
    "NotReady",
    "Pending",
    "Running",
    "State",
    "StateDetails",
    "StateType",
    "TimedOut",
    "is_state_iterable",
    "return_value_to_state",
]
