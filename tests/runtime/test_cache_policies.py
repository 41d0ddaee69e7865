"""Cache policies (Prefect 3's names and defaults), keys that follow code edits between real
processes, unhashable inputs, and misses that explain themselves."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from blocks import flow, task
from blocks.cache_policies import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NO_CACHE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyFnPolicy,
    CompoundCachePolicy,
    Inputs,
)
from blocks.hashing import CacheKeyWarning
from blocks.results import ResultStore
from blocks.tasks import task_input_hash

ROOT = Path(__file__).resolve().parents[2]


def records(storage: Path) -> list[str]:
    return sorted(key for key, _ in ResultStore.resolve(str(storage)).records())


# -- Prefect 3's defaults ------------------------------------------------------------------------


def test_default_is_inputs_task_source_and_run_id() -> None:
    assert isinstance(DEFAULT, CompoundCachePolicy)
    assert DEFAULT.policies == [INPUTS, TASK_SOURCE, RUN_ID]
    assert Inputs(exclude=["x"]) == INPUTS - "x"
    assert (DEFAULT - "x").policies[0] == Inputs(exclude=["x"])  # type: ignore[attr-defined]
    assert NO_CACHE + INPUTS == INPUTS


def test_persist_result_alone_caches_within_one_flow_run(tmp_path: Path) -> None:
    calls: list[int] = []

    @task(persist_result=True, result_storage=str(tmp_path / "r"))
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    @flow
    def pipeline() -> list[int]:
        return [double(1), double(1), double(2)]

    assert pipeline() == [2, 2, 4]
    assert calls == [1, 2]  # the second double(1) hit
    assert pipeline() == [2, 2, 4]
    assert calls == [1, 2, 1, 2]  # a new run recomputes (RUN_ID)


def test_a_task_without_cache_options_does_not_cache() -> None:
    calls: list[int] = []

    @task
    def t(x: int) -> int:
        calls.append(x)
        return x

    assert (t(1), t(1)) == (1, 1)
    assert calls == [1, 1]
    assert t.persist_result is None


def test_setting_a_cache_policy_turns_persistence_on(tmp_path: Path) -> None:
    calls: list[int] = []

    @task(cache_policy=INPUTS + TASK_SOURCE, result_storage=str(tmp_path / "r"))
    def t(x: int) -> int:
        calls.append(x)
        return x

    assert t.persist_result is True
    assert (t(1), t(1), t(2)) == (1, 1, 2)
    assert calls == [1, 2]
    assert len(records(tmp_path / "r")) == 2


def test_persist_result_false_means_no_cache() -> None:
    calls: list[int] = []
    with pytest.warns(UserWarning, match="persist_result=False disables its cache_policy"):

        @task(cache_policy=INPUTS, persist_result=False)
        def t(x: int) -> int:
            calls.append(x)
            return x

    assert t.cache_policy is None
    assert (t(1), t(1)) == (1, 1)
    assert calls == [1, 1]


def test_no_cache_persists_but_never_looks_up(tmp_path: Path) -> None:
    calls: list[int] = []

    @task(cache_policy=NO_CACHE, persist_result=True, result_storage=str(tmp_path / "r"))
    def t(x: int) -> int:
        calls.append(x)
        return x

    assert (t(1), t(1)) == (1, 1)
    assert calls == [1, 1]
    assert len(records(tmp_path / "r")) == 2


def test_inputs_minus_a_parameter_ignores_it(tmp_path: Path) -> None:
    calls: list[int] = []

    @task(cache_policy=INPUTS - "verbose", result_storage=str(tmp_path / "r"))
    def t(x: int, verbose: bool = False) -> int:
        calls.append(x)
        return x

    assert (t(1), t(1, verbose=True), t(2, True)) == (1, 1, 2)
    assert calls == [1, 2]


def test_flow_parameters_policy_keys_on_the_flow_run_parameters(tmp_path: Path) -> None:
    calls: list[str] = []

    @task(cache_policy=FLOW_PARAMETERS, result_storage=str(tmp_path / "r"))
    def t() -> str:
        calls.append("run")
        return "v"

    @flow
    def pipeline(day: str) -> str:
        return t()

    pipeline("mon")
    pipeline("mon")
    pipeline("tue")
    assert calls == ["run", "run"]


def test_cache_key_fn_becomes_a_key_fn_policy_and_wins_over_cache_policy() -> None:
    with pytest.warns(UserWarning, match="cache_key_fn is used"):

        @task(cache_policy=INPUTS, cache_key_fn=lambda: "static-for-policy-test")
        def t(x: int) -> int:
            return x

    assert isinstance(t.cache_policy, CacheKeyFnPolicy)
    assert (t(1), t(2)) == (1, 1)


def test_compute_key_is_prefect_compatible() -> None:
    @task
    def t(x: int) -> int:
        return x

    class Ctx:
        task = t

    key = INPUTS.compute_key(Ctx, {"x": 1}, {})
    assert key == INPUTS.compute_key(Ctx, {"x": 1}, {})
    assert key != INPUTS.compute_key(Ctx, {"x": 2}, {})
    assert NO_CACHE.compute_key(Ctx, {"x": 1}, {}) is None


def test_memoized_keys_of_plain_arguments_equal_the_computed_ones() -> None:
    """Keys of scalar arguments are remembered (issue 12); values that Python finds equal
    but that digest apart (1, 1.0, True; 0.0 and -0.0; NaN) must still key apart."""
    from blocks.runtime.keys import _policies

    @task
    def t(x: Any) -> Any:
        return x

    class Ctx:
        task = t

    values: list[Any] = [1, 1.0, True, 0, 0.0, -0.0, False, None, float("nan"), "1", b"1"]
    values += [2**70, 1.5, -1.5, "x" * 300, "é"]
    for policy in (INPUTS, INPUTS + TASK_SOURCE, TASK_SOURCE + Inputs(exclude=["y"])):
        computed = [policy._resolve(Ctx, {"x": v}, {}) for v in values]
        for _ in range(2):  # the first round fills the memo, the second reads it
            assert [policy.resolve(Ctx, {"x": v}, {}) for v in values] == computed
        keys = [key for key, _ in computed]
        assert len(set(keys[:9])) == 9  # 1, 1.0, True, 0, 0.0, -0.0, False, None, NaN
    assert _policies._memo  # the memo was used
    print(f"{len(values)} values x 3 policies: memoized keys equal the computed ones")


def _scale_helper(x: Any) -> Any:
    return x * 2


def test_a_call_recalled_before_binding_keys_as_bound_and_sees_code_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeat call of plain arguments is keyed from its arguments as given, unbound
    (`recall_call`): every spelling of one call hits the one record; 1, 1.0 and True still
    key apart; the run still gets its bound parameters; a replaced helper is seen at once;
    a task with a mutable default is never recalled this way."""
    from blocks.runtime.keys import _policies

    ran: list[Any] = []

    @task(cache_key_fn=task_input_hash, result_storage=str(tmp_path / "results"))
    def scaled(x: Any, scale: int = 2) -> Any:
        ran.append(x)
        return _scale_helper(x) * scale

    assert scaled.plain_defaults
    assert scaled(3) == 12
    for call in range(2):  # the first round remembers each spelling, the second recalls it
        for args, kwargs in [((3,), {}), ((), {"x": 3}), ((3, 2), {}), ((3,), {"scale": 2})]:
            state: Any = scaled(*args, return_state=True, **kwargs)
            assert state.is_cached() and state.result() == 12, (call, args, kwargs)
            assert state.run.parameters == {"x": 3, "scale": 2}
    assert ran == [3]
    assert any(key[0] is _policies._AS_GIVEN for key in _policies._memo)
    for value in (1.0, True, 1, 1.0, True):  # equal in Python, digests apart: three records
        scaled(value)
    assert [type(v) for v in ran] == [int, float, bool, int]
    monkeypatch.setitem(globals(), "_scale_helper", lambda x: x * 10)
    state = scaled(3, return_state=True)
    assert not state.is_cached() and state.result() == 60
    again: Any = scaled(3, return_state=True)
    assert again.is_cached()

    @task(cache_key_fn=task_input_hash, result_storage=str(tmp_path / "results"))
    def listed(x: int, seen: list[int] = []) -> int:  # noqa: B006 (the point of the test)
        return x + len(seen)

    assert not listed.plain_defaults
    print("one record for four spellings; 1, 1.0, True apart; a replaced helper recomputes")


def test_a_subclass_of_a_pure_policy_is_never_memoized() -> None:
    """A user's subclass may read the run or the world: its components are asked each call."""
    from dataclasses import dataclass

    asked: list[int] = []

    @dataclass(frozen=True)
    class Counted(Inputs):
        def components(
            self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any]
        ) -> dict[str, str] | None:
            asked.append(1)
            return {
                **(super().components(task_ctx, inputs, flow_parameters) or {}),
                "n": str(len(asked)),
            }

    @task
    def t(x: int) -> int:
        return x

    class Ctx:
        task = t

    for policy in (Counted(), Counted() + TASK_SOURCE):
        first = policy.resolve(Ctx, {"x": 1}, {})[0]
        assert policy.resolve(Ctx, {"x": 1}, {})[0] != first
    assert len(asked) == 4


def test_a_new_function_object_gets_its_own_memoized_key() -> None:
    """Code changes change the key: a redefined function (a new object) is keyed anew."""
    keys = set()
    for body in ("x + 1", "x + 2"):
        namespace: dict[str, Any] = {}
        exec(f"def f(x):\n    return {body}\n", namespace)
        t = task(name="same-name")(namespace["f"])

        class Ctx:
            task = t

        keys.add((INPUTS + TASK_SOURCE).resolve(Ctx, {"x": 3}, {})[0])
    assert len(keys) == 2


# -- issue 10, bug 3: one call, one key --------------------------------------------------------


def test_keyword_order_does_not_change_the_key() -> None:
    seen: list[str] = []

    def by_repr(context: Any, parameters: dict[str, Any]) -> str:
        seen.append(repr(parameters))
        return "repr-" + str(abs(hash(repr(parameters))))

    calls: list[int] = []

    @task(cache_key_fn=by_repr)
    def foo(a: int, b: int, c: int = 0) -> int:
        calls.append(1)
        return a + b + c

    assert foo(1, 2, 3) == foo(c=3, a=1, b=2) == foo(1, c=3, b=2) == 6
    assert len(set(seen)) == 1 and calls == [1]

    class Opaque:  # not JSON: used to fall back to cloudpickle, which kept the call's order
        def __init__(self, v: int) -> None:
            self.v = v

    hashed: list[int] = []

    @task(cache_key_fn=task_input_hash)
    def bar(a: Opaque, b: Opaque, c: int = 3) -> int:
        hashed.append(1)
        return a.v + b.v + c

    assert bar(Opaque(1), Opaque(2)) == bar(b=Opaque(2), a=Opaque(1), c=3) == 6
    assert hashed == [1]


# -- code edits between real processes ---------------------------------------------------------

PRICING = '''\
from blocks import task
from blocks.cache_policies import INPUTS, TASK_SOURCE

RATE = 0.5


def rate_for(item):
    return RATE * len(item)


@task(cache_policy=INPUTS + TASK_SOURCE, result_storage=STORAGE)
def price(item):
    """What an item costs."""
    with open(CALLS, "a") as fh:
        fh.write("computed\\n")
    return rate_for(item) * 2
'''

RUN = """
import logging, sys
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
import pricing
print("VALUE", pricing.price(sys.argv[2]))
"""


def run_price(folder: Path, item: str = "apple", python: str = sys.executable) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"}
    return subprocess.run(
        [python, "-c", RUN, str(folder), item],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    ).stdout


EDITS = [
    ("a constant", "rate_for(item) * 2", "rate_for(item) * 3", "code changed (function 'price')"),
    (
        "a called helper",
        "RATE * len(item)",
        "RATE * len(item) + 1",
        "code changed (helper 'rate_for')",
    ),
    ("a read global", "RATE = 0.5", "RATE = 0.9", "code changed (global 'RATE')"),
    ("comments only", "def rate_for(item):", "# the rate\ndef rate_for(item):  # per item", None),
    ("the docstring only", '"""What an item costs."""', '"""Cost of one item."""', None),
    ("blank lines only", "RATE = 0.5\n", "\n\nRATE = 0.5\n\n", None),
]


@pytest.mark.parametrize(("what", "old", "new", "why"), EDITS, ids=[e[0] for e in EDITS])
def test_editing_the_module_between_two_processes(
    tmp_path: Path, what: str, old: str, new: str, why: str | None
) -> None:
    calls = tmp_path / "calls.txt"
    source = PRICING.replace("STORAGE", repr(str(tmp_path / "results"))).replace(
        "CALLS", repr(str(calls))
    )
    (tmp_path / "pricing.py").write_text(f"STORAGE = 0\n{source}")
    first = run_price(tmp_path)
    (tmp_path / "pricing.py").write_text(f"STORAGE = 0\n{source.replace(old, new, 1)}")
    second = run_price(tmp_path)
    computed = calls.read_text().count("computed")
    print(f"{what}: computed {computed} time(s); {second.strip().splitlines()}")
    if why is None:
        assert computed == 1, second  # a hit
        assert first.splitlines()[-1] == second.splitlines()[-1]
    else:
        assert computed == 2  # recomputed
        assert f"cache miss for task 'price': {why}" in second


def test_a_changed_parameter_is_named_never_shown(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    source = PRICING.replace("STORAGE", repr(str(tmp_path / "results"))).replace(
        "CALLS", repr(str(calls))
    )
    (tmp_path / "pricing.py").write_text(source)
    run_price(tmp_path, "apple-secret-looking-value")
    out = run_price(tmp_path, "pear-other-value")
    assert "cache miss for task 'price': parameter 'item' changed" in out
    assert "pear-other" not in out.replace("VALUE", "").split("VALUE")[0]
    for line in out.splitlines():
        if "cache miss" in line:
            assert "apple" not in line and "pear" not in line


def test_the_same_code_on_two_python_versions_shares_a_key(tmp_path: Path) -> None:
    other = Path.home() / ".pyenv/versions/3.12.1/bin/python"
    if not other.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Python 3.12 is missing at {other}")
        pytest.skip("Python 3.12 is not installed")
    # The task module needs pydantic etc. on 3.12: compute only the key there, from the
    # policy modules (stdlib-only) and a stand-in task object, and compare it with ours.
    (tmp_path / "pricing.py").write_text(
        "RATE = 0.5\n\ndef rate_for(item):\n    return RATE * len(item)\n\n"
        "def price(item):\n    return rate_for(item) * 2\n"
    )
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import pricing
        from blocks.cache_policies import INPUTS, TASK_SOURCE

        class T:
            fn = pricing.price
            name = "price"
            cache_key_prefix = "price"
            version = None

        class Ctx:
            task = T

        print((INPUTS + TASK_SOURCE).compute_key(Ctx, {"item": {"a": [1.5, {2, 3}]}}, {}))
        """
    )
    keys = [
        subprocess.run(
            [python, "-c", script, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        ).stdout.strip()
        for python in (sys.executable, str(other))
    ]
    print(keys)
    assert keys[0] == keys[1] and keys[0].startswith("price-")


# -- unhashable inputs ---------------------------------------------------------------------------


def test_an_unhashable_input_runs_uncached_with_one_warning(tmp_path: Path) -> None:
    calls: list[int] = []

    @task(cache_key_fn=task_input_hash, result_storage=str(tmp_path / "r"))
    def guarded(lock: Any, x: int) -> int:
        calls.append(x)
        return x

    lock = threading.Lock()
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert guarded(lock, 1) == 1
        mine = [w for w in caught if issubclass(w.category, CacheKeyWarning)]
        assert len(mine) == 1, [str(w.message) for w in caught]
        assert "'guarded'" in str(mine[0].message) and "'lock'" in str(mine[0].message)
        assert "uncached" in str(mine[0].message)
    assert calls == [1, 1]

    @task(cache_policy=INPUTS, result_storage=str(tmp_path / "r"))
    def consume(items: Any) -> int:
        return sum(items)

    with pytest.warns(CacheKeyWarning, match="parameter 'items'"):
        assert consume(i for i in range(4)) == 6


# -- explanations, expiry, refresh ------------------------------------------------------------


def test_miss_explanations_for_expired_and_corrupt_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @task(
        cache_key_fn=task_input_hash,
        cache_expiration=timedelta(milliseconds=200),
        result_storage=str(tmp_path / "r"),
    )
    def t(x: int) -> int:
        calls.append(x)
        return x

    caplog.set_level(logging.INFO)
    t(1)
    time.sleep(0.3)
    t(1)
    assert "cache miss for task 't': the stored result expired at" in caplog.text
    assert calls == [1, 1]

    # A corrupt record (no expiry here: a loaded machine may take longer than any short one).
    @task(cache_key_fn=task_input_hash, result_storage=str(tmp_path / "c"))
    def u(x: int) -> int:
        calls.append(x)
        return x

    u(2)
    key = records(tmp_path / "c")[0]
    (tmp_path / "c" / key).write_bytes((tmp_path / "c" / key).read_bytes()[:-1] + b"!")
    caplog.clear()
    with pytest.warns(UserWarning, match="checksum"):
        u(2)
    assert "cache miss for task 'u': the stored record is corrupt" in caplog.text
    assert calls == [1, 1, 2, 2]


def test_records_keep_components_and_no_values(tmp_path: Path) -> None:
    @task(cache_policy=INPUTS + TASK_SOURCE, version="2", result_storage=str(tmp_path / "r"))
    def t(secret_word: str) -> int:
        return len(secret_word)

    @flow(name="nightly")
    def f() -> int:
        return t("swordfish")

    f()
    store = ResultStore.resolve(str(tmp_path / "r"))
    [(key, header)] = list(store.records())
    assert header is not None and header.components is not None
    assert header.flow == "nightly" and header.task == "t"
    assert {"code", "version", "param:secret_word", "code:function 't'"} <= set(header.components)
    assert "swordfish" not in (tmp_path / "r" / key).read_bytes()[:4096].decode(errors="replace")


def test_refresh_cache_recomputes_and_resets_the_expiration(tmp_path: Path) -> None:
    @task(
        cache_key_fn=lambda: "refresh-expiry",
        cache_expiration=timedelta(hours=1),
        result_storage=str(tmp_path / "r"),
    )
    def t() -> int:
        return 1

    t()
    store = ResultStore.resolve(str(tmp_path / "r"))
    first = store.load_header("refresh-expiry").expires
    time.sleep(0.05)
    t.with_options(refresh_cache=True)()
    second = store.load_header("refresh-expiry").expires
    assert first is not None and second is not None and second > first


def test_changes_name_every_kind_of_component() -> None:
    from blocks.runtime.keys import changes

    old = {
        "code": "a",
        "code:function 'f'": "1",
        "code:global 'RATE'": "2",
        "param:x": "p",
        "param:gone": "q",
        "version": "v1",
        "run_id": "r1",
    }
    new = {
        "code": "b",
        "code:function 'f'": "1",
        "code:global 'RATE'": "3",
        "param:x": "P",
        "param:added": "z",
        "version": "v2",
        "run_id": "r2",
        "code:note": "no source for 'f': identified by its bytecode",
    }
    assert changes(old, new) == [
        "code changed (global 'RATE') [no source for 'f': identified by its bytecode]",
        "version changed",
        "parameter 'added' is new",
        "parameter 'gone' is no longer part of the key",
        "parameter 'x' changed",
        "another flow run (the policy includes RUN_ID)",
    ]
    assert changes(old, old) == []


def test_a_function_without_source_is_cached_by_bytecode(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec("def typed_in_a_repl(x):\n    return x * 2\n", namespace)
    typed_in_a_repl: Callable[[int], int] = namespace["typed_in_a_repl"]
    t = task(cache_policy=INPUTS + TASK_SOURCE, result_storage=str(tmp_path / "r"), name="repl")(
        typed_in_a_repl
    )
    assert (t(2), t(2)) == (4, 4)
    [(_, header)] = list(ResultStore.resolve(str(tmp_path / "r")).records())
    assert header is not None and header.components is not None
    assert "bytecode" in header.components["code:note"]
    assert t(2, return_state=True).is_cached()


def test_a_failing_first_read_fails_the_attempt_and_is_retried(tmp_path: Path) -> None:
    """A read that raises (here a symlink under the key that leads out of the base) is not a
    miss: the task's function never runs, each attempt reads again and the run fails; a
    clean miss after it computes once, and the next call is a hit (issue 12: the first read
    moved ahead of the attempts)."""
    from blocks.filesystems import LocalFileSystem

    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    outside.write_bytes(b"not ours")
    (base / "fixed-key").symlink_to(outside)
    calls: list[int] = []

    @task(
        cache_key_fn=lambda: "fixed-key",
        retries=2,
        result_storage=LocalFileSystem(basepath=str(base)),
    )
    def compute(x: int) -> int:
        calls.append(x)
        return x * 2

    state = compute(1, return_state=True)
    assert state.is_failed() and "UnsafePath" in (state.message or "")
    assert state.run.run_count == 3 and calls == []
    (base / "fixed-key").unlink()
    assert compute(2) == 4 and calls == [2]
    hit = compute(2, return_state=True)
    assert hit.is_cached() and hit.result() == 4 and calls == [2]
    print(f"failing read: {state.run.run_count} attempts, 0 calls; then 1 miss, 1 hit")
