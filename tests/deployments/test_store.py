"""The run store under attack: racing schedulers, racing workers, dead workers, tampering.

Every test runs on SQLite and on a real PostgreSQL; the races use real processes.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from racing import PROCESSES, STRESS, race

from blocks.deployments import _tables as t
from blocks.deployments._states import RunState
from blocks.deployments._store import MAX_LOG_LINES, DeploymentRecord, RunStore, slot_key
from blocks.errors import ConfigurationError, DeploymentNotFound, TamperedDocument

SLOTS = 400 if STRESS else 60
RUNS = 400 if STRESS else 60


def _deployment(store: RunStore, name: str = "daily", pool: str = "pool-a") -> DeploymentRecord:
    store.ensure_pool(pool)
    deployment, _ = store.put_deployment(
        "etl",
        name,
        version="1",
        pool_name=pool,
        document={"entrypoint": "flows.py:etl", "parameters": {"n": 1}},
    )
    return deployment


def test_each_slot_is_inserted_once_by_racing_schedulers(
    store: RunStore, tmp_path: Path, backend: str
) -> None:
    deployment = _deployment(store)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slots = [["every-minute", (start + timedelta(minutes=i)).isoformat()] for i in range(SLOTS)]
    commands = []
    for _ in range(PROCESSES):
        mine = slots[:]
        random.shuffle(mine)  # each scheduler walks the slots in its own order
        commands.append(["insert", deployment.id, json.dumps(mine)])
    outputs = race(tmp_path, *commands)
    inserted = [run_id for out in outputs for run_id in json.loads(out)]
    runs = store.list_runs(deployment_id=deployment.id)
    keys = [run.idempotency_key for run in runs]
    print(
        f"{backend}: {PROCESSES} schedulers x {SLOTS} slots -> {len(inserted)} inserts reported, "
        f"{len(runs)} runs stored, {len(set(keys))} distinct keys"
    )
    assert len(runs) == SLOTS == len(set(keys)) == len(inserted) == len(set(inserted))
    # A redeploy (same deployment, new version) inserting the same slots adds nothing.
    redeployed, changed = store.put_deployment(
        "etl", "daily", version="2", pool_name="pool-a", document=deployment.document
    )
    assert changed and redeployed.id == deployment.id
    again = store.insert_slots(redeployed, [("every-minute", start)])
    assert again == [] and len(store.list_runs(deployment_id=deployment.id)) == SLOTS


def test_a_slot_key_is_its_utc_instant_whatever_the_zone(store: RunStore) -> None:
    from zoneinfo import ZoneInfo

    instant = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST in Berlin
    berlin = instant.astimezone(ZoneInfo("Europe/Berlin"))
    assert slot_key("cron", instant) == slot_key("cron", berlin)
    deployment = _deployment(store)
    assert len(store.insert_slots(deployment, [("cron", instant), ("cron", berlin)])) == 1


def test_racing_workers_never_claim_one_run_twice(
    store: RunStore, tmp_path: Path, backend: str
) -> None:
    deployment = _deployment(store)
    due = datetime.now(UTC) - timedelta(minutes=5)
    store.insert_slots(deployment, [("s", due + timedelta(seconds=i)) for i in range(RUNS)])
    outputs = race(tmp_path, *(["claim", "pool-a", f"worker-{i}"] for i in range(PROCESSES)))
    claims = [json.loads(out) for out in outputs]
    every = [run_id for mine in claims for run_id in mine]
    print(
        f"{backend}: {PROCESSES} workers claimed {len(every)} of {RUNS} runs "
        f"(per worker: {[len(mine) for mine in claims]}), {len(every) - len(set(every))} twice"
    )
    assert len(every) == len(set(every)) == RUNS
    pending = store.list_runs(deployment_id=deployment.id, states=[RunState.PENDING])
    assert len(pending) == RUNS
    for run in pending[:5]:
        assert [change.state for change in store.history(run.id)] == [
            RunState.SCHEDULED,
            RunState.PENDING,
        ]


def test_a_run_not_due_yet_is_not_claimed(store: RunStore) -> None:
    deployment = _deployment(store)
    store.insert_slots(deployment, [("s", datetime.now(UTC) + timedelta(hours=1))])
    assert store.claim("pool-a", worker="w", lease_seconds=30) is None


def test_an_expired_lease_is_crashed_then_retried_once_by_racing_reapers(
    store: RunStore, tmp_path: Path, backend: str
) -> None:
    deployment = _deployment(store)
    store.insert_slots(
        deployment, [("s", datetime.now(UTC) - timedelta(seconds=1))], max_attempts=2
    )
    run = store.claim("pool-a", worker="dead-worker", lease_seconds=0.2)
    assert run is not None and run.state is RunState.PENDING
    assert store.transition(run.id, RunState.RUNNING, attempt=1, worker="dead-worker")
    time.sleep(0.3)  # the worker "died": no heartbeat
    outputs = race(tmp_path, *(["reap"] for _ in range(PROCESSES)))
    reports = [json.loads(out) for out in outputs]
    crashed = sum(len(r["crashed"]) for r in reports)
    retried = sum(len(r["retried"]) for r in reports)
    print(f"{backend}: {PROCESSES} racing reapers -> crashed {crashed} time(s), retried {retried}")
    assert crashed == retried == 1
    after = store.get_run(run.id)
    assert (after.state, after.attempt, after.worker) == (RunState.SCHEDULED, 2, None)
    history = store.history(run.id)
    assert [(c.state, c.attempt) for c in history] == [
        (RunState.SCHEDULED, 1),
        (RunState.PENDING, 1),
        (RunState.RUNNING, 1),
        (RunState.CRASHED, 1),
        (RunState.SCHEDULED, 2),
    ]
    assert "dead-worker" in history[3].message
    # The second attempt, claimed elsewhere, crashes too: no attempts left, it stays Crashed.
    second = store.claim("pool-a", worker="other-worker", lease_seconds=0.1)
    assert second is not None and second.attempt == 2
    # The dead worker coming back cannot act on its old attempt.
    assert not store.transition(run.id, RunState.COMPLETED, attempt=1, worker="dead-worker")
    time.sleep(0.2)
    report = store.reap()
    assert report.crashed == [run.id] and report.retried == []
    assert store.get_run(run.id).state is RunState.CRASHED


def test_a_heartbeat_keeps_the_lease_and_reports_a_lost_one(store: RunStore) -> None:
    deployment = _deployment(store)
    store.insert_slots(deployment, [("s", datetime.now(UTC) - timedelta(seconds=1))])
    # Beats 0.2 s apart keep a 3 s lease (a lease as short as the beats' spacing was lost on
    # a machine at load 25, where a 0.2 s sleep can take longer).
    run = store.claim("pool-a", worker="w1", lease_seconds=3)
    assert run is not None
    for _ in range(4):
        time.sleep(0.2)
        assert store.heartbeat("w1", [(run.id, 1)], 3) == {run.id: RunState.PENDING}
        assert store.reap().crashed == []
    assert store.heartbeat("w1", [(run.id, 1)], 0.3) == {run.id: RunState.PENDING}
    time.sleep(0.6)  # no beat within the last lease
    assert store.reap().crashed == [run.id]
    assert store.heartbeat("w1", [(run.id, 1)], 0.5) == {run.id: None}


def test_state_changes_only_from_the_states_that_allow_them(store: RunStore) -> None:
    deployment = _deployment(store)
    (run_id,) = store.insert_slots(deployment, [("s", datetime.now(UTC))])
    assert not store.transition(run_id, RunState.COMPLETED, attempt=1)  # Scheduled -/-> Completed
    assert store.cancel(run_id) is RunState.CANCELLED
    with pytest.raises(ConfigurationError, match="Cancelled: nothing to cancel"):
        store.cancel(run_id)
    (run_id,) = store.insert_slots(deployment, [("s", datetime.now(UTC) - timedelta(seconds=2))])
    run = store.claim("pool-a", worker="w", lease_seconds=0.1)
    assert run is not None and run.id == run_id
    assert store.cancel(run_id[:8]) is RunState.CANCELLING
    time.sleep(0.2)  # the worker never confirms: the reaper ends it Cancelled, not Crashed
    assert store.reap().cancelled == [run_id]
    assert store.get_run(run_id).state is RunState.CANCELLED


def test_a_pool_limit_and_a_paused_pool_hold_back_claims(store: RunStore) -> None:
    deployment = _deployment(store, pool="small")
    with store.registry.write() as conn:
        conn.execute(
            t.work_pools.update().where(t.work_pools.c.name == "small").values(concurrency_limit=2)
        )
    store.insert_slots(
        deployment, [("s", datetime.now(UTC) - timedelta(seconds=i + 1)) for i in range(5)]
    )
    claimed = [store.claim("small", worker="w", lease_seconds=30) for _ in range(4)]
    assert [run is not None for run in claimed] == [True, True, False, False]
    store.set_pool_paused("small", True)
    first = claimed[0]
    assert first is not None
    assert store.transition(first.id, RunState.COMPLETED, attempt=1, worker="w")
    assert store.claim("small", worker="w", lease_seconds=30) is None
    store.set_pool_paused("small", False)
    assert store.claim("small", worker="w", lease_seconds=30) is not None


def test_a_deployment_or_parameters_edited_in_the_database_are_refused(store: RunStore) -> None:
    deployment = _deployment(store)
    (run_id,) = store.insert_slots(deployment, [("s", datetime.now(UTC) - timedelta(seconds=1))])
    with store.registry.write() as conn:
        conn.execute(
            t.deployments.update()
            .where(t.deployments.c.id == deployment.id)
            .values(document=json.dumps({"entrypoint": "evil.py:run", "parameters": {}}))
        )
        conn.execute(
            t.flow_runs.update()
            .where(t.flow_runs.c.id == run_id)
            .values(parameters=json.dumps({"n": "; rm -rf /"}))
        )
    with pytest.raises(TamperedDocument):
        store.get_deployment("etl/daily")
    with pytest.raises(TamperedDocument):
        store.list_deployments()
    run = store.claim("pool-a", worker="w", lease_seconds=30)
    assert run is not None
    with pytest.raises(TamperedDocument):
        store.verified_parameters(run)
    # Applying the deployment from its code again restores it, sealed afresh.
    _, changed = store.put_deployment(
        "etl", "daily", version="1", pool_name="pool-a", document=deployment.document
    )
    assert changed and store.get_deployment("etl/daily").document == deployment.document
    # So does it when only the seal is bad (a key retired by `block key rotate`).
    with store.registry.write() as conn:
        conn.execute(
            t.deployments.update().where(t.deployments.c.id == deployment.id).values(seal="x")
        )
    _, changed = store.put_deployment(
        "etl", "daily", version="1", pool_name="pool-a", document=deployment.document
    )
    assert changed and store.get_deployment("etl/daily").document == deployment.document


def test_apply_again_changes_nothing(store: RunStore) -> None:
    deployment = _deployment(store)
    again, changed = store.put_deployment(
        "etl", "daily", version="1", pool_name="pool-a", document=dict(deployment.document)
    )
    assert not changed and again == deployment
    with pytest.raises(DeploymentNotFound, match="block deployment ls"):
        store.get_deployment("etl/missing")


def test_a_runs_log_is_capped(store: RunStore) -> None:
    deployment = _deployment(store)
    run = store.create_run(deployment)
    now = datetime.now(UTC)
    kept = sum(
        store.append_logs(run.id, [(now, "INFO", f"line {i + j}") for j in range(300)])
        for i in range(0, 1500, 300)
    )
    lines = store.logs(run.id)
    print(f"1500 lines written, {kept} kept, {len(lines)} stored (cap {MAX_LOG_LINES})")
    assert kept == MAX_LOG_LINES and len(lines) == MAX_LOG_LINES + 1
    assert "capped" in lines[-1][3] and store.get_run(run.id).log_lines == 1500
    with store.registry.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.flow_run_logs)).scalar() == (
            MAX_LOG_LINES + 1
        )


def test_docker_and_kubernetes_pools_are_refused_by_name(store: RunStore) -> None:
    for kind in ("docker", "kubernetes"):
        with pytest.raises(ConfigurationError, match="the types it runs are process"):
            store.create_pool(f"{kind}-pool", kind)


def test_a_crash_seen_by_a_live_worker_retries_once_when_attempts_are_left(
    store: RunStore,
) -> None:
    deployment = _deployment(store)
    store.insert_slots(
        deployment, [("s", datetime.now(UTC) - timedelta(seconds=1))], max_attempts=2
    )
    run = store.claim("pool-a", worker="w", lease_seconds=30)
    assert run is not None
    assert not store.crash(run.id, attempt=1, worker="someone-else", message="x")
    assert store.crash(run.id, attempt=1, worker="w", message="killed by SIGKILL")
    again = store.claim("pool-a", worker="w2", lease_seconds=30)
    assert again is not None and (again.id, again.attempt) == (run.id, 2)
    assert not store.crash(run.id, attempt=2, worker="w2", message="killed by SIGKILL")
    assert store.get_run(run.id).state is RunState.CRASHED
