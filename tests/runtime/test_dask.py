"""DaskTaskRunner on real Dask clusters: worker processes, results, failures, retries, caching,
logs, and the cluster's lifecycle. Each flow run starts (and closes) its own small LocalCluster."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("CI"):  # in CI a missing extra is a failure, not a skip
    pytest.importorskip("distributed", reason="pip install 'blocks[dask]'")

import distributed
import psutil

from blocks import allow_failure, flow, get_run_logger, task
from blocks.context import current_flow_run
from blocks.dask import DaskTaskRunner, RemoteTaskError
from blocks.errors import UpstreamFailed
from blocks.filesystems import LocalFileSystem
from blocks.futures import TaskFuture, as_completed
from blocks.states import State
from blocks.tasks import task_input_hash

# Runs nest here: a hang fails the test with every thread's stack, not the suite. 120 s, not the
# 60 s of the other runtime modules: each test starts worker processes (up to 25 s measured on
# a loaded 2-core machine).
pytestmark = pytest.mark.timeout(120, method="thread")

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"}


def local_runner(**cluster_kwargs: Any) -> DaskTaskRunner:
    return DaskTaskRunner(cluster_kwargs={**LOCAL, **cluster_kwargs})


def final(future: TaskFuture[Any]) -> State:
    state = future.wait()
    assert state is not None
    return state


# -- tasks (module level: the workers receive them pickled) --------------------------------------


class Boom(ValueError):
    pass


class Picky(Exception):
    """Cannot be unpickled: its constructor wants two arguments."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


@task
def where(i: int) -> tuple[int, int, str]:
    time.sleep(0.3)  # long enough for both workers to get work
    return i, os.getpid(), distributed.get_worker().address


@task
def double(x: int) -> int:
    return 2 * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def boom() -> None:
    raise Boom("bad input")


@task
def picky() -> None:
    raise Picky("a", "b")


@task
def count_calls(log: str) -> int:
    with open(log, "a") as f:
        f.write("x")
    return len(Path(log).read_text())


@task(retries=2, retry_delay_seconds=0)
def flaky(log: str) -> str:
    attempts = len(Path(log).read_text()) + 1 if Path(log).exists() else 1
    Path(log).write_text("x" * attempts)
    if attempts < 3:
        raise ConnectionError(f"attempt {attempts}")
    return f"ok after {attempts}"


@task(log_prints=True)
def chatty(source: str) -> str:
    get_run_logger().info("extracting %s", source)
    print(f"printed {source}")
    return source


@task
def takes_anything(value: Any) -> str:
    return type(value).__name__


# -- where tasks run -----------------------------------------------------------------------------


def test_tasks_run_in_dask_worker_processes_and_map_results_come_back_in_order() -> None:
    @flow(task_runner=local_runner())
    def fan_out() -> list[tuple[int, int, str]]:
        return [f.result() for f in where.map(range(4))]

    results = fan_out()
    assert [i for i, _, _ in results] == [0, 1, 2, 3]
    pids = {pid for _, pid, _ in results}
    assert os.getpid() not in pids
    assert len(pids) == 2  # both worker processes had work
    assert all(addr.startswith("tcp://") for _, _, addr in results)


def test_futures_passed_to_tasks_are_resolved_on_the_workers() -> None:
    @flow(task_runner=local_runner())
    def pipeline() -> tuple[int, int]:
        doubled = double.map([1, 2, 3])
        nested = total.submit([doubled[0], doubled[1]])  # futures inside a list
        return total.submit(doubled).result(), double.submit(nested).result()

    assert pipeline() == (12, 12)


def test_a_failing_task_is_failed_with_its_own_exception_and_downstream_tasks_do_not_run() -> None:
    seen: dict[str, State] = {}

    @flow(task_runner=local_runner())
    def f() -> None:
        failed = boom.submit()
        seen["boom"] = final(failed)
        seen["picky"] = final(picky.submit())
        seen["downstream"] = final(total.submit([double.submit(1), failed]))
        failed.result()

    with pytest.raises(Boom, match="bad input") as raised:
        f()
    assert seen["boom"].is_failed() and type(seen["boom"].exception) is Boom
    assert any("Raised on Dask worker tcp://" in note for note in raised.value.__notes__)
    assert seen["picky"].is_failed()
    assert isinstance(seen["picky"].exception, RemoteTaskError)
    assert "Picky: a/b" in str(seen["picky"].exception)
    assert isinstance(seen["downstream"].exception, UpstreamFailed)
    assert "Boom: bad input" in str(seen["downstream"].exception)


def test_retries_run_on_the_worker_and_their_logs_reach_the_flow_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="blocks")

    @flow(task_runner=local_runner(n_workers=1))
    def f() -> tuple[str, int]:
        future = flaky.submit(str(tmp_path / "attempts"))
        return future.result(), future.task_run.run_count

    assert f() == ("ok after 3", 3)
    retries = [r for r in caplog.records if "Attempt" in r.getMessage()]
    assert [r.getMessage().split(" failed")[0] for r in retries] == ["Attempt 1", "Attempt 2"]
    assert all(r.process != os.getpid() for r in retries)  # logged on the worker


def test_run_logger_and_log_prints_records_carry_the_task_run_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="blocks")

    @flow(task_runner=local_runner(n_workers=1))
    def f() -> str:
        future = chatty.submit("db")
        future.wait()
        return future.task_run.name

    name = f()
    mine = [r for r in caplog.records if getattr(r, "task_run_name", None) == name]
    assert [r.getMessage() for r in mine] == ["extracting db", "printed db"]
    assert all(r.name == "blocks.task_runs" for r in mine)
    assert all(getattr(r, "flow_run_name", "").startswith("f-") for r in mine)


@task
def makes_lock() -> threading.Lock:
    return threading.Lock()


def test_unpicklable_arguments_and_results_fail_the_run() -> None:
    states: list[State] = []

    @flow(task_runner=local_runner(n_workers=1))
    def f() -> None:
        states.append(final(takes_anything.submit(threading.Lock())))
        states.append(final(makes_lock.submit()))

    f()
    argument, result = states
    assert argument.is_failed() and isinstance(argument.exception, TypeError)
    assert "cannot be sent to the Dask workers: its arguments" in str(argument.exception)
    assert result.is_failed() and isinstance(result.exception, TypeError)
    assert "its result cannot be sent back" in str(result.exception)


# -- results and caching -------------------------------------------------------------------------


def test_a_cached_task_persists_on_the_worker_and_the_next_flow_run_is_a_cached_hit(
    tmp_path: Path,
) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path / "results"))
    cached = count_calls.with_options(cache_key_fn=task_input_hash, result_storage=storage)
    log = str(tmp_path / "calls")

    states: list[State] = []

    @flow(task_runner=local_runner(n_workers=1))
    def f() -> None:
        states.append(final(cached.submit(log)))

    f()
    f()
    first, second = states
    assert first.is_completed() and not first.is_cached() and first.result() == 1
    assert second.is_cached() and second.result() == 1
    assert Path(log).read_text() == "x"  # computed once, by the first flow run's worker
    records = [p for p in (tmp_path / "results").iterdir() if p.name != ".blocks-leases"]
    assert len(records) == 1  # (a worker's empty lease folder stays while it lives)


# -- lifecycle -----------------------------------------------------------------------------------


def test_the_temporary_cluster_and_its_worker_processes_end_with_the_flow_run() -> None:
    runners: list[DaskTaskRunner] = []
    template = local_runner()

    @flow(task_runner=template)
    def f() -> set[int]:
        run = current_flow_run()
        assert run is not None and isinstance(run.task_runner, DaskTaskRunner)
        runners.append(run.task_runner)
        return {pid for _, pid, _ in (fut.result() for fut in where.map(range(4)))}

    pids = f()
    (runner,) = runners
    assert runner is not template and template.client is None  # the template never starts
    assert runner.client is None and runner.cluster is None
    _, alive = psutil.wait_procs(
        [psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=5
    )
    assert not alive
    children = psutil.Process().children(recursive=True)
    assert not {c.pid for c in children} & pids


def test_an_existing_cluster_is_used_by_address_and_left_running() -> None:
    with distributed.LocalCluster(**LOCAL) as cluster:  # type: ignore[no-untyped-call]
        runner = DaskTaskRunner(address=cluster.scheduler_address)

        @flow(task_runner=runner)
        def f() -> set[str]:
            return {addr for _, _, addr in (fut.result() for fut in where.map(range(4)))}

        workers = set(cluster.scheduler_info["workers"])
        assert len(workers) == 2
        assert f() == workers  # the runner's tasks ran on this cluster's workers
        assert f() == workers  # which are still up for the next flow run
        assert set(cluster.scheduler_info["workers"]) == workers


def test_a_cluster_class_by_import_path_with_adaptive_scaling() -> None:
    runner = DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={**LOCAL, "n_workers": 0},
        adapt_kwargs={"minimum": 1, "maximum": 1},
    )

    @flow(task_runner=runner)
    def f() -> list[int]:
        return [fut.result() for fut in double.map(range(3))]

    assert f() == [0, 2, 4]


def test_a_script_without_a_main_guard_gets_told_what_to_fix(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from blocks import flow, task\n"
        "from blocks.task_runners import DaskTaskRunner\n"
        "@task\n"
        "def one() -> int:\n"
        "    return 1\n"
        "@flow(task_runner=DaskTaskRunner(cluster_kwargs={'n_workers': 1,"
        " 'dashboard_address': ':0'}))\n"
        "def f() -> int:\n"
        "    return one.submit().result()\n"
        "f()\n"  # no `if __name__ == "__main__":`
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode != 0
    assert 'a script must call its flow under `if __name__ == "__main__":`' in done.stderr


def test_thread_workers_run_tasks_in_the_flow_process() -> None:
    @flow(task_runner=local_runner(processes=False))
    def f() -> list[tuple[int, int, str]]:
        return [fut.result() for fut in where.map(range(2))]

    assert {pid for _, pid, _ in f()} == {os.getpid()}


class _History:
    """A run-history recorder (the protocol a deployment's run process installs)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, float]] = []

    def task_run(self, run: Any, state: Any, started: float) -> None:
        self.runs.append((run.name, "COMPLETED" if state is None else state.type.value, started))

    def log(self, at: float, level: str, message: str) -> None:
        pass


@pytest.mark.parametrize("processes", [True, False], ids=["process-workers", "thread-workers"])
def test_task_runs_on_dask_workers_reach_the_run_history_once_each(processes: bool) -> None:
    from blocks.runtime import _history

    @flow(task_runner=local_runner(processes=processes))
    def fan_out() -> None:
        double.map(range(3)).wait()
        boom.submit().wait()

    history = _History()
    before = time.time()
    _history.install(history)
    try:
        fan_out()
    finally:
        _history.uninstall()
    names = sorted(name.rsplit("-", 1)[0] for name, _, _ in history.runs)
    assert names == ["boom", "double", "double", "double"], history.runs
    states = sorted(state for _, state, _ in history.runs)
    assert states == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]
    assert all(before <= started <= time.time() for _, _, started in history.runs)


# -- construction --------------------------------------------------------------------------------


def test_address_and_cluster_options_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        DaskTaskRunner(address="tcp://127.0.0.1:8786", cluster_kwargs={"n_workers": 1})


def test_task_runners_reexports_dask_runner_without_importing_dask_until_asked() -> None:
    code = (
        "import sys\n"
        "import blocks, blocks.task_runners as tr\n"
        "assert 'distributed' not in sys.modules and 'blocks.dask' not in sys.modules\n"
        "from blocks.task_runners import DaskTaskRunner\n"
        "from blocks.dask import DaskTaskRunner as D\n"
        "assert DaskTaskRunner is D and 'DaskTaskRunner' in tr.__all__\n"
        "try:\n"
        "    tr.NoSuchRunner\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@task
def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_timed_out_flow_run_does_not_wait_for_its_tasks_and_they_end_crashed() -> None:
    futures: list[TaskFuture[float]] = []

    # The timeout covers starting the cluster at the first submit (seconds on a busy machine),
    # so it is generous; the task sleeps far longer than any bound below.
    @flow(timeout_seconds=15, task_runner=local_runner(n_workers=1))
    def f() -> float:
        futures.append(sleeper.submit(600))
        return futures[0].result()

    started = time.monotonic()
    state = f(return_state=True)
    assert state.name == "TimedOut"
    assert futures, "the cluster did not start within the flow's timeout"
    assert time.monotonic() - started < 120  # not the task's 600 s: the run did not wait
    assert futures[0].state.is_crashed()
    assert "flow run ended" in (futures[0].state.message or "")


def test_a_flow_retry_starts_a_fresh_cluster() -> None:
    schedulers: list[str] = []

    @flow(retries=1, task_runner=local_runner(n_workers=1))
    def f() -> int:
        run = current_flow_run()
        assert run is not None and isinstance(run.task_runner, DaskTaskRunner)
        value = double.submit(run.run_count).result()
        client = run.task_runner.client
        assert client is not None
        assert client.scheduler is not None and client.scheduler.address is not None
        schedulers.append(client.scheduler.address)
        if run.run_count == 1:
            raise Boom("first attempt")
        return value

    assert f() == 4
    assert len(set(schedulers)) == 2


def test_submit_refuses_a_callable_that_is_not_a_task_run() -> None:
    with pytest.raises(TypeError, match=r"task.submit\(\)"):
        local_runner().submit(lambda: State.__new__(State))


def test_allow_failure_reaches_the_workers_and_a_plain_failed_input_leaves_the_run_not_ready() -> (
    None
):
    @flow(task_runner=local_runner())
    def f() -> tuple[str, State, list[int]]:
        failed = boom.submit()
        allowed = takes_anything.submit(allow_failure(failed)).result()
        blocked = final(takes_anything.submit(failed))
        done = [fut.result() for fut in as_completed(double.map([1, 2]))]
        return allowed, blocked, sorted(done)

    allowed, blocked, done = f()
    assert allowed == "Boom"  # the upstream's exception, passed in on the worker
    assert blocked.name == "NotReady" and isinstance(blocked.exception, UpstreamFailed)
    assert done == [2, 4]
