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

import uuid
import warnings
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from blocks.core._encryption import KeyManager
from blocks.core._registry import Registry
from blocks.deployments import _tables as t
from blocks.deployments._leases import ReapReport
from blocks.deployments._records import (
    MAX_LOG_LINES,
    POOL_TYPES,
    DeploymentRecord,
    FlowRun,
    StateChange,
    WorkPool,
    check_pool_template,
    check_pool_type,
    deployment_from_row,
    deployment_message,
    dumps,
    insert_ignore,
    pool_from_row,
    slot_key,
    utcnow,
)
from blocks.deployments._run_history import RunHistory, TaskRunSummary
from blocks.deployments._states import LEASED, RunState
from blocks.errors import (
    BlocksError,
    ConfigurationError,
    DeploymentNotFound,
    WorkPoolNotFound,
)

__all__ = [
    "MAX_LOG_LINES",
    "POOL_TYPES",
    "DeploymentRecord",
    "FlowRun",
    "ReapReport",
    "RunStore",
    "StateChange",
    "TaskRunSummary",
    "WorkPool",
    "slot_key",
    "utcnow",
]


#: Per deployment id: the keyset and the sealed fields and seal it last verified (see
#: `RunStore._verified`); a changed row or a new keyset (a rotation) is verified afresh.
_VERIFIED: dict[str, tuple[Any, tuple[Any, ...]]] = {}
#: Per (deployment id, seal): the keyset that verified it and its record (a scheduler pass's
#: cache, `RunStore.deployments_for_pass`).
_RECORDS: dict[tuple[str, str], tuple[Any, DeploymentRecord]] = {}
_VERIFIED_MAX = 100_000


class RunStore(RunHistory):
    """Work pools, deployments and flow runs in one registry database (`RunRecords` makes and
    reads runs, `RunLeases` claims them and changes their states, `RunHistory` keeps their
    logs and task runs)."""

    @classmethod
    def default(cls) -> RunStore:
        """The store in the configured registry (``BLOCKS_REGISTRY_URL`` / ``BLOCKS_HOME``)."""
        return cls(Registry.default())

    # -- work pools ---------------------------------------------------------------------------

    def create_pool(
        self,
        name: str,
        type: str = "process",
        *,
        concurrency_limit: int | None = None,
        base_job_template: dict[str, Any] | None = None,
    ) -> WorkPool:
        """Create a work pool; `ConfigurationError` for a type this version does not run, a
        dask pool without an ``address``, or a name already taken."""
        check_pool_type(type)
        check_pool_template(type, base_job_template or {})
        if concurrency_limit is not None and concurrency_limit < 1:
            raise ConfigurationError("A work pool's concurrency limit is 1 or more.")
        pool, created = self.ensure_pool(
            name, type, concurrency_limit=concurrency_limit, base_job_template=base_job_template
        )
        if not created:
            raise ConfigurationError(
                f"Work pool {name!r} exists already (type {pool.type}). "
                f"Delete it first: block work-pool delete {name}"
            )
        return pool

    def ensure_pool(
        self,
        name: str,
        type: str = "process",
        *,
        concurrency_limit: int | None = None,
        base_job_template: dict[str, Any] | None = None,
    ) -> tuple[WorkPool, bool]:
        """The pool named `name`, created when missing; and whether this call created it."""
        check_pool_type(type)
        values = {
            "name": name,
            "type": type,
            "concurrency_limit": concurrency_limit,
            "paused": False,
            "created": utcnow(),
            "base_job_template": dumps(base_job_template) if base_job_template else None,
        }
        with self.registry.write() as conn:
            inserted = conn.execute(
                insert_ignore(self.is_sqlite, t.work_pools, ["name"])
                .values(**values)
                .returning(t.work_pools.c.name)
            ).first()
            row = conn.execute(sa.select(t.work_pools).where(t.work_pools.c.name == name)).one()
        return pool_from_row(row), inserted is not None

    def get_pool(self, name: str) -> WorkPool:
        with self.registry.read() as conn:
            row = conn.execute(sa.select(t.work_pools).where(t.work_pools.c.name == name)).first()
        if row is None:
            raise WorkPoolNotFound(
                f"No work pool named {name!r}. Create it: block work-pool create {name} "
                "--type process"
            )
        return pool_from_row(row)

    def list_pools(self) -> list[WorkPool]:
        with self.registry.read() as conn:
            rows = conn.execute(sa.select(t.work_pools).order_by(t.work_pools.c.name)).all()
        return [pool_from_row(row) for row in rows]

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
        text = dumps(document)
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
                        deployment_message(row.id, flow_name, name, version, pool_name, text),
                        row.seal,
                        f"Deployment {flow_name}/{name}",
                    )
                    return deployment_from_row(row), False
                except BlocksError:
                    # Sealed under a retired key (after `block key rotate`) or edited in the
                    # database: what the code applies now is the deployment, sealed afresh.
                    pass
            deployment_id = row.id if row is not None else uuid.uuid4().hex
            seal = keyset.seal(
                deployment_message(deployment_id, flow_name, name, version, pool_name, text)
            )
            values = {
                "version": version,
                "pool_name": pool_name,
                "document": text,
                "updated": now,
                "seal": seal,
                "concurrency_limit": document.get("concurrency_limit"),
                "collision_strategy": document.get("collision_strategy"),
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
        return deployment_from_row(stored), True

    def get_deployment(self, full_name: str) -> DeploymentRecord:
        """The deployment ``flow-name/deployment-name``, its seal verified.

        Split at the last ``/``: a deployment name never holds one (`Deployment` refuses it),
        so a flow name stored with one (before flow names were checked) is still found."""
        flow_name, _, name = full_name.rpartition("/")
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
        """The row as a record, once its seal verifies. A row this process verified before
        with the same keyset (same sealed fields, same seal) is not verified again: a worker's
        scheduler pass reads every deployment every few seconds."""
        keyset = KeyManager.for_registry(self.registry.url).keyset()
        sealed = (row.id, row.flow_name, row.name, row.version, row.pool_name, row.document)
        seen = _VERIFIED.get(row.id)
        if seen is None or seen[0] is not keyset or seen[1] != (*sealed, row.seal):
            keyset.verify(
                deployment_message(*sealed), row.seal, what=f"Deployment {row.flow_name}/{row.name}"
            )
            if len(_VERIFIED) >= _VERIFIED_MAX:
                _VERIFIED.clear()
            _VERIFIED[row.id] = (keyset, (*sealed, row.seal))
        return deployment_from_row(row)

    def list_deployments(
        self, *, pool_name: str | None = None, skip_invalid: bool = False
    ) -> list[DeploymentRecord]:
        """Every deployment (of one pool), seals verified, by name.

        One whose seal fails raises, unless `skip_invalid` (the scheduler: one deployment
        edited in the database must not stop the pool's others), which warns and leaves it out.
        """
        query = sa.select(t.deployments).order_by(t.deployments.c.flow_name, t.deployments.c.name)
        if pool_name is not None:
            query = query.where(t.deployments.c.pool_name == pool_name)
        with self.registry.read() as conn:
            rows = conn.execute(query).all()
        found = []
        for row in rows:
            try:
                found.append(self._verified(row))
            except BlocksError as exc:
                if not skip_invalid:
                    raise
                warnings.warn(f"{exc} (left out)", stacklevel=2)
        return found

    def deployments_for_pass(self, pool_name: str | None = None) -> list[DeploymentRecord]:
        """`list_deployments(skip_invalid=True)` for a scheduler pass, which runs every few
        seconds: only each row's id, seal and paused flag are read, and the full row only of
        a deployment this process has not seen with that seal (its record is kept, verified).
        The records are shared: do not change their documents."""
        light = sa.select(t.deployments.c.id, t.deployments.c.seal, t.deployments.c.paused)
        if pool_name is not None:
            light = light.where(t.deployments.c.pool_name == pool_name)
        with self.registry.read() as conn:
            rows = conn.execute(light).all()
        keyset = KeyManager.for_registry(self.registry.url).keyset()
        found: dict[str, DeploymentRecord] = {}
        missing = []
        for row in rows:
            known = _RECORDS.get((row.id, row.seal))
            if known is not None and known[0] is keyset:
                record, paused = known[1], bool(row.paused)
                found[row.id] = (
                    replace(record, paused=paused) if record.paused != paused else record
                )
            else:
                missing.append(row.id)
        for record in self._fetch_verified(missing):
            found[record.id] = record
        return sorted(found.values(), key=lambda record: (record.flow_name, record.name))

    def _fetch_verified(self, ids: list[str]) -> list[DeploymentRecord]:
        records = []
        for start in range(0, len(ids), 500):
            with self.registry.read() as conn:
                rows = conn.execute(
                    sa.select(t.deployments).where(t.deployments.c.id.in_(ids[start : start + 500]))
                ).all()
            keyset = KeyManager.for_registry(self.registry.url).keyset()
            for row in rows:
                try:
                    record = self._verified(row)
                except BlocksError as exc:
                    warnings.warn(f"{exc} (left out)", stacklevel=3)
                    continue
                if len(_RECORDS) >= _VERIFIED_MAX:
                    _RECORDS.clear()
                _RECORDS[(row.id, row.seal)] = (keyset, record)
                records.append(record)
        return records

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
            for table in (t.flow_run_logs, t.flow_run_states, t.flow_run_task_runs):
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
