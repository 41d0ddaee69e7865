"""Flows: results, failures, retries, timeouts, hooks, subflows, runners, inherited defaults."""

from __future__ import annotations

import logging
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from blocks import Flow, flow, get_run_logger, task
from blocks.context import FlowRun, current_flow_run
from blocks.errors import TaskTimeout
from blocks.filesystems import LocalFileSystem
from blocks.results import ResultStore
from blocks.states import State
from blocks.task_runners import ConcurrentTaskRunner, SequentialTaskRunner

# Runs nest here: a hang fails the test within 60 s with every thread's stack, not the suite.
pytestmark = pytest.mark.timeout(60, method="thread")


def test_flow_returns_its_value_and_keeps_options() -> None:
    @flow(name="My Flow", description="d", version="1.0.0")
    def my_flow(x: int = 2) -> int:
        return x * 3

    @flow
    def etl_pipeline() -> None: ...

    assert isinstance(my_flow, Flow)
    assert my_flow() == 6 and my_flow(5) == 15
    assert (my_flow.name, my_flow.description, my_flow.version) == ("My Flow", "d", "1.0.0")
    assert etl_pipeline.name == "etl-pipeline"
    state = my_flow(return_state=True)
    assert state.is_completed() and state.result() == 6


def test_a_failed_task_raises_inside_the_flow_and_fails_it() -> None:
    reached = []

    @task
    def bad() -> None:
        raise ValueError("task broke")

    @flow
    def f() -> None:
        bad()
        reached.append(1)

    with pytest.raises(ValueError, match="task broke"):
        f()
    assert reached == []
    state = f(return_state=True)
    assert state.is_failed() and "task broke" in (state.message or "")


def test_return_state_on_a_task_lets_the_flow_handle_the_failure() -> None:
    @task
    def bad() -> None:
        raise ValueError("x")

    @flow
    def f() -> str:
        state = bad(return_state=True)
        return "recovered" if state.is_failed() else "?"

    assert f() == "recovered"


def test_flow_retries_rerun_the_body_after_the_delay() -> None:
    stamps: list[float] = []

    @flow(retries=2, retry_delay_seconds=0.05)
    def f() -> int:
        stamps.append(time.monotonic())
        if len(stamps) < 3:
            raise RuntimeError("again")
        return len(stamps)

    assert f() == 3
    assert all(b - a >= 0.05 for a, b in pairwise(stamps))


def test_flow_timeout_fails_with_task_timeout() -> None:
    release = threading.Event()
    finished: list[bool] = []

    @flow(timeout_seconds=0.1)
    def slow() -> None:
        release.wait(10)  # held until the caller has its answer (10 s: a hang guard)
        finished.append(True)

    try:
        state = slow(return_state=True)
        assert state.name == "TimedOut" and state.is_failed()
        assert finished == []  # the caller got TimedOut while the body was still running
        with pytest.raises(TaskTimeout):
            slow()
    finally:
        release.set()


def test_flow_hooks_get_flow_run_and_state_and_a_broken_hook_is_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, str]] = []

    def record(fl: Flow[Any, Any], run: FlowRun, state: State) -> None:
        seen.append((fl.name, state.name))
        assert run.flow is fl

    def broken(*_: Any) -> None:
        raise RuntimeError("hook broke")

    @flow(on_completion=[record, broken])
    def good() -> int:
        return 1

    @flow(on_failure=[record])
    def bad() -> None:
        raise KeyError("k")

    assert good() == 1
    with pytest.raises(KeyError):
        bad()
    assert seen == [("good", "Completed"), ("bad", "Failed")]
    assert any("State hook broken failed" in r.getMessage() for r in caplog.records)


def test_subflows_run_as_child_flow_runs() -> None:
    parents: list[Any] = []

    @task
    def inc(x: int) -> int:
        return x + 1

    @flow(name="Child")
    def child(x: int) -> int:
        run = current_flow_run()
        assert run is not None
        parents.append(run.parent)
        return inc(x)

    @flow(name="Parent")
    def parent() -> int:
        return child(1) + child(10)

    assert parent() == 13
    assert all(isinstance(p, FlowRun) and p.flow.name == "Parent" for p in parents)


def _overlaps(spans: list[tuple[float, float]]) -> bool:
    spans = sorted(spans)
    return any(b[0] < a[1] for a, b in pairwise(spans))


def test_concurrent_task_runner_overlaps_submitted_tasks() -> None:
    # The four runs pass the barrier only together: one at a time, the first would wait alone
    # and break it (BrokenBarrierError after the 10 s hang guard).
    all_in = threading.Barrier(4, timeout=10)

    @task
    def sleepy(i: int) -> int:
        all_in.wait()
        return i

    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def f() -> list[int]:
        return [fut.result() for fut in sleepy.map(range(4))]

    assert f() == [0, 1, 2, 3]


def test_concurrent_runner_with_one_worker_and_sequential_runner_do_not_overlap() -> None:
    spans: list[tuple[float, float]] = []
    threads: set[int] = set()

    @task
    def sleepy() -> None:
        threads.add(threading.get_ident())
        start = time.monotonic()
        time.sleep(0.05)
        spans.append((start, time.monotonic()))

    @flow(task_runner=ConcurrentTaskRunner(max_workers=1))
    def one_worker() -> None:
        for fut in [sleepy.submit() for _ in range(3)]:
            fut.wait()

    @flow(task_runner=SequentialTaskRunner())
    def sequential() -> None:
        for _ in range(3):
            sleepy.submit()

    one_worker()
    assert not _overlaps(spans)
    spans.clear()
    threads.clear()
    sequential()
    assert not _overlaps(spans) and threads == {threading.get_ident()}


def test_each_flow_run_gets_its_own_runner_and_waits_for_unawaited_futures() -> None:
    done: list[int] = []

    @task
    def later(i: int) -> None:
        time.sleep(0.1)
        done.append(i)

    runner = ConcurrentTaskRunner()

    @flow(task_runner=runner)
    def f() -> None:
        later.submit(1)
        later.submit(2)

    f()
    assert sorted(done) == [1, 2]  # the flow waited before finishing
    f()
    assert len(done) == 4 and runner._pool is None


def test_flow_result_storage_and_serializer_are_task_defaults(tmp_path: Path) -> None:
    @task(cache_key_fn=lambda: "inherited")
    def t() -> dict[str, int]:
        return {"v": 1}

    @flow(result_storage=str(tmp_path / "flow-store"), result_serializer="json")
    def f() -> dict[str, int]:
        return t()

    assert f() == {"v": 1}
    hit = ResultStore.resolve(str(tmp_path / "flow-store"), "json").read("inherited")
    assert hit is not None and hit.value == {"v": 1} and hit.header.serializer["type"] == "json"


def test_task_options_override_flow_defaults(tmp_path: Path) -> None:
    own = LocalFileSystem(basepath=str(tmp_path / "own"))

    @task(cache_key_fn=lambda: "mine", result_storage=own)
    def t() -> int:
        return 1

    @flow(result_storage=str(tmp_path / "flow-store"))
    def f() -> int:
        return t()

    f()
    assert (tmp_path / "own" / "mine").is_file()
    assert not (tmp_path / "flow-store" / "mine").exists()


def test_subflow_inherits_parent_result_storage(tmp_path: Path) -> None:
    @task(cache_key_fn=lambda: "deep")
    def t() -> int:
        return 1

    @flow
    def child() -> int:
        return t()

    @flow(result_storage=str(tmp_path / "parent-store"))
    def parent() -> int:
        return child()

    parent()
    assert (tmp_path / "parent-store" / "deep").is_file()


def test_persist_result_on_a_flow_writes_its_return_value(blocks_home: Path) -> None:
    @flow(persist_result=True)
    def f() -> list[int]:
        return [1, 2]

    f()
    store = ResultStore.resolve(None)
    records = [h for _, h in store.records() if h is not None and h.task == "flow:f"]
    assert len(records) == 1 and store.read(records[0].key).value == [1, 2]  # type: ignore[union-attr]
    assert str(blocks_home / "storage") in store.storage.describe()


def test_flow_log_prints_is_inherited_by_tasks(caplog: pytest.LogCaptureFixture) -> None:
    @task
    def inner() -> None:
        print("from the task")

    @task(log_prints=False)
    def opted_out() -> None:
        print("not captured")

    @flow(log_prints=True)
    def f() -> None:
        print("from the flow")
        inner()
        opted_out()

    with caplog.at_level(logging.INFO):
        f()
    assert "from the flow" in caplog.messages and "from the task" in caplog.messages
    assert "not captured" not in caplog.messages


def test_get_run_logger_in_a_flow_names_the_flow_run(caplog: pytest.LogCaptureFixture) -> None:
    @flow(name="ETL Pipeline")
    def f() -> None:
        get_run_logger().warning("careful")

    f()
    record = next(r for r in caplog.records if r.getMessage() == "careful")
    assert record.name == "blocks.flow_runs"
    assert record.flow_run_name.startswith("ETL Pipeline-")  # type: ignore[attr-defined]


def test_a_keyboard_interrupt_crashes_the_run_and_propagates() -> None:
    crashed: list[str] = []

    @task
    def interrupted() -> None:
        raise KeyboardInterrupt

    @flow(
        on_crashed=[lambda fl, run, state: crashed.append(state.name)],
        on_failure=[lambda *_: crashed.append("on_failure should not run")],
    )
    def f() -> None:
        interrupted()

    with pytest.raises(KeyboardInterrupt):
        f()
    assert crashed == ["Crashed"]


# -- flow_run_name and parameter validation ------------------------------------------------------


def test_flow_run_name_template_names_the_run_and_its_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @flow(flow_run_name="etl-{source}-{day}")
    def etl(source: str, day: int = 1) -> str:
        run = current_flow_run()
        assert run is not None
        return run.name

    with caplog.at_level(logging.INFO):
        assert etl("db", day=3) == "etl-db-3"
    assert "Beginning flow run 'etl-db-3' for flow 'etl'" in caplog.messages
    assert {getattr(r, "flow_run_name", None) for r in caplog.records} == {"etl-db-3"}


def test_flow_run_name_callable_and_bad_template_field() -> None:
    @flow(flow_run_name=lambda: "constant")
    def a() -> str:
        run = current_flow_run()
        return run.name if run else ""

    assert a() == "constant"
    with pytest.raises(ValueError, match=r"flow_run_name 'x-\{nme\}' uses \{nme\}"):

        @flow(flow_run_name="x-{nme}")
        def b(name: str) -> None: ...


def test_flow_parameters_are_validated_and_coerced_from_type_hints() -> None:
    from pydantic import BaseModel

    class Window(BaseModel):
        days: int

    seen: list[Any] = []

    @flow
    def report(  # type: ignore[no-untyped-def]  # `raw` is unannotated on purpose
        n: int,
        window: Window,
        tags: list[str] | None = None,
        raw=None,
        json: float = 0.0,
    ) -> None:
        seen.append((n, window, tags, raw, json))

    report("3", {"days": "7"}, raw="as is", json="1.5")
    assert seen == [(3, Window(days=7), None, "as is", 1.5)]
    run_params: list[dict[str, Any]] = []

    @flow
    def keeps(n: int) -> None:
        run = current_flow_run()
        assert run is not None
        run_params.append(run.parameters)

    keeps(n="4")
    assert run_params == [{"n": 4}]


def test_a_bad_parameter_fails_the_flow_before_it_starts_without_echoing_the_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from blocks.flows import ParameterTypeError

    calls: list[int] = []
    failed: list[State] = []

    @flow(retries=2, on_failure=[lambda _f, _r, s: failed.append(s)])
    def load(api_key: int, batch: int = 10) -> None:
        calls.append(1)

    with caplog.at_level(logging.INFO):
        state = load("hunter2-secret", return_state=True)
    assert state.is_failed() and calls == [] and len(failed) == 1
    exc = state.exception
    assert isinstance(exc, ParameterTypeError) and isinstance(exc, TypeError)
    assert "parameter 'api_key'" in str(exc) and "valid integer" in str(exc)
    assert exc.__cause__ is None and exc.__context__ is None
    assert "hunter2" not in caplog.text and "hunter2" not in (state.message or "")
    assert not any("Beginning flow run" in m for m in caplog.messages)
    with pytest.raises(ParameterTypeError, match="'batch'"):
        load(1, batch="many")


def test_validate_parameters_false_passes_arguments_untouched() -> None:
    @flow(validate_parameters=False)
    def raw(n: int) -> Any:
        return n

    assert raw("3") == "3"


def test_unannotated_flows_skip_validation_and_defaults_are_not_validated() -> None:
    @flow
    def f(x, limit: int = None) -> Any:  # type: ignore[assignment,no-untyped-def]  # noqa: RUF013
        return x, limit

    assert f("a") == ("a", None)
    assert f("a", "2") == ("a", 2)
