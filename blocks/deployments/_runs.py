"""Making and reading flow runs: scheduled slots (once each), runs made by hand, listings,
state history, and what the catch-up policy decides about."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from blocks.deployments import _tables as t
from blocks.deployments._records import (
    DeploymentRecord,
    FlowRun,
    StateChange,
    as_utc,
    dumps,
    insert_ignore,
    record_state,
    run_from_row,
    run_message,
    slot_key,
    utcnow,
)
from blocks.deployments._states import CLAIMABLE, LIVE, RunState
from blocks.deployments._store_base import StoreBase
from blocks.errors import FlowRunNotFound

#: Rows per statement in the bulk writes of a scheduler pass (within every dialect's limit on
#: bound parameters).
_BATCH = 500


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """The slots a scheduler pass makes for one deployment, and what their runs get."""

    deployment: DeploymentRecord
    slots: Sequence[tuple[str, datetime]]
    parameters: dict[str, Any]
    max_attempts: int


class RunRecords(StoreBase):
    """Flow runs: inserted per slot under the unique key, or by hand; read back."""

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
        if parameters is None:
            parameters = deployment.document.get("parameters", {})
        return self.insert_planned([SlotPlan(deployment, slots, parameters, max_attempts)], state)

    def insert_planned(
        self, plans: Sequence[SlotPlan], state: RunState = RunState.SCHEDULED
    ) -> list[str]:
        """`insert_slots` for many deployments at once (a scheduler pass): one transaction,
        one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per `_BATCH` slots (executemany)
        and one insert of their state rows; returns the ids of the runs made."""
        keyset = self._sealing()
        now = utcnow()
        rows = []
        for plan in plans:
            deployment = plan.deployment
            params = dumps(plan.parameters)
            for slug, slot in plan.slots:
                run_id = uuid.uuid4().hex
                instant = as_utc(slot)
                rows.append(
                    {
                        "id": run_id,
                        "deployment_id": deployment.id,
                        "flow_name": deployment.flow_name,
                        "pool_name": deployment.pool_name,
                        "schedule_slug": slug,
                        "slot": instant,
                        "idempotency_key": slot_key(slug, slot),
                        "state": state.value,
                        "message": "",
                        "due": instant,
                        "attempt": 1,
                        "max_attempts": plan.max_attempts,
                        "parameters": params,
                        "log_lines": 0,
                        "created": now,
                        "seal": keyset.seal(run_message(run_id, deployment.id, params)),
                    }
                )
        if not rows:
            return []
        statement = insert_ignore(
            self.is_sqlite, t.flow_runs, ["deployment_id", "idempotency_key"]
        ).returning(t.flow_runs.c.id)
        inserted: list[str] = []
        with self.registry.write() as conn:
            for start in range(0, len(rows), _BATCH):
                inserted += conn.execute(statement, rows[start : start + _BATCH]).scalars().all()
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
        parent_run_id: str | None = None,
    ) -> FlowRun:
        """A run made by hand (`block deployment run`): no slot, due now unless given; as many
        attempts as the flow has retries + 1 unless given. `parent_run_id`: the run whose flow
        asked for this one (`run_deployment` in a deployment's run)."""
        if max_attempts is None:
            max_attempts = int(deployment.document.get("retries", 0)) + 1
        merged = dict(deployment.document.get("parameters", {}))
        merged.update(parameters or {})
        params = dumps(merged)
        run_id = uuid.uuid4().hex
        now = utcnow()
        seal = self._sealing().seal(run_message(run_id, deployment.id, params))
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
                    due=as_utc(due) or now,
                    attempt=1,
                    max_attempts=max_attempts,
                    parameters=params,
                    log_lines=0,
                    created=now,
                    seal=seal,
                    parent_run_id=parent_run_id,
                )
            )
            record_state(conn, run_id, RunState.SCHEDULED, now, 1, None, "")
        return self.get_run(run_id)

    def child_runs(self, run_id: str) -> list[FlowRun]:
        """The runs `run_id`'s flow made with `run_deployment` (its subflow runs), oldest first."""
        query = (
            sa.select(t.flow_runs)
            .where(t.flow_runs.c.parent_run_id == run_id)
            .order_by(t.flow_runs.c.created, t.flow_runs.c.id)
        )
        with self.registry.read() as conn:
            return [run_from_row(row) for row in conn.execute(query)]

    def slot_summary(
        self, deployment_id: str, now: datetime
    ) -> dict[str, tuple[datetime | None, int]]:
        """Per schedule slug of a deployment: its latest slot and how many runs are due later."""
        return self.slot_summaries(now, deployment_id=deployment_id).get(deployment_id, {})

    def slot_summaries(
        self, now: datetime, *, pool_name: str | None = None, deployment_id: str | None = None
    ) -> dict[str, dict[str, tuple[datetime | None, int]]]:
        """Per deployment (of one pool, or one deployment), per schedule slug: its latest slot
        still to come and how many runs are due later, in ONE query (a scheduler pass reads all
        at once). Only live runs due from `now` on are read (the claim index): a pass starts
        from `now` anyway, and the history never slows it down."""
        later = sa.func.sum(sa.case((t.flow_runs.c.due > now, 1), else_=0))
        query = (
            sa.select(
                t.flow_runs.c.deployment_id,
                t.flow_runs.c.schedule_slug,
                sa.func.max(t.flow_runs.c.slot),
                later,
            )
            .where(
                t.flow_runs.c.schedule_slug.is_not(None),
                t.flow_runs.c.state.in_([state.value for state in LIVE]),
                t.flow_runs.c.due >= now,
            )
            .group_by(t.flow_runs.c.deployment_id, t.flow_runs.c.schedule_slug)
        )
        if pool_name is not None:
            query = query.where(t.flow_runs.c.pool_name == pool_name)
        if deployment_id is not None:
            query = query.where(t.flow_runs.c.deployment_id == deployment_id)
        found: dict[str, dict[str, tuple[datetime | None, int]]] = {}
        with self.registry.read() as conn:
            for row_id, slug, last, count in conn.execute(query):
                found.setdefault(row_id, {})[slug] = (as_utc(last), int(count or 0))
        return found

    def overdue(self, before: datetime) -> list[tuple[str, str, str, datetime, RunState]]:
        """Scheduled or Late runs of a schedule due before `before`: ``(run id, deployment id,
        slug, due, state)``, oldest first (what the catch-up policy decides about).

        Only the schedules with a Scheduled run overdue need a decision (a Late run alone was
        decided on already), so their Scheduled runs are read first (the claim index), then
        the Late runs of those schedules only."""
        columns = (
            t.flow_runs.c.id,
            t.flow_runs.c.deployment_id,
            t.flow_runs.c.schedule_slug,
            t.flow_runs.c.due,
            t.flow_runs.c.state,
        )
        overdue = sa.and_(t.flow_runs.c.schedule_slug.is_not(None), t.flow_runs.c.due < before)
        with self.registry.read() as conn:
            rows = list(
                conn.execute(
                    sa.select(*columns).where(
                        overdue, t.flow_runs.c.state == RunState.SCHEDULED.value
                    )
                )
            )
            deployments = sorted({row.deployment_id for row in rows})
            groups = {(row.deployment_id, row.schedule_slug) for row in rows}
            for start in range(0, len(deployments), _BATCH):
                rows += [
                    row
                    for row in conn.execute(
                        sa.select(*columns).where(
                            overdue,
                            t.flow_runs.c.state == RunState.LATE.value,
                            t.flow_runs.c.deployment_id.in_(deployments[start : start + _BATCH]),
                        )
                    )
                    if (row.deployment_id, row.schedule_slug) in groups
                ]
        found = [
            (r.id, r.deployment_id, r.schedule_slug, as_utc(r.due) or r.due, RunState(r.state))
            for r in rows
        ]
        found.sort(key=lambda run: (run[3], run[0]))
        return found

    def mark_missed(
        self, late: Sequence[str], skipped: Sequence[str], message: str
    ) -> tuple[int, int]:
        """Scheduled runs in `late` become Late; runs in `skipped` (Scheduled or Late) become
        Skipped with `message`. Runs claimed meanwhile are left alone. Returns how many of each
        changed. One transaction: an UPDATE ... RETURNING per `_BATCH` ids, one insert of the
        state rows."""
        now = utcnow()
        changed = {RunState.LATE: 0, RunState.SKIPPED: 0}
        with self.registry.write() as conn:
            for ids, target, sources, why in (
                (late, RunState.LATE, [RunState.SCHEDULED.value], "missed its slot"),
                (skipped, RunState.SKIPPED, [s.value for s in CLAIMABLE], message),
            ):
                history = []
                for start in range(0, len(ids), _BATCH):
                    rows = conn.execute(
                        t.flow_runs.update()
                        .where(
                            t.flow_runs.c.id.in_(list(ids[start : start + _BATCH])),
                            t.flow_runs.c.state.in_(sources),
                        )
                        .values(
                            state=target.value,
                            message=why,
                            **({"ended": now} if target is RunState.SKIPPED else {}),
                        )
                        .returning(t.flow_runs.c.id, t.flow_runs.c.attempt)
                    ).all()
                    history += [
                        {
                            "run_id": row.id,
                            "state": target.value,
                            "at": now,
                            "attempt": row.attempt,
                            "worker": None,
                            "message": why,
                        }
                        for row in rows
                    ]
                if history:
                    conn.execute(t.flow_run_states.insert(), history)
                changed[target] = len(history)
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
        return run_from_row(row)

    def verified_parameters(self, run: FlowRun) -> dict[str, Any]:
        """The run's parameters, after checking their seal (what a worker passes to the flow)."""
        with self.registry.read() as conn:
            row = conn.execute(
                sa.select(t.flow_runs.c.parameters, t.flow_runs.c.seal).where(
                    t.flow_runs.c.id == run.id
                )
            ).one()
        self._verify(
            run_message(run.id, run.deployment_id, row.parameters),
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
            return [run_from_row(row) for row in conn.execute(query)]

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
            StateChange(RunState(r.state), as_utc(r.at) or r.at, r.attempt, r.worker, r.message)
            for r in rows
        ]
