"""Prefect 3 parity, second round: validation, state and run details, settings with Prefect's
meaning, and the runner and future surface.

Each test states one behaviour of Prefect 3 (read from its docs, docstrings and tests) and
checks ours; where we differ on purpose the README's differences table says why.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

from blocks import flow, task
from blocks.context import TaskRun, current_flow_run
from blocks.errors import (
    ConfigurationError,
    InvalidName,
    InvalidNameError,
    OptionTypeError,
    ReservedArgumentError,
)
from blocks.futures import (
    TaskFuture,
    TaskFutureList,
    resolve_futures_to_results,
    resolve_futures_to_states,
)
from blocks.states import Completed, State, StateDetails
from blocks.system import Secret
from blocks.task_runners import ConcurrentTaskRunner, SequentialTaskRunner, TaskRunner
from blocks.tasks import exponential_backoff, unmapped

pytestmark = pytest.mark.timeout(60)


# -- validation as Prefect does it -----------------------------------------------------------------


@pytest.mark.parametrize("char", ["/", "%", "&", "<", ">"])
def test_a_flow_name_with_a_character_prefect_refuses_is_refused_at_decoration(char: str) -> None:
    with pytest.raises(InvalidNameError, match="must not contain") as info:
        flow(name=f"etl{char}nightly")(lambda: None)
    # Prefect's InvalidNameError is a ValueError; ours is also our own InvalidName.
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidName)
    with pytest.raises(InvalidNameError):
        flow(name="etl")(lambda: None).with_options(name=f"a{char}b")
    print(f"refused {char!r} in a flow name, at decoration and in with_options")


def test_flow_names_prefect_accepts_still_work() -> None:
    # Spaces, colons, dots, dashes, unicode and the default name of a lambda ("<lambda>").
    for name in ["ETL Pipeline", "etl:v2", "my.flow", "데이터-파이프라인"]:
        assert flow(name=name)(lambda: 1)() == 1
    assert flow(lambda: 2)() == 2


@pytest.mark.parametrize("reserved", ["wait_for", "return_state"])
@pytest.mark.parametrize("decorator", [task, flow])
def test_a_parameter_named_like_a_call_keyword_is_refused(reserved: str, decorator: Any) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def fn(x, {reserved}=None):\n    return x", namespace)
    with pytest.raises(ReservedArgumentError, match=f"'{reserved}' is a reserved argument") as info:
        decorator(namespace["fn"])
    assert isinstance(info.value, TypeError)  # as Prefect's ReservedArgumentError


def test_more_than_fifty_retry_delays_are_refused_at_decoration() -> None:
    with pytest.raises(ConfigurationError, match="more than 50 retry delays"):
        task(retries=51, retry_delay_seconds=list(range(51)))(lambda: None)
    assert task(retries=50, retry_delay_seconds=list(range(50)))(lambda: 1)() == 1
    # exponential_backoff stops at 50 delays, as Prefect's, so any retries count is fine.
    backoff = task(retries=100, retry_delay_seconds=exponential_backoff(1))(lambda: 1)
    assert len(backoff.options.retry_delays) == 50


def test_a_negative_retry_jitter_factor_is_refused_at_decoration() -> None:
    with pytest.raises(ConfigurationError, match="retry_jitter_factor must be >= 0"):
        task(retries=1, retry_jitter_factor=-0.5)(lambda: None)
    assert task(retry_jitter_factor=0)(lambda: 3)() == 3


class _NotARunName:
    def format(self, *args: Any, **kwargs: Any) -> str:
        return "looks like a template"


def test_a_task_run_name_of_the_wrong_kind_set_after_decoration_fails_the_run() -> None:
    with pytest.raises(OptionTypeError, match="Expected string or callable for 'task_run_name'"):
        task(task_run_name=_NotARunName())(lambda: None)  # type: ignore[call-overload]

    @task
    def my_task() -> int:
        return 1

    @flow
    def my_flow() -> int:
        return my_task()

    my_task.task_run_name = _NotARunName()  # as Prefect's tests do
    assert my_task.options.task_run_name is my_task.task_run_name
    with pytest.raises(TypeError, match="Expected string or callable for 'task_run_name'; got"):
        my_flow()


def test_a_flow_run_name_of_the_wrong_kind_set_after_decoration_fails_the_run() -> None:
    @flow
    def my_flow() -> None:
        pass

    my_flow.flow_run_name = _NotARunName()
    with pytest.raises(TypeError, match="Expected string or callable for 'flow_run_name'; got"):
        my_flow()
    my_flow.flow_run_name = "nightly"
    assert my_flow(return_state=True).run.name == "nightly"


def test_options_set_as_attributes_are_validated_and_used() -> None:
    calls: list[int] = []

    @task
    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")
        return len(calls)

    flaky.retries = 2
    assert flaky() == 3 and flaky.options.retries == 2
    with pytest.raises(ConfigurationError, match="retries must be 0 or more"):
        flaky.retries = -1
    assert flaky.options.retries == 2  # the bad value did not stick


# -- state and run details ----------------------------------------------------------------------


def test_state_details_name_the_flow_run_and_task_run_of_a_state() -> None:
    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def pipeline() -> tuple[State, State]:
        return double(1, return_state=True), double.submit(3, return_state=True)

    flow_state = pipeline(return_state=True)
    called, submitted = flow_state.result()
    flow_run_id = flow_state.state_details.flow_run_id
    assert flow_run_id == flow_state.run.id and flow_state.state_details.task_run_id is None
    for state in (called, submitted):
        details = state.state_details
        assert details.flow_run_id == flow_run_id
        assert details.task_run_id == state.run.id != flow_run_id
        assert details.cache_key is None and details.scheduled_time is None
    outside = double(4, return_state=True).state_details
    assert outside.flow_run_id is None and outside.task_run_id is not None
    assert Completed(1).state_details == StateDetails()
    print(f"flow run {flow_run_id}: task runs {called.run.id}, {submitted.run.id}")


def test_state_details_show_the_cache_key_and_expiration_of_a_persisted_result() -> None:
    @task(cache_key_fn=lambda: "static-key", cache_expiration=timedelta(hours=1))
    def cached() -> int:
        return 7

    before = datetime.now(UTC)
    first = cached(return_state=True)
    second = cached(return_state=True)
    assert second.is_cached()
    for state in (first, second):
        details = state.state_details
        assert details.cache_key is not None and details.cache_key.endswith("static-key")
        assert details.cache_expiration is not None
        assert before + timedelta(minutes=59) < details.cache_expiration
        assert details.cache_expiration < datetime.now(UTC) + timedelta(hours=1, minutes=1)
    # The hit shows the expiration the record was written with.
    assert second.state_details.cache_expiration == first.state_details.cache_expiration

    @task(persist_result=True)
    def forever() -> int:
        return 1

    details = forever(return_state=True).state_details
    assert details.cache_key is not None and details.cache_expiration is None
    print(f"cache key {first.state_details.cache_key}")


def test_a_cache_key_fn_reads_the_flow_run_id_from_its_context() -> None:
    seen: list[str | None] = []

    def per_flow_run(context: Any, parameters: dict[str, Any]) -> str:
        seen.append(context.task_run.flow_run_id)
        return f"{context.task_run.flow_run_id}-{parameters['x']}"

    calls: list[int] = []

    @task(cache_key_fn=per_flow_run)
    def work(x: int) -> int:
        calls.append(x)
        return x

    @flow
    def pipeline() -> str:
        work(1)
        work(1)  # same flow run: a hit
        return current_flow_run().id  # type: ignore[union-attr]

    first, second = pipeline(), pipeline()
    assert seen == [first, first, second, second] and first != second
    assert calls == [1, 1]  # computed once per flow run
    assert TaskRun(work, None, None, False).flow_run_id is None


def test_task_key_is_the_function_name_and_a_digest_of_its_code() -> None:
    def extract(x: int) -> int:
        return x

    def extract_other(x: int) -> int:
        return x + 1

    key = task(extract).task_key
    assert key.startswith("extract-") and len(key) == len("extract-") + 8
    assert task(name="renamed")(extract).task_key == key  # the name does not matter
    assert task(extract).with_options(retries=2).task_key == key
    assert task(extract_other).task_key.split("-")[1] != key.split("-")[1]

    class Funky:
        def __call__(self, x: int) -> int:
            return x

    assert task(Funky()).task_key.startswith("Funky-")


def test_source_code_of_a_task_is_its_source_or_none() -> None:
    def extract(x: int) -> int:
        return x

    assert task(extract).source_code == "    def extract(x: int) -> int:\n        return x\n"
    namespace: dict[str, Any] = {}
    exec("def made(x):\n    return x", namespace)
    assert task(namespace["made"]).source_code is None


def test_serialize_parameters_gives_json_values_and_masks_secrets() -> None:
    @task
    def one() -> int:
        return 1

    @flow
    def pipeline(**kwargs: Any) -> None:
        pass

    @flow
    def submitter() -> dict[str, Any]:
        future = one.submit()
        future.wait()
        return pipeline.serialize_parameters({"future": future, "state": future.state})

    parameters = {
        "day": date(2024, 1, 2),
        "when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "id": uuid.UUID(int=1),
        "ratio": 0.5,
        "path": Path("/data/in.csv"),
        "items": (1, 2),
        "secret": Secret(value="s3cr3t-value"),
        "token": pydantic.SecretStr("hunter2"),
        "lock": threading.Lock(),
    }
    serialized = pipeline.serialize_parameters(parameters)
    assert serialized["day"] == "2024-01-02"
    assert serialized["when"] == "2024-01-02T03:04:05Z"
    assert serialized["id"] == "00000000-0000-0000-0000-000000000001"
    assert serialized["ratio"] == 0.5 and serialized["path"] == "/data/in.csv"
    assert serialized["items"] == [1, 2]
    assert serialized["token"] == "**********"
    assert serialized["lock"] == "<lock>"
    text = json.dumps(serialized)
    assert "s3cr3t-value" not in text and "hunter2" not in text
    assert submitter() == {"future": "<TaskFuture>", "state": "<State>"}
    print(f"serialized: {text}")


def test_aresult_reads_a_stored_result_without_blocking_the_loop() -> None:
    @task(persist_result=True, cache_result_in_memory=False)
    async def stored(x: int) -> int:
        return x * 3

    @task
    async def plain(x: int) -> int:
        return x

    @task
    async def broken() -> int:
        raise ValueError("no")

    async def main() -> None:
        state = await stored(2, return_state=True)
        assert state.data is None and state.ref is not None  # not in memory: read back
        assert await state.aresult() == 6
        assert await (await plain(5, return_state=True)).aresult() == 5
        failed = await broken(return_state=True)
        with pytest.raises(ValueError, match="no"):
            await failed.aresult()
        assert isinstance(await failed.aresult(raise_on_failure=False), ValueError)

    asyncio.run(main())


# -- settings with Prefect's meaning --------------------------------------------------------------


def test_default_retries_and_delays_come_from_the_environment_at_decoration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLOCKS_TASK_DEFAULT_RETRIES", "2")
    monkeypatch.setenv("BLOCKS_TASK_DEFAULT_RETRY_DELAY_SECONDS", "0,0.01")
    monkeypatch.setenv("BLOCKS_FLOW_DEFAULT_RETRIES", "1")
    monkeypatch.setenv("BLOCKS_FLOW_DEFAULT_RETRY_DELAY_SECONDS", "0")
    calls: list[str] = []

    @task
    def flaky() -> int:
        calls.append("task")
        if calls.count("task") < 3:
            raise ValueError("not yet")
        return 3

    @flow
    def once_failing() -> str:
        calls.append("flow")
        if calls.count("flow") < 2:
            raise ValueError("first attempt")
        return "done"

    assert flaky.retries == 2 and flaky.options.retry_delays == (0.0, 0.01)
    assert flaky() == 3 and calls.count("task") == 3
    assert once_failing.retries == 1 and once_failing() == "done"
    # What a task or flow says wins, 0 included (as in Prefect: the setting fills None).
    assert task(retries=0)(lambda: 1).retries == 0
    assert flow(retries=0)(lambda: 1).retries == 0
    print(f"runs: {calls}")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BLOCKS_TASK_DEFAULT_RETRIES", "-1"),
        ("BLOCKS_FLOW_DEFAULT_RETRIES", "three"),
        ("BLOCKS_TASK_DEFAULT_RETRY_DELAY_SECONDS", "1,-5"),
        ("BLOCKS_FLOW_DEFAULT_RETRY_DELAY_SECONDS", "nan"),
        ("BLOCKS_TASKS_REFRESH_CACHE", "maybe"),
    ],
)
def test_a_bad_default_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        task(lambda: 1)


def test_refresh_cache_for_every_task_recomputes_cached_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def compute(x: int) -> int:
        calls.append(x)
        return x

    cached = task(cache_key_fn=lambda: "the-key")(compute)
    assert cached(1) == 1 and cached(2) == 1  # a hit: 2 never ran
    monkeypatch.setenv("BLOCKS_TASKS_REFRESH_CACHE", "true")
    refreshing = task(cache_key_fn=lambda: "the-key")(compute)
    assert refreshing.refresh_cache is True
    assert refreshing(3) == 3 and cached(4) == 3  # recomputed, and overwritten for all
    assert calls == [1, 3]


def test_no_cache_by_default_turns_the_default_policy_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.cache_policies import DEFAULT, NO_CACHE

    calls: list[int] = []

    def compute(x: int) -> int:
        calls.append(x)
        return x

    assert task(persist_result=True)(compute).cache_policy == DEFAULT
    monkeypatch.setenv("BLOCKS_TASKS_DEFAULT_NO_CACHE", "1")
    uncached = task(persist_result=True)(compute)
    assert uncached.cache_policy == NO_CACHE
    assert uncached(1) == 1 and uncached(1) == 1 and calls == [1, 1]  # persisted, not looked up
    # A policy or key function given still caches.
    assert task(cache_policy=DEFAULT)(compute).cache_policy == DEFAULT
    keyed = task(cache_key_fn=lambda: "k")(compute)
    assert keyed(2) == 2 and keyed(3) == 2


def test_persist_by_default_persists_results_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @task
    def before(x: int) -> int:
        return x

    @flow
    def pipeline() -> tuple[State, State]:
        return before(1, return_state=True), opted_out(2, return_state=True)

    assert before(1, return_state=True).state_details.cache_key is None
    monkeypatch.setenv("BLOCKS_RESULTS_PERSIST_BY_DEFAULT", "yes")

    @task
    def outside(x: int) -> int:
        return x

    @task(persist_result=False)
    def opted_out(x: int) -> int:
        return x

    # Outside a flow: read when the task is decorated.
    assert outside(1, return_state=True).state_details.cache_key is not None
    assert outside.submit(1, return_state=True).state_details.cache_key is not None
    # In a flow: read when the run starts, so the older task persists too.
    persisted, not_persisted = pipeline()
    assert persisted.state_details.cache_key is not None
    assert not_persisted.state_details.cache_key is None
    assert pipeline.with_options(persist_result=False)()[0].state_details.cache_key is None


# -- Prefect's runner and future surface -----------------------------------------------------------


@task
def double(x: int) -> int:
    return 2 * x


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def failing(x: int) -> int:
    raise ValueError(f"bad {x}")


@pytest.mark.parametrize("runner_class", [ConcurrentTaskRunner, SequentialTaskRunner])
def test_a_runner_takes_prefects_submit_and_map_calls(runner_class: type[TaskRunner]) -> None:
    # Typed as Any: type checkers see our own submit(fn); Prefect's form is added at run time.
    runner: Any
    with runner_class() as runner:
        future = runner.submit(double, parameters={"x": 21})
        assert isinstance(future, TaskFuture) and future.result() == 42
        positional = runner.submit(add, {"x": 1, "y": 2}, [future], [])
        assert positional.result() == 3
        mapped = runner.map(double, parameters={"x": [1, 2, 3]})
        assert isinstance(mapped, TaskFutureList) and mapped.result() == [2, 4, 6]
        static = runner.map(add, {"x": range(3), "y": unmapped([10])})
        with pytest.raises(TypeError):
            static.result()  # [10] + int: the list went whole to every run
        assert runner.map(add, {"x": (1, 2), "y": 5}).result() == [6, 7]
        upstream = runner.submit(failing, parameters={"x": 1})
        blocked = runner.submit(double, parameters={"x": 1}, wait_for=[upstream])
        assert blocked.wait() is not None and blocked.state.name == "NotReady"
        with pytest.raises(ConfigurationError, match="different lengths"):
            runner.map(add, {"x": [1, 2], "y": [1]})
        with pytest.raises(ConfigurationError, match="at least one iterable"):
            runner.map(add, {"x": 1, "y": 2})
        with pytest.raises(ConfigurationError, match="takes a task"):
            runner.submit(print, parameters={"x": 1})


def test_prefect_calls_inside_a_flow_run_under_the_flow_run() -> None:
    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def pipeline() -> tuple[list[int], str | None, str]:
        runner: Any = current_flow_run().task_runner  # type: ignore[union-attr]
        futures = runner.map(double, {"x": [1, 2, 3]})
        return futures.result(), futures[0].state.state_details.flow_run_id, current_flow_run().id  # type: ignore[union-attr]

    values, run_of_task, flow_run_id = pipeline()
    assert values == [2, 4, 6] and run_of_task == flow_run_id


def test_our_own_submissions_still_go_straight_to_the_runner() -> None:
    # A runner written as ours (submit(fn)) keeps working, and sees only prepared calls.
    seen: list[str] = []

    class Recording(SequentialTaskRunner):
        def submit(self, fn: Any) -> Any:
            seen.append(type(fn).__name__)
            return super().submit(fn)

    @task(retries=1)
    def work(x: int) -> int:
        return x

    @flow(task_runner=Recording())
    def pipeline() -> list[int]:
        return work.map([1, 2]).result()

    assert pipeline() == [1, 2] and seen and "Task" not in seen
    recording: Any = Recording()
    assert recording.submit(work, parameters={"x": 5}).result() == 5


def test_dask_task_runners_compare_by_settings_and_duplicate_to_an_equal_one() -> None:
    pytest.importorskip("distributed")
    from blocks.dask import DaskTaskRunner

    one = DaskTaskRunner(cluster_kwargs={"n_workers": 2}, client_kwargs={"set_as_default": False})
    same_settings = DaskTaskRunner(
        cluster_kwargs={"n_workers": 2}, client_kwargs={"set_as_default": False}
    )
    copy = one.duplicate()
    assert one == same_settings == copy and copy is not one
    assert one != DaskTaskRunner(cluster_kwargs={"n_workers": 3})
    assert one != DaskTaskRunner(address="tcp://127.0.0.1:8786")
    assert one != ConcurrentTaskRunner()
    with pytest.raises(TypeError):
        hash(one)  # equal by mutable settings: not hashable, as Prefect's


def test_resolve_futures_to_states_and_results_at_any_depth() -> None:
    @flow
    def pipeline() -> tuple[Any, Any, Any]:
        futures = {
            "a": [double.submit(1), (double.submit(2),)],
            "b": {"c": {"d": [double.submit(3)]}},
        }
        states = resolve_futures_to_states(futures)
        results = resolve_futures_to_results(futures)
        failed = resolve_futures_to_states([failing.submit(1)])
        return states, results, failed

    states, results, failed = pipeline()
    assert results == {"a": [2, (4,)], "b": {"c": {"d": [6]}}}
    assert isinstance(states["a"][1], tuple) and states["b"]["c"]["d"][0].is_completed()
    assert states["a"][0].result() == 2
    assert failed[0].is_failed()

    @flow
    def raising() -> Any:
        return resolve_futures_to_results({"x": failing.submit(2)})

    with pytest.raises(ValueError, match="bad 2"):
        raising()
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    assert resolve_futures_to_results(cyclic)[0] == 1  # a container holding itself: no hang


def test_a_flow_returning_futures_gets_states_and_plain_containers_come_back_as_they_are() -> None:
    plain = [{"x": 1, "records": [1.5, 3.0]}, (2, "b"), {3}]

    @flow
    def returns_plain() -> list[Any]:
        return plain

    @flow
    def returns_futures() -> dict[str, Any]:
        return {"plain": plain, "futures": [double.submit(1), (double.submit(2), 5)]}

    assert returns_plain() is plain  # nothing to replace: not copied
    out = returns_futures()
    assert out["plain"] is plain
    states = out["futures"]
    assert type(states) is list and type(states[1]) is tuple and states[1][1] == 5
    assert [states[0].result(), states[1][0].result()] == [2, 4]
    print("a flow's plain return value: the same object; futures: replaced by their states")


def test_a_returned_future_is_found_at_every_depth_the_scan_covers_and_no_deeper() -> None:
    # The quick scan of a return value (`_holds_task_future`) must agree with the rebuild:
    # a future one, two or three levels into lists, tuples, sets and dicts (beside plain
    # containers) becomes its state; one four levels down is left as it is, as before.
    @flow
    def nested() -> list[Any]:
        future = double.submit(1)
        filler = [{"x": i, "records": [1.5, (2, {"y": 3})]} for i in range(50)]
        return [
            future,  # level 1
            [*filler, future],  # level 2
            [*filler, {"k": future}],  # level 3
            [*filler, ({"k": future},)],  # level 4: not looked into
            [*filler, TaskFutureList()],
            {"d": {"e": filler, "f": future}},  # level 3
        ]

    one, two, three, four, empty, keyed = nested()
    assert one.is_completed() and two[-1].is_completed() and three[-1]["k"].is_completed()
    assert isinstance(four[-1][0]["k"], TaskFuture)  # past the third level: not replaced
    assert type(empty[-1]) is list and empty[-1] == []  # a futures list comes back a list
    assert keyed["d"]["f"].is_completed()
    assert keyed["d"]["e"][0] == {"x": 0, "records": [1.5, (2, {"y": 3})]}

    @flow
    def deep_only() -> list[Any]:
        return [[({"k": double.submit(2)},)]]  # only four levels down: returned as it is

    deep = deep_only()
    assert isinstance(deep[0][0][0]["k"], TaskFuture)
    print("futures one to three levels deep: states; four deep: the future; a futures list: a list")
