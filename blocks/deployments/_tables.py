"""The run store's SQLAlchemy tables: work pools, deployments, flow runs, their states, logs
and task-run summaries.

They live in the registry's database beside the block tables (same engine, same conventions:
SQLAlchemy Core, timezone-aware timestamps, JSON as text), in their own `MetaData`, created on
the first use of a `RunStore` (`CREATE ... IF NOT EXISTS`, so any number of processes may race).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

_TS = sa.DateTime(timezone=True)

work_pools = sa.Table(
    "work_pools",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("concurrency_limit", sa.Integer, nullable=True),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("created", _TS, nullable=False),
    # The pool type's settings as JSON (a dask pool's scheduler ``address``); None: none.
    sa.Column("base_job_template", sa.Text, nullable=True),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("flow_name", sa.String(256), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("version", sa.String(256), nullable=True),
    # The deployment's sealed settings (entrypoint, path, parameters, schedules...) as JSON.
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("pool_name", sa.String(256), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("created", _TS, nullable=False),
    sa.Column("updated", _TS, nullable=False),
    sa.Column("seal", sa.Text, nullable=False),
    # Copies of the sealed document's limit, for the claim's SQL (None: no limit). A worker
    # verifies the document itself before it runs anything.
    sa.Column("concurrency_limit", sa.Integer, nullable=True),
    sa.Column("collision_strategy", sa.String(16), nullable=True),
    sa.UniqueConstraint("flow_name", "name", name="uq_deployments_flow_name"),
)

flow_runs = sa.Table(
    "flow_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "deployment_id",
        sa.String(32),
        sa.ForeignKey("deployments.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("flow_name", sa.String(256), nullable=False),
    sa.Column("pool_name", sa.String(256), nullable=False, index=True),
    sa.Column("schedule_slug", sa.String(128), nullable=True),
    sa.Column("slot", _TS, nullable=True),
    sa.Column("idempotency_key", sa.String(256), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("due", _TS, nullable=False),
    sa.Column("worker", sa.String(256), nullable=True),
    sa.Column("lease_until", _TS, nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("max_attempts", sa.Integer, nullable=False, default=1),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("log_lines", sa.Integer, nullable=False, default=0),
    # Task runs the run process reported (kept or not: see BLOCKS_RUN_TASK_RUNS).
    sa.Column("task_runs", sa.Integer, nullable=True, default=0),
    sa.Column("created", _TS, nullable=False),
    sa.Column("started", _TS, nullable=True),
    sa.Column("ended", _TS, nullable=True),
    sa.Column("seal", sa.Text, nullable=False),
    # The deployment run whose flow called run_deployment for this one (a subflow), if any.
    sa.Column("parent_run_id", sa.String(32), nullable=True),
    # One run per (deployment, schedule slug, slot): the key names the slug and the UTC slot.
    sa.UniqueConstraint("deployment_id", "idempotency_key", name="uq_flow_runs_idempotency"),
    # The claim reads (pool, state, due); the scheduler's summary of live slots reads the rest
    # from the index alone (a covering index: no table row is read).
    sa.Index(
        "ix_flow_runs_due", "pool_name", "state", "due", "deployment_id", "schedule_slug", "slot"
    ),
)


def _run_rows_columns() -> tuple[sa.Column[int], sa.Column[str]]:
    """The first columns of a table of a run's rows (states, logs, task runs): a row id and the
    run's, whose rows go with it."""
    return (
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("flow_runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
    )


flow_run_states = sa.Table(
    "flow_run_states",
    metadata,
    *_run_rows_columns(),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("at", _TS, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker", sa.String(256), nullable=True),
    sa.Column("message", sa.Text, nullable=False, default=""),
)

flow_run_logs = sa.Table(
    "flow_run_logs",
    metadata,
    *_run_rows_columns(),
    sa.Column("at", _TS, nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)

flow_run_task_runs = sa.Table(
    "flow_run_task_runs",
    metadata,
    *_run_rows_columns(),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("task_run_id", sa.String(32), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("task_name", sa.String(256), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("cached", sa.Boolean, nullable=False, default=False),
    sa.Column("started", _TS, nullable=False),
    sa.Column("ended", _TS, nullable=False),
)
