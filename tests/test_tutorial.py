"""The seed tutorial's examples (sections 3, 4 and 7), run with our imports, behave as it says.

Each example lives in ``tests/examples/`` as a runnable file. Most tests load the file with
`runpy` (so they can count calls and patch randomness); one test runs every file as a script
in a subprocess, as a user would.
"""

from __future__ import annotations

import logging
import os
import random
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from blocks.results import ResultStore
from blocks.task_runners import ConcurrentTaskRunner, SequentialTaskRunner
from blocks.tasks import exponential_backoff

EXAMPLES = Path(__file__).parent / "examples"


def run_example(name: str, main: bool = False) -> dict[str, Any]:
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__" if main else name)


def test_3_1_etl_pipeline_extracts_transforms_and_loads(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        ns = run_example("ex_3_1_etl_pipeline", main=True)
    out = capsys.readouterr().out
    assert (
        "Loaded data: {'source': 'database', 'records': [2, 4, 6, 8, 10], 'transformed': True}"
        in out
    )
    assert "Extracting from database" in caplog.messages
    assert "Transforming 5 records" in caplog.messages
    assert "Loading to warehouse" in caplog.messages
    assert ns["etl_pipeline"].name == "ETL Pipeline"
    assert ns["etl_pipeline"]("api", "lake") is True


def test_3_2_my_task_options_cache_on_the_static_key(caplog: pytest.LogCaptureFixture) -> None:
    ns = run_example("ex_3_2_task_options")
    my_task = ns["my_task"]
    assert (my_task.name, my_task.description, my_task.tags) == (
        "My Task",
        "Task 설명",
        {"etl", "production"},
    )
    assert my_task.retries == 3 and my_task.timeout_seconds == 3600
    assert my_task.options.retry_delays == (60.0,)
    with caplog.at_level(logging.INFO):
        assert my_task("first") == "Result: first"
        # cache_key_fn=lambda: "static_key": every call shares one cache entry for an hour.
        state = my_task("second", return_state=True)
    assert state.is_cached() and state.result() == "Result: first"
    assert "Processing: first" in caplog.messages  # log_prints=True
    assert "Processing: second" not in caplog.messages


def test_3_2_flaky_task_retries_with_exponential_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = run_example("ex_3_2_task_options")
    flaky = ns["flaky_task"]
    assert flaky.retries == 5
    # backoff_factor=10, as in the tutorial
    assert flaky.options.retry_delays == (10, 20, 40, 80, 160)

    draws = iter([0.1, 0.5, 0.69, 0.95])  # three failures (< 0.7), then a success
    calls: list[float] = []

    def fake_random() -> float:
        value = next(draws)
        calls.append(value)
        return value

    monkeypatch.setattr(random, "random", fake_random)
    fast = flaky.with_options(retry_delay_seconds=exponential_backoff(backoff_factor=0.01))
    start = time.monotonic()
    assert fast() == "Success"
    assert len(calls) == 4
    assert time.monotonic() - start >= 0.01 + 0.02 + 0.04

    monkeypatch.setattr(random, "random", lambda: 0.0)  # always fails: 1 try + 5 retries
    state = fast.with_options(retry_delay_seconds=0)(return_state=True)
    assert state.is_failed() and state.message == "Exception: Random failure"


def test_3_3_flow_options_and_task_runners(blocks_home: Path) -> None:
    ns = run_example("ex_3_3_flow_options", main=True)
    my_flow, sequential_flow = ns["my_flow"], ns["sequential_flow"]
    assert (my_flow.name, my_flow.description, my_flow.version) == ("My Flow", "Flow 설명", "1.0.0")
    assert (my_flow.retries, my_flow.timeout_seconds, my_flow.log_prints) == (2, 7200, True)
    assert isinstance(my_flow.task_runner, ConcurrentTaskRunner)
    assert isinstance(sequential_flow.task_runner, SequentialTaskRunner)
    assert my_flow(return_state=True).is_completed()
    # persist_result=True: the flow's (None) result was stored in the default storage.
    records = [h for _, h in ResultStore.resolve(None).records() if h is not None]
    assert sum(1 for h in records if h.task == "flow:My Flow") == 2


def test_4_1_dynamic_and_parallel_tasks() -> None:
    ns = run_example("ex_4_1_dynamic_tasks")
    expected = ["Processed: a", "Processed: b", "Processed: c", "Processed: d"]
    assert ns["dynamic_tasks_flow"](["a", "b", "c", "d"]) == expected
    assert ns["parallel_tasks_flow"](["a", "b", "c", "d"]) == expected
    assert ns["dynamic_tasks_flow"]([]) == []


def test_4_2_conditional_flow_takes_the_right_branch(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("ex_4_2_conditional")
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Processing large dataset: 150 records",
        "Processing small dataset: 50 records",
    ]


def test_4_3_subflows_report_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("ex_4_3_subflows")
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Loading 5 records to target_a",
        "Loading 5 records to target_b",
        "Loading 5 records to target_c",
        "Total processed: 15",
    ]


def test_7_1_state_handlers_print_on_failure(capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_example("ex_7_1_state_handlers")
    with pytest.raises(ValueError, match="Something went wrong"):
        ns["my_flow"]()
    assert capsys.readouterr().out.splitlines() == ["Task risky_task failed!", "Flow failed!"]
    state = ns["risky_task"](return_state=True)
    assert state.is_failed()
    assert capsys.readouterr().out.splitlines() == ["Task risky_task failed!"]


def test_7_2_local_result_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_RESULTS_PATH", str(tmp_path / "prefect"))
    ns = run_example("ex_7_2_local_storage")
    assert ns["save_locally"]() == {"data": [1, 2, 3]}
    # result_storage alone means persist (as in Prefect 3): one record under the base path.
    store = ResultStore.resolve(str(tmp_path / "prefect"))
    records = [(k, h) for k, h in store.records() if h is not None]
    assert len(records) == 1 and records[0][1].task == "save_locally"
    assert store.read(records[0][0]).value == {"data": [1, 2, 3]}  # type: ignore[union-attr]


@pytest.mark.integration
def test_7_2_s3_result_storage_as_json(ambient_s3: str, s3_bucket: Any, tmp_path: Path) -> None:
    ns = run_example("ex_7_2_s3_storage")
    assert ns["save_to_s3"].result_storage.bucket_path == ambient_s3
    assert ns["save_to_s3"]() == {"large": "data"}
    store = ResultStore(ns["save_to_s3"].result_storage, "json")
    records = [(k, h) for k, h in store.records() if h is not None]
    assert len(records) == 1 and records[0][1].serializer["type"] == "json"
    assert store.read(records[0][0]).value == {"large": "data"}  # type: ignore[union-attr]
    # The object really is in the fixture's bucket, under results/.
    s3_bucket.fs.invalidate_cache()
    assert [p.split("/", 1)[1] for p in s3_bucket.fs.find(ambient_s3)] == [
        f"results/{records[0][0]}"
    ]

    # And as a script, as a user runs it: ambient settings only, a second record.
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "ex_7_2_s3_storage.py")],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "{'large': 'data'}" in proc.stdout
    assert len([h for _, h in store.records() if h is not None]) == 2


def test_7_3_secrets_from_a_block_and_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blocks.system import Secret

    Secret(value="abcd1234-very-secret").save("my-api-key")
    monkeypatch.setenv("MY_SECRET", "from-env")
    ns = run_example("ex_7_3_secrets")
    assert ns["use_secret"]() == "Using key: abcd..."
    assert ns["use_env_var"]() == "from-env"


SCRIPTS = {
    "ex_3_1_etl_pipeline": (0, ["Loaded data: {'source': 'database'"]),
    "ex_3_2_task_options": (0, ["Result: hello"]),
    "ex_3_3_flow_options": (0, []),
    "ex_4_1_dynamic_tasks": (0, ["['Processed: a', 'Processed: b', 'Processed: c', 'Proc"]),
    "ex_4_2_conditional": (0, ["Processing large dataset: 150", "Processing small dataset: 50"]),
    "ex_4_3_subflows": (0, ["Total processed: 15"]),
    "ex_7_1_state_handlers": (1, ["Task risky_task failed!", "Flow failed!"]),
    "ex_7_2_local_storage": (0, ["{'data': [1, 2, 3]}"]),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_examples_run_as_scripts(name: str, tmp_path: Path) -> None:
    code, expected = SCRIPTS[name]
    env = {**os.environ, "EXAMPLE_RESULTS_PATH": str(tmp_path / "prefect")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == code, proc.stderr
    for line in expected:
        assert line in proc.stdout
    if name == "ex_3_1_etl_pipeline":  # run logs reach the console without any logging set-up
        assert "Task run 'extract_data-" in proc.stderr
        assert "Extracting from database" in proc.stderr
