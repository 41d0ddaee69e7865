"""Prefect 3's way to call a task runner: ``runner.submit(task, parameters, wait_for)`` and
``runner.map(task, parameters)``.

Our tasks and flows hand a runner a prepared run (`TaskRunner.submit_task`, or ``submit(fn)``
with a callable that returns a `State`). Code written for Prefect calls a runner with a task
and its parameters by name; `submit_call` and `map_calls` turn that into the same prepared
runs (a run under the current flow run, if any) and give back our futures.

Example:
    >>> with ConcurrentTaskRunner() as runner:
    ...     future = runner.submit(double, parameters={"x": 2})
    ...     runner.map(double, parameters={"x": [1, 2, 3]}).result()
    [2, 4, 6]
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from blocks.errors import ConfigurationError
from blocks.runtime._annotations import unmapped
from blocks.runtime._context import FlowRun, TaskRun, get_current
from blocks.runtime._futures import TaskFuture, TaskFutureList

if TYPE_CHECKING:
    from blocks.runtime.runners._base import TaskRunner

__all__ = ["Mapped", "is_task", "map_calls", "map_length", "mappable", "submit_call"]


class Mapped(list[Any]):
    """The elements of one mapped argument of ``.map()``: one per run."""


def mappable(value: Any) -> Any:
    """A ``.map()`` argument as the runs get it: `Mapped` for a list, tuple, set, range,
    generator (or a future of one); the value itself for a string, bytes, a dict or any other
    value, and for ``unmapped(value)``, which every run gets whole."""
    if isinstance(value, unmapped):
        return value.value
    if isinstance(value, TaskFuture):
        value = value.result()
    if isinstance(value, str | bytes | dict):
        return value
    if isinstance(value, list | tuple | set | frozenset | range) or inspect.isgenerator(value):
        return Mapped(value)
    return value


def map_length(values: Iterable[Any], what: str) -> int:
    """The number of runs of a ``.map()`` whose arguments (`mappable`) are `values`;
    `ConfigurationError` unless at least one is mapped and all mapped ones are as long."""
    lengths = {len(value) for value in values if isinstance(value, Mapped)}
    if not lengths:
        raise ConfigurationError(f"{what} needs at least one iterable argument.")
    if len(lengths) > 1:
        raise ConfigurationError(f"{what} got iterables of different lengths {sorted(lengths)}.")
    return lengths.pop()


def is_task(obj: object) -> bool:
    """Whether `obj` is a task (what Prefect's ``runner.submit`` takes), not a prepared call."""
    return hasattr(obj, "options") and hasattr(obj, "bind") and hasattr(obj, "fn")


def submit_call(
    runner: TaskRunner,
    task: Any,
    parameters: Mapping[str, Any] | None = None,
    wait_for: Iterable[Any] | None = None,
) -> TaskFuture[Any]:
    """Run ``task(**parameters)`` on `runner`, after `wait_for`; its future.

    Futures among the parameters are waited for and replaced by their results, as in
    ``task.submit``; an upstream that did not complete leaves the run ``NotReady``.
    """
    if not is_task(task):
        raise ConfigurationError(
            f"{type(runner).__name__}.submit(task, parameters=...) takes a task made with "
            f"@task, not a {type(task).__name__}."
        )
    if parameters is not None and not isinstance(parameters, Mapping):
        raise ConfigurationError(
            f"{type(runner).__name__}.submit(): parameters is a dict of the task's arguments "
            f"by name, not a {type(parameters).__name__}."
        )
    parent = get_current()
    flow_run = None if parent is None else parent.flow_run
    log_prints = task.options.log_prints
    if log_prints is None:
        log_prints = bool(flow_run.log_prints) if isinstance(flow_run, FlowRun) else False
    run = TaskRun(task, flow_run, parent, log_prints)
    waits = list(wait_for or ())
    if waits:
        run.wait_for = waits
    upstream = [w for w in waits if isinstance(w, TaskFuture)]
    return TaskFuture(run, runner.submit_task(task, run, (), dict(parameters or {}), upstream))


def map_calls(
    runner: TaskRunner,
    task: Any,
    parameters: Mapping[str, Any],
    wait_for: Iterable[Any] | None = None,
) -> TaskFutureList[Any]:
    """One `submit_call` per element of the iterable parameters (lists, tuples, sets, ranges,
    generators, or futures of them), in order; strings, bytes, dicts, other values and
    ``unmapped(...)`` go whole to every run, as with ``task.map``."""
    given = {name: mappable(value) for name, value in dict(parameters).items()}
    runs = map_length(
        given.values(), f"{type(runner).__name__}.map({getattr(task, 'name', task)!r})"
    )
    waits = list(wait_for or ())
    return TaskFutureList(
        submit_call(
            runner,
            task,
            {name: v[i] if isinstance(v, Mapped) else v for name, v in given.items()},
            waits,
        )
        for i in range(runs)
    )
