"""The run store: work pools, deployments, flow runs, their state history and logs, in the registry.

One `RunStore` per registry database (SQLite file or PostgreSQL), on the registry's own engine.
Every write is one short transaction; on SQLite it takes the write lock at BEGIN (``BEGIN
IMMEDIATE``, the registry's `write()`), so a read that turns into a write never fails with
"database is locked". The rules that keep runs honest live in SQL, not in Python checks:

* **one run per slot**: ``UNIQUE (deployment_id, idempotency_key)`` and ``INSERT ... ON CONFLICT
  DO NOTHING``; the key is ``scheduled:<schedule slug>:<slot as a UTC instant>``, so a redeploy,
  a second scheduler or a DST change never makes a slot twice;
* **a claim is one statement**: ``UPDATE flow_runs ... WHERE id = (SELECT ... ORDER BY due, id
  LIMIT 1 FOR UPDATE SKIP LOCKED) AND state IN ('Scheduled', 'Late') RETURNING ...`` (SQLite:
  the same statement under its write lock);
* **every change is conditional** on the state (and attempt) it comes from, so a change that lost
  a race changes nothing, and a state history row is written in the same transaction;
* **an expired lease** (the worker stopped heartbeating) makes the run Crashed and, when the flow
  has retries left, Scheduled again as the next attempt of the same row: never two live attempts.

Deployments and the parameters of each run are sealed with the registry's master key (the same
keyed MAC as block documents): whoever can write the database but not read the key cannot make
a worker run other code or other arguments.

Example:
    >>> store = RunStore.default()
    >>> run = store.claim("my-pool", worker="host-1", lease_seconds=30)
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from blocks.core._encryption import KeyManager
from blocks.core._registry import Registry
from blocks.deployments import _tables as t
from blocks.deployments._states import CLAIMABLE, FINAL, LEASED, RunState, sources_of
from blocks.errors import (
    BlocksError,
    ConfigurationError,
    DeploymentNotFound,
    FlowRunNotFound,
    WorkPoolNotFound,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = [
    "POOL_TYPES",
    "DeploymentRecord",
    "FlowRun",
    "RunStore",
    "StateChange",
    "WorkPool",
    "slot_key",
]

#: Pool types this version runs (docker and kubernetes are refused by name).
POOL_TYPES = ("process",)
#: Log lines kept per run; the rest is counted, and one line says how many were dropped.
MAX_LOG_LINES = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def slot_key(slug: str, slot: datetime) -> str:
    """The idempotency key of a scheduled slot: its schedule's slug and its UTC instant."""
    instant = _utc(slot)
    assert instant is not None
    return f"scheduled:{slug}:{instant.isoformat(timespec='microseconds')}"


def _framed(*parts: str) -> bytes:
    """Length-prefixed parts: no two different tuples give the same bytes."""
    return "".join(f"{len(part)}:{part};" for part in parts).encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class WorkPool:
    name: str
    type: str
    concurrency_limit: int | None
    paused: bool
    created: datetime


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


@dataclass(frozen=True, slots=True)
class StateChange:
    state: RunState
    at: datetime
    attempt: int
    worker: str | None
    message: str


@dataclass(slots=True)
class ReapReport:
    """What one lease-expiry pass did: runs marked Crashed, retried, or Cancelled."""

    crashed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def _deployment_message(
    deployment_id: str,
    flow_name: str,
    name: str,
    version: str | None,
    pool_name: str,
    document: str,
) -> bytes:
    return _framed("deployment", deployment_id, flow_name, name, version or "", pool_name, document)


def _run_message(run_id: str, deployment_id: str, parameters: str) -> bytes:
    return _framed("flow-run", run_id, deployment_id, parameters)


class RunStore:
    """Work pools, deployments and flow runs in one registry database."""

    _ready: ClassVar[set[str]] = set()
    _ready_lock = threading.Lock()

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.engine = registry.engine
        self.is_sqlite = registry.is_sqlite
        self._ensure_tables()

    @classmethod
    def default(cls) -> RunStore:
        """The store in the configured registry (``BLOCKS_REGISTRY_URL`` / ``BLOCKS_HOME``)."""
        return cls(Registry.default())

    def _ensure_tables(self) -> None:
        url = self.registry.url
        if url in self._ready and self.registry.is_shared():
            return
        with self._ready_lock, self.registry.write() as conn:
            for table in t.metadata.sorted_tables:
                conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            self._ready.add(url)

    # -- seals --------------------------------------------------------------------------------

    def _sealing(self) -> Any:
        return KeyManager.for_registry(self.registry.url).sealing_keyset(self.registry)

    def _verify(self, message: bytes, seal: str, what: str) -> None:
        KeyManager.for_registry(self.registry.url).keyset().verify(message, seal, what=what)

    # -- work pools ---------------------------------------------------------------------------

    def create_pool(
        self, name: str, type: str = "process", *, concurrency_limit: int | None = None
    ) -> WorkPool:
        """Create a work pool; `ConfigurationError` for a type this version does not run, or a
        name already taken."""
        check_pool_type(type)
        if concurrency_limit is not None and concurrency_limit < 1:
            raise ConfigurationError("A work pool's concurrency limit is 1 or more.")
        pool, created = self.ensure_pool(name, type, concurrency_limit=concurrency_limit)
        if not created:
            raise ConfigurationError(
                f"Work pool {name!r} exists already (type {pool.type}). "
                f"Delete it first: block work-pool delete {name}"
            )
        return pool

    def ensure_pool(
        self, name: str, type: str = "process", *, concurrency_limit: int | None = None
    ) -> tuple[WorkPool, bool]:
        """The pool named `name`, created when missing; and whether this call created it."""
        check_pool_type(type)
        values = {
            "name": name,
            "type": type,
            "concurrency_limit": concurrency_limit,
            "paused": False,
            "created": utcnow(),
        }
        with self.registry.write() as conn:
            inserted = conn.execute(
                _insert_ignore(self.is_sqlite, t.work_pools, ["name"])
                .values(**values)
                .returning(t.work_pools.c.name)
            ).first()
            row = conn.execute(sa.select(t.work_pools).where(t.work_pools.c.name == name)).one()
        return _pool(row), inserted is not None

    def get_pool(self, name: str) -> WorkPool:
        with self.registry.read() as conn:
            row = conn.execute(sa.select(t.work_pools).where(t.work_pools.c.name == name)).first()
        if row is None:
            raise WorkPoolNotFound(
                f"No work pool named {name!r}. Create it: block work-pool create {name} "
                "--type process"
            )
        return _pool(row)

    def list_pools(self) -> list[WorkPool]:
        with self.registry.read() as conn:
            rows = conn.execute(sa.select(t.work_pools).order_by(t.work_pools.c.name)).all()
        return [_pool(row) for row in rows]

    def set_pool_paused(self, name: str, paused: bool) -> None:
        with self.registry.write() as conn:
            done = conn.execute(
                t.work_pools.update().where(t.work_pools.c.name == name).values(paused=paused)
            ).rowcount
        if not done:
            self.get_pool(name)

    def delete_pool(self, name: str) -> None:
        """Delete a pool no deployment uses (`ConfigurationError` naming them otherwise)."""
        with self.registry.write() as conn:
            users = conn.execute(
                sa.select(t.deployments.c.flow_name, t.deployments.c.name)
                .where(t.deployments.c.pool_name == name)
                .limit(4)
            ).all()
            if users:
                names = ", ".join(f"{flow}/{dep}" for flow, dep in users[:3])
                raise ConfigurationError(
                    f"Work pool {name!r} is used by deployment(s) {names}"
                    + (" and more" if len(users) > 3 else "")
                    + ": delete them first."
                )
            done = conn.execute(t.work_pools.delete().where(t.work_pools.c.name == name)).rowcount
        if not done:
            self.get_pool(name)

    # -- deployments --------------------------------------------------------------------------

    def put_deployment(
        self,
        flow_name: str,
        name: str,
        *,
        version: str | None,
        pool_name: str,
        document: dict[str, Any],
    ) -> tuple[DeploymentRecord, bool]:
        """Insert or update a deployment; return it and whether anything changed.

        Applying the same deployment again changes nothing (not even its `updated` time).
        """
        text = _dumps(document)
        keyset = self._sealing()
        now = utcnow()
        with self.registry.write() as conn:
            row = conn.execute(
                sa.select(t.deployments).where(
                    t.deployments.c.flow_name == flow_name, t.deployments.c.name == name
                )
            ).first()
            if row is not None and (row.version, row.pool_name, row.document) == (
                version,
                pool_name,
                text,
            ):
                try:
                    self._verify(
                        _deployment_message(row.id, flow_name, name, version, pool_name, text),
                        row.seal,
                        f"Deployment {flow_name}/{name}",
                    )
                    return _deployment(row), False
                except BlocksError:
                    # Sealed under a retired key (after `block key rotate`) or edited in the
                    # database: what the code applies now is the deployment, sealed afresh.
                    pass
            deployment_id = row.id if row is not None else uuid.uuid4().hex
            seal = keyset.seal(
                _deployment_message(deployment_id, flow_name, name, version, pool_name, text)
            )
            values = {
                "version": version,
                "pool_name": pool_name,
                "document": text,
                "updated": now,
                "seal": seal,
            }
            if row is None:
                conn.execute(
                    t.deployments.insert().values(
                        id=deployment_id,
                        flow_name=flow_name,
                        name=name,
                        paused=False,
                        created=now,
                        **values,
                    )
                )
            else:
                conn.execute(
                    t.deployments.update().where(t.deployments.c.id == row.id).values(**values)
                )
            stored = conn.execute(
                sa.select(t.deployments).where(t.deployments.c.id == deployment_id)
            ).one()
        return _deployment(stored), True

    def get_deployment(self, full_name: str) -> DeploymentRecord:
        """The deployment ``flow-name/deployment-name``, its seal verified."""
        flow_name, _, name = full_name.partition("/")
        with self.registry.read() as conn:
            row = conn.execute(
                sa.select(t.deployments).where(
                    t.deployments.c.flow_name == flow_name, t.deployments.c.name == name
                )
            ).first()
        if row is None or not name:
            raise DeploymentNotFound(
                f"No deployment named {full_name!r} (names are flow-name/deployment-name). "
                "List them: block deployment ls"
            )
        return self._verified(row)

    def get_deployment_by_id(self, deployment_id: str) -> DeploymentRecord:
        with self.registry.read() as conn:
            row = conn.execute(
                sa.select(t.deployments).where(t.deployments.c.id == deployment_id)
            ).first()
        if row is None:
            raise DeploymentNotFound(f"No deployment with id {deployment_id!r}.")
        return self._verified(row)

    def _verified(self, row: Any) -> DeploymentRecord:
        self._verify(
            _deployment_message(
                row.id, row.flow_name, row.name, row.version, row.pool_name, row.document
            ),
            row.seal,
            f"Deployment {row.flow_name}/{row.name}",
        )
        return _deployment(row)

    def list_deployments(self, *, pool_name: str | None = None) -> list[DeploymentRecord]:
        """Every deployment (of one pool), seals verified, by name."""
        query = sa.select(t.deployments).order_by(t.deployments.c.flow_name, t.deployments.c.name)
        if pool_name is not None:
            query = query.where(t.deployments.c.pool_name == pool_name)
        with self.registry.read() as conn:
            rows = conn.execute(query).all()
        return [self._verified(row) for row in rows]

    def set_deployment_paused(self, full_name: str, paused: bool) -> int:
        """Pause or resume; pausing deletes its runs still Scheduled (returns how many)."""
        deployment = self.get_deployment(full_name)
        with self.registry.write() as conn:
            conn.execute(
                t.deployments.update()
                .where(t.deployments.c.id == deployment.id)
                .values(paused=paused)
            )
            if not paused:
                return 0
            return int(
                conn.execute(
                    t.flow_runs.delete().where(
                        t.flow_runs.c.deployment_id == deployment.id,
                        t.flow_runs.c.state == RunState.SCHEDULED.value,
                        t.flow_runs.c.idempotency_key.is_not(None),
                    )
                ).rowcount
            )

    def delete_deployment(self, full_name: str) -> None:
        """Delete a deployment and its run history (refused while one of its runs is leased)."""
        deployment = self.get_deployment(full_name)
        with self.registry.write() as conn:
            live = conn.execute(
                sa.select(sa.func.count())
                .select_from(t.flow_runs)
                .where(
                    t.flow_runs.c.deployment_id == deployment.id,
                    t.flow_runs.c.state.in_([s.value for s in LEASED]),
                )
            ).scalar_one()
            if live:
                raise ConfigurationError(
                    f"Deployment {full_name!r} has {live} run(s) in progress: cancel them first "
                    "(block flow-run ls --deployment ...; block flow-run cancel ID)."
                )
            for table in (t.flow_run_logs, t.flow_run_states):
                conn.execute(
                    table.delete().where(
                        table.c.run_id.in_(
                            sa.select(t.flow_runs.c.id).where(
                                t.flow_runs.c.deployment_id == deployment.id
                            )
                        )
                    )
                )
            conn.execute(t.flow_runs.delete().where(t.flow_runs.c.deployment_id == deployment.id))
            conn.execute(t.deployments.delete().where(t.deployments.c.id == deployment.id))

    def delete_scheduled(self, deployment_id: str, *, keep_slugs: Iterable[str] = ()) -> int:
        """Delete future runs still Scheduled whose schedule slug is not in `keep_slugs` (a
        schedule was removed or changed); a run that started is never deleted."""
        keep = list(keep_slugs)
        condition = sa.and_(
            t.flow_runs.c.deployment_id == deployment_id,
            t.flow_runs.c.state == RunState.SCHEDULED.value,
            t.flow_runs.c.schedule_slug.is_not(None),
            t.flow_runs.c.due > utcnow(),
        )
        if keep:
            condition = sa.and_(condition, t.flow_runs.c.schedule_slug.not_in(keep))
        with self.registry.write() as conn:
            return int(conn.execute(t.flow_runs.delete().where(condition)).rowcount)

    # -- creating runs ------------------------------------------------------------------------

    def insert_slots(
        self,
        deployment: DeploymentRecord,
        slots: Sequence[tuple[str, datetime]],
        *,
        parameters: dict[str, Any] | None = None,
        max_attempts: int = 1,
        state: RunState = RunState.SCHEDULED,
    ) -> list[str]:
        """Insert one Scheduled run per ``(schedule slug, slot)`` not inserted before.

        Returns the ids of the runs this call inserted: a slot already there (inserted by this
        or another scheduler, before or after a redeploy) is left alone by the unique key.
        """
        if not slots:
            return []
        params = _dumps(
            parameters if parameters is not None else deployment.document.get("parameters", {})
        )
        keyset = self._sealing()
        now = utcnow()
        rows = []
        for slug, slot in slots:
            run_id = uuid.uuid4().hex
            rows.append(
                {
                    "id": run_id,
                    "deployment_id": deployment.id,
                    "flow_name": deployment.flow_name,
                    "pool_name": deployment.pool_name,
                    "schedule_slug": slug,
                    "slot": _utc(slot),
                    "idempotency_key": slot_key(slug, slot),
                    "state": state.value,
                    "message": "",
                    "due": _utc(slot),
                    "attempt": 1,
                    "max_attempts": max_attempts,
                    "parameters": params,
                    "log_lines": 0,
                    "created": now,
                    "seal": keyset.seal(_run_message(run_id, deployment.id, params)),
                }
            )
        statement = _insert_ignore(
            self.is_sqlite, t.flow_runs, ["deployment_id", "idempotency_key"]
        ).returning(t.flow_runs.c.id, t.flow_runs.c.state, t.flow_runs.c.created)
        with self.registry.write() as conn:
            inserted = [row.id for row in conn.execute(statement.values(rows))]
            if inserted:
                conn.execute(
                    t.flow_run_states.insert(),
                    [
                        {
                            "run_id": run_id,
                            "state": state.value,
                            "at": now,
                            "attempt": 1,
                            "worker": None,
                            "message": "",
                        }
                        for run_id in inserted
                    ],
                )
        return inserted

    def create_run(
        self,
        deployment: DeploymentRecord,
        *,
        parameters: dict[str, Any] | None = None,
        due: datetime | None = None,
        max_attempts: int | None = None,
    ) -> FlowRun:
        """A run made by hand (`block deployment run`): no slot, due now unless given; as many
        attempts as the flow has retries + 1 unless given."""
        if max_attempts is None:
            max_attempts = int(deployment.document.get("retries", 0)) + 1
        merged = dict(deployment.document.get("parameters", {}))
        merged.update(parameters or {})
        params = _dumps(merged)
        run_id = uuid.uuid4().hex
        now = utcnow()
        seal = self._sealing().seal(_run_message(run_id, deployment.id, params))
        with self.registry.write() as conn:
            conn.execute(
                t.flow_runs.insert().values(
                    id=run_id,
                    deployment_id=deployment.id,
                    flow_name=deployment.flow_name,
                    pool_name=deployment.pool_name,
                    schedule_slug=None,
                    slot=None,
                    idempotency_key=None,
                    state=RunState.SCHEDULED.value,
                    message="",
                    due=_utc(due) or now,
                    attempt=1,
                    max_attempts=max_attempts,
                    parameters=params,
                    log_lines=0,
                    created=now,
                    seal=seal,
                )
            )
            _history(conn, run_id, RunState.SCHEDULED, now, 1, None, "")
        return self.get_run(run_id)

    def slot_summary(
        self, deployment_id: str, now: datetime
    ) -> dict[str, tuple[datetime | None, int]]:
        """Per schedule slug of a deployment: its latest slot and how many runs are due later."""
        later = sa.func.sum(sa.case((t.flow_runs.c.due > now, 1), else_=0))
        with self.registry.read() as conn:
            rows = conn.execute(
                sa.select(t.flow_runs.c.schedule_slug, sa.func.max(t.flow_runs.c.slot), later)
                .where(
                    t.flow_runs.c.deployment_id == deployment_id,
                    t.flow_runs.c.schedule_slug.is_not(None),
                )
                .group_by(t.flow_runs.c.schedule_slug)
            ).all()
        return {slug: (_utc(last), int(count or 0)) for slug, last, count in rows}

    def overdue(self, before: datetime) -> list[tuple[str, str, str, datetime, RunState]]:
        """Scheduled or Late runs of a schedule due before `before`: ``(run id, deployment id,
        slug, due, state)``, oldest first (what the catch-up policy decides about)."""
        with self.registry.read() as conn:
            rows = conn.execute(
                sa.select(
                    t.flow_runs.c.id,
                    t.flow_runs.c.deployment_id,
                    t.flow_runs.c.schedule_slug,
                    t.flow_runs.c.due,
                    t.flow_runs.c.state,
                )
                .where(
                    t.flow_runs.c.state.in_([s.value for s in CLAIMABLE]),
                    t.flow_runs.c.schedule_slug.is_not(None),
                    t.flow_runs.c.due < before,
                )
                .order_by(t.flow_runs.c.due, t.flow_runs.c.id)
            ).all()
        return [
            (r.id, r.deployment_id, r.schedule_slug, _utc(r.due) or r.due, RunState(r.state))
            for r in rows
        ]

    def mark_missed(
        self, late: Sequence[str], skipped: Sequence[str], message: str
    ) -> tuple[int, int]:
        """Scheduled runs in `late` become Late; runs in `skipped` (Scheduled or Late) become
        Skipped with `message`. Runs claimed meanwhile are left alone. Returns how many of each
        changed."""
        now = utcnow()
        changed = {RunState.LATE: 0, RunState.SKIPPED: 0}
        with self.registry.write() as conn:
            for ids, target, sources, why in (
                (late, RunState.LATE, [RunState.SCHEDULED.value], "missed its slot"),
                (skipped, RunState.SKIPPED, [s.value for s in CLAIMABLE], message),
            ):
                for run_id in ids:
                    row = conn.execute(
                        t.flow_runs.update()
                        .where(t.flow_runs.c.id == run_id, t.flow_runs.c.state.in_(sources))
                        .values(
                            state=target.value,
                            message=why,
                            **({"ended": now} if target is RunState.SKIPPED else {}),
                        )
                        .returning(t.flow_runs.c.attempt)
                    ).first()
                    if row is not None:
                        _history(conn, run_id, target, now, row.attempt, None, why)
                        changed[target] += 1
        return changed[RunState.LATE], changed[RunState.SKIPPED]

    # -- reading runs -------------------------------------------------------------------------

    def get_run(self, run_id: str) -> FlowRun:
        """A run by id, or by a unique prefix of at least 6 characters of its id."""
        with self.registry.read() as conn:
            row = conn.execute(sa.select(t.flow_runs).where(t.flow_runs.c.id == run_id)).first()
            if row is None and len(run_id) >= 6:
                found = conn.execute(
                    sa.select(t.flow_runs).where(t.flow_runs.c.id.startswith(run_id)).limit(2)
                ).all()
                row = found[0] if len(found) == 1 else None
        if row is None:
            raise FlowRunNotFound(f"No flow run with id {run_id!r}. List them: block flow-run ls")
        return _run(row)

    def verified_parameters(self, run: FlowRun) -> dict[str, Any]:
        """The run's parameters, after checking their seal (what a worker passes to the flow)."""
        with self.registry.read() as conn:
            row = conn.execute(
                sa.select(t.flow_runs.c.parameters, t.flow_runs.c.seal).where(
                    t.flow_runs.c.id == run.id
                )
            ).one()
        self._verify(
            _run_message(run.id, run.deployment_id, row.parameters),
            row.seal,
            f"Flow run {run.id}",
        )
        value: dict[str, Any] = json.loads(row.parameters)
        return value

    def list_runs(
        self,
        *,
        deployment_id: str | None = None,
        states: Iterable[RunState] | None = None,
        pool_name: str | None = None,
        limit: int | None = None,
    ) -> list[FlowRun]:
        """Runs, newest due first."""
        query = sa.select(t.flow_runs).order_by(t.flow_runs.c.due.desc(), t.flow_runs.c.id)
        if deployment_id is not None:
            query = query.where(t.flow_runs.c.deployment_id == deployment_id)
        if states is not None:
            query = query.where(t.flow_runs.c.state.in_([RunState(s).value for s in states]))
        if pool_name is not None:
            query = query.where(t.flow_runs.c.pool_name == pool_name)
        if limit is not None:
            query = query.limit(limit)
        with self.registry.read() as conn:
            return [_run(row) for row in conn.execute(query)]

    def states(self, run_ids: Sequence[str]) -> dict[str, RunState]:
        """The current state of each run (a read: polled by workers to see a cancel quickly)."""
        if not run_ids:
            return {}
        with self.registry.read() as conn:
            rows = conn.execute(
                sa.select(t.flow_runs.c.id, t.flow_runs.c.state).where(
                    t.flow_runs.c.id.in_(list(run_ids))
                )
            ).all()
        return {row.id: RunState(row.state) for row in rows}

    def history(self, run_id: str) -> list[StateChange]:
        """Every state the run went through, oldest first."""
        with self.registry.read() as conn:
            rows = conn.execute(
                sa.select(t.flow_run_states)
                .where(t.flow_run_states.c.run_id == run_id)
                .order_by(t.flow_run_states.c.id)
            ).all()
        return [
            StateChange(RunState(r.state), _utc(r.at) or r.at, r.attempt, r.worker, r.message)
            for r in rows
        ]

    # -- claiming and leases --------------------------------------------------------------------

    def has_due(self, pool_name: str, now: datetime | None = None) -> bool:
        """Whether a run of the pool is due (a read, no lock: polled before `claim`)."""
        with self.registry.read() as conn:
            return (
                conn.execute(
                    sa.select(t.flow_runs.c.id)
                    .where(
                        t.flow_runs.c.pool_name == pool_name,
                        t.flow_runs.c.state.in_([s.value for s in CLAIMABLE]),
                        t.flow_runs.c.due <= (now or utcnow()),
                    )
                    .limit(1)
                ).first()
                is not None
            )

    def claim(
        self,
        pool_name: str,
        *,
        worker: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> FlowRun | None:
        """Claim the run of the pool due first: Pending, leased to `worker`; None if none.

        One UPDATE picks and takes it (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, under the
        write lock on SQLite), so two workers never claim one run. A paused pool hands out
        nothing; a pool's concurrency limit is checked in the same transaction, under a lock
        that serializes the pool's claims (an advisory lock on PostgreSQL).
        """
        now = now or utcnow()
        claimable = [s.value for s in CLAIMABLE]
        pick = (
            sa.select(t.flow_runs.c.id)
            .where(
                t.flow_runs.c.pool_name == pool_name,
                t.flow_runs.c.state.in_(claimable),
                t.flow_runs.c.due <= now,
            )
            .order_by(t.flow_runs.c.due, t.flow_runs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        take = (
            t.flow_runs.update()
            .where(t.flow_runs.c.id == pick, t.flow_runs.c.state.in_(claimable))
            .values(
                state=RunState.PENDING.value,
                worker=worker,
                lease_until=now + timedelta(seconds=lease_seconds),
                message="",
            )
            .returning(*t.flow_runs.c)
        )
        with self.registry.write() as conn:
            pool = conn.execute(
                sa.select(t.work_pools.c.paused, t.work_pools.c.concurrency_limit).where(
                    t.work_pools.c.name == pool_name
                )
            ).first()
            if pool is not None and pool.paused:
                return None
            if pool is not None and pool.concurrency_limit is not None:
                if not self.is_sqlite:
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(hashtext(:pool))"),
                        {"pool": "blocks-pool:" + pool_name},
                    )
                busy = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(t.flow_runs)
                    .where(
                        t.flow_runs.c.pool_name == pool_name,
                        t.flow_runs.c.state.in_([s.value for s in LEASED]),
                    )
                ).scalar_one()
                if busy >= pool.concurrency_limit:
                    return None
            row = conn.execute(take).first()
            if row is None:
                return None
            _history(conn, row.id, RunState.PENDING, now, row.attempt, worker, "")
        return _run(row)

    def heartbeat(
        self, worker: str, runs: Iterable[tuple[str, int]], lease_seconds: float
    ) -> dict[str, RunState | None]:
        """Extend the lease of each ``(run id, attempt)`` the worker holds.

        Returns each run's state now, or None when the worker no longer holds it (its lease
        expired and another worker took over): the worker must then stop that run's process.
        """
        held = list(runs)
        if not held:
            return {}
        ids = [run_id for run_id, _ in held]
        now = utcnow()
        with self.registry.write() as conn:
            conn.execute(
                t.flow_runs.update()
                .where(
                    t.flow_runs.c.id.in_(ids),
                    t.flow_runs.c.worker == worker,
                    t.flow_runs.c.state.in_([s.value for s in LEASED]),
                    t.flow_runs.c.lease_until >= now,
                )
                .values(lease_until=now + timedelta(seconds=lease_seconds))
            )
            rows = {
                row.id: row
                for row in conn.execute(
                    sa.select(
                        t.flow_runs.c.id,
                        t.flow_runs.c.state,
                        t.flow_runs.c.worker,
                        t.flow_runs.c.attempt,
                        t.flow_runs.c.lease_until,
                    ).where(t.flow_runs.c.id.in_(ids))
                )
            }
        result: dict[str, RunState | None] = {}
        for run_id, attempt in held:
            row = rows.get(run_id)
            holds = (
                row is not None
                and row.worker == worker
                and row.attempt == attempt
                and row.state in {s.value for s in LEASED}
                and (_utc(row.lease_until) or now) > now
            )
            result[run_id] = RunState(row.state) if holds and row is not None else None
        return result

    def transition(
        self,
        run_id: str,
        target: RunState,
        *,
        attempt: int,
        worker: str | None = None,
        message: str = "",
    ) -> bool:
        """Move a run to `target` if its state allows it and (for a leased run) `worker` still
        holds this `attempt`; record it in the history. False when the run had moved on."""
        now = utcnow()
        allowed = [s.value for s in sources_of(target)]
        condition = sa.and_(
            t.flow_runs.c.id == run_id,
            t.flow_runs.c.attempt == attempt,
            t.flow_runs.c.state.in_(allowed),
        )
        if worker is not None:
            condition = sa.and_(condition, t.flow_runs.c.worker == worker)
        values: dict[str, Any] = {"state": target.value, "message": message}
        if target is RunState.RUNNING:
            values["started"] = now
        if target in FINAL:
            values["ended"] = now
            values["lease_until"] = None
        with self.registry.write() as conn:
            done = conn.execute(t.flow_runs.update().where(condition).values(**values)).rowcount
            if done:
                _history(conn, run_id, target, now, attempt, worker, message)
        return bool(done)

    def cancel(self, run_id: str) -> RunState:
        """Cancel a run: one not yet claimed is Cancelled now; a claimed one goes to Cancelling,
        and its worker ends its process tree and records Cancelled. Returns the new state."""
        run = self.get_run(run_id)
        if run.state in FINAL:
            raise ConfigurationError(f"Flow run {run.id} is {run.state.value}: nothing to cancel.")
        if run.state is RunState.CANCELLING:
            return run.state
        target = RunState.CANCELLING if run.state in LEASED else RunState.CANCELLED
        if self.transition(run.id, target, attempt=run.attempt, message="cancelled by a user"):
            return target
        return self.get_run(run.id).state

    def reap(self, now: datetime | None = None) -> ReapReport:
        """Find runs whose lease expired (their worker is gone): Crashed, and Scheduled again as
        the next attempt when attempts are left; a Cancelling one becomes Cancelled.

        Each change is conditional on the state, attempt and expired lease it saw, so a worker
        that heartbeats in between keeps its run, and two reapers never retry one run twice.
        """
        now = now or utcnow()
        report = ReapReport()
        expired = sa.and_(
            t.flow_runs.c.state.in_([s.value for s in LEASED]),
            t.flow_runs.c.lease_until < now,
        )
        with self.registry.read() as conn:
            if conn.execute(sa.select(t.flow_runs.c.id).where(expired).limit(1)).first() is None:
                return report
        with self.registry.write() as conn:
            rows = conn.execute(
                sa.select(
                    t.flow_runs.c.id,
                    t.flow_runs.c.state,
                    t.flow_runs.c.attempt,
                    t.flow_runs.c.max_attempts,
                    t.flow_runs.c.worker,
                )
                .where(expired)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                guard = sa.and_(
                    t.flow_runs.c.id == row.id,
                    t.flow_runs.c.attempt == row.attempt,
                    t.flow_runs.c.state == row.state,
                    t.flow_runs.c.lease_until < now,
                )
                if row.state == RunState.CANCELLING.value:
                    message = f"cancelled; its worker {row.worker} stopped before confirming"
                    target = RunState.CANCELLED
                else:
                    message = (
                        f"worker {row.worker} stopped renewing its lease (the worker or its "
                        "machine died)"
                    )
                    target = RunState.CRASHED
                done = conn.execute(
                    t.flow_runs.update()
                    .where(guard)
                    .values(state=target.value, message=message, ended=now, lease_until=None)
                ).rowcount
                if not done:
                    continue
                _history(conn, row.id, target, now, row.attempt, row.worker, message)
                if target is RunState.CANCELLED:
                    report.cancelled.append(row.id)
                    continue
                report.crashed.append(row.id)
                if row.attempt < row.max_attempts:
                    conn.execute(
                        t.flow_runs.update()
                        .where(t.flow_runs.c.id == row.id, t.flow_runs.c.attempt == row.attempt)
                        .values(
                            state=RunState.SCHEDULED.value,
                            attempt=row.attempt + 1,
                            worker=None,
                            lease_until=None,
                            due=now,
                            started=None,
                            ended=None,
                            message=f"retry after a crash (attempt {row.attempt + 1})",
                        )
                    )
                    _history(
                        conn,
                        row.id,
                        RunState.SCHEDULED,
                        now,
                        row.attempt + 1,
                        None,
                        f"retry after a crash (attempt {row.attempt + 1} of {row.max_attempts})",
                    )
                    report.retried.append(row.id)
        return report

    # -- logs ---------------------------------------------------------------------------------

    def append_logs(self, run_id: str, lines: Sequence[tuple[datetime, str, str]]) -> int:
        """Add ``(time, level, message)`` lines to a run's log, at most `MAX_LOG_LINES` kept per
        run (one more line says the rest was dropped); returns how many were kept."""
        if not lines:
            return 0
        with self.registry.write() as conn:
            count = conn.execute(
                sa.select(t.flow_runs.c.log_lines).where(t.flow_runs.c.id == run_id)
            ).scalar()
            if count is None:
                return 0
            room = max(0, MAX_LOG_LINES - count)
            kept = list(lines[:room])
            if count <= MAX_LOG_LINES < count + len(lines):  # the first line past the cap
                kept.append(
                    (
                        lines[room][0],
                        "WARNING",
                        f"log capped at {MAX_LOG_LINES} lines: the rest of this run's output "
                        "is not kept",
                    )
                )
            if kept:
                conn.execute(
                    t.flow_run_logs.insert(),
                    [
                        {"run_id": run_id, "at": _utc(at), "level": level, "message": message}
                        for at, level, message in kept
                    ],
                )
            conn.execute(
                t.flow_runs.update()
                .where(t.flow_runs.c.id == run_id)
                .values(log_lines=count + len(lines))
            )
        return int(min(len(lines), room))

    def logs(self, run_id: str, *, after: int = 0) -> list[tuple[int, datetime, str, str]]:
        """A run's kept log lines ``(line id, time, level, message)``, after line id `after`."""
        with self.registry.read() as conn:
            rows = conn.execute(
                sa.select(t.flow_run_logs)
                .where(t.flow_run_logs.c.run_id == run_id, t.flow_run_logs.c.id > after)
                .order_by(t.flow_run_logs.c.id)
            ).all()
        return [(r.id, _utc(r.at) or r.at, r.level, r.message) for r in rows]


def check_pool_type(kind: str) -> None:
    if kind not in POOL_TYPES:
        raise ConfigurationError(
            f"Work pool type {kind!r} is not run by this version of blocks: the types it runs "
            f"are {', '.join(POOL_TYPES)}."
        )


def _insert_ignore(is_sqlite: bool, table: sa.Table, keys: list[str]) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` in the dialect's own words."""
    if is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=keys)
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(table).on_conflict_do_nothing(index_elements=keys)


def _history(
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


def _pool(row: Any) -> WorkPool:
    return WorkPool(
        row.name,
        row.type,
        row.concurrency_limit,
        bool(row.paused),
        _utc(row.created) or row.created,
    )


def _deployment(row: Any) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        flow_name=row.flow_name,
        name=row.name,
        version=row.version,
        pool_name=row.pool_name,
        paused=bool(row.paused),
        created=_utc(row.created) or row.created,
        updated=_utc(row.updated) or row.updated,
        document=json.loads(row.document),
    )


def _run(row: Any) -> FlowRun:
    return FlowRun(
        id=row.id,
        deployment_id=row.deployment_id,
        flow_name=row.flow_name,
        pool_name=row.pool_name,
        schedule_slug=row.schedule_slug,
        slot=_utc(row.slot),
        idempotency_key=row.idempotency_key,
        state=RunState(row.state),
        message=row.message or "",
        due=_utc(row.due) or row.due,
        worker=row.worker,
        lease_until=_utc(row.lease_until),
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        parameters=json.loads(row.parameters),
        log_lines=row.log_lines,
        created=_utc(row.created) or row.created,
        started=_utc(row.started),
        ended=_utc(row.ended),
    )
