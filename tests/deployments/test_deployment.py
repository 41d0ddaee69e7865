"""Deployments and the scheduler: the seed's form, idempotent apply, redeploys, catch-up policies.

Runs on SQLite and PostgreSQL (`backend`); racing schedulers are real processes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from racing import PROCESSES, race

from blocks.deployments import CronSchedule, Deployment, IntervalSchedule, RunState, RunStore
from blocks.deployments._scheduler import MIN_RUNS, schedule_pass
from blocks.errors import ConfigurationError, ParameterTypeError

FLOWS = '''
from blocks import flow

@flow
def my_etl_flow(date: str = None):
    """일일 ETL 플로우"""
    print(f"Running ETL for {date}")

@flow(retries=1)
def counted(n: int = 1) -> int:
    return n
'''


def _flows(folder: Path) -> ModuleType:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "etl_flows.py").write_text(FLOWS)
    spec = importlib.util.spec_from_file_location("etl_flows", folder / "etl_flows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["etl_flows"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    module = _flows(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    yield module
    sys.modules.pop("etl_flows", None)


def _seed_deployment(flows: ModuleType, **changes: Any) -> Deployment:
    options: dict[str, Any] = {
        "flow": flows.my_etl_flow,
        "name": "daily-etl",
        "version": "1.0",
        "tags": ["production", "etl"],
        "schedule": CronSchedule(cron="0 6 * * *"),
        "parameters": {"date": None},
        "work_pool_name": "default-agent-pool",
    }
    options.update(changes)
    return Deployment.build_from_flow(**options)


def test_the_seeds_deployment_applies_once_and_again_changes_nothing(
    backend: str, flows: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment = _seed_deployment(flows)
    assert deployment.entrypoint == "etl_flows.py:my_etl_flow"
    assert deployment.path == str(Path.cwd().resolve())
    first = deployment.apply()
    err = capsys.readouterr().err
    assert err.count("Created work pool 'default-agent-pool' of type process") == 1
    store = RunStore.default()
    record = store.get_deployment("my-etl-flow/daily-etl")
    runs = store.list_runs(deployment_id=first)
    assert len(runs) >= MIN_RUNS
    assert all(run.slot is not None and (run.slot.hour, run.slot.minute) == (6, 0) for run in runs)
    # The seed's file applies at import time: a worker importing it applies it again.
    again = _seed_deployment(flows).apply()
    assert again == first and capsys.readouterr().err == ""
    assert store.get_deployment("my-etl-flow/daily-etl") == record
    assert [r.id for r in store.list_runs(deployment_id=first)] == [r.id for r in runs]
    print(f"{backend}: applied twice -> 1 deployment, {len(runs)} slots, second apply a no-op")


def test_a_redeploy_with_a_changed_schedule_never_makes_a_slot_twice(
    backend: str, flows: ModuleType
) -> None:
    deployment_id = _seed_deployment(flows).apply()
    store = RunStore.default()
    before = store.list_runs(deployment_id=deployment_id)
    _seed_deployment(flows, version="1.1", schedule=CronSchedule(cron="0 */6 * * *")).apply()
    after = store.list_runs(deployment_id=deployment_id)
    slots = [run.slot for run in after]
    assert len(slots) == len(set(slots))
    # The old schedule's future runs went; the new one's are there.
    assert not {run.id for run in before} & {run.id for run in after}
    assert {(s.hour if s else None) for s in slots} <= {0, 6, 12, 18}
    print(f"{backend}: {len(before)} slots before, {len(after)} after, 0 twice")


def test_parameters_are_checked_against_the_flows_signature(flows: ModuleType) -> None:
    with pytest.raises(ParameterTypeError, match="unexpected keyword argument 'day'"):
        _seed_deployment(flows, parameters={"day": "2024-01-01"})
    with pytest.raises(ParameterTypeError, match="parameter 'n'"):
        Deployment.build_from_flow(flows.counted, "x", parameters={"n": "many"})
    with pytest.raises(ConfigurationError, match="catchup"):
        _seed_deployment(flows, catchup="some")


def test_a_flow_outside_the_working_folder_is_recorded_by_module(
    flows: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blocks.demo import etl  # an importable module outside the working folder

    monkeypatch.chdir(tmp_path)
    deployment = Deployment.build_from_flow(etl, "demo")
    assert deployment.entrypoint == f"blocks.demo:{etl.fn.__qualname__}"
    assert deployment.document()["retries"] == etl.options.retries


@pytest.mark.parametrize(
    ("policy", "late", "skipped"), [("latest", 1, 4), ("all", 5, 0), ("none", 0, 5)]
)
def test_slots_missed_while_no_worker_ran_follow_the_catchup_policy(
    backend: str, flows: ModuleType, policy: str, late: int, skipped: int
) -> None:
    deployment_id = Deployment.build_from_flow(
        flows.counted,
        f"every-minute-{policy}",
        schedule=IntervalSchedule(interval=timedelta(minutes=1)),
        catchup=policy,  # type: ignore[arg-type]
        work_pool_name="pool",
    ).apply()
    store = RunStore.default()
    record = store.get_deployment_by_id(deployment_id)
    slug = record.document["schedules"][0]["slug"]
    # Five slots of the last hour that no worker started (the workers were down).
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    store.insert_slots(record, [(slug, now - timedelta(minutes=50 - i)) for i in range(5)])
    report = schedule_pass(store)
    missed = [run for run in store.list_runs(deployment_id=deployment_id) if run.due < now]
    states = sorted(run.state.value for run in missed)
    print(f"{backend} catchup={policy}: 5 missed slots -> {states}")
    assert (report.late, report.skipped) == (late, skipped)
    assert states.count("Late") == late and states.count("Skipped") == skipped
    if policy == "latest":
        newest = max(missed, key=lambda run: run.due)
        assert newest.state is RunState.LATE
    # A second pass changes nothing more.
    again = schedule_pass(store)
    assert (again.late, again.skipped, again.inserted) == (0, 0, 0)


def test_racing_scheduler_passes_make_each_slot_once(
    backend: str, flows: ModuleType, tmp_path: Path
) -> None:
    Deployment.build_from_flow(
        flows.counted,
        "every-second",
        schedule=IntervalSchedule(interval=timedelta(seconds=1)),
        work_pool_name="pool",
    ).apply()
    store = RunStore.default()
    with store.registry.write() as conn:  # start from nothing: the passes race to fill it
        from blocks.deployments import _tables as t

        conn.execute(t.flow_run_states.delete())
        conn.execute(t.flow_runs.delete())
    outputs = race(tmp_path, *(["pass"] for _ in range(PROCESSES)))
    inserted = sum(json.loads(out)["inserted"] for out in outputs)
    runs = store.list_runs()
    print(f"{backend}: {PROCESSES} racing passes inserted {inserted}; {len(runs)} runs stored")
    assert inserted == len(runs) == len({run.idempotency_key for run in runs}) >= 100


def test_one_deployment_edited_in_the_database_does_not_stop_the_others(
    flows: ModuleType,
) -> None:
    from blocks.deployments import _tables as t

    for name in ("good", "edited"):
        Deployment.build_from_flow(
            flows.counted,
            name,
            schedule=IntervalSchedule(interval=timedelta(minutes=1)),
            work_pool_name="pool",
        ).apply()
    store = RunStore.default()
    with store.registry.write() as conn:
        conn.execute(t.flow_runs.delete())
        conn.execute(
            t.deployments.update().where(t.deployments.c.name == "edited").values(version="evil")
        )
    with pytest.warns(UserWarning, match="counted/edited"):
        report = schedule_pass(store)
    assert report.deployments == 1 and report.inserted >= MIN_RUNS
    assert {r.deployment_id for r in store.list_runs()} == {store.get_deployment("counted/good").id}
