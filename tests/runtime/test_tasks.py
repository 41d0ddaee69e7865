"""Tasks: options, retries, timeouts, hooks, log_prints, futures and caching through ResultStore."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from blocks import flow, get_run_logger, task
from blocks.errors import StorageError, TaskTimeout, UnsafePath, UpstreamFailed
from blocks.filesystems import LocalFileSystem
from blocks.results import ResultStore
from blocks.runtime.engine._attempts import retry_delay
from blocks.states import State
from blocks.task_runners import SequentialTaskRunner
from blocks.tasks import Task, exponential_backoff, task_input_hash, unmapped

# Runs nest here: a hang fails the test within 60 s with every thread's stack, not the suite.
pytestmark = pytest.mark.timeout(60, method="thread")

ROOT = Path(__file__).resolve().parents[2]

# -- definition and plain calls ------------------------------------------------------------------


def test_task_keeps_its_options_and_defaults_to_the_function_name() -> None:
    @task(name="My Task", description="d", tags=["etl", "production"], version="1.2")
    def my_task(param: str) -> str:
        return f"Result: {param}"

    @task
    def plain(x: int) -> int:
        """Doubles."""
        return 2 * x

    assert isinstance(my_task, Task)
    assert (my_task.name, my_task.description, my_task.tags, my_task.version) == (
        "My Task",
        "d",
        {"etl", "production"},
        "1.2",
    )
    assert (plain.name, plain.description) == ("plain", "Doubles.")


def test_task_called_outside_a_flow_runs_directly() -> None:
    @task
    def add(a: int, b: int = 1) -> int:
        return a + b

    assert add(2) == 3
    assert add(2, b=5) == 7


def test_return_state_gives_completed_or_failed_state() -> None:
    @task
    def ok() -> int:
        return 1

    @task
    def bad() -> int:
        raise KeyError("nope")

    state = ok(return_state=True)
    assert isinstance(state, State) and state.is_completed() and state.result() == 1
    failed = bad(return_state=True)
    assert failed.is_failed() and failed.name == "Failed" and "KeyError" in (failed.message or "")
    with pytest.raises(KeyError):
        failed.result()
    assert isinstance(failed.result(raise_on_failure=False), KeyError)


def test_a_failing_task_raises_its_own_exception() -> None:
    @task
    def bad() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        bad()


def test_with_options_copies_the_task() -> None:
    @task(retries=1, tags=["a"])
    def t() -> int:
        return 1

    other = t.with_options(retries=4, name="other")
    assert (other.retries, other.name, other.tags, t.retries) == (4, "other", {"a"}, 1)


# -- retries ---------------------------------------------------------------------------------------


def test_retries_rerun_until_success_and_count_attempts() -> None:
    attempts: list[float] = []

    @task(retries=3, retry_delay_seconds=0.02)
    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    state = flaky(return_state=True)
    assert state.result() == "ok"
    assert len(attempts) == 3
    assert all(b - a >= 0.02 for a, b in pairwise(attempts))


def test_retries_exhausted_fail_with_the_last_exception() -> None:
    calls = []

    @task(retries=2, retry_delay_seconds=0)
    def always() -> None:
        calls.append(1)
        raise RuntimeError(f"attempt {len(calls)}")

    with pytest.raises(RuntimeError, match="attempt 3"):
        always()
    assert len(calls) == 3


def test_retry_delay_list_is_used_per_retry_and_the_last_repeats() -> None:
    stamps: list[float] = []

    @task(retries=3, retry_delay_seconds=[0.01, 0.08])
    def fails() -> None:
        stamps.append(time.monotonic())
        raise RuntimeError

    fails(return_state=True)
    gaps = [b - a for a, b in pairwise(stamps)]
    assert len(gaps) == 3
    # Each wait lasts at least its delay; which delay each retry takes is checked exactly, not
    # timed (an upper bound on a wait would fail on a busy machine).
    assert gaps[0] >= 0.01 and gaps[1] >= 0.08 and gaps[2] >= 0.08
    assert [retry_delay([0.01, 0.08], n, None) for n in (1, 2, 3)] == [0.01, 0.08, 0.08]


def test_exponential_backoff_doubles_from_the_factor() -> None:
    assert exponential_backoff(backoff_factor=10)(5) == [10, 20, 40, 80, 160]

    stamps: list[float] = []

    @task(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=0.03))
    def fails() -> None:
        stamps.append(time.monotonic())
        raise RuntimeError

    assert fails.options.retry_delays == (0.03, 0.06)
    fails(return_state=True)
    assert stamps[1] - stamps[0] >= 0.03 and stamps[2] - stamps[1] >= 0.06


def test_retry_jitter_stays_within_its_factor() -> None:
    samples = [retry_delay([10.0], 1, 0.5) for _ in range(500)]
    assert all(5.0 <= s <= 15.0 for s in samples)
    assert max(samples) - min(samples) > 5  # actually spread
    assert retry_delay([1.0, 2.0], 5, None) == 2.0


# -- timeout ---------------------------------------------------------------------------------------


def test_an_overrunning_task_fails_with_task_timeout() -> None:
    finished = threading.Event()
    release = threading.Event()

    @task(timeout_seconds=0.1)
    def slow() -> None:
        release.wait(10)  # held until the caller has its answer (10 s: a hang guard)
        finished.set()

    try:
        state = slow(return_state=True)
        assert state.is_failed() and state.name == "TimedOut"
        with pytest.raises(TaskTimeout, match=r"timeout of 0\.1 second"):
            state.result()
        assert not finished.is_set()  # abandoned, still running in its thread
    finally:
        release.set()
    assert finished.wait(2)


def test_timeouts_are_retried_and_fast_bodies_pass() -> None:
    calls = []

    @task(timeout_seconds=0.2, retries=1)
    def sometimes_slow() -> int:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.5)
        return len(calls)

    assert sometimes_slow() == 2


def test_timeout_body_still_sees_its_run_logger(caplog: pytest.LogCaptureFixture) -> None:
    @task(timeout_seconds=5)
    def logs() -> None:
        get_run_logger().info("inside the timed thread")

    with caplog.at_level(logging.INFO):
        logs()
    record = next(r for r in caplog.records if r.getMessage() == "inside the timed thread")
    assert record.task_run_name.startswith("logs-")  # type: ignore[attr-defined]


# -- hooks -----------------------------------------------------------------------------------------


def test_on_failure_and_on_completion_hooks_get_task_run_and_state() -> None:
    seen: list[tuple[str, str, str]] = []

    def hook(t: Task[Any, Any], run: Any, state: State) -> None:
        seen.append((t.name, run.name.split("-")[0], state.name))

    @task(on_failure=[hook], on_completion=[hook])
    def good() -> int:
        return 1

    @task(on_failure=[hook], on_completion=[hook], retries=1)
    def bad() -> None:
        raise ValueError

    good()
    bad(return_state=True)
    assert seen == [("good", "good", "Completed"), ("bad", "bad", "Failed")]


def test_a_failing_hook_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("hook broke")

    @task(on_completion=[broken])
    def good() -> int:
        return 7

    assert good() == 7
    assert any("State hook broken failed" in r.getMessage() for r in caplog.records)


# -- logging ---------------------------------------------------------------------------------------


def test_log_prints_sends_print_to_the_run_logger(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    @task(log_prints=True)
    def chatty() -> None:
        print("Processing:", "x")

    @task
    def quiet() -> None:
        print("to stdout")

    with caplog.at_level(logging.INFO):
        chatty()
        quiet()
    messages = [r.getMessage() for r in caplog.records]
    assert "Processing: x" in messages
    assert "to stdout" not in messages
    out = capsys.readouterr().out
    assert "to stdout" in out and "Processing" not in out


def test_get_run_logger_carries_the_task_run(caplog: pytest.LogCaptureFixture) -> None:
    @task
    def logs() -> None:
        get_run_logger().info("hello %s", "there")

    @flow
    def f() -> None:
        logs()

    with caplog.at_level(logging.INFO):
        f()
    record = next(r for r in caplog.records if r.getMessage() == "hello there")
    assert record.name == "blocks.task_runs"
    assert record.task_run_name.startswith("logs-")  # type: ignore[attr-defined]
    assert record.flow_run_name.startswith("f-")  # type: ignore[attr-defined]


def test_get_run_logger_outside_a_run_is_a_plain_logger(
    recwarn: pytest.WarningsRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        get_run_logger().info("no run here")
    assert "no run here" in caplog.messages
    assert len(recwarn) == 0


# -- futures and mapping ---------------------------------------------------------------------------


def test_submit_returns_a_future_with_result_wait_and_state() -> None:
    gate = threading.Event()

    @task
    def waits() -> str:
        gate.wait(2)
        return "done"

    @flow
    def f() -> None:
        future = waits.submit()
        assert future.state.name in ("Pending", "Running")
        assert future.wait(timeout=0.01) is None
        gate.set()
        assert future.result() == "done"
        assert future.wait().is_completed()  # type: ignore[union-attr]
        assert future.state.is_completed()

    f()


def test_submit_outside_a_flow_works() -> None:
    @task
    def one() -> int:
        return 1

    assert one.submit().result() == 1


def test_futures_passed_as_arguments_are_resolved() -> None:
    @task
    def make(x: int) -> int:
        return x

    @task
    def total(values: list[int], extra: int) -> int:
        return sum(values) + extra

    @flow
    def f() -> int:
        futures = [make.submit(i) for i in range(4)]
        return total.submit(futures, extra=make.submit(10)).result()

    assert f() == 16


def test_a_failed_upstream_future_leaves_the_downstream_task_not_ready() -> None:
    @task
    def bad() -> int:
        raise ValueError("upstream broke")

    @task
    def downstream(x: int) -> int:
        return x

    states: list[State] = []

    @flow
    def f() -> None:
        states.append(downstream(bad.submit(), return_state=True))

    f()
    state = states[0]
    assert state.is_pending() and state.name == "NotReady"  # as Prefect 3: never ran
    with pytest.raises(UpstreamFailed, match="upstream broke"):
        state.result()


def test_map_submits_one_run_per_element() -> None:
    @task
    def scale(x: int, factor: int, labels: list[str]) -> tuple[int, int]:
        return x * factor, len(labels)

    @flow
    def f() -> list[tuple[int, int]]:
        return [fut.result() for fut in scale.map([1, 2, 3], factor=10, labels=unmapped(["a"]))]

    assert f() == [(10, 1), (20, 1), (30, 1)]
    with pytest.raises(ValueError, match="different lengths"):
        scale.map([1, 2], [1])


# -- caching ---------------------------------------------------------------------------------------


def test_cache_hit_returns_stored_value_without_running() -> None:
    calls: list[int] = []

    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    assert double(2) == 4
    state = double(2, return_state=True)
    assert state.is_cached() and state.name == "Cached" and state.result() == 4
    assert double(3) == 6
    assert calls == [2, 3]


def test_static_zero_argument_key_fn_shares_one_cache_entry() -> None:
    calls: list[str] = []

    @task(cache_key_fn=lambda: "static_key")
    def t(param: str) -> str:
        calls.append(param)
        return f"Result: {param}"

    assert t("a") == "Result: a"
    assert t("b") == "Result: a"
    assert calls == ["a"]


def test_key_fn_receives_context_and_parameters() -> None:
    seen: dict[str, Any] = {}

    def key(context: Any, parameters: dict[str, Any]) -> str:
        seen.update(task=context.task.name, run=context.task_run.name, params=parameters)
        return f"by-source/{parameters['source']}"

    @task(cache_key_fn=key)
    def extract(source: str, limit: int = 5) -> int:
        return limit

    extract("db")
    assert seen["task"] == "extract"
    assert seen["params"] == {"source": "db", "limit": 5}
    assert ResultStore.resolve(None).read("by-source/db").value == 5  # type: ignore[union-attr]


def test_key_fn_returning_none_disables_caching() -> None:
    calls = []

    @task(cache_key_fn=lambda ctx, params: None)
    def t() -> int:
        calls.append(1)
        return len(calls)

    assert (t(), t()) == (1, 2)


def test_unsafe_cache_key_fails_the_task() -> None:
    @task(cache_key_fn=lambda: "../../etc/passwd")
    def t() -> int:
        return 1

    with pytest.raises(UnsafePath):
        t()


def test_expired_entries_are_recomputed() -> None:
    calls = []

    # Long enough that two calls on a loaded machine fall inside it, short enough to wait out.
    @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(seconds=1.5))
    def t(x: int) -> int:
        calls.append(x)
        return len(calls)

    assert (t(1), t(1)) == (1, 1)
    time.sleep(1.6)
    assert t(1) == 2
    assert t(1) == 2


def test_refresh_cache_recomputes_and_overwrites() -> None:
    value = {"v": 1}

    @task(cache_key_fn=lambda: "refresh-me")
    def t() -> int:
        return value["v"]

    assert t() == 1
    value["v"] = 2
    assert t() == 1
    assert t.with_options(refresh_cache=True)() == 2
    assert t() == 2


def test_task_input_hash_depends_on_function_and_inputs_and_is_stable(tmp_path: Path) -> None:
    @task
    def a(x: Any) -> None: ...

    @task
    def b(x: Any) -> None:
        return print(x)

    class Ctx:
        def __init__(self, t: Task[Any, Any]) -> None:
            self.task = t

    ka = task_input_hash(Ctx(a), {"x": 1})
    assert ka == task_input_hash(Ctx(a), {"x": 1})
    assert ka != task_input_hash(Ctx(a), {"x": 2})
    assert ka != task_input_hash(Ctx(b), {"x": 1})
    # Values JSON cannot encode fall back to cloudpickle.
    assert task_input_hash(Ctx(a), {"x": {1, 2}}) == task_input_hash(Ctx(a), {"x": {1, 2}})

    script = tmp_path / "keymod.py"
    script.write_text(
        textwrap.dedent(
            """
            from blocks import task
            from blocks.tasks import task_input_hash

            @task
            def a(x):
                ...

            class Ctx:
                task = a

            print(task_input_hash(Ctx, {"x": 1, "y": [1, "two", None]}))
            """
        )
    )
    keys = {
        subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(keys) == 1 and keys.pop().startswith("a-")


def test_result_storage_as_unsaved_block(tmp_path: Path) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path / "unsaved"))

    @task(result_storage=storage, cache_key_fn=lambda: "k1")
    def t() -> dict[str, int]:
        return {"a": 1}

    assert t() == {"a": 1}
    assert (tmp_path / "unsaved" / "k1").is_file()
    assert ResultStore(storage).read("k1").value == {"a": 1}  # type: ignore[union-attr]


def test_result_storage_as_saved_block_slug(tmp_path: Path) -> None:
    LocalFileSystem(basepath=str(tmp_path / "saved")).save("results")
    calls = []

    @task(result_storage="local-file-system/results", cache_key_fn=lambda: "k2")
    def t() -> int:
        calls.append(1)
        return 5

    assert (t(), t()) == (5, 5)
    assert calls == [1]
    assert (tmp_path / "saved" / "k2").is_file()


def test_result_storage_as_path_with_json_serializer_and_key_template(tmp_path: Path) -> None:
    @task(
        result_storage=str(tmp_path / "by-path"),
        result_serializer="json",
        result_storage_key="{parameters[x]}/out.json",
    )
    def t(x: int) -> list[int]:
        return [x, x]

    assert t(3) == [3, 3]
    record = tmp_path / "by-path" / "3" / "out.json"
    assert record.is_file()
    hit = ResultStore.resolve(str(tmp_path / "by-path"), "json").read("3/out.json")
    assert hit is not None and hit.value == [3, 3] and hit.header.serializer["type"] == "json"
    assert t(3, return_state=True).is_cached()  # a storage key is also a cache key


def test_persist_result_without_key_writes_a_record_but_never_caches(tmp_path: Path) -> None:
    calls = []

    @task(persist_result=True, result_storage=str(tmp_path / "p"))
    def t() -> int:
        calls.append(1)
        return 1

    t()
    t()
    assert len(calls) == 2
    # (The lease folder stays while this process lives: `blocks.filesystems._conditional`.)
    assert len([p for p in (tmp_path / "p").iterdir() if p.name != ".blocks-leases"]) == 2


def test_persist_failure_fails_after_retries_naming_the_storage(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    calls = []

    @task(result_storage=str(blocker / "results"), cache_key_fn=lambda: "k", retries=2)
    def t() -> int:
        calls.append(1)
        return 1

    state = t(return_state=True)
    assert state.is_failed() and len(calls) == 3
    with pytest.raises(StorageError, match="not-a-dir"):
        state.result()


def test_concurrent_calls_with_one_key_compute_once() -> None:
    calls = []
    results: list[int] = []

    @task(cache_key_fn=task_input_hash)
    def slow(x: int) -> int:
        calls.append(x)
        time.sleep(0.2)
        return x * 10

    threads = [threading.Thread(target=lambda: results.append(slow(4))) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert calls == [4]
    assert results == [40] * 8


def test_two_processes_with_one_key_compute_once(tmp_path: Path) -> None:
    counter = tmp_path / "calls.txt"
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            from blocks import task
            from blocks.tasks import task_input_hash

            @task(cache_key_fn=task_input_hash, result_storage={str(tmp_path / "shared")!r})
            def expensive(x):
                with open({str(counter)!r}, "a") as fh:
                    fh.write("called\\n")
                time.sleep(0.5)
                return x * 2

            print(expensive(21))
            """
        )
    )
    procs = [
        subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["42", "42"]
    assert counter.read_text().count("called") == 1


def test_cached_tasks_work_inside_flows_with_sequential_runner() -> None:
    calls = []

    @task(cache_key_fn=task_input_hash)
    def t(x: int) -> int:
        calls.append(x)
        return x

    @flow(task_runner=SequentialTaskRunner())
    def f() -> list[int]:
        return [fut.result() for fut in t.map([1, 1, 2])]

    assert f() == [1, 1, 2]
    assert calls == [1, 2]


def test_task_timeout_error_type() -> None:
    assert issubclass(TaskTimeout, TimeoutError)


class FlakyFileSystem(LocalFileSystem):
    """Local storage whose first reads fail as if the store were unreachable."""

    _block_type_slug = "flaky-file-system-for-tests"
    failures_left: int = 2

    def open_read(self, path: str | os.PathLike[str]) -> Any:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise StorageError(f"Could not read {path!r}: {self.describe()} is unreachable")
        return super().open_read(path)


def test_storage_errors_during_lookup_are_retried(tmp_path: Path) -> None:
    storage = FlakyFileSystem(basepath=str(tmp_path / "flaky"))
    calls = []

    @task(result_storage=storage, cache_key_fn=lambda: "k", retries=2)
    def t() -> int:
        calls.append(1)
        return 9

    assert t() == 9
    assert calls == [1] and storage.failures_left == 0

    storage.failures_left = 5
    state = t.with_options(retries=1)(return_state=True)
    assert state.is_failed() and calls == [1]
    with pytest.raises(StorageError, match="unreachable"):
        state.result()


# -- task_run_name -------------------------------------------------------------------------------


def test_task_run_name_template_names_the_run_in_context_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from blocks.context import current_task_run

    @task(task_run_name="extract-{source}-{limit}")
    def extract(source: str, limit: int = 5) -> str:
        get_run_logger().info("working")
        run = current_task_run()
        assert run is not None
        return run.name

    @flow
    def f() -> list[str]:
        return [extract("db"), extract.submit("api", limit=2).result()]

    with caplog.at_level(logging.INFO):
        assert f() == ["extract-db-5", "extract-api-2"]
    names = {getattr(r, "task_run_name", None) for r in caplog.records if r.msg == "working"}
    assert names == {"extract-api-2", "extract-db-5"}


def test_task_run_name_callable_takes_nothing_or_the_parameters() -> None:
    @task(task_run_name=lambda: "fixed")
    def a(x: int) -> int:
        return x

    @task(task_run_name=lambda params: f"b-{params['x'] * 2}")
    def b(x: int) -> int:
        return x

    assert a(1, return_state=True).is_completed()
    from blocks.context import TaskRun

    seen: list[str] = []

    def hook(_t: Any, run: TaskRun, _s: State) -> None:
        seen.append(run.name)

    a.with_options(on_completion=[hook])(1)
    b.with_options(on_completion=[hook])(21)
    assert seen == ["fixed", "b-42"]


def test_task_run_name_with_an_unknown_field_is_rejected_at_decoration() -> None:
    with pytest.raises(ValueError, match=r"uses \{sorce\}, but 'sorce' is not a parameter") as info:

        @task(task_run_name="extract-{sorce}")
        def extract(source: str) -> None: ...

    assert "parameters: source" in str(info.value)
    with pytest.raises(ValueError, match="positional field"):

        @task(task_run_name="extract-{}")
        def positional(source: str) -> None: ...

    with pytest.raises(TypeError, match="string template or a callable"):
        task(task_run_name=3)(lambda: None)  # type: ignore[call-overload]


def test_a_task_run_name_that_cannot_be_rendered_fails_the_run_not_the_caller() -> None:
    calls = []

    @task(task_run_name="t-{cfg.missing}")
    def t(cfg: dict[str, int]) -> None:
        calls.append(1)

    state = t({"a": 1}, return_state=True)
    assert state.is_failed() and "task_run_name" in (state.message or "")
    assert calls == []
