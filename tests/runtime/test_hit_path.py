"""A sync cached task's hit without the engine (`run_cached`): the same state, run history
and hooks as the engine's hit; a miss keys once; a failing key fails the run as before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from blocks import flow, task
from blocks.runtime import _history
from blocks.runtime._context import TaskRun
from blocks.runtime._states import State
from blocks.runtime.engine._steps import drive
from blocks.runtime.engine._task_run import run_cached, task_steps
from blocks.transactions import transaction


class Recorded:
    """A run-history recorder keeping what it is handed (the deployment one buffers rows)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, float]] = []

    def task_run(self, run: Any, state: Any, started: float) -> None:
        self.runs.append((run.task.name, state.type.value, started))

    def log(self, at: float, level: str, message: str) -> None:
        pass


@pytest.fixture
def recorder() -> Any:
    recorded = Recorded()
    _history.install(recorded)
    yield recorded
    _history.uninstall()


def _keyed(calls: list[str]) -> Any:
    def key(ctx: Any, params: dict[str, Any]) -> str:
        calls.append("key")
        return f"k-{params['x']}"

    @task(cache_key_fn=key, cache_expiration=timedelta(hours=1), name="hitpath")
    def double(x: int) -> dict[str, int]:
        calls.append("run")
        return {"x": x * 2}

    return double


def test_a_hit_without_the_engine_is_the_engines_hit(recorder: Recorded) -> None:
    calls: list[str] = []
    double = _keyed(calls)
    assert double(3) == {"x": 6}
    assert calls == ["key", "run"], "a miss keys once and runs once"
    fast = double(3, return_state=True)
    engine = drive(task_steps(double, TaskRun(double, None, None, False), (3,), {}))
    direct = run_cached(double, TaskRun(double, None, None, False), (3,), {})
    print(f"\nstates: fast {fast!r}, engine {engine!r}, direct {direct!r}; calls {calls}")
    assert calls == ["key", "run", "key", "key", "key"], "hits never run the function"
    for state in (fast, direct):
        assert (state.type, state.name, state.message) == (engine.type, "Cached", engine.message)
        assert state.result() == engine.result() == {"x": 6}
        assert state.state_details.cache_key == engine.state_details.cache_key == "k-3"
        assert state.state_details.cache_expiration == engine.state_details.cache_expiration
        assert state.run is not None and state.run.run_count == 1 == engine.run.run_count
    assert [run[:2] for run in recorder.runs] == [
        ("hitpath", "COMPLETED"),
        ("hitpath", "COMPLETED"),
        ("hitpath", "COMPLETED"),
        ("hitpath", "COMPLETED"),
    ]
    assert all(started > 0 for *_, started in recorder.runs)


def test_hits_in_a_flow_and_a_result_not_kept_in_memory() -> None:
    calls: list[str] = []
    double = _keyed(calls).with_options(cache_result_in_memory=False)

    @flow
    def twice() -> tuple[State, State]:
        return double(4, return_state=True), double(4, return_state=True)

    first, second = twice()
    print(f"\nin a flow: {first!r} then {second!r}; calls {calls}")
    assert first.is_completed() and not first.is_cached()
    assert second.is_cached() and second.data is None  # read back from the store
    assert second.result() == {"x": 8}
    assert calls == ["key", "run", "key"]


def test_a_failing_key_fails_the_run_with_its_hooks(recorder: Recorded) -> None:
    failures: list[str] = []

    def key(ctx: Any, params: dict[str, Any]) -> str:
        raise ValueError("no key for you")

    @task(cache_key_fn=key, on_failure=[lambda t, r, s: failures.append(str(s.message))])
    def boom(x: int) -> int:
        return x

    state = boom(1, return_state=True)
    print(f"\nfailing key: {state!r}; hooks saw {failures}")
    assert state.is_failed() and failures == [state.message]
    with pytest.raises(ValueError, match="no key for you"):
        state.result()
    assert [run[1] for run in recorder.runs] == ["FAILED"]


def test_a_run_inside_a_transaction_keeps_the_engine_path() -> None:
    calls: list[str] = []
    double = _keyed(calls)
    double(5)
    with transaction():
        state = double(5, return_state=True)
    print(f"\nin a transaction: {state!r}; calls {calls}")
    assert state.is_cached() and state.result() == {"x": 10}
    assert calls == ["key", "run", "key"]
