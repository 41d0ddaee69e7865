"""Async tasks and flows: same engine as sync runs, on the event loop, with real concurrency."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from blocks import flow, get_run_logger, task
from blocks.context import FlowRun, TaskRun, current_flow_run, current_task_run
from blocks.errors import TaskTimeout
from blocks.flows import ParameterTypeError
from blocks.futures import TaskFuture
from blocks.results import ResultStore
from blocks.states import State
from blocks.task_runners import SequentialTaskRunner
from blocks.tasks import task_input_hash

# Runs nest here: a hang fails the test within 60 s with every thread's stack, not the suite.
pytestmark = pytest.mark.timeout(60, method="thread")

# -- calling -------------------------------------------------------------------------------------


def test_async_flow_and_task_run_with_asyncio_run_and_return_values_and_states() -> None:
    @task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @flow
    async def main(n: int) -> int:
        state = await double(n, return_state=True)
        assert isinstance(state, State) and state.is_completed()
        return await double(state.result()) + 1

    assert asyncio.run(main(5)) == 21
    state = asyncio.run(main(1, return_state=True))
    assert isinstance(state, State) and state.is_completed() and state.result() == 5


def test_calling_an_async_flow_or_task_returns_a_coroutine_that_runs_only_when_awaited() -> None:
    calls: list[str] = []

    @task
    async def t() -> str:
        calls.append("task")
        return "t"

    @flow
    async def f() -> str:
        calls.append("flow")
        return await t()

    coro = f()
    assert inspect.iscoroutine(coro) and calls == []
    assert asyncio.run(coro) == "t" and calls == ["flow", "task"]
    task_coro = t()
    assert inspect.isawaitable(task_coro)
    assert asyncio.run(task_coro) == "t"  # outside any flow: runs directly


def test_a_failing_async_task_raises_in_the_flow_and_fails_it() -> None:
    @task
    async def bad() -> None:
        raise ValueError("async broke")

    @flow
    async def f() -> None:
        await bad()

    with pytest.raises(ValueError, match="async broke"):
        asyncio.run(f())
    state = asyncio.run(f(return_state=True))
    assert state.is_failed() and "async broke" in (state.message or "")


def test_tasks_see_their_async_flow_run_and_sync_tasks_block_as_usual() -> None:
    seen: dict[str, Any] = {}

    @task
    def sync_step(x: int) -> int:
        seen["sync_flow"] = current_flow_run()
        time.sleep(0.01)
        return x + 1

    @task
    async def async_step(x: int) -> int:
        seen["async_flow"] = current_flow_run()
        run = current_task_run()
        seen["async_parent"] = run.parent if run else None
        return x * 10

    @flow
    async def main() -> int:
        seen["flow"] = current_flow_run()
        return await async_step(sync_step(1))

    assert asyncio.run(main()) == 20
    assert isinstance(seen["flow"], FlowRun)
    assert seen["sync_flow"] is seen["flow"] is seen["async_flow"] is seen["async_parent"]


def test_asyncio_run_of_an_async_task_inside_a_sync_flow_keeps_the_flow_run() -> None:
    seen: list[Any] = []

    @task
    async def t() -> int:
        seen.append(current_flow_run())
        return 7

    @flow
    def sync_flow() -> int:
        coro = t()
        is_coroutine = inspect.iscoroutine(coro)  # calling an async task returns an awaitable
        seen.append(current_flow_run())
        value = asyncio.run(coro)
        assert is_coroutine
        return value

    assert sync_flow() == 7
    assert seen[0] is seen[1] is not None


# -- concurrency ---------------------------------------------------------------------------------


def test_gathered_async_tasks_overlap_on_the_loop() -> None:
    # The barrier lets a task through only once all four are in flight: run in turn, the first
    # would wait alone (and time out: the 10 s is a hang guard, not a measurement).
    all_in = asyncio.Barrier(4)

    @task
    async def io(i: int) -> int:
        await asyncio.wait_for(all_in.wait(), 10)
        return i

    @flow
    async def main() -> list[int]:
        return list(await asyncio.gather(*(io(i) for i in range(4))))

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_submitted_async_tasks_run_concurrently_on_the_flow_loop_and_are_awaited() -> None:
    threads: list[int] = []
    both_in = asyncio.Barrier(2)  # passes only while both submitted runs are in flight at once

    @task
    async def io(i: int) -> int:
        threads.append(threading.get_ident())
        await asyncio.wait_for(both_in.wait(), 10)
        return i * 2

    @task
    async def add(a: int, b: int) -> int:
        return a + b

    @flow
    async def main() -> tuple[int, int, int]:
        loop_thread = threading.get_ident()
        first, second = io.submit(1), io.submit(2)
        assert isinstance(first, TaskFuture) and first.loop is asyncio.get_running_loop()
        total = add.submit(first, second)  # futures as inputs resolve on the loop
        assert threads == [] or all(t == loop_thread for t in threads)
        return await first, await second.result_async(), await total

    assert asyncio.run(main()) == (2, 4, 6)
    assert len(set(threads)) == 1  # both on the flow's loop thread


def test_an_async_flow_waits_for_submitted_tasks_it_did_not_await() -> None:
    finished: list[int] = []

    @task
    async def slow(i: int) -> None:
        await asyncio.sleep(0.05)
        finished.append(i)

    @flow
    async def main() -> str:
        slow.submit(1)
        slow.map([2, 3])
        return "returned"

    assert asyncio.run(main()) == "returned"
    assert sorted(finished) == [1, 2, 3]


def test_async_task_submitted_from_a_sync_flow_runs_on_a_worker_loop() -> None:
    threads: list[int] = []
    # The three mapped runs pass only together: the thread pool ran them side by side.
    all_in = threading.Barrier(3, timeout=10)

    @task
    async def io(i: int) -> int:
        threads.append(threading.get_ident())
        asyncio.get_running_loop()  # a loop of its own
        if i < 10:
            await asyncio.to_thread(all_in.wait)  # BrokenBarrierError if they ran in turn
        return i + 1

    @flow
    def sync_flow() -> list[int]:
        futures = io.map([1, 2, 3])
        return [f.result() for f in futures]

    assert sync_flow() == [2, 3, 4]
    assert threading.get_ident() not in threads

    @flow(task_runner=SequentialTaskRunner())
    def sequential() -> int:
        return io.submit(10).result()

    assert sequential() == 11


# -- the engine: retries, timeouts, caching, hooks, logs -----------------------------------------


def test_async_retries_wait_with_asyncio_sleep_without_blocking_the_loop() -> None:
    attempts: list[float] = []
    ticks: list[float] = []

    @task(retries=2, retry_delay_seconds=0.1)
    async def flaky() -> str:
        attempts.append(time.perf_counter())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    async def ticker() -> None:
        for _ in range(10):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    @flow
    async def main() -> tuple[str, bool]:
        state, _ = await asyncio.gather(flaky(return_state=True), ticker())
        return state.result(), state.is_completed()

    assert asyncio.run(main()) == ("ok", True)
    assert len(attempts) == 3
    assert all(b - a >= 0.09 for a, b in pairwise(attempts))
    # The ticker kept ticking during the retry delays: the loop was never blocked.
    assert len([t for t in ticks if attempts[0] < t < attempts[1]]) >= 3


def test_async_retries_exhausted_fail_with_the_last_error_and_count_attempts() -> None:
    runs: list[TaskRun] = []

    @task(retries=1, retry_delay_seconds=0)
    async def bad() -> None:
        run = current_task_run()
        assert run is not None
        runs.append(run)
        raise KeyError(f"attempt {run.run_count}")

    state = asyncio.run(bad(return_state=True))
    assert state.is_failed() and "attempt 2" in (state.message or "")
    assert runs[0] is runs[1] and runs[0].run_count == 2


def test_async_task_timeout_cancels_the_body_and_times_out() -> None:
    cancelled: list[bool] = []

    @task(timeout_seconds=0.05)
    async def hang() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    @task(timeout_seconds=1)
    async def own_timeout() -> None:
        raise TimeoutError("the body's own")

    states: list[State] = []

    @flow
    async def main() -> None:  # (a flow's return value has its states resolved: keep them aside)
        states.append(await hang(return_state=True))
        states.append(await own_timeout(return_state=True))

    asyncio.run(main())
    timed_out, own = states
    assert timed_out.is_failed() and timed_out.name == "TimedOut"
    assert isinstance(timed_out.exception, TaskTimeout) and "0.05 second" in str(
        timed_out.exception
    )
    assert cancelled == [True]  # the 5 s sleep was cut short, not waited out
    assert own.name == "Failed" and not isinstance(own.exception, TaskTimeout)


def test_async_flow_timeout_and_retries() -> None:
    attempts: list[int] = []

    cancelled: list[str] = []

    @task
    async def background() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append("background")
            raise

    @flow(timeout_seconds=0.05)
    async def hangs() -> None:
        background.submit()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append("flow")
            raise

    @flow(retries=1, retry_delay_seconds=0.01)
    async def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first")
        return len(attempts)

    state = asyncio.run(hangs(return_state=True))
    assert state.name == "TimedOut" and isinstance(state.exception, TaskTimeout)
    # The body's 5 s sleep was cut short, and what it submitted is cancelled too.
    assert sorted(cancelled) == ["background", "flow"]
    assert asyncio.run(flaky()) == 2


def test_async_cached_task_hits_on_a_second_run_and_reads_off_the_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    io_threads: list[int] = []
    original_read = ResultStore.read

    def spy_read(self: ResultStore, key: str) -> Any:
        io_threads.append(threading.get_ident())
        return original_read(self, key)

    monkeypatch.setattr(ResultStore, "read", spy_read)

    @task(cache_key_fn=task_input_hash, result_storage=str(tmp_path / "results"))
    async def expensive(x: int) -> dict[str, int]:
        calls.append(x)
        return {"x": x}

    states: list[State] = []

    @flow
    async def main() -> int:
        states.append(await expensive(3, return_state=True))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    asyncio.run(main())
    first, second = states
    assert first.is_completed() and not first.is_cached()
    assert second.is_cached() and second.result() == {"x": 3}
    assert calls == [3]
    assert io_threads and loop_thread not in io_threads
    assert any((tmp_path / "results").iterdir())


def test_concurrent_async_calls_with_one_cache_key_compute_once() -> None:
    calls: list[int] = []

    @task(cache_key_fn=lambda: "one-key")
    async def slow() -> int:
        calls.append(1)
        await asyncio.sleep(0.1)
        return 42

    states: list[State] = []

    @flow
    async def main() -> None:
        states.extend(await asyncio.gather(*(slow(return_state=True) for _ in range(40))))

    asyncio.run(main())
    assert [s.result() for s in states] == [42] * 40
    assert calls == [1]
    assert sum(s.is_cached() for s in states) == 39


def test_async_hooks_log_prints_and_run_names(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def async_hook(_t: Any, run: TaskRun, state: State) -> None:
        await asyncio.sleep(0)
        seen.append(f"async {run.name} {state.name}")

    def sync_hook(_t: Any, run: TaskRun, state: State) -> None:
        seen.append(f"sync {run.name} {state.name}")

    @task(
        task_run_name="load-{table}",
        log_prints=True,
        on_completion=[sync_hook, async_hook],
        on_failure=[async_hook],
    )
    async def load(table: str) -> None:
        print(f"loading {table}")
        get_run_logger().info("logged")
        if table == "bad":
            raise ValueError("no such table")

    @flow(flow_run_name="nightly-{day}")
    async def nightly(day: str) -> None:
        await load("users")
        await load("bad", return_state=True)

    with caplog.at_level(logging.INFO):
        asyncio.run(nightly("mon"))
    assert seen == [
        "sync load-users Completed",
        "async load-users Completed",
        "async load-bad Failed",
    ]
    printed = next(r for r in caplog.records if r.getMessage() == "loading users")
    assert printed.task_run_name == "load-users"  # type: ignore[attr-defined]
    assert printed.flow_run_name == "nightly-mon"  # type: ignore[attr-defined]
    assert "Beginning flow run 'nightly-mon' for flow 'nightly'" in caplog.messages


def test_async_flow_validates_parameters_before_starting() -> None:
    ran: list[int] = []

    @flow
    async def main(n: int) -> int:
        ran.append(n)
        return n

    assert asyncio.run(main("5")) == 5
    state = asyncio.run(main("five", return_state=True))
    assert isinstance(state.exception, ParameterTypeError) and "'n'" in str(state.exception)
    assert ran == [5]


def test_async_subflow_is_a_child_run_of_the_async_flow() -> None:
    runs: dict[str, FlowRun | None] = {}

    @flow
    async def child() -> int:
        runs["child"] = current_flow_run()
        return 1

    @flow
    async def parent() -> int:
        runs["parent"] = current_flow_run()
        return await child() + 1

    assert asyncio.run(parent()) == 2
    child_run, parent_run = runs["child"], runs["parent"]
    assert child_run is not None and child_run is not parent_run
    assert child_run.parent is parent_run


# -- nested runs that used to deadlock the flow's loop and its worker threads (#22) --------------


def test_an_async_task_submitted_from_a_submitted_async_task_finishes() -> None:
    # Prefect's test_nested_submitted_async_task_that_also_is_submitted. The flow's loop
    # blocks on the outer run, which moves to a thread; the inner run it submits from there
    # used to be queued on the blocked loop.
    threads: dict[str, int] = {}

    @task
    async def inner_task() -> int:
        threads["inner"] = threading.get_ident()
        return 42

    @task
    async def outer_task() -> int:
        threads["outer"] = threading.get_ident()
        future = inner_task.submit()
        return future.result()

    @flow
    async def my_flow() -> int:
        threads["flow"] = threading.get_ident()
        future = outer_task.submit()
        return future.result()

    assert asyncio.run(my_flow()) == 42
    print(f"threads: flow {threads['flow']}, outer {threads['outer']}, inner {threads['inner']}")
    assert threads["outer"] != threads["flow"] and threads["inner"] != threads["flow"]


def test_an_async_task_waiting_for_another_inside_a_nested_async_run_finishes() -> None:
    # Prefect's test_nested_async_wait_for.
    @task
    async def inner_task(x: int) -> int:
        return x * 2

    @task
    async def outer_task(x: int, y: int) -> int:
        future = inner_task.submit(x)
        return future.result() + y

    @flow
    async def my_flow() -> int:
        f1 = inner_task.submit(2)
        f2 = outer_task.submit(3, 4, wait_for=[f1])
        return f2.result()

    assert asyncio.run(my_flow()) == 10


def test_a_sync_run_blocking_on_an_async_run_queued_on_the_loop_gets_it_moved() -> None:
    # The loop's thread blocks on a sync run (not a loop run) whose argument is queued on
    # the loop: every blocking wait there hands the loop's queued runs to threads.
    @task
    async def up() -> int:
        return 1

    @task
    def down(x: int) -> int:
        return x + 1

    @task
    def submits_async() -> int:
        return up.submit().result() + 10  # from a worker thread: the runner runs it

    @flow
    async def main() -> tuple[int, int]:
        return down.submit(up.submit()).result(), submits_async.submit().result()

    assert asyncio.run(main()) == (2, 11)


def test_blocking_on_a_run_that_waits_for_one_started_on_the_loop_says_await() -> None:
    # A run that started on the loop cannot move; one that waits for it (wait_for or an
    # argument) could never finish while the loop blocks: refused at once, not a hang.
    @task
    async def slow() -> int:
        await asyncio.sleep(0.05)
        return 1

    @task
    def down(x: int) -> int:
        return x + 1

    @task
    async def after() -> int:
        return 5

    @flow
    async def main() -> tuple[int, int]:
        first = slow.submit()
        await asyncio.sleep(0.01)  # it starts on the loop
        by_argument, by_wait = down.submit(first), after.submit(wait_for=[first])
        for future in (by_argument, by_wait):
            with pytest.raises(RuntimeError, match=r"waits for task run 'slow-.*await future"):
                future.result()
        return await by_argument, await by_wait

    assert asyncio.run(main()) == (2, 5)
