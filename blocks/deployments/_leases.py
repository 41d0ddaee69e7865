"""Claims, leases and state changes of flow runs.

A claim is one UPDATE; every change is conditional on the state (and attempt) it comes from and
writes its state-history row in the same transaction; an expired lease is reaped by any worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from blocks.deployments import _tables as t
from blocks.deployments._records import (
    FlowRun,
    as_utc,
    record_state,
    run_from_row,
    utcnow,
)
from blocks.deployments._runs import RunRecords
from blocks.deployments._states import CLAIMABLE, FINAL, LEASED, RunState, sources_of
from blocks.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


@dataclass(slots=True)
class ReapReport:
    """What one lease-expiry pass did: runs marked Crashed, retried, or Cancelled."""

    crashed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


class RunLeases(RunRecords):
    """Claiming runs, holding and losing leases, moving runs between states."""

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
        with self.registry.write() as conn:
            pool = conn.execute(
                sa.select(t.work_pools.c.paused, t.work_pools.c.concurrency_limit).where(
                    t.work_pools.c.name == pool_name
                )
            ).first()
            if pool is not None and pool.paused:
                return None
            limited = conn.execute(
                sa.select(
                    t.deployments.c.id,
                    t.deployments.c.concurrency_limit,
                    t.deployments.c.collision_strategy,
                ).where(
                    t.deployments.c.pool_name == pool_name,
                    t.deployments.c.concurrency_limit.is_not(None),
                )
            ).all()
            if not self.is_sqlite and (
                limited or (pool is not None and pool.concurrency_limit is not None)
            ):
                # Claims of a pool with limits are serialized, so two workers never both see
                # a free slot (SQLite: its write lock already does this).
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:pool))"),
                    {"pool": "blocks-pool:" + pool_name},
                )
            blocked = self._at_limit(conn, limited, now, worker)
            pick = (
                sa.select(t.flow_runs.c.id)
                .where(
                    t.flow_runs.c.pool_name == pool_name,
                    t.flow_runs.c.state.in_(claimable),
                    t.flow_runs.c.due <= now,
                    *([t.flow_runs.c.deployment_id.not_in(blocked)] if blocked else []),
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
            if pool is not None and pool.concurrency_limit is not None:
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
            record_state(conn, row.id, RunState.PENDING, now, row.attempt, worker, "")
        return run_from_row(row)

    def _at_limit(
        self, conn: Connection, limited: Sequence[Any], now: datetime, worker: str
    ) -> list[str]:
        """The deployments (of `limited`: id, limit, strategy) whose live runs fill their
        limit; the due runs of those that cancel new runs are Cancelled here."""
        if not limited:
            return []
        live: dict[str, int] = dict(
            conn.execute(
                sa.select(t.flow_runs.c.deployment_id, sa.func.count())
                .where(
                    t.flow_runs.c.deployment_id.in_([row.id for row in limited]),
                    t.flow_runs.c.state.in_([s.value for s in LEASED]),
                )
                .group_by(t.flow_runs.c.deployment_id)
            ).all()
        )
        blocked = [row.id for row in limited if live.get(row.id, 0) >= row.concurrency_limit]
        cancel = [
            row for row in limited if row.id in blocked and row.collision_strategy == "CANCEL_NEW"
        ]
        for row in cancel:
            message = (
                f"cancelled: its deployment was at its concurrency limit ({row.concurrency_limit} "
                "live run(s)) and cancels new runs (CANCEL_NEW)"
            )
            ended = conn.execute(
                t.flow_runs.update()
                .where(
                    t.flow_runs.c.deployment_id == row.id,
                    t.flow_runs.c.state.in_([s.value for s in CLAIMABLE]),
                    t.flow_runs.c.due <= now,
                )
                .values(state=RunState.CANCELLED.value, message=message, ended=now)
                .returning(t.flow_runs.c.id, t.flow_runs.c.attempt)
            ).all()
            for run_id, attempt in ended:
                record_state(conn, run_id, RunState.CANCELLED, now, attempt, worker, message)
        return blocked

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
                and (as_utc(row.lease_until) or now) > now
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
                record_state(conn, run_id, target, now, attempt, worker, message)
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
                record_state(conn, row.id, target, now, row.attempt, row.worker, message)
                if target is RunState.CANCELLED:
                    report.cancelled.append(row.id)
                    continue
                report.crashed.append(row.id)
                if _next_attempt(conn, row.id, row.attempt, row.max_attempts, now):
                    report.retried.append(row.id)
        return report

    def crash(self, run_id: str, *, attempt: int, worker: str, message: str) -> bool:
        """Record that a worker's run crashed (its process died of a signal, or the worker was
        stopped): Crashed, then the next attempt Scheduled when attempts are left, in one
        transaction, as a reaped lease. Returns whether a retry was scheduled."""
        now = utcnow()
        with self.registry.write() as conn:
            row = conn.execute(
                t.flow_runs.update()
                .where(
                    t.flow_runs.c.id == run_id,
                    t.flow_runs.c.attempt == attempt,
                    t.flow_runs.c.worker == worker,
                    t.flow_runs.c.state.in_([RunState.PENDING.value, RunState.RUNNING.value]),
                )
                .values(state=RunState.CRASHED.value, message=message, ended=now, lease_until=None)
                .returning(t.flow_runs.c.max_attempts)
            ).first()
            if row is None:
                return False
            record_state(conn, run_id, RunState.CRASHED, now, attempt, worker, message)
            return _next_attempt(conn, run_id, attempt, row.max_attempts, now)


def _next_attempt(conn: Any, run_id: str, attempt: int, max_attempts: int, now: datetime) -> bool:
    """After a crash: the run Scheduled again now as attempt + 1, when attempts are left (the
    same row, so there is never a second live attempt)."""
    if attempt >= max_attempts:
        return False
    message = f"retry after a crash (attempt {attempt + 1} of {max_attempts})"
    conn.execute(
        t.flow_runs.update()
        .where(t.flow_runs.c.id == run_id, t.flow_runs.c.attempt == attempt)
        .values(
            state=RunState.SCHEDULED.value,
            attempt=attempt + 1,
            worker=None,
            lease_until=None,
            due=now,
            started=None,
            ended=None,
            message=message,
        )
    )
    record_state(conn, run_id, RunState.SCHEDULED, now, attempt + 1, None, message)
    return True
