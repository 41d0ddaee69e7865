"""A deployment: a flow, where its code is, its default parameters, schedules and work pool.

`Deployment.build_from_flow(...)` records where the flow's code lives (an entrypoint
``path/file.py:function`` relative to the working folder, or ``module:function``) and checks the
parameters against the flow's signature; `.apply()` stores it in the registry, idempotently (the
seed's file applies at import time, so a worker importing it applies it again: that changes
nothing), and inserts its next scheduled runs.

Example:
    >>> from blocks.deployments import CronSchedule, Deployment
    >>> Deployment.build_from_flow(
    ...     flow=my_etl_flow, name="daily-etl", schedule=CronSchedule(cron="0 6 * * *"),
    ...     parameters={"date": None}, work_pool_name="default-agent-pool",
    ... ).apply()
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from blocks.errors import BlocksError, ConfigurationError, InvalidNameError, ParameterTypeError
from blocks.runtime import Flow

__all__ = ["CATCHUP_POLICIES", "COLLISION_STRATEGIES", "Catchup", "CollisionStrategy", "Deployment"]

logger = logging.getLogger("blocks.deployments")

Catchup = Literal["latest", "all", "none"]
CATCHUP_POLICIES: tuple[str, ...] = ("latest", "all", "none")
CollisionStrategy = Literal["ENQUEUE", "CANCEL_NEW"]
COLLISION_STRATEGIES: tuple[str, ...] = ("ENQUEUE", "CANCEL_NEW")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass
class Deployment:
    """A flow deployed to a work pool, with default parameters and schedules.

    `catchup` says what happens to slots missed while no worker ran (their run is Late):
    ``"latest"`` (default) runs only the newest missed slot of each schedule and marks the
    others Skipped; ``"all"`` runs every one; ``"none"`` skips them all.

    `concurrency_limit` caps the deployment's live runs (Pending, Running, Cancelling) across
    every worker; a run due while the deployment is at its limit waits (``"ENQUEUE"``, the
    default) or is Cancelled (``"CANCEL_NEW"``), as Prefect's `collision_strategy` says.
    """

    flow_name: str
    name: str
    entrypoint: str
    path: str
    version: str | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[Any] = field(default_factory=list)
    work_pool_name: str = "default"
    paused: bool = False
    catchup: Catchup = "latest"
    concurrency_limit: int | None = None
    collision_strategy: CollisionStrategy = "ENQUEUE"
    retries: int = 0
    parameter_names: list[str] = field(default_factory=list)
    secret_parameters: list[str] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"

    @classmethod
    def build_from_flow(
        cls,
        flow: Flow[..., Any],
        name: str,
        *,
        version: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        schedule: Any = None,
        schedules: Iterable[Any] | None = None,
        parameters: dict[str, Any] | None = None,
        work_pool_name: str | None = None,
        paused: bool = False,
        catchup: Catchup = "latest",
        concurrency_limit: int | None = None,
        collision_strategy: CollisionStrategy = "ENQUEUE",
        path: str | os.PathLike[str] | None = None,
        entrypoint: str | None = None,
    ) -> Deployment:
        """A deployment of `flow` (Prefect 2's signature); nothing is stored until `apply()`.

        The working folder (`path`) defaults to the current folder and the entrypoint to where
        the flow's function is defined. Parameters must be the flow's and of its types.
        """
        if not isinstance(flow, Flow):
            raise ConfigurationError(
                f"build_from_flow takes a @flow, not a {type(flow).__name__}: decorate the "
                "function with @flow first."
            )
        check_names(flow.name, name)
        if catchup not in CATCHUP_POLICIES:
            raise ConfigurationError(
                f"catchup={catchup!r}: use one of {', '.join(CATCHUP_POLICIES)}."
            )
        if concurrency_limit is not None and (
            isinstance(concurrency_limit, bool)
            or not isinstance(concurrency_limit, int)
            or concurrency_limit < 1
        ):
            raise ConfigurationError(
                f"concurrency_limit={concurrency_limit!r}: a whole number of runs, 1 or more "
                "(or None for no limit)."
            )
        if collision_strategy not in COLLISION_STRATEGIES:
            raise ConfigurationError(
                f"collision_strategy={collision_strategy!r}: use one of "
                f"{', '.join(COLLISION_STRATEGIES)}."
            )
        folder = Path(path if path is not None else os.getcwd()).resolve()
        given = dict(parameters or {})
        check_parameters(flow, given)
        return cls(
            flow_name=flow.name,
            name=name,
            entrypoint=entrypoint or flow_entrypoint(flow, folder),
            path=str(folder),
            version=version if version is not None else flow.version,
            description=description if description is not None else flow.options.description,
            tags=sorted(set(tags or ())),
            parameters=given,
            schedules=_schedules(schedule, schedules),
            work_pool_name=work_pool_name or "default",
            paused=paused,
            catchup=catchup,
            concurrency_limit=concurrency_limit,
            collision_strategy=collision_strategy,
            retries=flow.options.retries,
            parameter_names=_parameter_names(flow),
            secret_parameters=secret_parameters(flow),
        )

    def document(self) -> dict[str, Any]:
        """What the registry stores and seals (schedules as their JSON, by slug)."""
        return {
            "entrypoint": self.entrypoint,
            "path": self.path,
            "description": self.description,
            "tags": list(self.tags),
            "parameters": self.parameters,
            "schedules": [
                {
                    "slug": entry.key,
                    "active": entry.active,
                    "parameters": entry.parameters,
                    "schedule": entry.schedule.model_dump(mode="json"),
                }
                for entry in self.schedules
            ],
            "catchup": self.catchup,
            "concurrency_limit": self.concurrency_limit,
            "collision_strategy": self.collision_strategy,
            "retries": self.retries,
            "parameter_names": self.parameter_names,
            # Only when there are some: a deployment applied before this key existed stays
            # unchanged when applied again.
            **({"secret_parameters": self.secret_parameters} if self.secret_parameters else {}),
        }

    def apply(self) -> str:
        """Store the deployment (creating its work pool as a ``process`` pool if missing) and
        schedule its next runs; return its id. Applying it again unchanged changes nothing."""
        from blocks.deployments._scheduler import schedule_deployment
        from blocks.deployments._store import RunStore

        check_names(self.flow_name, self.name)
        store = RunStore.default()
        try:
            before = store.get_deployment(f"{self.flow_name}/{self.name}").document
        except BlocksError:  # new, or its seal no longer verifies: nothing of it is kept
            before = {}
        _, created = store.ensure_pool(self.work_pool_name)
        if created:
            _info(
                f"Created work pool {self.work_pool_name!r} of type process (start a worker: "
                f"block worker start --pool {self.work_pool_name})"
            )
        record, changed = store.put_deployment(
            self.flow_name,
            self.name,
            version=self.version,
            pool_name=self.work_pool_name,
            document=self.document(),
        )
        if changed:
            # A schedule removed or changed (under the same slug too): its future runs not yet
            # started go; runs that started are never touched. An unchanged schedule keeps its
            # slots (and the unique key keeps them once each).
            old = {s["slug"]: s["schedule"] for s in before.get("schedules", [])}
            store.delete_scheduled(
                record.id,
                keep_slugs=[
                    s["slug"]
                    for s in record.document["schedules"]
                    if old.get(s["slug"]) == s["schedule"]
                ],
            )
            if self.paused != record.paused:
                store.set_deployment_paused(record.full_name, self.paused)
                record = store.get_deployment(record.full_name)
            schedule_deployment(store, record)
        return record.id


def check_names(flow_name: str, name: Any) -> None:
    """Refuse a deployment name that is not a plain name, and a flow name holding ``/``:
    ``flow-name/deployment-name`` must split one way only."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"A deployment name is letters, digits, '.', '_' and '-' (up to 128), starting "
            f"with a letter or digit: got {name!r}."
        )
    if "/" in flow_name:
        raise InvalidNameError(
            f"Flow name {flow_name!r} contains '/', which separates a flow's name from its "
            "deployment's (flow-name/deployment-name): rename the flow, e.g. "
            f"@flow(name={flow_name.replace('/', '-')!r})."
        )


def _parameter_names(flow: Flow[..., Any]) -> list[str]:
    """The names a run may give (empty when the flow takes ``**kwargs``: any name goes)."""
    params = inspect.signature(flow.fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    return [p.name for p in params if p.kind is not p.VAR_POSITIONAL]


def secret_parameters(flow: Flow[..., Any]) -> list[str]:
    """The flow's parameters typed as secrets (``SecretStr``, ``SecretBytes``, ``Secret[...]``,
    or optional ones): shown masked wherever a run's parameters are shown."""
    from blocks.core._block import _is_secret_annotation

    try:
        hints = typing.get_type_hints(flow.fn, include_extras=True)
    except Exception:  # a hint that does not resolve here: read what is written
        hints = dict(getattr(flow.fn, "__annotations__", {}))
    return sorted(
        name
        for name in inspect.signature(flow.fn).parameters
        if name in hints and _is_secret_annotation(hints[name])
    )


def _info(message: str) -> None:
    """One info line: to the `blocks.deployments` logger, or stderr when nothing handles it."""
    if logger.hasHandlers() and logger.isEnabledFor(logging.INFO):
        logger.info(message)
    else:
        print(message, file=sys.stderr)


def check_parameters(flow: Flow[..., Any], parameters: dict[str, Any]) -> None:
    """Refuse parameters the flow does not take, or of the wrong type (as a direct call would)."""
    signature = inspect.signature(flow.fn)
    try:
        signature.bind_partial(**parameters)
    except TypeError as exc:
        raise ParameterTypeError(
            f"Flow {flow.name!r} cannot take these parameters: {exc}. Its parameters: "
            f"{', '.join(signature.parameters) or 'none'}."
        ) from None
    flow.validate(parameters)


def flow_entrypoint(flow: Flow[..., Any], folder: Path) -> str:
    """Where a worker finds the flow: ``path/file.py:function`` under `folder`, or
    ``module:function`` for an importable module elsewhere."""
    fn = inspect.unwrap(flow.fn)
    qualname = getattr(fn, "__qualname__", "")
    if not qualname or "<" in qualname or "." in qualname:
        raise ConfigurationError(
            f"Flow {flow.name!r} is not defined at the top level of a module ({qualname!r}): a "
            "worker could not find it. Define it at module level, or give entrypoint=."
        )
    module = getattr(fn, "__module__", None) or ""
    source = inspect.getsourcefile(fn)
    if source is not None:
        file = Path(source).resolve()
        if file.is_relative_to(folder):
            return f"{file.relative_to(folder).as_posix()}:{qualname}"
    if module and module != "__main__" and not module.startswith("__blocks_"):
        return f"{module}:{qualname}"
    raise ConfigurationError(
        f"Flow {flow.name!r} is defined in {source or module!r}, outside the working folder "
        f"{folder}: run from the folder that holds the file, or give path= or entrypoint=."
    )


def _schedules(schedule: Any, schedules: Iterable[Any] | None) -> list[Any]:
    from blocks.deployments.schedules import Schedule

    given = [] if schedule is None else [schedule]
    given += list(schedules or ())
    wrapped = [item if isinstance(item, Schedule) else Schedule(schedule=item) for item in given]
    keys = [entry.key for entry in wrapped]
    if len(set(keys)) != len(keys):
        raise ConfigurationError(
            f"Two schedules of one deployment have the same slug ({keys}): give each a slug=."
        )
    return wrapped


def check_parameters_by_name(deployment: Any, parameters: dict[str, Any]) -> None:
    """Refuse parameters a stored deployment's flow does not take (the CLI's ``--param``):
    the names the deployment was built with are known without importing its code. Types are
    checked, and values coerced, when the run starts (as a direct call would)."""
    known = set(deployment.document.get("parameter_names", []))
    unknown = sorted(set(parameters) - known) if known else []
    if unknown:
        raise ParameterTypeError(
            f"{deployment.full_name} takes no parameter(s) {', '.join(map(repr, unknown))}: its "
            f"flow's parameters are {', '.join(sorted(known))}."
        )
