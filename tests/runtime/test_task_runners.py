"""ConcurrentTaskRunner on the process's shared threads: reused across flow runs, each run
bounded by its own max_workers, no deadlock with subflows, clean at fork and at exit."""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from blocks import flow, task
from blocks.runtime._context import current_task_run
from blocks.runtime._states import State
from blocks.runtime.runners._base import (
    SHARED_THREADS,
    ConcurrentTaskRunner,
    SequentialTaskRunner,
    SharedThreads,
)

# Runs nest here: a hang fails the test within 60 s with every thread's stack, not the suite.
pytestmark = pytest.mark.timeout(60, method="thread")


def test_flow_runs_reuse_the_same_threads() -> None:
    seen: list[set[int]] = []

    @task
    def where(i: int) -> int:
        time.sleep(0.01)
        return threading.get_ident()

    @flow(task_runner=ConcurrentTaskRunner(max_workers=4))
    def f() -> set[int]:
        return {fut.result() for fut in where.map(range(16))}

    for _ in range(30):
        seen.append(f())
    alive = SHARED_THREADS.threads()
    every = set().union(*seen)
    print(f"30 flow runs x 16 tasks: {len(every)} distinct threads, {alive} alive now")
    # A run may see more than 4 thread ids (a thread that just finished a job is not yet idle
    # when the next job starts, so a parked one takes it); its bound on concurrency is
    # `test_each_run_keeps_its_own_bound`. Here: threads are reused across runs.
    assert len(every) <= SHARED_THREADS.keep_idle + 4  # not 4 new threads per run
    assert alive <= SHARED_THREADS.keep_idle + 4


def test_each_run_keeps_its_own_bound() -> None:
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @task
    def busy(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return i

    @flow(task_runner=ConcurrentTaskRunner(max_workers=3))
    def f() -> list[int]:
        return [fut.result() for fut in busy.map(range(15))]

    assert f() == list(range(15))
    print(f"15 tasks, max_workers=3: peak concurrency {peak[0]}")
    assert peak[0] == 3


def test_tasks_running_subflows_that_submit_do_not_deadlock() -> None:
    @task
    def leaf(i: int) -> int:
        return i * 2

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def inner(i: int) -> int:
        return sum(fut.result() for fut in leaf.map([i, i + 1, i + 2]))

    @task
    def branch(i: int) -> int:
        return inner(i)

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def outer() -> list[int]:
        return [fut.result() for fut in branch.map(range(6))]

    assert outer() == [2 * (3 * i + 3) for i in range(6)]


def test_shutdown_without_wait_cancels_what_has_not_started() -> None:
    runner = ConcurrentTaskRunner(max_workers=1)
    gate = threading.Event()
    # The runner runs any callable; plain ones (not State-returning) keep this test small.
    first = runner.submit(lambda: gate.wait(10))  # type: ignore[arg-type,return-value]
    queued = [runner.submit(lambda: None) for _ in range(5)]  # type: ignore[arg-type,return-value]
    runner.shutdown(wait=False)
    assert all(f.cancelled() for f in queued)
    gate.set()
    assert first.result(timeout=10) is True  # type: ignore[comparison-overlap]  # a bool, above


def test_shutdown_with_wait_waits_for_jobs_submitted_meanwhile() -> None:
    runner = ConcurrentTaskRunner(max_workers=2)
    done: list[int] = []

    def chain(n: int) -> None:
        time.sleep(0.01)
        done.append(n)
        if n < 5:
            runner.submit(lambda: chain(n + 1))  # type: ignore[arg-type,return-value]

    runner.submit(lambda: chain(0))  # type: ignore[arg-type,return-value]
    runner.shutdown(wait=True)
    assert done == [0, 1, 2, 3, 4, 5]


def test_parked_threads_leave_after_their_idle_time() -> None:
    threads = SharedThreads(keep_idle=2, idle_seconds=0.05)
    finished = threading.Event()

    def park() -> None:
        finished.wait()

    for _ in range(4):
        threads.start(park)
    assert threads.threads() == 4
    finished.set()
    deadline = time.monotonic() + 10
    while threads.threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threads.threads() == 0 and threads.idle() == 0
    threads.close()


def test_a_job_handed_to_a_parked_thread_is_never_stranded() -> None:
    # Idle timeouts racing with hand-offs: every job must still run.
    threads = SharedThreads(keep_idle=4, idle_seconds=0.001)
    count = 200_000 if os.environ.get("BLOCKS_SOAK") == "1" else 2000
    done = threading.Semaphore(0)
    for i in range(count):
        threads.start(done.release)
        if i % 50 == 0:
            time.sleep(0.002)  # let parked threads time out now and then
    for _ in range(count):
        assert done.acquire(timeout=10)
    print(f"{count} jobs through a pool whose threads time out after 1 ms: all ran")
    threads.close()


def test_forked_child_runs_flows_with_fresh_threads() -> None:
    @task
    def double(i: int) -> int:
        return i * 2

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def f() -> list[int]:
        return [fut.result() for fut in double.map(range(8))]

    assert f() == [i * 2 for i in range(8)]  # the parent has parked threads now
    pid = os.fork()
    if pid == 0:  # the child: must not wait for the parent's threads
        code = 1
        try:
            code = 0 if f() == [i * 2 for i in range(8)] else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the forked child hung running a flow")
    assert os.waitstatus_to_exitcode(status) == 0


def test_interpreter_exits_without_waiting_for_parked_threads() -> None:
    script = textwrap.dedent(
        """
        from blocks import flow, task
        from blocks.runtime.runners._base import SHARED_THREADS

        SHARED_THREADS.idle_seconds = 3600  # parked threads must not hold the exit

        @task
        def one(i):
            return i

        @flow
        def f():
            return [fut.result() for fut in one.map(range(10))]

        assert f() == list(range(10))
        print("parked", SHARED_THREADS.idle())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("parked ") and int(done.stdout.split()[1]) >= 1


_seen_var: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


def test_plain_submits_run_on_pool_threads_in_the_flow_context_with_their_states() -> None:
    # `.submit()` of a task with no options hands the call straight to the runner
    # (`submit_plain`): it must still run on a pool thread, in a copy of the submitter's
    # context, as its own current task run, and end in the same states as the engine's.
    @task
    def where(i: int) -> tuple[int, str, bool, int]:
        run = current_task_run()
        return threading.get_ident(), _seen_var.get(), run is not None and run.task is where, i

    @task
    def fails(i: int) -> int:
        raise ValueError(f"bad {i}")

    def body() -> tuple[int, list[tuple[int, str, bool, int]], State, State]:
        _seen_var.set("flow")
        futures = [where.submit(i) for i in range(50)]
        failed = fails.submit(1)
        assert failed.wait() is not None and failed.state.is_failed()
        try:
            failed.result()
        except ValueError as exc:
            assert str(exc) == "bad 1"
        else:
            raise AssertionError("a failed run's result() must raise")
        state = where.submit(7, return_state=True)
        return threading.get_ident(), [f.result() for f in futures], failed.state, state

    threaded = flow(task_runner=ConcurrentTaskRunner(max_workers=4), name="threaded")(body)
    sequential = flow(task_runner=SequentialTaskRunner(), name="sequential")(body)
    for f, on_pool in ((threaded, True), (sequential, False)):
        flow_thread, results, failed, state = f()
        threads = {r[0] for r in results}
        print(f"{f.name}: 50 plain submits ran on {len(threads)} thread(s)")
        assert (flow_thread not in threads) is on_pool and (threads == {flow_thread}) is not on_pool
        assert [r[1:] for r in results] == [("flow", True, i) for i in range(50)]
        assert failed.is_failed() and isinstance(failed.exception, ValueError)
        assert state.is_completed() and state.result()[1:] == ("flow", True, 7)


def _pause_then(i: int) -> int:
    time.sleep(0)
    return i


def test_waiters_racing_the_lane_never_miss_a_finish() -> None:
    # A lane's worker finishes futures nobody waits on under its lock and without their
    # condition; waiters make the condition at any moment. Race them (waiters start on each
    # future as soon as it is submitted): every wait must return.
    count = 20_000 if os.environ.get("BLOCKS_SOAK") == "1" else 2000
    runner = ConcurrentTaskRunner(max_workers=3)
    futures: list[concurrent.futures.Future[Any]] = []
    called: list[int] = []
    errors: list[BaseException] = []

    def waiter(k: int) -> None:
        try:
            for i in range(k, count, 4):
                while len(futures) <= i:
                    time.sleep(0)
                future = futures[i]
                if k == 0:
                    assert future.result(timeout=10) == i
                elif k == 1:
                    done, _ = concurrent.futures.wait([future], timeout=10)
                    assert done == {future}
                elif k == 2:
                    future.add_done_callback(lambda f: called.append(f.result()))
                else:
                    assert future.exception(timeout=10) is None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for i in range(count):
        # The runner runs any callable; sleep(0) lets a waiter in while the job runs.
        job: Any = functools.partial(_pause_then, i)
        futures.append(runner.submit(job))
    for thread in threads:
        thread.join(60)
    runner.shutdown(wait=True)
    assert not errors and not any(t.is_alive() for t in threads)
    assert all(f.done() for f in futures) and [f.result() for f in futures] == list(range(count))
    assert sorted(called) == list(range(2, count, 4))
    print(f"{count} jobs, 4 kinds of waiter racing 3 workers: every wait returned")


def test_a_runner_subclass_overriding_submit_still_sees_plain_tasks() -> None:
    # Plain tasks skip `submit_task`/`submit` on the built-in runners; a subclass that
    # overrides one of them (to log, to count...) must still get every run through it.
    seen: list[str] = []

    class Counting(ConcurrentTaskRunner):
        def submit(self, fn: Any) -> concurrent.futures.Future[State]:
            seen.append("submit")
            return super().submit(fn)

    class CountingInline(SequentialTaskRunner):
        def submit_task(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[State]:
            seen.append("submit_task")
            return super().submit_task(*args, **kwargs)

    @task
    def double(i: int) -> int:
        return i * 2

    for runner, kind in ((Counting(), "submit"), (CountingInline(), "submit_task")):
        seen.clear()

        @flow(task_runner=runner)
        def f() -> list[int]:
            return [fut.result() for fut in double.map(range(5))]

        assert f() == [0, 2, 4, 6, 8] and seen == [kind] * 5
    assert ConcurrentTaskRunner._direct_plain and SequentialTaskRunner._direct_plain
