"""Prefect 3's deployment surface: `flow.to_deployment`, `flow.serve` / `serve(*deployments)` and
`flow.deploy` / `deploy(*deployments, work_pool_name=)`.

`serve` is one process that applies its deployments to a work pool of its own, schedules them and
runs their runs: the `process` worker's loop (scheduler pass, one-statement claims, leases, a
subprocess per run) on that pool, so a served run is recorded, cancelled and reaped as any other.
`deploy` only registers the deployments for the workers of a named pool, as
`Deployment.build_from_flow(...).apply()` does.

Example:
    >>> from blocks import flow, serve
    >>> etl.serve(name="nightly", cron="0 2 * * *", parameters={"source": "s3"})
    >>> serve(
    ...     etl.to_deployment("hourly", interval=3600),
    ...     report.to_deployment("daily", cron="0 6 * * *"),
    ... )
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import signal
import sys
import threading
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from blocks.deployments._deployment import Catchup, CollisionStrategy, Deployment
from blocks.errors import ConfigurationError
from blocks.runtime import Flow

__all__ = ["deploy", "deploy_flow", "serve", "serve_flow", "serve_pool_name", "to_deployment"]

#: The longest pool name `serve` spells out; a longer set of names is hashed.
_POOL_NAME_MAX = 200


def to_deployment(
    flow: Flow[..., Any],
    name: str | None = None,
    *,
    interval: Any = None,
    cron: str | Iterable[str] | None = None,
    rrule: str | Iterable[str] | None = None,
    schedule: Any = None,
    schedules: Iterable[Any] | None = None,
    paused: bool | None = None,
    parameters: dict[str, Any] | None = None,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    version: str | None = None,
    work_pool_name: str | None = None,
    concurrency_limit: int | None = None,
    collision_strategy: CollisionStrategy = "ENQUEUE",
    catchup: Catchup = "latest",
    entrypoint: str | None = None,
) -> Deployment:
    """A deployment of `flow` (not stored yet): give it to `serve` or `deploy`.

    At most one of `interval` (seconds or a timedelta, or several), `cron`, `rrule` (a string or
    several), `schedule` or `schedules`; none makes a deployment that runs only when asked.
    `name` defaults to the flow's name. Parameters are checked against the flow's signature.
    """
    given = [
        label
        for label, value in (
            ("interval", interval),
            ("cron", cron),
            ("rrule", rrule),
            ("schedule", schedule),
            ("schedules", schedules),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigurationError(
            f"Give one of interval, cron, rrule, schedule or schedules, not {' and '.join(given)}"
            ": for several schedules pass schedules=[Cron(...), Interval(...)]."
        )
    return Deployment.build_from_flow(
        flow,
        name or _default_name(flow),
        version=version,
        description=description,
        tags=tags,
        schedule=schedule,
        schedules=schedules if schedules is not None else _shorthand(interval, cron, rrule),
        parameters=parameters,
        work_pool_name=work_pool_name,
        paused=bool(paused),
        catchup=catchup,
        concurrency_limit=concurrency_limit,
        collision_strategy=collision_strategy,
        entrypoint=entrypoint,
    )


def _default_name(flow: Flow[..., Any]) -> str:
    """The flow's name as a deployment name (Prefect's default): other characters as dashes."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", flow.name).strip("-._")[:128] or "default"


def _shorthand(interval: Any, cron: Any, rrule: Any) -> list[Any]:
    """The schedules `interval=`, `cron=` or `rrule=` stand for (each one value or several)."""
    from blocks.deployments.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    def several(value: Any, single: tuple[type, ...]) -> list[Any]:
        if value is None:
            return []
        return [value] if isinstance(value, single) else list(value)

    made: list[Any] = []
    for item in several(interval, (int, float, timedelta)):
        if isinstance(item, bool) or not isinstance(item, int | float | timedelta):
            raise ConfigurationError(
                f"interval={item!r}: give seconds (a number) or a datetime.timedelta."
            )
        made.append(
            IntervalSchedule(
                interval=item if isinstance(item, timedelta) else timedelta(seconds=item)
            )
        )
    made += [CronSchedule(cron=text) for text in several(cron, (str,))]
    made += [RRuleSchedule(rrule=text) for text in several(rrule, (str,))]
    return made


def serve_pool_name(deployments: Iterable[Deployment]) -> str:
    """The work pool a `serve` of these deployments uses: ``serve:`` and their sorted names (a
    digest of them when too long), so serving the same set again finds its runs."""
    names = ",".join(sorted({d.full_name for d in deployments}))
    if len(names) > _POOL_NAME_MAX:
        names = hashlib.sha256(names.encode()).hexdigest()[:24]
    return f"serve:{names}"


def serve(
    *deployments: Deployment,
    limit: int | None = None,
    pause_on_shutdown: bool = True,
    print_starting_message: bool = True,
) -> None:
    """Apply `deployments`, then schedule and run their runs here until stopped (Ctrl-C or
    SIGTERM); each run in its own process. `limit` caps the runs at once.

    On stop, a run in progress is stopped and marked Crashed (its retries apply) and, with
    `pause_on_shutdown` (Prefect's default), the deployments are paused: their future runs are
    removed until they are served again.
    """
    from blocks.deployments._scheduler import schedule_deployment
    from blocks.deployments._store import RunStore
    from blocks.deployments._worker import Worker

    if not deployments:
        raise ConfigurationError(
            "serve() needs at least one deployment: serve(my_flow.to_deployment('name'))."
        )
    if not all(isinstance(d, Deployment) for d in deployments):
        raise ConfigurationError(
            "serve() takes deployments made by flow.to_deployment(...); got "
            + ", ".join(sorted({type(d).__name__ for d in deployments}))
            + "."
        )
    pool = serve_pool_name(deployments)
    store = RunStore.default()
    roots: set[Path] = set()
    for deployment in deployments:
        deployment.work_pool_name = pool
        deployment.apply()
        # A deployment paused by the last serve's shutdown is served again: resume it.
        record = store.get_deployment(deployment.full_name)
        if record.paused != deployment.paused:
            store.set_deployment_paused(record.full_name, deployment.paused)
            schedule_deployment(store, store.get_deployment(record.full_name))
        roots |= _code_folders(deployment)
    worker = Worker(pool, limit=limit, paths=sorted(roots), store=store)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, worker.stop)
        signal.signal(signal.SIGINT, worker.stop)
    if print_starting_message:
        names = ", ".join(d.full_name for d in deployments)
        print(
            f"Serving {names} (pool {pool!r}). Run one: block deployment run "
            f"{deployments[0].full_name}. Stop with Ctrl-C.",
            file=sys.stderr,
            flush=True,
        )
    try:
        worker.run()
    finally:
        if pause_on_shutdown:
            for deployment in deployments:
                store.set_deployment_paused(deployment.full_name, True)


def _code_folders(deployment: Deployment) -> set[Path]:
    """The folders a served deployment's code is in: its working folder, and the folder of its
    module for a ``module:function`` entrypoint (the serving process chose that code itself)."""
    folders = {Path(deployment.path).resolve()}
    target = deployment.entrypoint.rpartition(":")[0]
    if not target.endswith(".py"):
        spec = importlib.util.find_spec(target)
        if spec is not None and spec.origin:
            folders.add(Path(spec.origin).resolve().parent)
    return folders


def deploy(*deployments: Deployment, work_pool_name: str | None = None) -> list[str]:
    """Register `deployments` for the workers of a work pool (each one's own, or
    `work_pool_name` for all); return their ids. A missing pool is created as a process pool."""
    if not deployments:
        raise ConfigurationError("deploy() needs at least one deployment.")
    ids = []
    for deployment in deployments:
        if work_pool_name is not None:
            deployment.work_pool_name = work_pool_name
        if deployment.work_pool_name.startswith("serve:"):
            raise ConfigurationError(
                f"{deployment.full_name}: pools named serve:... belong to serve(); deploy to a "
                "work pool of your own: work_pool_name='my-pool'."
            )
        ids.append(deployment.apply())
        print(
            f"Deployment {deployment.full_name!r} applied to work pool "
            f"{deployment.work_pool_name!r}. Start a worker: block worker start --pool "
            f"{deployment.work_pool_name}",
            file=sys.stderr,
        )
    return ids


def serve_flow(flow: Flow[..., Any], name: str | None = None, **options: Any) -> None:
    """`flow.serve(...)`: `to_deployment` with the deployment options, then `serve` it."""
    serving: dict[str, Any] = {
        key: options.pop(key) for key in ("limit", "pause_on_shutdown") if key in options
    }
    serving["print_starting_message"] = options.pop("print_starting_message", True)
    serve(to_deployment(flow, name, **options), **serving)


def deploy_flow(
    flow: Flow[..., Any],
    name: str | None = None,
    *,
    work_pool_name: str | None = None,
    **options: Any,
) -> str:
    """`flow.deploy(...)`: `to_deployment` then `deploy`; returns the deployment's id."""
    if not work_pool_name:
        raise ConfigurationError(
            f"{flow.name}.deploy() needs work_pool_name=: the pool whose workers run it (created "
            "as a process pool when missing). To run it from this process, use .serve()."
        )
    return deploy(to_deployment(flow, name, work_pool_name=work_pool_name, **options))[0]
