"""The run store's rows as Python values, and the pure helpers around them: time, slot keys,
the bytes a seal covers, dialect-neutral "insert unless present", a state-history row."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from blocks.deployments import _tables as t
from blocks.deployments._states import RunState
from blocks.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

#: Pool types this version runs (docker and kubernetes are refused by name).
POOL_TYPES = ("process", "dask")
#: Log lines kept per run; the rest is counted, and one line says how many were dropped.
MAX_LOG_LINES = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def slot_key(slug: str, slot: datetime) -> str:
    """The idempotency key of a scheduled slot: its schedule's slug and its UTC instant."""
    instant = as_utc(slot)
    assert instant is not None
    return f"scheduled:{slug}:{instant.isoformat(timespec='microseconds')}"


def framed(*parts: str) -> bytes:
    """Length-prefixed parts: no two different tuples give the same bytes."""
    return "".join(f"{len(part)}:{part};" for part in parts).encode()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class WorkPool:
    name: str
    type: str
    concurrency_limit: int | None
    paused: bool
    created: datetime
    #: The type's settings: a dask pool's ``{"address": "tcp://scheduler:8786"}``.
    base_job_template: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str | None:
        """A dask pool's scheduler address."""
        value = self.base_job_template.get("address")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """A stored deployment: its identity and its sealed settings (`document`)."""

    id: str
    flow_name: str
    name: str
    version: str | None
    pool_name: str
    paused: bool
    created: datetime
    updated: datetime
    document: dict[str, Any]

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


@dataclass(frozen=True, slots=True)
class FlowRun:
    id: str
    deployment_id: str
    flow_name: str
    pool_name: str
    schedule_slug: str | None
    slot: datetime | None
    idempotency_key: str | None
    state: RunState
    message: str
    due: datetime
    worker: str | None
    lease_until: datetime | None
    attempt: int
    max_attempts: int
    parameters: dict[str, Any]
    log_lines: int
    created: datetime
    started: datetime | None
    ended: datetime | None
    parent_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    state: RunState
    at: datetime
    attempt: int
    worker: str | None
    message: str


def deployment_message(
    deployment_id: str,
    flow_name: str,
    name: str,
    version: str | None,
    pool_name: str,
    document: str,
) -> bytes:
    return framed("deployment", deployment_id, flow_name, name, version or "", pool_name, document)


def run_message(run_id: str, deployment_id: str, parameters: str) -> bytes:
    return framed("flow-run", run_id, deployment_id, parameters)


def check_pool_type(kind: str) -> None:
    if kind not in POOL_TYPES:
        raise ConfigurationError(
            f"Work pool type {kind!r} is not run by this version of blocks: the types it runs "
            f"are {', '.join(POOL_TYPES)}."
        )


def insert_ignore(is_sqlite: bool, table: sa.Table, keys: list[str]) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` in the dialect's own words."""
    if is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=keys)
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(table).on_conflict_do_nothing(index_elements=keys)


def record_state(
    conn: Connection,
    run_id: str,
    state: RunState,
    at: datetime,
    attempt: int,
    worker: str | None,
    message: str,
) -> None:
    conn.execute(
        t.flow_run_states.insert().values(
            run_id=run_id,
            state=state.value,
            at=at,
            attempt=attempt,
            worker=worker,
            message=message,
        )
    )


def pool_from_row(row: Any) -> WorkPool:
    return WorkPool(
        row.name,
        row.type,
        row.concurrency_limit,
        bool(row.paused),
        as_utc(row.created) or row.created,
        json.loads(row.base_job_template) if row.base_job_template else {},
    )


def check_pool_template(kind: str, template: dict[str, Any]) -> None:
    """A dask pool needs its scheduler's address; other types take no settings yet."""
    address = template.get("address")
    if kind == "dask":
        if not isinstance(address, str) or not address.strip() or " " in address.strip():
            raise ConfigurationError(
                "A dask work pool needs its Dask scheduler's address: block work-pool create "
                "NAME --type dask --address tcp://scheduler-host:8786"
            )
    elif template:
        raise ConfigurationError(
            f"A {kind} work pool takes no job template settings (got {sorted(template)}); "
            "only dask pools take an address."
        )


def deployment_from_row(row: Any) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        flow_name=row.flow_name,
        name=row.name,
        version=row.version,
        pool_name=row.pool_name,
        paused=bool(row.paused),
        created=as_utc(row.created) or row.created,
        updated=as_utc(row.updated) or row.updated,
        document=json.loads(row.document),
    )


def run_from_row(row: Any) -> FlowRun:
    return FlowRun(
        id=row.id,
        deployment_id=row.deployment_id,
        flow_name=row.flow_name,
        pool_name=row.pool_name,
        schedule_slug=row.schedule_slug,
        slot=as_utc(row.slot),
        idempotency_key=row.idempotency_key,
        state=RunState(row.state),
        message=row.message or "",
        due=as_utc(row.due) or row.due,
        worker=row.worker,
        lease_until=as_utc(row.lease_until),
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        parameters=json.loads(row.parameters),
        log_lines=row.log_lines,
        created=as_utc(row.created) or row.created,
        started=as_utc(row.started),
        ended=as_utc(row.ended),
        parent_run_id=row.parent_run_id,
    )
