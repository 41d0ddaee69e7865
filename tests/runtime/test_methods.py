"""Tasks and flows as methods (Prefect 3): instance methods, classmethods and staticmethods, the
decorator above or below ``@classmethod`` / ``@staticmethod``; bound calls, ``.submit()``,
``.map()`` and ``with_options`` on bound tasks; on plain classes and pydantic models."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pydantic
import pytest

from blocks import flow, task
from blocks.context import TaskRun, current_task_run
from blocks.flows import Flow
from blocks.states import State
from blocks.task_runners import SequentialTaskRunner, ThreadPoolTaskRunner
from blocks.tasks import Task

# Runs nest here: a hang fails the test within 60 s with every thread's stack, not the suite.
pytestmark = pytest.mark.timeout(60, method="thread")


class PlainBase:
    def __init__(self, x: int) -> None:
        self.x = x


class ModelBase(pydantic.BaseModel):
    # As in Prefect's docs: pydantic must leave the task and flow class attributes alone.
    model_config = pydantic.ConfigDict(ignored_types=(Task, Flow))
    x: int


BASES = pytest.mark.parametrize("Base", [PlainBase, ModelBase], ids=["class", "pydantic"])


# -- instance methods ------------------------------------------------------------------------------


@BASES
def test_an_instance_method_task_is_bound_to_each_instance_not_to_the_last_one(Base: Any) -> None:
    class Foo(Base):  # type: ignore[misc]
        @task
        def value(self, plus: int = 0) -> int:
            return int(self.x) + plus

    one, five = Foo(x=1), Foo(x=5)
    assert five.value() == 5 and one.value() == 1 and one.value(plus=2) == 3
    assert isinstance(one.value, Task) and one.value is not five.value
    # Read from the class it is the task itself: the instance is passed by hand.
    assert Foo.value(one) == 1 and one.value() == 1
    assert isinstance(Foo.value, Task) and "bound" not in repr(Foo.value)
    assert repr(one.value) == "Task(name='value', bound to 'Foo instance')"


def test_the_instance_and_its_attributes_reach_the_body_as_themselves_not_copies() -> None:
    class Foo(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(ignored_types=(Task, Flow))
        data: dict[str, int]

        @task
        def me(self) -> Foo:
            return self

        @task
        def payload(self) -> dict[str, int]:
            return self.data

    foo = Foo(data={"a": 1})
    assert foo.me() is foo and foo.payload() is foo.data


def test_a_run_name_template_can_read_the_instance() -> None:
    class Loader:
        region = "eu"

        @task(task_run_name="load-{self.region}-{day}")
        def load(self, day: str) -> TaskRun | None:
            return current_task_run()

    run = Loader().load(day="mon")
    assert run is not None and run.name == "load-eu-mon"


@BASES
def test_async_instance_method_tasks_are_awaited_bound(Base: Any) -> None:
    class Foo(Base):  # type: ignore[misc]
        @task
        async def value(self) -> int:
            await asyncio.sleep(0)
            return int(self.x)

    async def main() -> tuple[int, int]:
        return await Foo(x=5).value(), await Foo(x=1).value()

    assert asyncio.run(main()) == (5, 1)
    assert isinstance(Foo(x=10).value, Task)


# -- submit, map and with_options on bound tasks -------------------------------------------------


@pytest.mark.parametrize(
    "runner", [None, SequentialTaskRunner(), ThreadPoolTaskRunner(max_workers=2)]
)
def test_submit_and_map_on_a_bound_task_pass_the_instance_to_every_run(runner: Any) -> None:
    seen: list[int] = []

    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @task
        def scale(self, value: int) -> int:
            seen.append(id(self))
            return value * self.factor

        @flow(task_runner=runner)
        def run(self, values: list[int]) -> tuple[list[int], int, State]:
            mapped = self.scale.map(values).result()
            one = self.scale.submit(10).result()
            return mapped, one, self.scale.submit(1, return_state=True)

    scaler = Scaler(3)
    mapped, one, state = scaler.run([1, 2, 3])
    print(f"runner {runner!r}: {len(seen)} runs, all on the one instance: {set(seen)}")
    assert mapped == [3, 6, 9] and one == 30 and state.result() == 3
    assert set(seen) == {id(scaler)} and len(seen) == 5


def test_map_of_a_bound_task_maps_only_the_arguments_even_if_the_instance_is_a_list() -> None:
    class Batch(list[int]):
        @task
        def offset(self, value: int) -> int:
            return value + len(self)

    @flow
    def main() -> list[int]:
        values: list[int] = Batch([7, 7]).offset.map([1, 2, 3]).result()
        return values

    assert main() == [3, 4, 5]


def test_async_bound_tasks_submit_and_map_on_the_async_flow_loop() -> None:
    class Client:
        def __init__(self, base: str) -> None:
            self.base = base

        @task
        async def fetch(self, path: str) -> str:
            await asyncio.sleep(0)
            return self.base + path

    @flow
    async def main() -> list[str]:
        client = Client("https://x/")
        futures = client.fetch.map(["a", "b"])
        return [await f for f in futures] + [await client.fetch.submit("c")]

    assert asyncio.run(main()) == ["https://x/a", "https://x/b", "https://x/c"]


def test_with_options_on_a_bound_task_stays_bound_and_applies_the_options() -> None:
    attempts: list[int] = []

    class Flaky:
        def __init__(self, fail_times: int) -> None:
            self.fail_times = fail_times

        @task
        def work(self, value: int) -> int:
            attempts.append(value)
            if len(attempts) <= self.fail_times:
                raise ValueError("not yet")
            return value * 2

    flaky = Flaky(fail_times=2)
    patient = flaky.work.with_options(name="patient-work", retries=2)
    assert isinstance(patient, Task) and patient.name == "patient-work"

    @flow
    def main() -> tuple[int, int]:
        return patient(21), patient.submit(5).result()

    assert main() == (42, 10)
    print(f"attempts: {attempts} (2 failures retried)")
    assert attempts == [21, 21, 21, 5]
    assert flaky.work.retries == 0  # the original is unchanged


# -- classmethods and staticmethods ----------------------------------------------------------------


@BASES
def test_classmethod_tasks_bind_the_class_they_are_read_from_in_either_order(Base: Any) -> None:
    class Foo(Base):  # type: ignore[misc]
        @task
        @classmethod
        def above(cls) -> str:
            return cls.__name__

        @classmethod
        @task
        def below(cls) -> str:
            return cls.__name__

    class Bar(Foo):
        pass

    assert Foo.above() == "Foo" and Bar.above() == "Bar" and Bar(x=1).above() == "Bar"
    assert Foo.below() == "Foo" and Bar.below() == "Bar"
    assert isinstance(Foo.above, Task)
    # Python 3.13 no longer lets `classmethod` chain to the descriptor it wraps: `Foo.below` is
    # then a method bound to Foo whose function is the task (calls above still work).
    if sys.version_info < (3, 13):
        assert isinstance(Foo.below, Task)
    else:
        assert isinstance(Foo.below.__func__, Task)  # type: ignore[attr-defined]


@BASES
def test_staticmethod_tasks_are_never_bound_in_either_order(Base: Any) -> None:
    class Foo(Base):  # type: ignore[misc]
        @task
        @staticmethod
        def above(a: int) -> int:
            return a + 1

        @staticmethod
        @task
        def below(a: int) -> int:
            return a + 2

    assert Foo.above(1) == 2 and Foo(x=0).above(1) == 2
    assert Foo.below(1) == 3 and Foo(x=0).below(1) == 3
    assert isinstance(Foo.above, Task) and isinstance(Foo(x=0).below, Task)

    @flow
    def main() -> list[int]:
        mapped: list[int] = Foo.above.map([1, 2]).result()
        return [*mapped, Foo(x=0).below.submit(1).result()]

    assert main() == [2, 3, 3]


def test_async_classmethod_and_staticmethod_tasks() -> None:
    class Foo:
        @task
        @classmethod
        async def name(cls) -> str:
            return cls.__name__

        @task
        @staticmethod
        async def static() -> str:
            return "static"

    class Bar(Foo):
        pass

    async def main() -> tuple[str, str, str]:
        return await Foo.name(), await Bar.name(), await Foo.static()

    assert asyncio.run(main()) == ("Foo", "Bar", "static")


def test_submit_and_with_options_on_a_classmethod_task_keep_the_class() -> None:
    class Base:
        factor = 1

        @task
        @classmethod
        def scale(cls, value: int) -> int:
            return value * cls.factor

    class Double(Base):
        factor = 2

    renamed = Double.scale.with_options(name="double-scale")

    @flow
    def main() -> tuple[int, list[int], int]:
        return Double.scale.submit(5).result(), Double.scale.map([1, 2]).result(), renamed(7)

    assert main() == (10, [2, 4], 14)
    assert renamed.name == "double-scale"


# -- cache keys see the instance -------------------------------------------------------------------


def test_a_cache_key_fn_receives_self_so_each_instance_has_its_own_cache() -> None:
    seen: list[dict[str, Any]] = []

    def by_inputs(context: Any, parameters: dict[str, Any]) -> str:
        seen.append(dict(parameters))
        return f"{parameters['self'].x}-{parameters['a']}"

    class Adder:
        def __init__(self, x: int) -> None:
            self.x = x

        @task(cache_key_fn=by_inputs, persist_result=True)
        def add(self, a: int) -> int:
            return a + self.x

    one, hundred = Adder(1), Adder(100)

    @flow
    def main() -> list[State]:
        return [
            one.add(5, return_state=True),
            one.add(5, return_state=True),
            hundred.add(5, return_state=True),
            hundred.add(5, return_state=True),
        ]

    states = main()
    print("states:", [s.name for s in states])
    assert [s.name for s in states] == ["Completed", "Cached", "Completed", "Cached"]
    assert [s.result() for s in states] == [6, 6, 105, 105]
    assert seen == [{"self": one, "a": 5}] * 2 + [{"self": hundred, "a": 5}] * 2


def test_a_cache_key_fn_that_ignores_self_shares_the_cache_across_instances() -> None:
    def ignore_self(context: Any, parameters: dict[str, Any]) -> str:
        return f"shared-{parameters['a']}"

    class Adder:
        def __init__(self, x: int) -> None:
            self.x = x

        @task(cache_key_fn=ignore_self, persist_result=True)
        def add(self, a: int) -> int:
            return a + self.x

    @flow
    def main() -> list[str]:
        return [Adder(x).add(5, return_state=True).name for x in (1, 100, 7)]

    assert main() == ["Completed", "Cached", "Cached"]


# -- flows as methods ------------------------------------------------------------------------------


@BASES
def test_instance_method_flows_are_bound_and_run_their_tasks(Base: Any) -> None:
    class Pipeline(Base):  # type: ignore[misc]
        @task
        def double(self, value: int) -> int:
            return value * 2

        @flow
        def run(self, values: list[int]) -> int:
            doubled: list[int] = self.double.map(values).result()
            return int(self.x) + sum(doubled)

    pipeline = Pipeline(x=100)
    assert pipeline.run([1, 2]) == 106 and Pipeline(x=0).run([5]) == 10
    assert Pipeline.run(pipeline, [1]) == 102  # read from the class: the instance by hand
    assert isinstance(pipeline.run, Flow)
    state: Any = pipeline.run([1], return_state=True)
    assert state.is_completed() and state.result() == 102


@BASES
def test_classmethod_and_staticmethod_flows_in_either_order(Base: Any) -> None:
    class Foo(Base):  # type: ignore[misc]
        @flow
        @classmethod
        def above(cls) -> str:
            return cls.__name__

        @classmethod
        @flow
        def below(cls) -> str:
            return cls.__name__

        @flow
        @staticmethod
        def static_above() -> str:
            return "static"

        @staticmethod
        @flow
        def static_below() -> str:
            return "static"

    class Bar(Foo):
        pass

    assert (Foo.above(), Bar.above(), Foo.below(), Bar.below()) == ("Foo", "Bar", "Foo", "Bar")
    assert Foo.static_above() == Foo.static_below() == "static"
    assert all(isinstance(f, Flow) for f in (Foo.above, Foo.static_above))
    if sys.version_info < (3, 13):  # 3.13's classmethod no longer chains descriptors
        assert isinstance(Foo.below, Flow)
    else:
        assert isinstance(Foo.below.__func__, Flow)  # type: ignore[attr-defined]


def test_with_options_on_a_classmethod_flow_keeps_the_subclass() -> None:
    # Prefect's test_with_options_preserves_classmethod_context.
    class BaseProcessor:
        @classmethod
        def get_multiplier(cls) -> int:
            return 1

        @flow
        @classmethod
        def process(cls, x: int) -> int:
            return x * cls.get_multiplier()

    class ChildProcessor(BaseProcessor):
        @classmethod
        def get_multiplier(cls) -> int:
            return 2

    assert BaseProcessor.process(5) == 5 and ChildProcessor.process(5) == 10
    renamed = ChildProcessor.process.with_options(name="child-process")
    assert renamed(5) == 10 and renamed.name == "child-process"


def test_async_method_flows_instance_class_and_static() -> None:
    class Foo:
        def __init__(self, x: int) -> None:
            self.x = x

        @flow
        async def instance(self) -> int:
            return self.x

        @flow
        @classmethod
        async def klass(cls) -> str:
            return cls.__name__

        @staticmethod
        @flow
        async def static() -> str:
            return "static"

    async def main() -> tuple[int, int, str, str]:
        return (
            await Foo(5).instance(),
            await Foo(1).instance(),
            await Foo.klass(),
            (await Foo.static()),
        )

    assert asyncio.run(main()) == (5, 1, "Foo", "static")


def test_a_method_flow_validates_its_annotated_parameters_not_the_instance() -> None:
    class Foo:
        @flow
        def count(self, n: int) -> int:
            return n + 1

    assert Foo().count("41") == 42  # coerced by pydantic
    state = Foo().count("many", return_state=True)
    assert state.is_failed() and "'n'" in str(state.exception)


def test_a_bound_task_submitted_to_dask_takes_its_instance_along() -> None:
    pytest.importorskip("distributed")
    from blocks.dask import DaskTaskRunner

    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @task
        def scale(self, value: int) -> int:
            return value * self.factor

    runner = DaskTaskRunner(
        cluster_kwargs={"processes": False, "n_workers": 1, "dashboard_address": ":0"}
    )

    @flow(task_runner=runner)
    def main() -> list[int]:
        scaler = Scaler(4)
        mapped: list[int] = scaler.scale.map([1, 2]).result()
        return [*mapped, scaler.scale.submit(3).result()]

    assert main() == [4, 8, 12]
