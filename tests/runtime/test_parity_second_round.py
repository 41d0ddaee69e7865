"""Prefect 3 parity, second round: validation, state and run details, settings with Prefect's
meaning, and the runner and future surface.

Each test states one behaviour of Prefect 3 (read from its docs, docstrings and tests) and
checks ours; where we differ on purpose the README's differences table says why.
"""

from __future__ import annotations

from typing import Any

import pytest

from blocks import flow, task
from blocks.errors import (
    ConfigurationError,
    InvalidName,
    InvalidNameError,
    OptionTypeError,
    ReservedArgumentError,
)
from blocks.tasks import exponential_backoff

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
