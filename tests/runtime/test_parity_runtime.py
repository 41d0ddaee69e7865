"""Prefect 3 parity of the runtime: states and futures as return values, annotations, wait_for,
NotReady, futures lists, blocking in async flows, flow retries, hooks and options.

Each test states one behaviour of Prefect 3 (read from its docs and source) and checks ours.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from blocks import Flow, Task, allow_failure, flow, opaque, quote, task, unmapped
from blocks.context import FlowRun, TaskRun
from blocks.errors import MissingResult, UpstreamFailed
from blocks.futures import PrefectFutureList, TaskFuture, TaskFutureList, wait
from blocks.states import Cancelled, Completed, Failed, State
from blocks.task_runners import SequentialTaskRunner

# Runs nest here: a hang fails the test within 60 s with every thread's stack, not the suite.
pytestmark = pytest.mark.timeout(60, method="thread")


@task
def boom() -> int:
    raise ValueError("boom")


@task
def one() -> int:
    return 1


@task
def echo(x: Any) -> Any:
    return x


@task
def states() -> list[State]:
    return [Completed(2)]


@task
def picky(x: int) -> int:
    if x == 0:
        raise ValueError("boom")
    return x


# -- 1. states and futures as return values -------------------------------------------------------


def test_a_flow_returning_a_failed_state_fails_runs_its_hooks_and_raises() -> None:
    seen: list[str] = []

    @flow(
        on_failure=[lambda f, r, s: seen.append(f"failure:{s.message}")],
        on_completion=[lambda f, r, s: seen.append("completion")],
    )
    def judged(ok: bool) -> State:
        return Completed(message="fine") if ok else Failed(message="rows missing")

    state = judged(False, return_state=True)
    assert state.is_failed() and state.message == "rows missing"
    assert seen == ["failure:rows missing"]
    with pytest.raises(UpstreamFailed, match="rows missing"):
        judged(False)
    good = judged(True, return_state=True)
    assert good.is_completed() and good.message == "fine"
    assert seen[-1] == "completion"


def test_a_returned_failed_state_keeps_its_data_and_is_retried() -> None:
    attempts: list[int] = []

    @flow(retries=2)
    def flaky() -> State:
        attempts.append(1)
        return Failed(message="not yet", data="partial") if len(attempts) < 3 else Completed(7)

    assert flaky() == 7  # type: ignore[comparison-overlap]  # a returned State gives its data
    assert len(attempts) == 3

    @flow
    def with_data() -> State:
        return Failed(message="Test returned state", data="hello!")

    state = with_data(return_state=True)
    assert state.result(raise_on_failure=False) == "hello!"  # as Prefect: the data, not raised


def test_returning_a_failed_task_state_fails_the_flow_with_that_state_as_data() -> None:
    @flow
    def f() -> State:
        return boom(return_state=True)

    state = f(return_state=True)
    assert state.is_failed()
    inner = state.result(raise_on_failure=False)
    assert isinstance(inner, State) and inner.is_failed()
    with pytest.raises(ValueError, match="boom"):
        inner.result()
    with pytest.raises(ValueError, match="boom"):
        f()


def test_returned_states_aggregate_with_prefects_message() -> None:
    @flow
    def f() -> tuple[State, State, State]:
        return boom(return_state=True), boom(return_state=True), one(return_state=True)

    state = f(return_state=True)
    assert state.is_failed() and state.message == "2/3 states failed."
    first, second, third = state.result(raise_on_failure=False)
    assert first.is_failed() and second.is_failed() and third.result() == 1


def test_return_future_waits_for_it_and_the_flow_takes_its_final_state() -> None:
    @flow
    def ok() -> TaskFuture[int]:
        return one.submit()

    state = ok(return_state=True)
    assert state.is_completed() and state.message == "All states completed."
    inner = ok()  # as Prefect: the call gives the returned futures' states
    assert isinstance(inner, State) and inner.result() == 1

    @flow
    def bad() -> TaskFuture[int]:
        return boom.submit()

    assert bad(return_state=True).is_failed()
    with pytest.raises(ValueError, match="boom"):
        bad()

    @flow
    def many() -> list[TaskFuture[int]]:
        return [one.submit(), echo.submit(5)]

    assert [s.result() for s in many()] == [1, 5]


def test_a_returned_cancelled_state_cancels_the_flow_and_runs_on_cancellation() -> None:
    seen: list[str] = []

    @flow
    def f() -> State:
        return Cancelled(message="nothing to do today")

    @f.on_cancellation
    def note(flow_: Flow[Any, Any], run: FlowRun, state: State) -> None:
        seen.append(state.name)

    state = f(return_state=True)
    assert state.is_cancelled() and state.is_final()
    assert seen == ["Cancelled"]
    with pytest.raises(UpstreamFailed, match="nothing to do today"):
        f()

    @flow
    def parent() -> State:
        return f(return_state=True)

    outer = parent(return_state=True)
    assert outer.is_cancelled() and outer.message == "1/1 states cancelled."


def test_a_task_returning_a_failed_state_fails_and_uses_its_retries() -> None:
    attempts: list[int] = []

    @task(retries=1)
    def check() -> Any:
        attempts.append(1)
        return Failed(message="bad rows") if len(attempts) == 1 else "ok"

    @flow
    def f() -> Any:
        return check()

    assert f() == "ok" and len(attempts) == 2

    @task
    def always_bad() -> State:
        return Failed(message="still bad")

    state = always_bad(return_state=True)
    assert state.is_failed() and state.message == "still bad"


# -- 2. annotations, wait_for, NotReady, futures lists, submit(return_state=True) -----------------


def test_annotations_import_from_where_prefect_users_import_them() -> None:
    import blocks.utilities.annotations as compat
    from blocks.annotations import allow_failure as af

    assert compat.allow_failure is af is allow_failure
    assert compat.quote is quote and compat.opaque is opaque and compat.unmapped is unmapped
    (value,) = quote([1, 2])  # 1-tuples, as Prefect's
    assert value == [1, 2] and repr(opaque(3)) == "opaque(3)"
    # BaseAnnotation.__new__ is typed to return the base class, which has no unquote().
    assert quote([1]).unquote() == [1]  # type: ignore[attr-defined]
    assert allow_failure(1) != quote(1)


def test_a_failed_upstream_leaves_downstream_not_ready_and_allow_failure_runs_it() -> None:
    got: dict[str, Any] = {}

    @task
    def report(x: Any) -> str:
        got["x"] = x
        return f"saw {type(x).__name__}"

    @flow
    def f() -> dict[str, State]:
        failed = boom.submit()
        blocked = report(failed, return_state=True)
        chained = echo.submit(blocked)  # downstream of a NotReady run: NotReady too
        allowed = report(allow_failure(failed), return_state=True)
        allowed_not_ready = report(allow_failure(chained), return_state=True)
        return {
            "blocked": blocked,
            "chained": chained.wait() or chained.state,
            "allowed": allowed,
            "allowed_not_ready": allowed_not_ready,
        }

    states = f(return_state=True)
    assert states.is_completed()  # a dict is not a state iterable: plain data
    s = states.result()
    assert s["blocked"].is_pending() and s["blocked"].name == "NotReady"
    assert s["chained"].name == "NotReady"
    with pytest.raises(UpstreamFailed, match="boom"):
        s["blocked"].result()
    assert s["allowed"].result() == "saw ValueError"
    assert s["allowed_not_ready"].result() == "saw NoneType"  # Prefect passes NotReady's data


def test_a_not_ready_task_runs_no_hooks() -> None:
    seen: list[str] = []

    @task(
        on_failure=[lambda t, r, s: seen.append("failure")],
        on_running=[lambda t, r, s: seen.append("running")],
    )
    def downstream(x: int) -> int:
        return x

    @flow
    def f() -> State:
        return downstream(boom.submit(), return_state=True)

    assert f(return_state=True).is_failed()  # a returned NotReady state is not completed
    assert seen == []


def test_quote_passes_a_value_unresolved_and_opaque_resolves_only_the_top() -> None:
    got: list[Any] = []

    @task
    def take(x: Any) -> None:
        got.append(x)

    @flow
    def f() -> None:
        future = one.submit()
        future.wait()
        take(quote([future]))
        nested = states.submit()
        take(opaque(nested))
        take(nested)

    f()
    assert isinstance(got[0][0], TaskFuture)  # quoted: left alone
    assert isinstance(got[1][0], State) and got[1][0].result() == 2  # opaque: top level only
    assert got[2] == [2]  # no annotation: resolved all the way down


def test_wait_for_orders_tasks_and_subflows_and_blocks_them_when_upstream_failed() -> None:
    order: list[str] = []

    @task
    def step(name: str) -> str:
        order.append(name)
        return name

    @flow
    def sub(name: str) -> str:
        order.append(f"sub:{name}")
        return name

    @flow
    def f() -> dict[str, State]:
        first = step.submit("first")
        second = step("second", wait_for=[first])
        third = step.submit("third", wait_for=[first]).result()
        subflow = sub("x", wait_for=[first], return_state=True)
        sub_with_future_arg = sub(step.submit("arg"), return_state=True)
        failed = boom.submit()
        return {
            "blocked": step("never", wait_for=[failed], return_state=True),
            "allowed": step("anyway", wait_for=[allow_failure(failed)], return_state=True),
            "submitted": step.submit("never2", wait_for=[failed], return_state=True),
            "sub_blocked": sub("never3", wait_for=[failed], return_state=True),
            "sub_arg_blocked": sub(failed, return_state=True),
            "ok": Completed((second, third, subflow.result(), sub_with_future_arg.result())),
        }

    s = f(return_state=True).result()
    assert order[0] == "first" and "never" not in order and "never2" not in order
    assert "sub:never3" not in order and "anyway" in order
    assert s["ok"].result() == ("second", "third", "x", "arg")
    for name in ("blocked", "submitted", "sub_blocked", "sub_arg_blocked"):
        assert s[name].name == "NotReady", name
    assert s["allowed"].result() == "anyway"


def test_map_returns_a_futures_list_with_wait_and_result() -> None:
    @task
    def square(x: int, extra: list[int]) -> int:
        return x * x + len(extra)

    @flow
    def f() -> tuple[list[int], bool, int]:
        futures = square.map([1, 2, 3], extra=unmapped([0]))
        assert isinstance(futures, TaskFutureList) and PrefectFutureList is TaskFutureList
        futures.wait()
        failing = picky.map([one.submit(), 0])
        failing.wait()
        with pytest.raises(ValueError, match="boom"):
            failing.result()
        errors = failing.result(raise_on_failure=False)
        done = wait(failing)
        assert echo(futures) == [2, 5, 10]  # the list as an argument resolves as a list
        return futures.result(), all(f.done() for f in futures), len(done.done) + len(errors)

    assert f() == ([2, 5, 10], True, 4)


def test_futures_list_result_times_out_with_timeout_error() -> None:
    release = threading.Event()

    @task
    def slow(_: int) -> int:
        release.wait(10)
        return 1

    @flow
    def f() -> None:
        futures = slow.map([1, 2])
        with pytest.raises(TimeoutError):
            futures.result(timeout=0.01)
        release.set()
        assert futures.result() == [1, 1]

    f()


def test_submit_with_return_state_waits_and_gives_the_state() -> None:
    @flow(task_runner=SequentialTaskRunner())
    def f() -> tuple[State, State]:
        return echo.submit(3, return_state=True), boom.submit(return_state=True)

    ok, bad = f(return_state=True).result(raise_on_failure=False)
    assert ok.result() == 3 and bad.is_failed()


# -- 3. blocking on a future inside an async flow -----------------------------------------------


def test_blocking_result_in_an_async_flow_works_as_in_prefect() -> None:
    threads: list[int] = []

    @task
    async def io(i: int) -> int:
        threads.append(threading.get_ident())
        await asyncio.sleep(0.01)
        return i * 2

    @flow
    async def main() -> list[int]:
        loop_thread = threading.get_ident()
        futures = [io.submit(i) for i in range(4)]
        values = [f.result() for f in futures]  # blocks the loop: the runs move to threads
        assert loop_thread not in threads
        mapped = io.map([5, 6])
        mapped.wait()
        return values + mapped.result() + [await io.submit(7)]

    assert asyncio.run(main()) == [0, 2, 4, 6, 10, 12, 14]


def test_blocking_on_a_run_that_already_started_on_the_loop_still_says_await() -> None:
    @task
    async def waits_for_loop() -> int:
        await asyncio.sleep(0.05)
        return 1

    @flow
    async def main() -> int:
        future = waits_for_loop.submit()
        await asyncio.sleep(0)  # let it start on the loop
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="await future"):
            future.result()
        return await future

    assert asyncio.run(main()) == 1


# -- 5. hooks and options -----------------------------------------------------------------------


def test_on_running_hooks_and_decorator_forms_for_tasks_and_flows() -> None:
    seen: list[str] = []

    @task
    def t() -> int:
        seen.append("task body")
        return 1

    @t.on_running
    def task_running(task_: Task[Any, Any], run: TaskRun, state: State) -> None:
        seen.append(f"task {state.name}")

    @t.on_completion
    def task_done(task_: Task[Any, Any], run: TaskRun, state: State) -> None:
        seen.append(f"task {state.name}")

    @flow
    def f() -> int:
        seen.append("flow body")
        return t()

    @f.on_running
    def flow_running(flow_: Flow[Any, Any], run: FlowRun, state: State) -> None:
        seen.append(f"flow {state.name}")

    @f.on_completion
    def flow_done(flow_: Flow[Any, Any], run: FlowRun, state: State) -> None:
        seen.append(f"flow {state.name}")

    assert f() == 1
    assert seen == [
        "flow Running",
        "flow body",
        "task Running",
        "task body",
        "task Completed",
        "flow Completed",
    ]
    assert task_running in t.on_running_hooks and flow_done in f.on_completion_hooks


def test_hooks_are_validated_when_declared() -> None:
    def hook(*_: Any) -> None: ...

    with pytest.raises(TypeError, match="on_completion takes a list of hooks"):
        task(on_completion=hook)(lambda: 1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="every on_failure hook must be callable"):
        flow(on_failure=["notify"])(lambda: 1)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="on_running hook must be callable"):
        one.on_running("nope")  # type: ignore[arg-type]


def test_flow_with_options_copies_the_flow_with_hooks_and_changed_options() -> None:
    seen: list[str] = []
    attempts: list[int] = []

    @flow(name="base", on_completion=[lambda f, r, s: seen.append(f.name)])
    def base(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return x

    eager = base.with_options(name="eager", retries=1)
    assert isinstance(eager, Flow) and eager.name == "eager" and eager.retries == 1
    assert base.name == "base" and base.retries == 0
    assert eager(3) == 3 and seen == ["eager"] and len(attempts) == 2
    with pytest.raises(TypeError, match="unknown option"):
        base.with_options(retires=2)


# -- 4. flow retries reuse what completed ---------------------------------------------------------


def test_a_retried_flow_reuses_persisted_task_and_subflow_results(tmp_path: Path) -> None:
    runs: dict[str, int] = {"extract": 0, "transform": 0, "plain": 0, "sub": 0, "flow": 0}

    @task(persist_result=True)
    def extract(source: str) -> dict[str, Any]:
        runs["extract"] += 1
        return {"source": source, "rows": [1, 2, 3]}

    @task(persist_result=True)
    def transform(data: dict[str, Any], attempt: int) -> int:
        runs["transform"] += 1
        rows: list[int] = data["rows"]
        return sum(rows) * attempt

    @task(persist_result=False)
    def plain() -> int:
        runs["plain"] += 1
        return 1

    @flow(persist_result=True)
    def sub(n: int) -> int:
        runs["sub"] += 1
        return n * 10

    @flow(retries=2, result_storage=str(tmp_path / "store"))
    def etl() -> tuple[int, int, int, int]:
        runs["flow"] += 1
        data = extract("db")
        again = extract.submit("api").result()  # a second call: its own place
        total = transform(data, runs["flow"])  # different arguments each attempt: reruns
        subtotal = sub(4)
        if runs["flow"] < 3:
            raise RuntimeError("the warehouse is not ready")
        return total, subtotal, plain(), len(again["rows"])

    state = etl(return_state=True)
    assert state.result() == (18, 40, 1, 3)
    # extract (2 calls) and the subflow ran once; transform's inputs changed, so it reran;
    # plain() persists nothing, so there is nothing to reuse (as Prefect without persistence).
    assert runs == {"extract": 2, "transform": 3, "plain": 1, "sub": 1, "flow": 3}
    print(f"flow attempts {runs['flow']}, extract runs {runs['extract']} (2 calls)")


def test_without_retries_nothing_is_remembered_and_each_flow_run_is_fresh() -> None:
    runs: list[int] = []

    @task(persist_result=True)
    def count() -> int:
        runs.append(1)
        return len(runs)

    @flow
    def f() -> int:
        return count()

    assert f() == 1 and f() == 2  # two flow runs never share reuse


def test_cache_result_in_memory_false_reads_the_persisted_result_back(tmp_path: Path) -> None:
    @task(persist_result=True, cache_result_in_memory=False)
    def big() -> list[int]:
        return list(range(1000))

    @flow(result_storage=str(tmp_path / "store"))
    def f() -> State:
        return big(return_state=True)

    state = f(return_state=True).result()
    assert state.data is None and state.ref is not None  # not held by the state
    assert state.result() == list(range(1000))  # read back from storage

    store, key = state.ref
    store.delete(key)
    with pytest.raises(MissingResult, match="not kept in memory"):
        state.result()

    @flow(persist_result=True, result_storage=str(tmp_path / "flows"), cache_result_in_memory=False)
    def g() -> dict[str, int]:
        return {"rows": 3}

    flow_state = g(return_state=True)
    assert flow_state.data is None and flow_state.result() == {"rows": 3}
    assert g() == {"rows": 3}


def test_async_runs_call_on_running_hooks_and_task_with_options_keeps_decorated_hooks() -> None:
    seen: list[str] = []

    @task
    async def fetch(x: int) -> int:
        return x + 1

    @fetch.on_running
    async def started(task_: Task[Any, Any], run: TaskRun, state: State) -> None:
        seen.append(f"{task_.name} {state.name}")

    renamed = fetch.with_options(name="fetch-renamed")

    @flow(on_running=[lambda f, r, s: seen.append(f"{f.name} {s.name}")])
    async def main() -> list[int]:
        return [await fetch(1), await renamed(2)]

    assert asyncio.run(main()) == [2, 3]
    assert seen == ["main Running", "fetch Running", "fetch-renamed Running"]


def test_as_completed_yields_each_future_once_as_it_finishes() -> None:
    from blocks.futures import as_completed

    @flow
    def f() -> list[int]:
        futures = echo.map([3, 1, 2])
        return sorted(fut.result() for fut in as_completed([*futures, futures[0]]))

    assert f() == [1, 2, 3]


def test_annotations_survive_pickling() -> None:
    import pickle

    import cloudpickle

    for annotation in (allow_failure([1]), quote({"a": 1}), opaque(2), unmapped((3,))):
        for dumps in (pickle.dumps, cloudpickle.dumps):
            assert pickle.loads(dumps(annotation)) == annotation
