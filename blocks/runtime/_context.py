"""Run context: which flow run and task run the current code is executing in.

One `contextvars.ContextVar` holds the innermost run (a `FlowRun` or a `TaskRun`), so the
lookup on every task call is a single ``get()``. Task runners copy the context into their worker
threads, which is how a task submitted to a thread still sees its flow run.

Example:
    >>> from blocks.context import current_run
    >>> @task
    ... def whoami() -> str:
    ...     return current_run().name
"""

from __future__ import annotations

import inspect
import itertools
import re
import string
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from blocks.errors import ConfigurationError, OptionTypeError
from blocks.runtime import _history
from blocks.runtime._options import RunName
from blocks.settings import runtime_defaults

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures
    import logging

    from blocks.runtime._options import FlowLike, FlowOptions, TaskLike, TaskRunnerLike
    from blocks.runtime._states import State

__all__ = [
    "FlowRun",
    "PlainTaskRun",
    "RunName",
    "TaskRun",
    "check_run_name",
    "current_flow_run",
    "current_run",
    "current_task_run",
    "new_plain_run",
    "render_run_name",
]

# Cheap, process-unique run numbers: a uuid is made only when someone asks for `.id`.
_run_numbers = itertools.count(1)


class FlowRun:
    """One execution of a `Flow`: its parameters, defaults for its tasks, and task runner.

    `loop` is the event loop an async flow runs on (None for a sync flow); `pending` holds the
    futures of async tasks submitted onto it, which the run waits for (or cancels) as it ends.
    """

    __slots__ = (
        "_calls",
        "_done",
        "_earlier",
        "_id",
        "_logger",
        "flow",
        "flow_run",
        "log_prints",
        "loop",
        "name",
        "parameters",
        "parent",
        "pending",
        "persist_result",
        "result_serializer",
        "result_storage",
        "reuse_key",
        "reuses",
        "run_count",
        "scheduled_time",
        "state",
        "task_runner",
    )

    def __init__(
        self,
        flow: FlowLike,
        options: FlowOptions,
        parameters: dict[str, Any],
        parent: FlowRun | TaskRun | None,
        task_runner: TaskRunnerLike,
    ) -> None:
        self.flow = flow
        self.flow_run = self  # as `TaskRun.flow_run`: the flow run a run belongs to
        self.parameters = parameters
        self.parent = parent
        self.task_runner = task_runner
        self.name = f"{flow.name}-{next(_run_numbers)}"
        self.run_count = 0
        self.state: State | None = None
        self._id: str | None = None
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: set[concurrent.futures.Future[State]] = set()
        # The slot of the deployment run this is (None for a run called by hand or a subflow).
        self.scheduled_time = None if parent is not None else _history.take_scheduled_time()
        self._init_reuse(bool(options.retries))
        outer = parent.flow_run if isinstance(parent, TaskRun) else parent
        # A flow's result settings are the defaults for its tasks; a subflow inherits its parent's.
        self.result_storage: Any = options.result_storage
        self.result_serializer: Any = options.result_serializer
        self.persist_result: bool | None = options.persist_result
        self.log_prints: bool = bool(options.log_prints)
        if outer is not None:
            if self.result_storage is None:
                self.result_storage = outer.result_storage
            if self.result_serializer is None:
                self.result_serializer = outer.result_serializer
            if self.persist_result is None:
                self.persist_result = outer.persist_result
            if options.log_prints is None:
                self.log_prints = outer.log_prints
        elif self.persist_result is None and runtime_defaults().persist_by_default:
            self.persist_result = True  # BLOCKS_RESULTS_PERSIST_BY_DEFAULT, as Prefect's

    # -- reusing what completed in an earlier attempt (flow retries) ---------------------------

    def _init_reuse(self, reuses: bool) -> None:
        self.reuses = reuses  # the flow retries: remember completed calls for the next attempt
        self.reuse_key: str | None = None  # a subflow's place in its parent's run
        self._calls: dict[str, int] = {}
        self._done: dict[str, tuple[Any, State]] = {}
        self._earlier: dict[str, tuple[Any, State]] = {}

    def begin_attempt(self) -> None:
        """Start an attempt: the calls completed so far may be reused by this one."""
        self._earlier.update(self._done)
        self._done = {}
        self._calls = {}

    def call_key(self, what: str) -> str:
        """The place of a call in the flow body (its n-th call of `what` in this attempt)."""
        n = self._calls.get(what, 0)
        self._calls[what] = n + 1
        return f"{what}#{n}"

    def earlier_state(self, key: str, parameters: Any) -> State | None:
        """The completed state of the call at `key` in an earlier attempt, if its arguments
        were equal; else None."""
        entry = self._earlier.get(key)
        if entry is None:
            return None
        try:
            same = bool(entry[0] == parameters)
        except Exception:  # arrays and other values without a plain equality: rerun
            same = False
        return entry[1] if same else None

    def remember_state(self, key: str, parameters: Any, state: State) -> None:
        """Keep the completed state of the call at `key` for the next attempts."""
        self._done[key] = (parameters, state)

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = uuid.uuid4().hex
        return self._id

    def snapshot(self) -> dict[str, Any]:
        """What a task running in another process may ask of this run; see `from_snapshot`."""
        return {
            "name": self.name,
            "id": self.id,
            "flow_name": self.flow.name,
            "flow_version": self.flow.version,
            "parameters": self.parameters,
            "run_count": self.run_count,
            "persist_result": self.persist_result,
            "result_storage": self.result_storage,
            "result_serializer": self.result_serializer,
            "log_prints": self.log_prints,
        }

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any], task_runner: TaskRunnerLike) -> FlowRun:
        """The flow run as a task in another process sees it, rebuilt from its `snapshot`.

        Its `flow` is only a name and version (the `Flow` stays home), it has no parent or
        state, and the tasks it submits go to `task_runner`.
        """
        run = cls.__new__(cls)  # no Flow object here: not __init__
        run.flow = _FlowInfo(snapshot["flow_name"], snapshot["flow_version"])
        run.flow_run = run
        run.name = snapshot["name"]
        run._id = snapshot["id"]
        run.parameters = snapshot["parameters"]
        run.run_count = snapshot["run_count"]
        run.persist_result = snapshot["persist_result"]
        run.result_storage = snapshot["result_storage"]
        run.result_serializer = snapshot["result_serializer"]
        run.log_prints = snapshot["log_prints"]
        run.parent = None
        run.state = None
        run.task_runner = task_runner
        run._logger = None
        run.loop = None
        run.pending = set()
        run.scheduled_time = None
        run._init_reuse(False)
        return run

    def __repr__(self) -> str:
        return f"FlowRun(name={self.name!r})"


class _FlowInfo:
    """Stands in for the `Flow` of a run rebuilt from a snapshot: its name and version."""

    __slots__ = ("name", "version")

    def __init__(self, name: str, version: str | None) -> None:
        self.name = name
        self.version = version

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


class TaskRun:
    """One call of a `Task`; also the ``context`` handed to a two-argument ``cache_key_fn``.

    Attributes: `task`, `flow_run` (None outside a flow), `parameters` (bound arguments, filled
    in when something needs them), `name`, `id`, `run_count` (attempts so far), `state`.
    """

    __slots__ = (
        "_id",
        "_logger",
        "_name",
        "flow_run",
        "log_prints",
        "parameters",
        "parent",
        "reuse_key",
        "run_count",
        "state",
        "task",
        "wait_for",
    )

    def __init__(
        self,
        task: TaskLike,
        flow_run: FlowRun | None,
        parent: FlowRun | TaskRun | None,
        log_prints: bool,
    ) -> None:
        self.task = task
        self.flow_run = flow_run
        self.parent = parent
        self.log_prints = log_prints
        self.parameters: dict[str, Any] | None = None
        self.run_count = 0
        self.state: State | None = None
        self.wait_for: list[Any] | None = None  # upstreams that must complete first
        self.reuse_key: str | None = None  # its place in a retried flow run (`FlowRun.call_key`)
        self._name: str | None = None
        self._id: str | None = None
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def task_run(self) -> TaskRun:
        """Prefect's ``context.task_run``: this object."""
        return self

    @property
    def flow_run_id(self) -> str | None:
        """The id of the flow run this task run belongs to (None outside a flow), as
        Prefect's ``context.task_run.flow_run_id`` that cache-key functions read."""
        flow_run = self.flow_run
        return None if flow_run is None else flow_run.id

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = f"{self.task.name}-{next(_run_numbers)}"
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = uuid.uuid4().hex
        return self._id

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    def __repr__(self) -> str:
        return f"TaskRun(name={self.name!r})"


class PlainTaskRun(TaskRun):
    """The `TaskRun` of a plain call (`Task.__call__`'s and ``.submit()``'s hot paths): the
    same run to everything that reads it, made with three stores instead of `TaskRun`'s
    eleven (`new_plain_run`). The attributes not given read their defaults from the class
    until set; an instance dict holds what is set later (it shadows the slots, unused here).
    """

    # The defaults of `TaskRun.__init__` (the same values, read from the class).
    log_prints = False
    parameters = None
    run_count = 0
    state = None
    wait_for = None
    reuse_key = None
    _name = None
    _id = None
    _logger = None


_new_object = object.__new__


def new_plain_run(
    task: TaskLike, flow_run: FlowRun | None, parent: FlowRun | TaskRun | None
) -> TaskRun:
    """A run of `task` as ``TaskRun(task, flow_run, parent, False)`` gives, made cheaply
    (`PlainTaskRun`); hot paths write these three stores inline instead of calling this."""
    run: TaskRun = _new_object(PlainTaskRun)
    run.task, run.flow_run, run.parent = task, flow_run, parent
    return run


_current: ContextVar[FlowRun | TaskRun | None] = ContextVar("blocks_run", default=None)

get_current = _current.get
set_current = _current.set
reset_current = _current.reset


def current_run() -> FlowRun | TaskRun | None:
    """The innermost run (task run or flow run) of the calling code, or None."""
    return _current.get()


def current_flow_run() -> FlowRun | None:
    """The flow run the calling code belongs to, or None outside a flow."""
    run = _current.get()
    return None if run is None else run.flow_run


def current_task_run() -> TaskRun | None:
    """The task run the calling code is inside, or None."""
    run = _current.get()
    return run if isinstance(run, TaskRun) else None


# -- custom run names ------------------------------------------------------------------------------

_ROOT = re.compile(r"[^.\[]*")


def check_run_name(
    spec: RunName | None, signature: inspect.Signature, option: str, owner: str
) -> None:
    """Reject a run-name template whose fields are not parameters of the function, at decoration.

    Example:
        >>> check_run_name("extract-{sorce}", inspect.signature(extract), "task_run_name", "x")
        Traceback (most recent call last):
        ConfigurationError: x: task_run_name 'extract-{sorce}' uses {sorce}, but 'sorce' is not ...
    """
    if spec is None or callable(spec):
        return
    _check_kind(spec, option, owner)
    names = list(signature.parameters)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(spec) if f is not None]
    except ValueError as exc:
        raise ConfigurationError(
            f"{owner}: {option} {spec!r} is not a valid template: {exc}."
        ) from None
    for field in fields:
        root = _ROOT.match(field)
        name = root.group(0) if root else field
        if not name or name.isdigit():
            raise ConfigurationError(
                f"{owner}: {option} {spec!r} has a positional field {{{field}}}; name a "
                f"parameter instead, one of: {', '.join(names) or '(none)'}."
            )
        if name not in signature.parameters:
            raise ConfigurationError(
                f"{owner}: {option} {spec!r} uses {{{field}}}, but {name!r} is not a parameter "
                f"of the function (parameters: {', '.join(names) or '(none)'})."
            )


def _check_kind(spec: object, option: str, owner: str) -> None:
    if not isinstance(spec, str) and not callable(spec):
        raise OptionTypeError(
            f"{owner}: Expected string or callable for {option!r}; got {type(spec).__name__} "
            "instead (a string template or a callable of the parameters)."
        )


def render_run_name(spec: RunName, parameters: dict[str, Any], option: str, owner: str) -> str:
    """The run name `spec` gives for these bound `parameters`.

    The kind of `spec` is checked again here: an option set on the task or flow after
    decoration (``my_task.task_run_name = ...``, as Prefect allows) was not checked then.
    """
    _check_kind(spec, option, owner)
    if callable(spec):
        takes_parameters = _takes_one_argument(spec)
        name = spec(parameters) if takes_parameters else spec()  # type: ignore[call-arg]
    else:
        try:
            name = spec.format(**parameters)
        except (KeyError, AttributeError, IndexError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"{owner}: {option} {spec!r} could not be formatted with the call's parameters: "
                f"{type(exc).__name__}: {exc}"
            ) from None
    if not isinstance(name, str) or not name:
        raise OptionTypeError(
            f"{owner}: {option} must give a non-empty string, not {type(name).__name__}."
        )
    return name


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )
