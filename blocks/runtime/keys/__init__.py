"""Cache keys: code fingerprints, deterministic value digests, Prefect 3's cache policies, and
the explanation of a cache miss (what changed since the task's last record).

Example:
    >>> from blocks.runtime.keys import INPUTS, TASK_SOURCE, register_hasher
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocks._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CacheKeyFnPolicy": "blocks.runtime.keys._policies",
    "CacheKeyWarning": "blocks.runtime.keys._hashing",
    "CachePolicy": "blocks.runtime.keys._policies",
    "CompoundCachePolicy": "blocks.runtime.keys._policies",
    "DEFAULT": "blocks.runtime.keys._policies",
    "Explanation": "blocks.runtime.keys._explain",
    "FLOW_PARAMETERS": "blocks.runtime.keys._policies",
    "Fingerprint": "blocks.runtime.keys._fingerprints",
    "FlowParameters": "blocks.runtime.keys._policies",
    "INPUTS": "blocks.runtime.keys._policies",
    "Inputs": "blocks.runtime.keys._policies",
    "NO_CACHE": "blocks.runtime.keys._policies",
    "RUN_ID": "blocks.runtime.keys._policies",
    "RunId": "blocks.runtime.keys._policies",
    "TASK_SOURCE": "blocks.runtime.keys._policies",
    "TaskSource": "blocks.runtime.keys._policies",
    "Unhashable": "blocks.runtime.keys._hashing",
    "changes": "blocks.runtime.keys._explain",
    "digest": "blocks.runtime.keys._hashing",
    "fingerprint": "blocks.runtime.keys._fingerprints",
    "register_hasher": "blocks.runtime.keys._hashing",
    "task_records": "blocks.runtime.keys._explain",
    "why": "blocks.runtime.keys._explain",
}

__all__ = [
    "DEFAULT",
    "FLOW_PARAMETERS",
    "INPUTS",
    "NO_CACHE",
    "RUN_ID",
    "TASK_SOURCE",
    "CacheKeyFnPolicy",
    "CacheKeyWarning",
    "CachePolicy",
    "CompoundCachePolicy",
    "Explanation",
    "Fingerprint",
    "FlowParameters",
    "Inputs",
    "RunId",
    "TaskSource",
    "Unhashable",
    "changes",
    "digest",
    "fingerprint",
    "register_hasher",
    "task_records",
    "why",
]

if TYPE_CHECKING:
    from blocks.runtime.keys._explain import Explanation, changes, task_records, why
    from blocks.runtime.keys._fingerprints import Fingerprint, fingerprint
    from blocks.runtime.keys._hashing import CacheKeyWarning, Unhashable, digest, register_hasher
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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
