"""`run_deployment`: make a run of a deployment and wait for it; `follow_run`: its states as they
change (what `block deployment run --watch` and `block flow-run logs --follow` print).

A run made here waits in its deployment's pool like a scheduled one: a worker of that pool (or the
`serve` process that owns it) runs it. Waiting is a read of the run's row every `poll_interval`.

Example:
    >>> from blocks.deployments import run_deployment
    >>> run = run_deployment("etl/nightly", parameters={"day": "2024-01-01"}, timeout=600)
    >>> run.state
    <RunState.COMPLETED: 'Completed'>
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from blocks.deployments._deployment import check_parameters_by_name
from blocks.deployments._states import FINAL
from blocks.deployments._store import DeploymentRecord, FlowRun, RunStore
from blocks.errors import ConfigurationError, DeploymentNotFound
from blocks.runtime._context import get_current

__all__ = ["find_deployment", "follow_run", "run_deployment"]

#: Seconds between two reads of a run being waited for.
POLL_SECONDS = 0.25


def find_deployment(store: RunStore, name: str) -> DeploymentRecord:
    """A deployment by ``flow-name/deployment-name`` or by id."""
    if "/" in name:
        return store.get_deployment(name)
    try:
        return store.get_deployment_by_id(name)
    except DeploymentNotFound:
        raise DeploymentNotFound(
            f"No deployment named {name!r}: give flow-name/deployment-name or a deployment id. "
            "List them: block deployment ls"
        ) from None


def run_deployment(
    name: str,
    parameters: dict[str, Any] | None = None,
    *,
    scheduled_time: datetime | None = None,
    timeout: float | None = None,
    poll_interval: float = POLL_SECONDS,
    as_subflow: bool = True,
) -> FlowRun:
    """Make a run of the deployment `name` (``flow/deployment`` or its id) and return it once
    it has ended; with `timeout` seconds, return it when they are up whatever its state;
    ``timeout=0`` returns at once. `parameters` are merged over the deployment's; names the flow
    does not take are refused now, values are checked and coerced when the run starts.
    `scheduled_time` (an aware datetime) makes it due later. Called by a flow that runs as a
    deployment's run, the new run is its subflow run (``parent_run_id``; `block flow-run
    inspect` shows both ways) unless `as_subflow` is False."""
    if timeout is not None and timeout < 0:
        raise ConfigurationError(
            f"timeout={timeout!r}: seconds, 0 or more (None waits for the end)."
        )
    if scheduled_time is not None and scheduled_time.tzinfo is None:
        raise ConfigurationError(
            "scheduled_time must be an aware datetime (datetime.now(UTC) + ...), not a naive one."
        )
    store = RunStore.default()
    deployment = find_deployment(store, name)
    given = dict(parameters or {})
    check_parameters_by_name(deployment, given)
    made = store.create_run(
        deployment,
        parameters=given,
        due=scheduled_time,
        parent_run_id=_calling_run_id() if as_subflow else None,
    )
    *_, last = follow_run(store, made.id, timeout=timeout, poll_interval=poll_interval)
    return last


def _calling_run_id() -> str | None:
    """The deployment run this process runs, when a flow of it is running now."""
    if get_current() is None:
        return None
    return os.environ.get("BLOCKS_FLOW_RUN_ID") or None


def follow_run(
    store: RunStore,
    run_id: str,
    *,
    timeout: float | None = None,
    poll_interval: float = POLL_SECONDS,
) -> Iterator[FlowRun]:
    """The run now, then again each time its state or attempt changes, until it ends (or
    `timeout` seconds pass)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    run = store.get_run(run_id)
    yield run
    seen = (run.state, run.attempt)
    while run.state not in FINAL:
        if deadline is not None and time.monotonic() >= deadline:
            return
        wait = (
            poll_interval if deadline is None else min(poll_interval, deadline - time.monotonic())
        )
        time.sleep(max(0.0, wait))
        run = store.get_run(run_id)
        if (run.state, run.attempt) != seen:
            seen = (run.state, run.attempt)
            yield run
