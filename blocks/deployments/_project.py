"""Deployments from a project file: our ``blocks.yaml``, or the seed's ``prefect.yaml`` unchanged.

`block deploy` reads the file, imports each deployment's flow from its entrypoint (as
``prefect deploy`` does: the module's top-level code runs) and applies it. Keys this version
does not use (``prefect-version``, ``build``, ``push``, ``pull`` are expected in a
``prefect.yaml``) are named in one warning, never an error; a deployment without a name or an
entrypoint, or a schedule of no known kind, is a `ConfigurationError` naming it.

Example:
    >>> project = read_project(Path("blocks.yaml"))
    >>> [d.name for d in project.deployments]
    ['daily-etl']
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from blocks.errors import ConfigurationError

#: Files `block deploy` looks for in the current folder, in this order.
PROJECT_FILES = ("blocks.yaml", "prefect.yaml")

_TOP_KEYS = {"name", "deployments"}
_IGNORED_TOP = {"prefect-version"}  # the seed's file names it; nothing here depends on it
_DEPLOYMENT_KEYS = {
    "name",
    "entrypoint",
    "work_pool",
    "schedule",
    "schedules",
    "parameters",
    "tags",
    "version",
    "description",
    "paused",
    "catchup",
    "concurrency_limit",
    "collision_strategy",
}

INIT_TEXT = """\
# blocks.yaml: the deployments of this project, applied with `block deploy --name NAME` (or
# `block deploy --all`). A prefect.yaml in the seed's form is read the same way.
name: {name}

deployments:
  - name: daily-etl
    # path/file.py:function under this folder, or module:function
    entrypoint: flows/etl.py:my_etl_flow
    work_pool:
      name: default-agent-pool     # created as a process pool if missing
    schedule:
      cron: "0 6 * * *"            # or interval: 3600 (seconds), or rrule: "FREQ=DAILY"
      # timezone: Europe/Berlin
    parameters:
      date: null
    tags:
      - production
    # version: "1.0"
    # paused: false
    # catchup: latest              # missed slots: latest | all | none
    # concurrency_limit: 1         # live runs at most; collision_strategy: ENQUEUE | CANCEL_NEW
"""


@dataclass
class DeploymentSpec:
    """One deployment of a project file, as written."""

    name: str
    entrypoint: str
    pool: str
    schedules: list[Any] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    version: str | None = None
    description: str | None = None
    paused: bool = False
    catchup: str = "latest"
    concurrency_limit: int | None = None
    collision_strategy: str = "ENQUEUE"


@dataclass
class Project:
    path: Path
    name: str | None
    deployments: list[DeploymentSpec]
    unknown: list[str]


def find_project_file(folder: Path) -> Path:
    for name in PROJECT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ConfigurationError(
        f"No {' or '.join(PROJECT_FILES)} in {folder}: write one with `block init`, or deploy "
        "one flow without a file: block deploy path/file.py:flow --name N --pool P"
    )


def read_project(path: Path) -> Project:
    """Parse a project file; unknown keys are collected (see `unknown_message`), not refused."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path.name} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path.name} must be a mapping with a 'deployments' list.")
    unknown = [key for key in data if key not in _TOP_KEYS | _IGNORED_TOP]
    entries = data.get("deployments") or []
    if not isinstance(entries, list):
        raise ConfigurationError(f"{path.name}: 'deployments' must be a list.")
    specs = []
    for index, entry in enumerate(entries):
        where = f"{path.name}, deployments[{index}]"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where} must be a mapping.")
        unknown += [
            f"{entry.get('name', index)}.{key}" for key in entry if key not in _DEPLOYMENT_KEYS
        ]
        specs.append(_spec(entry, where))
    return Project(path, data.get("name"), specs, unknown)


def unknown_message(project: Project) -> str | None:
    """The one warning naming every key this version ignored (None when there is none)."""
    if not project.unknown:
        return None
    return (
        f"{project.path.name}: ignored key(s) this version does not use: "
        f"{', '.join(project.unknown)}"
    )


def _spec(entry: dict[str, Any], where: str) -> DeploymentSpec:
    name, entrypoint = entry.get("name"), entry.get("entrypoint")
    if not isinstance(name, str) or not isinstance(entrypoint, str):
        raise ConfigurationError(f"{where} needs a 'name' and an 'entrypoint' (path/file.py:flow).")
    pool = entry.get("work_pool") or {}
    pool_name = pool.get("name") if isinstance(pool, dict) else pool
    raw = [entry["schedule"]] if entry.get("schedule") else []
    raw += list(entry.get("schedules") or [])
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ConfigurationError(f"{where}: 'parameters' must be a mapping.")
    version = entry.get("version")
    return DeploymentSpec(
        name=name,
        entrypoint=entrypoint,
        pool=str(pool_name or "default"),
        schedules=[schedule_from_fields(item, f"{where} ({name})") for item in raw],
        parameters=dict(parameters),
        tags=[str(tag) for tag in entry.get("tags") or []],
        version=None if version is None else str(version),
        description=entry.get("description"),
        paused=bool(entry.get("paused", False)),
        catchup=str(entry.get("catchup", "latest")),
        concurrency_limit=entry.get("concurrency_limit"),
        collision_strategy=str(entry.get("collision_strategy", "ENQUEUE")),
    )


def schedule_from_fields(item: Any, where: str) -> Any:
    """A schedule from a project file's (or the command line's) fields: ``cron`` (with
    ``day_or``), ``interval`` in seconds (with ``anchor_date``) or ``rrule``, each with
    ``timezone``; ``active`` and ``slug`` as Prefect 3's schedules have them."""
    from blocks.deployments.schedules import Cron, Interval, RRule

    if not isinstance(item, dict):
        raise ConfigurationError(f"{where}: a schedule is a mapping (cron:, interval: or rrule:).")
    extra = {k: item[k] for k in ("timezone", "active", "slug") if item.get(k) is not None}
    if "cron" in item:
        return Cron(item["cron"], day_or=item.get("day_or", True), **extra)
    if "interval" in item:
        seconds = item["interval"]
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise ConfigurationError(f"{where}: interval is a number of seconds, got {seconds!r}.")
        anchor = {"anchor_date": item["anchor_date"]} if item.get("anchor_date") else {}
        return Interval(timedelta(seconds=seconds), **anchor, **extra)
    if "rrule" in item:
        return RRule(item["rrule"], **extra)
    raise ConfigurationError(
        f"{where}: a schedule names cron:, interval: or rrule: (got {', '.join(item) or 'none'})."
    )


def select(project: Project, names: Iterable[str], every: bool) -> list[DeploymentSpec]:
    """The deployments named (by deployment name), or all; `ConfigurationError` naming what
    the file does not have."""
    wanted = list(names)
    if every:
        return project.deployments
    if not wanted:
        have = ", ".join(spec.name for spec in project.deployments) or "none"
        raise ConfigurationError(
            f"Say which deployment(s) of {project.path.name} to apply: --name NAME (repeatable) "
            f"or --all. It has: {have}."
        )
    by_name = {spec.name: spec for spec in project.deployments}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise ConfigurationError(
            f"{project.path.name} has no deployment named {', '.join(map(repr, missing))}; it "
            f"has: {', '.join(by_name) or 'none'}."
        )
    return [by_name[name] for name in wanted]


def apply_spec(spec: DeploymentSpec, folder: Path) -> tuple[str, str]:
    """Import the spec's flow from its entrypoint under `folder`, apply it; return the
    deployment's full name and id."""
    from blocks.deployments._deployment import Deployment
    from blocks.deployments._launch import Refused, load_flow

    folder = folder.resolve()
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # the flow's module may import its neighbours
    try:
        flow = load_flow(spec.entrypoint, folder, [folder])
    except Refused as exc:
        raise ConfigurationError(f"Deployment {spec.name!r}: {exc}.") from None
    deployment = Deployment.build_from_flow(
        flow,
        spec.name,
        version=spec.version,
        description=spec.description,
        tags=spec.tags,
        schedules=spec.schedules,
        parameters=spec.parameters,
        work_pool_name=spec.pool,
        paused=spec.paused,
        catchup=spec.catchup,  # type: ignore[arg-type]
        concurrency_limit=spec.concurrency_limit,
        collision_strategy=spec.collision_strategy,  # type: ignore[arg-type]
        path=folder,
        entrypoint=spec.entrypoint,
    )
    return deployment.full_name, deployment.apply()
