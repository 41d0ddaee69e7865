"""Compatibility path: ``from blocks.cache_policies import ...`` keeps working.

As Prefect's ``prefect.cache_policies``. The code lives in `blocks.runtime.keys._policies`;
`blocks.runtime` is the public facade.
"""

from blocks.runtime.keys._policies import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NO_CACHE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyFnPolicy,
    CachePolicy,
    CompoundCachePolicy,
    FlowParameters,
    Inputs,
    RunId,
    TaskSource,
)

__all__ = [
    "DEFAULT",
    "FLOW_PARAMETERS",
    "INPUTS",
    "NO_CACHE",
    "RUN_ID",
    "TASK_SOURCE",
    "CacheKeyFnPolicy",
    "CachePolicy",
    "CompoundCachePolicy",
    "FlowParameters",
    "Inputs",
    "RunId",
    "TaskSource",
]
