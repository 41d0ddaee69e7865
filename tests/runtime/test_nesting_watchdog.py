"""Watchdog: every shape of nested runs finishes, or fails within seconds with every thread's stack.

A shape is a parent flow (sync or async), optionally a subflow (sync or async) inside it, an
outer task called or submitted from that body, and an inner task called or submitted from the
outer task's body, each sync or async; optionally the body first submits an inner run and
passes it as ``wait_for=`` to the outer one (the shape of #22's second hang); async code waits
with ``await future`` or with a blocking ``future.result()`` (as Prefect's own tests do); the
runs go to the default thread runner, to one bounded to a single worker (nested waits must not
exhaust it), or for a few shapes to Dask.

Each shape runs in a real subprocess (this file, run as a script) under a watchdog: if a
shape does not finish within `CASE_SECONDS`, ``faulthandler`` prints the stack of every thread
and ends the process, and the test fails with those stacks and the shape's name instead of
hanging the suite. Shapes run in batches of one subprocess (one import of blocks per batch):
a hang ends its batch and the next shape starts a new one.

``BLOCKS_WATCHDOG_REPEATS`` (default 2) runs each shape that many times in a row, for races
(Dask shapes twice at most: their cost is starting clusters, not the nesting).
"""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# A hang in this module's own machinery (not a shape's) still fails within 60 s, with stacks.
pytestmark = pytest.mark.timeout(60, method="thread")

#: Seconds one run of a shape may take before the watchdog calls it a hang. The runs take
#: milliseconds; the margin is for a loaded machine (Dask starts a cluster per flow run).
CASE_SECONDS = 10.0
DASK_CASE_SECONDS = 30.0
REPEATS = int(os.environ.get("BLOCKS_WATCHDOG_REPEATS", "2"))

FLOWS = ("sync", "async")
NESTS = ("flow", "sync-subflow", "async-subflow")
CALLS = ("sync-call", "sync-submit", "async-call", "async-submit")
RUNNERS = ("threads", "threads-1", "dask")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One shape of nesting; `id` names it (and is how the subprocess is told to build it)."""

    flow: str  # the parent flow: "sync" | "async"
    nest: str  # the body that calls the outer task: the flow itself, or a subflow of a kind
    outer: str  # how that body runs the outer task: "<kind>-call" | "<kind>-submit"
    inner: str  # how the outer task runs the inner one
    wait_for: bool  # the body submits an inner run first and the outer run waits for it
    get: str  # how async code waits on a future: "result" (blocking) | "await"
    runner: str  # "threads" (default runner) | "threads-1" (max_workers=1) | "dask"

    @property
    def id(self) -> str:
        wait = "wait_for" if self.wait_for else "no-wait"
        return ".".join(
            (f"{self.flow}-flow", self.nest, self.outer, self.inner, wait, self.get, self.runner)
        )

    @classmethod
    def from_id(cls, text: str) -> Shape:
        flow, nest, outer, inner, wait, get, runner = text.split(".")
        return cls(flow[: -len("-flow")], nest, outer, inner, wait == "wait_for", get, runner)

    @property
    def expected(self) -> int:
        # inner(x) = 2x; outer(3, 4) = inner(3) + 4; the waited-for inner(1) adds 2.
        return 10 + (2 if self.wait_for else 0)

    @property
    def seconds(self) -> float:
        return DASK_CASE_SECONDS if self.runner == "dask" else CASE_SECONDS

    @property
    def repeats(self) -> int:
        return min(REPEATS, 2) if self.runner == "dask" else REPEATS


def _is_async(how: str) -> bool:
    return how.startswith("async")


def _body_is_async(shape: Shape) -> bool:
    return _is_async(shape.nest) if shape.nest != "flow" else shape.flow == "async"


def _body_on_loop_thread(shape: Shape) -> bool:
    """Whether the body that runs the outer task runs in a thread running an event loop."""
    if shape.nest == "sync-subflow":
        return shape.flow == "async"  # called directly in the async flow's body
    return _body_is_async(shape)


def valid(shape: Shape) -> bool:
    """Python's own rule: sync code cannot ``asyncio.run`` an async task in a thread that
    already runs an event loop. Shapes that would need it are not shapes anyone can write."""
    body_async, body_on_loop = _body_is_async(shape), _body_on_loop_thread(shape)
    if _is_async(shape.outer) and shape.outer.endswith("call") and not body_async and body_on_loop:
        return False
    outer_on_loop = shape.outer == "sync-call" and body_on_loop
    if shape.outer.startswith("sync") and shape.inner == "async-call" and outer_on_loop:
        return False
    # Async code that waits on a future somewhere: both ways of waiting; else only one.
    waits_in_async = (body_async and (shape.outer.endswith("submit") or shape.wait_for)) or (
        _is_async(shape.outer) and shape.inner.endswith("submit")
    )
    return waits_in_async or shape.get == "result"


def all_shapes() -> list[Shape]:
    shapes = [
        Shape(flow, nest, outer, inner, wait_for, get, runner)
        for runner in ("threads", "threads-1")
        for flow, nest, outer, inner, wait_for, get in itertools.product(
            FLOWS, NESTS, CALLS, CALLS, (False, True), ("result", "await")
        )
    ]
    # Dask: the shapes that submit at both levels and wait, from each kind of flow.
    shapes += [
        Shape("sync", "flow", "sync-submit", "sync-submit", True, "result", "dask"),
        Shape("sync", "flow", "sync-submit", "async-submit", True, "result", "dask"),
        Shape("async", "flow", "sync-submit", "async-submit", True, "result", "dask"),
        Shape("async", "sync-subflow", "sync-submit", "sync-submit", True, "result", "dask"),
    ]
    return [s for s in shapes if valid(s)]


SHAPES = all_shapes()


# -- building and running one shape (in the subprocess) -------------------------------------------


def _runner(shape: Shape) -> Any:
    if shape.runner == "threads":
        return None  # the default: ConcurrentTaskRunner
    if shape.runner == "threads-1":
        from blocks.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    from blocks.dask import DaskTaskRunner

    return DaskTaskRunner(
        cluster_kwargs={
            "processes": False,
            "n_workers": 1,
            "threads_per_worker": 2,
            "dashboard_address": ":0",
        }
    )


def build(shape: Shape) -> Callable[[], Any]:
    """The shape as a parent flow; calling the result runs it and gives its value."""
    from blocks import flow, task

    get = shape.get

    async def wait_async(future: Any) -> Any:
        return await future if get == "await" else future.result()

    async def inner_async_fn(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    def inner_sync_fn(x: int) -> int:
        return 2 * x

    # Any: which kind each task is depends on the shape.
    inner_fn: Any = inner_async_fn if _is_async(shape.inner) else inner_sync_fn
    inner: Any = task(name="inner")(inner_fn)
    inner_call, inner_async = shape.inner.endswith("call"), _is_async(shape.inner)

    async def outer_async_fn(x: int, y: int) -> int:
        if inner_call:
            value = await inner(x) if inner_async else inner(x)
        else:
            value = await wait_async(inner.submit(x))
        return int(value) + y

    def outer_sync_fn(x: int, y: int) -> int:
        if inner_call:
            value = asyncio.run(inner(x)) if inner_async else inner(x)
        else:
            value = inner.submit(x).result()
        return int(value) + y

    outer_fn: Any = outer_async_fn if _is_async(shape.outer) else outer_sync_fn
    outer: Any = task(name="outer")(outer_fn)
    outer_call, outer_async = shape.outer.endswith("call"), _is_async(shape.outer)
    runner = _runner(shape)
    options: dict[str, Any] = {} if runner is None else {"task_runner": runner}

    def body_sync() -> int:
        waits = [inner.submit(1)] if shape.wait_for else None
        if outer_call:
            call = outer(3, 4, wait_for=waits)
            value = asyncio.run(call) if outer_async else call
        else:
            value = outer.submit(3, 4, wait_for=waits).result()
        return int(value) + (waits[0].result() if waits else 0)

    async def body_async() -> int:
        waits = [inner.submit(1)] if shape.wait_for else None
        if outer_call:
            call = outer(3, 4, wait_for=waits)
            value = await call if outer_async else call
        else:
            value = await wait_async(outer.submit(3, 4, wait_for=waits))
        return int(value) + (await wait_async(waits[0]) if waits else 0)

    if shape.nest == "flow":
        body: Any = flow(body_async if shape.flow == "async" else body_sync, **options)
    else:
        sub: Any = flow(body_async if _is_async(shape.nest) else body_sync, **options)
        if shape.flow == "async":

            async def parent_async() -> int:
                return int(await sub() if _is_async(shape.nest) else sub())

            body = flow(parent_async, **options)
        else:

            def parent_sync() -> int:
                return int(asyncio.run(sub()) if _is_async(shape.nest) else sub())

            body = flow(parent_sync, **options)
    if shape.flow == "async":
        return lambda: asyncio.run(body())
    return body  # type: ignore[no-any-return]


def _warm_up() -> None:
    """Import what a first flow run imports, before any watchdog is armed: in a fresh clone
    that compiles every module, which took over 10 s on a machine at load 25 (and was then
    reported as a hang of the first shape)."""
    from blocks import flow, task

    @task
    def one() -> int:
        return 1

    @flow
    def warm() -> int:
        return one() + one.submit().result()

    assert warm() == 2


def child(ids: list[str]) -> None:
    """Run each shape `Shape.repeats` times, one line per shape on stdout; a run that exceeds its
    time gets every thread's stack on stderr from ``faulthandler``, which ends the process."""
    import logging

    logging.getLogger("blocks").setLevel(logging.WARNING)
    _warm_up()
    for shape_id in ids:
        shape = Shape.from_id(shape_id)
        print("START", shape_id, flush=True)
        values, start = [], time.perf_counter()
        try:
            for _ in range(shape.repeats):
                faulthandler.dump_traceback_later(shape.seconds, exit=True)
                values.append(build(shape)())
                faulthandler.cancel_dump_traceback_later()
        except Exception as exc:
            faulthandler.cancel_dump_traceback_later()
            print("FAIL", shape_id, json.dumps(f"{type(exc).__name__}: {exc}"), flush=True)
            continue
        ms = (time.perf_counter() - start) * 1e3 / shape.repeats
        print("OK", shape_id, json.dumps({"values": values, "ms": ms}), flush=True)


# -- the tests ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    status: str  # "OK" | "FAIL" | "HUNG"
    detail: Any


_outcomes: dict[str, Outcome] = {}


def _run_batch(first: Shape) -> None:
    """Run `first` and the shapes after it not yet run, in one subprocess, until one hangs."""
    at = SHAPES.index(first)
    batch = [s.id for s in SHAPES[at:] if s.id not in _outcomes and s.runner == first.runner]
    # Bounded, so one batch stays well within the module's 60 s timeout: a shape's run takes
    # milliseconds on threads, seconds on Dask (a cluster per flow run).
    batch = batch[: 1 if first.runner == "dask" else max(1, 120 // REPEATS)]
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "BLOCKS_LOG_LEVEL": "WARNING"}
    budget = sum(Shape.from_id(i).seconds * Shape.from_id(i).repeats for i in batch) + 30
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *batch],
        capture_output=True,
        text=True,
        env=env,
        timeout=budget,  # a backstop: the watchdog inside ends a hung batch long before
    )
    started: str | None = None
    for line in done.stdout.splitlines():
        status, _, rest = line.partition(" ")
        shape_id, _, detail = rest.partition(" ")
        if status == "START":
            started = shape_id
        elif status in ("OK", "FAIL"):
            _outcomes[shape_id] = Outcome(status, json.loads(detail))
            started = None
    if started is not None:
        _outcomes[started] = Outcome("HUNG", done.stderr)
    elif first.id not in _outcomes:  # the batch did not even start it
        _outcomes[first.id] = Outcome("FAIL", f"exit {done.returncode}\n{done.stderr}")


@pytest.mark.parametrize("shape", SHAPES, ids=[s.id for s in SHAPES])
def test_nested_runs_finish_with_their_value(shape: Shape) -> None:
    if shape.runner == "dask":
        pytest.importorskip("distributed")
    if shape.id not in _outcomes:
        _run_batch(shape)
    outcome = _outcomes[shape.id]
    if outcome.status == "HUNG":
        pytest.fail(
            f"{shape.id} did not finish within {shape.seconds:g} s (a hang); the stack of "
            f"every thread at that moment:\n{outcome.detail}",
            pytrace=False,
        )
    assert outcome.status == "OK", f"{shape.id} failed: {outcome.detail}"
    values, ms = outcome.detail["values"], outcome.detail["ms"]
    print(f"{shape.id}: {len(values)} run(s), {ms:.1f} ms each, values {values}")
    assert values == [shape.expected] * shape.repeats


def test_the_matrix_covers_every_shape_of_nesting() -> None:
    """Each kind of flow, body, outer and inner run, with and without wait_for, both ways
    of waiting in async code, on both thread runners; and the watchdog's own trip wire."""
    threads = [s for s in SHAPES if s.runner == "threads"]
    print(f"{len(SHAPES)} shapes ({len(threads)} on the default runner)")
    for field, values in (
        ("flow", FLOWS),
        ("nest", NESTS),
        ("outer", CALLS),
        ("inner", CALLS),
        ("wait_for", (False, True)),
        ("get", ("result", "await")),
    ):
        assert {getattr(s, field) for s in threads} == set(values), field
    assert {s.runner for s in SHAPES} == set(RUNNERS)
    # The two hangs of #22, by name.
    ids = {s.id for s in SHAPES}
    assert "async-flow.flow.async-submit.async-submit.no-wait.result.threads" in ids
    assert "async-flow.flow.async-submit.async-submit.wait_for.result.threads" in ids


FAN_OUT = int(os.environ.get("BLOCKS_WATCHDOG_FAN_OUT", "40"))

_FAN_OUT_SCRIPT = """
import faulthandler, sys, threading, time
faulthandler.dump_traceback_later({seconds}, exit=True)
from blocks import flow, task
from blocks.task_runners import ThreadPoolTaskRunner

lock = threading.Lock()
now, peak = [0], [0]

@task
def leaf(x):
    with lock:
        now[0] += 1
        peak[0] = max(peak[0], now[0])
    time.sleep(0.002)
    with lock:
        now[0] -= 1
    return x

@task({middle_options})
def middle(x):
    return leaf.submit(x).result() + 1

@task
def outer(x):
    return middle.submit(x).result() + 1

@flow(task_runner=ThreadPoolTaskRunner(max_workers={workers}) if {workers} else None)
def fan_out(n):
    return sum(outer.map(range(n)).result())

n = {n}
assert fan_out(n) == n * (n - 1) // 2 + 2 * n
print(peak[0])
"""


@pytest.mark.parametrize("timed", [False, True], ids=["", "middle-with-timeout"])
@pytest.mark.parametrize("workers", [1, 2, 0], ids=["max_workers=1", "max_workers=2", "default"])
def test_a_fan_out_of_nested_waits_wider_than_the_runner_bound_finishes(
    workers: int, timed: bool
) -> None:
    """`FAN_OUT` runs, each waiting for a run that waits for another: far more waiting runs
    than the runner has workers (the default is min(32, cpus + 4)). A worker that blocks on a
    run leaves its place to another, so the leaves run instead of queueing forever; also when
    the middle run has a timeout (its body then runs in a thread of its own, which the worker
    waits for)."""
    script = _FAN_OUT_SCRIPT.format(
        seconds=CASE_SECONDS * 3,
        workers=workers,
        n=FAN_OUT,
        middle_options="timeout_seconds=120" if timed else "",
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, f"a hang or a failure; every thread's stack:\n{done.stderr}"
    print(
        f"{FAN_OUT} outer runs x 3 levels{' (middle timed)' if timed else ''} on "
        f"max_workers={workers or 'default'}: finished in "
        f"{seconds:.1f} s (process included); at most {done.stdout.strip()} leaves at once"
    )


def test_the_watchdog_reports_a_real_hang_with_every_thread_stack(tmp_path: Path) -> None:
    """The trip wire itself: a run that never ends is reported within seconds, with stacks."""
    script = tmp_path / "hang.py"
    script.write_text(
        "import faulthandler, threading\n"
        "from blocks import flow, task\n"
        "never = threading.Event()\n"
        "@task\n"
        "def stuck() -> None:\n"
        "    never.wait()\n"
        "@flow\n"
        "def f() -> None:\n"
        "    stuck.submit().result()\n"
        "faulthandler.dump_traceback_later(2, exit=True)\n"
        "f()\n"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    seconds = time.perf_counter() - start
    print(f"a hung flow run was reported after {seconds:.1f} s, exit {done.returncode}")
    assert done.returncode != 0
    assert "Timeout" in done.stderr
    assert "in stuck" in done.stderr and "in f" in done.stderr  # both threads' stacks


if __name__ == "__main__":
    child(sys.argv[1:])
