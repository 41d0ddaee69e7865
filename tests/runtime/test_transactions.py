"""Transactions, written from Prefect 3's documented behaviour (docs "Write transactional
workflows" and the `prefect.transactions` docstrings): staging, commit modes, rollback hooks,
nesting, idempotent keys and SERIALIZABLE isolation (threads here; processes racing in
`tests/results/test_transactions_storage.py`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from blocks import flow, task
from blocks.filesystems import LocalFileSystem
from blocks.results import ResultStore
from blocks.transactions import (
    AsyncTransaction,
    CommitMode,
    IsolationLevel,
    Transaction,
    TransactionState,
    atransaction,
    get_transaction,
    transaction,
)

pytestmark = pytest.mark.timeout(60, method="thread")

SOAK = os.environ.get("BLOCKS_SOAK") == "1"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "results"
    path.mkdir()
    return path


@pytest.fixture
def store(folder: Path) -> ResultStore:
    return ResultStore(LocalFileSystem(basepath=str(folder)), "pickle")


def records(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# -- the transaction object --------------------------------------------------------------------


def test_get_transaction_is_the_innermost_open_one() -> None:
    assert get_transaction() is None
    with transaction() as outer:
        assert get_transaction() is outer and outer.get_parent() is None
        with transaction() as inner:
            assert get_transaction() is inner and inner.get_parent() is outer
        assert get_transaction() is outer
    assert get_transaction() is None
    with pytest.raises(ValueError, match="boom"), transaction():
        raise ValueError("boom")
    assert get_transaction() is None


def test_values_are_shared_with_nested_transactions_as_copies() -> None:
    with transaction() as outer:
        outer.set("rows", [1, 2])
        with transaction() as inner:
            assert inner.get("rows") == [1, 2]
            inner.set("rows", [3])
            assert inner.get("rows") == [3]
        value = outer.get("rows")
        value.append(99)  # a copy: the stored value changes only through set()
        assert outer.get("rows") == [1, 2]
        assert outer.get("missing", "default") == "default"
        with pytest.raises(ValueError, match="unknown key: missing"):
            outer.get("missing")


def test_the_state_lifecycle() -> None:
    txn = Transaction()
    assert txn.is_pending()
    with txn:
        assert txn.is_active()
    assert txn.is_committed()
    failed = Transaction()
    with pytest.raises(ValueError), failed:
        raise ValueError("x")
    assert failed.is_rolled_back() and not failed.is_committed()


def test_lazy_nested_transactions_commit_with_the_outermost() -> None:
    with transaction() as outer:
        with transaction() as inner:
            pass
        assert inner.commit_mode is CommitMode.LAZY
        assert not inner.is_committed() and not outer.is_committed()
    assert outer.is_committed() and inner.is_committed()


def test_eager_commits_as_it_ends_and_nested_ones_inherit_the_mode() -> None:
    with transaction(commit_mode=CommitMode.EAGER) as outer:
        with transaction() as inner:
            assert inner.commit_mode is CommitMode.EAGER
        assert inner.is_committed() and not outer.is_committed()
    assert outer.is_committed()
    with transaction(commit_mode=CommitMode.LAZY) as lazy:
        with transaction(commit_mode=CommitMode.EAGER) as eager:
            pass
        assert eager.is_committed() and not lazy.is_committed()


def test_off_rolls_back_unless_committed_by_hand() -> None:
    with transaction(commit_mode=CommitMode.OFF) as txn, transaction() as inner:
        assert inner.commit_mode is CommitMode.OFF
    assert txn.is_rolled_back() and inner.is_rolled_back()
    with transaction(commit_mode=CommitMode.OFF) as txn:
        txn.commit()
    assert txn.is_committed() and not txn.is_rolled_back()


def test_a_rollback_propagates_up_and_a_failing_commit_rolls_back() -> None:
    with transaction() as outer, transaction() as inner, transaction() as nested:
        nested.rollback()
    assert nested.is_rolled_back() and inner.is_rolled_back() and outer.is_rolled_back()

    def explode(txn: Transaction) -> None:
        raise RuntimeError("commit hook failed")

    with transaction() as txn:
        txn.stage("v", on_commit_hooks=[explode])
    assert txn.is_rolled_back()


def test_a_keyed_transaction_writes_its_record_and_is_then_committed(
    store: ResultStore, folder: Path
) -> None:
    with transaction(key="nightly", store=store) as txn:
        assert not txn.is_committed()
        txn.stage({"rows": 3})
    hit = txn.read()
    assert hit is not None and hit.result == {"rows": 3} == hit.value
    assert records(folder) == ["nightly"]
    with transaction(key="nightly", store=store) as again:
        assert again.is_committed()  # the work was done: idempotent
        again.stage({"rows": 4})  # ignored: already committed
    assert store.read("nightly").value == {"rows": 3}  # type: ignore[union-attr]
    with transaction(key="nightly", store=store, overwrite=True) as forced:
        assert not forced.is_committed()
        forced.stage({"rows": 5})
    assert store.read("nightly").value == {"rows": 5}  # type: ignore[union-attr]
    with transaction(key="dry", store=store, write_on_commit=False) as dry:
        dry.stage("never written")
    assert dry.is_committed() and records(folder) == ["nightly"]


def test_a_keyed_transaction_takes_the_flows_result_storage(folder: Path) -> None:
    @flow(result_storage=str(folder))
    def pipeline() -> bool:
        with transaction(key="flow-level") as txn:
            if txn.is_committed():
                return False
            txn.stage("done")
        return True

    assert pipeline() is True
    assert pipeline() is False  # the second run finds the record and skips the work
    assert "flow-level" in records(folder)  # beside the flow runs' own persisted results


# -- tasks inside transactions ---------------------------------------------------------------


def test_a_failing_task_rolls_back_the_staged_results_of_earlier_tasks(folder: Path) -> None:
    calls: list[str] = []

    @task(result_storage=str(folder), cache_key_fn=lambda ctx, p: f"write-{p['n']}")
    def write(n: int) -> int:
        return n

    @write.on_rollback
    def undo(txn: Transaction) -> None:
        calls.append(f"rollback {txn.key}")

    @write.on_commit
    def done(txn: Transaction) -> None:
        calls.append(f"commit {txn.key}")

    @task
    def check() -> None:
        assert records(folder) == []  # staged, not written
        raise ValueError("quality check failed")

    @flow
    def pipeline() -> None:
        with transaction():
            write(1)
            write(2)
            write(3)
            check()

    with pytest.raises(ValueError, match="quality check failed"):
        pipeline()
    print(f"hooks: {calls}; records on disk: {records(folder)}")
    assert records(folder) == []  # nothing written: no record, no temp file
    assert calls == ["rollback write-3", "rollback write-2", "rollback write-1"]  # reversed


def test_a_failure_swallowed_with_return_state_still_rolls_back(folder: Path) -> None:
    rolled: list[str] = []

    @task(result_storage=str(folder), cache_key_fn=lambda: "kept", on_rollback=[rolled.append])
    def write() -> str:
        return "v"

    @task  # a plain task: its failure takes the hot path
    def plain_fails() -> None:
        raise ValueError("plain")

    @task(retries=1)
    def engine_fails() -> None:
        raise ValueError("engine")

    for failing in (plain_fails, engine_fails):
        rolled.clear()
        with transaction() as txn:
            write()
            assert failing(return_state=True).is_failed()
        assert txn.is_rolled_back() and len(rolled) == 1, failing
        assert records(folder) == []


def test_a_task_that_succeeds_on_retry_does_not_roll_back(folder: Path) -> None:
    attempts: list[int] = []

    @task(retries=2)
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectionError("first try")
        return 7

    @task(result_storage=str(folder), cache_key_fn=lambda: "saved")
    def save() -> str:
        return "v"

    with transaction() as txn:
        save()
        assert flaky() == 7
    assert len(attempts) == 2 and txn.is_committed()
    assert records(folder) == ["saved"]


def test_results_are_written_only_when_the_outermost_transaction_commits(
    folder: Path, store: ResultStore
) -> None:
    @task(result_storage=str(folder), cache_key_fn=lambda ctx, p: f"part-{p['n']}")
    def part(n: int) -> list[int]:
        return [n] * 3

    @flow
    def pipeline() -> list[str]:
        seen = []
        with transaction() as outer:
            part(1)
            with transaction() as inner:
                part(2)
                assert get_transaction() is inner
            seen.append(f"after inner: {records(folder)}")
            part(3)
            seen.append(f"before outer ends: {records(folder)}")
        assert outer.is_committed()
        seen.append(f"after outer: {records(folder)}")
        return seen

    seen = pipeline()
    print(seen)
    assert seen == [
        "after inner: []",
        "before outer ends: []",
        "after outer: ['part-1', 'part-2', 'part-3']",
    ]
    for n in (1, 2, 3):  # whole, signed records
        hit = store.read(f"part-{n}")
        assert hit is not None and hit.value == [n] * 3


def test_an_eager_nested_transaction_writes_as_it_ends(folder: Path) -> None:
    @task(result_storage=str(folder), cache_key_fn=lambda ctx, p: f"k{p['n']}")
    def step(n: int) -> int:
        return n

    with transaction():
        with transaction(commit_mode=CommitMode.EAGER):
            step(1)
        assert records(folder) == ["k1"]
        step(2)
        assert records(folder) == ["k1"]
    assert records(folder) == ["k1", "k2"]


def test_a_cached_task_is_the_already_committed_transaction(folder: Path) -> None:
    commits: list[str] = []

    @task(result_storage=str(folder), cache_key_fn=lambda: "once", on_commit=[commits.append])
    def compute() -> int:
        return 42

    def run() -> tuple[str, TransactionState | None]:
        seen: list[Any] = []

        @task
        def peek() -> None:
            seen.append(get_transaction())

        with transaction() as txn:
            state = compute(return_state=True)
            peek()
        assert seen == [txn]  # a plain task runs in the enclosing transaction
        return state.name, txn.children[0].state if txn.children else None

    assert run() == ("Completed", TransactionState.COMMITTED)
    assert run() == ("Cached", TransactionState.COMMITTED)
    assert len(commits) == 1  # the hit committed nothing: no hook, no write


def test_on_commit_runs_when_a_task_outside_any_transaction_ends() -> None:
    seen: list[Transaction] = []

    @task
    def my_task() -> int:
        inner = get_transaction()
        assert inner is not None and inner.is_active()  # the run's own transaction
        return 1

    my_task.on_commit(seen.append)
    state = my_task(return_state=True)
    assert state.is_completed() and state.name == "Completed"
    assert len(seen) == 1 and isinstance(seen[0], Transaction) and seen[0].is_committed()
    assert get_transaction() is None
    assert my_task.on_commit_hooks == (seen.append,)
    assert my_task.with_options(name="copy").on_commit_hooks == (seen.append,)


def test_submitted_tasks_join_the_transaction(folder: Path) -> None:
    order: list[str] = []

    @task(result_storage=str(folder), cache_key_fn=lambda ctx, p: f"s{p['n']}")
    def step(n: int) -> int:
        time.sleep(0.01 * n)
        return n

    @step.on_rollback
    def undo(txn: Transaction) -> None:
        order.append(str(txn.key))

    @task
    def fails(n: int) -> None:
        raise ValueError(n)

    @flow
    def good() -> list[int]:
        with transaction():
            futures = step.map(range(4))
            values = futures.result()
            assert records(folder) == []
        return values

    assert good() == [0, 1, 2, 3]
    assert records(folder) == ["s0", "s1", "s2", "s3"]
    for name in records(folder):
        (folder / name).unlink()

    @flow
    def bad() -> bool:
        with transaction() as txn:
            step.map(range(4)).wait()
            fails.submit(9).wait()  # not raised: the failure is in the future's state
        return txn.is_rolled_back()

    assert bad() is True
    assert records(folder) == [] and sorted(order) == ["s0", "s1", "s2", "s3"]


def test_async_tasks_and_flows_in_a_transaction(folder: Path) -> None:
    rolled: list[str] = []

    @task(result_storage=str(folder), cache_key_fn=lambda ctx, p: f"a{p['n']}")
    async def fetch(n: int) -> int:
        await asyncio.sleep(0)
        return n

    fetch.on_rollback(lambda txn: rolled.append(txn.key))

    @task
    async def fails() -> None:
        raise ValueError("async")

    @flow
    async def pipeline(fail: bool) -> int:
        with transaction():
            total = await fetch(1) + await fetch(2)
            assert records(folder) == []
            if fail:
                await fails()
        return total

    assert asyncio.run(pipeline(False)) == 3
    assert records(folder) == ["a1", "a2"]
    for name in records(folder):
        (folder / name).unlink()
    with pytest.raises(ValueError):
        asyncio.run(pipeline(True))
    assert records(folder) == [] and rolled == ["a2", "a1"]


def test_atransaction_awaits_its_hooks_on_the_callers_loop(folder: Path) -> None:
    seen: list[tuple[str, bool]] = []

    @task(result_storage=str(folder), cache_key_fn=lambda ctx, p: f"at{p['n']}")
    async def fetch(n: int) -> int:
        return n

    async def committed(txn: Transaction) -> None:
        seen.append(("commit", asyncio.get_running_loop() is loops[0]))

    async def rolled_back(txn: Transaction) -> None:
        await asyncio.sleep(0)
        seen.append(("rollback", asyncio.get_running_loop() is loops[0]))

    @flow
    async def pipeline(fail: bool) -> int:
        async with atransaction(key="at-batch", store=str(folder)) as txn:
            assert isinstance(txn, AsyncTransaction) and get_transaction() is txn
            txn.on_commit_hooks.append(committed)
            txn.on_rollback_hooks.append(rolled_back)
            total = await fetch(1) + await fetch(2)
            assert records(folder) == []  # staged until the outermost transaction commits
            if fail:
                raise ValueError("after the tasks")
        return total

    async def main(fail: bool) -> int:
        loops[:] = [asyncio.get_running_loop()]
        return await pipeline(fail)

    loops: list[asyncio.AbstractEventLoop] = []
    assert asyncio.run(main(False)) == 3
    assert records(folder) == ["at-batch", "at1", "at2"] and seen == [("commit", True)]
    for name in records(folder):
        (folder / name).unlink()
    seen.clear()
    with pytest.raises(ValueError, match="after the tasks"):
        asyncio.run(main(True))
    assert records(folder) == [] and seen == [("rollback", True)]


def test_atransaction_with_a_found_key_is_committed_and_serializable_waits_without_blocking(
    folder: Path,
) -> None:
    async def once(key: str, log: list[str], tag: str) -> None:
        async with atransaction(
            key=key, store=str(folder), isolation_level=IsolationLevel.SERIALIZABLE
        ) as txn:
            if txn.is_committed():
                log.append(f"{tag} found")
                return
            log.append(f"{tag} start")
            await asyncio.sleep(0.2)  # the other waits on the key's lock meanwhile
            txn.stage(tag)
            log.append(f"{tag} end")

    async def main() -> tuple[list[str], int]:
        log: list[str] = []
        ticks = 0

        async def ticker() -> None:  # runs while a transaction waits: the loop is not blocked
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        clock = asyncio.create_task(ticker())
        await asyncio.gather(once("serial", log, "a"), once("serial", log, "b"))
        clock.cancel()
        return log, ticks

    log, ticks = asyncio.run(main())
    assert log[:2] == [log[0], log[0].replace("start", "end")]  # one ran whole, then
    assert log[2].endswith("found")  # the other found its record
    assert ticks >= 10
    assert ResultStore(LocalFileSystem(basepath=str(folder)), "pickle").read("serial") is not None


def test_a_subflow_inside_a_transaction_stages_its_tasks(folder: Path) -> None:
    @task(result_storage=str(folder), cache_key_fn=lambda: "sub")
    def inner() -> int:
        return 1

    @flow
    def child() -> int:
        return inner()

    @flow
    def parent(fail: bool) -> None:
        with transaction():
            child()
            assert records(folder) == []
            if fail:
                raise RuntimeError("parent failed")

    with pytest.raises(RuntimeError):
        parent(True)
    assert records(folder) == []
    parent(False)
    assert records(folder) == ["sub"]


# -- SERIALIZABLE --------------------------------------------------------------------------------


def test_serializable_threads_with_one_key_compute_once(store: ResultStore) -> None:
    computed: list[str] = []
    start = threading.Barrier(6)

    def worker(name: str) -> None:
        start.wait()
        with transaction(
            key="shared", store=store, isolation_level=IsolationLevel.SERIALIZABLE
        ) as txn:
            if txn.is_committed():
                return
            computed.append(name)
            time.sleep(0.05)
            txn.stage(name)

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"6 threads, one key: computed by {computed}")
    assert len(computed) == 1
    assert store.read("shared").value == computed[0]  # type: ignore[union-attr]


def test_a_read_committed_reader_waits_for_a_serializable_writer(store: ResultStore) -> None:
    opened = threading.Event()

    def writer() -> None:
        with transaction(key="k", store=store, isolation_level=IsolationLevel.SERIALIZABLE) as txn:
            opened.set()
            time.sleep(0.2)
            txn.stage({"foo": "bar"})

    thread = threading.Thread(target=writer)
    thread.start()
    opened.wait()
    with transaction(key="k", store=store) as reader:
        hit = reader.read()
    thread.join()
    assert hit is not None and hit.result == {"foo": "bar"}


def test_one_key_twice_in_a_serializable_tree_does_not_wait_for_itself(folder: Path) -> None:
    @task(result_storage=str(folder), cache_key_fn=lambda: "same")
    def same() -> int:
        return 1

    began = time.monotonic()
    with transaction(isolation_level=IsolationLevel.SERIALIZABLE):
        assert same() == 1
        assert same() == 1  # staged, not written: computed again, as in Prefect
        inner_task_txn = get_transaction()
    elapsed = time.monotonic() - began
    assert inner_task_txn is None or inner_task_txn.isolation_level is not None
    assert elapsed < 5, f"waited {elapsed:.1f} s for a lock the tree already held"
    assert records(folder) == ["same"]


def test_a_task_inherits_serializable_and_holds_its_key_until_the_commit(
    folder: Path, store: ResultStore
) -> None:
    seen: list[Transaction] = []

    @task(result_storage=str(folder), cache_key_fn=lambda: "held")
    def compute() -> int:
        txn = get_transaction()
        assert txn is not None
        seen.append(txn)
        return 5

    from blocks.results._locks import KeyLock

    with transaction(isolation_level=IsolationLevel.SERIALIZABLE):
        compute()
        assert seen[0].isolation_level is IsolationLevel.SERIALIZABLE
        probe = KeyLock(store, "held")
        assert not probe.acquire(blocking=False)  # held by the staged task until the commit
    assert probe.acquire(blocking=False)
    probe.release()


def test_the_serializable_example_of_prefects_docs_runs_in_processes(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from blocks import flow, task
        from blocks.transactions import IsolationLevel, transaction

        out, key = sys.argv[1], sys.argv[2]

        @task
        def download_data():
            import os
            return f"process {os.getpid()} is the winner!"

        @task
        def write_file(contents):
            with open(out, "a") as f:
                f.write(contents + "\\n")

        @flow
        def pipeline(transaction_key: str):
            with transaction(key=transaction_key,
                             isolation_level=IsolationLevel.SERIALIZABLE) as txn:
                if txn.is_committed():
                    print("skipped")
                    return
                write_file(download_data())
                print("wrote")

        pipeline(key)
        """
    )
    out = tmp_path / "race-condition.txt"
    env = {**os.environ, "BLOCKS_RESULTS_STORAGE": str(tmp_path / "results")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(out), "race-key"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=50)[0].split()[-1] for p in procs]
    print(f"4 processes: {outs}; file: {out.read_text().splitlines()}")
    assert sorted(outs) == ["skipped", "skipped", "skipped", "wrote"]
    assert len(out.read_text().splitlines()) == 1


def test_one_key_in_two_threads_of_a_serializable_tree_does_not_deadlock(folder: Path) -> None:
    @task(result_storage=str(folder), cache_key_fn=lambda: "constant")
    def same(n: int) -> int:
        time.sleep(0.05)
        return n

    @flow
    def pipeline() -> list[int]:
        with transaction(isolation_level=IsolationLevel.SERIALIZABLE):
            return same.map(range(4)).result()

    began = time.monotonic()
    assert pipeline() == [0, 1, 2, 3]
    elapsed = time.monotonic() - began
    print(f"4 runs of one key in one SERIALIZABLE transaction: {elapsed:.2f} s")
    assert elapsed < 10
    assert records(folder) == ["constant"]


def test_async_tasks_submitted_in_a_transaction_join_it(folder: Path) -> None:
    @task(result_storage=str(folder), cache_key_fn=lambda ctx, p: f"sub{p['n']}")
    async def fetch(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    @flow
    async def pipeline() -> list[int]:
        with transaction():
            futures = [fetch.submit(n) for n in range(3)]
            values = [await f for f in futures]
            assert records(folder) == []
        return values

    assert asyncio.run(pipeline()) == [0, 1, 2]
    assert records(folder) == ["sub0", "sub1", "sub2"]


def test_a_task_that_swallows_a_nested_failure_stays_rolled_back(folder: Path) -> None:
    @task(result_storage=str(folder), cache_key_fn=lambda: "inner-ok")
    def ok() -> int:
        return 1

    @task
    def broken() -> None:
        raise ValueError("nested")

    @task(on_commit=[lambda txn: None])  # a transaction of its own
    def outer() -> str:
        ok()
        return broken(return_state=True).name

    with transaction() as txn:
        assert outer() == "Failed"
    assert txn.is_rolled_back() and records(folder) == []


def test_the_readme_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (code,) = [c for c in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "unload" in c]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    with pytest.raises(ValueError, match="rows missing"):
        namespace["nightly"]("2024-06-01")
    assert not (tmp_path / "orders-2024-06-01.csv").exists()  # unload() ran
    assert not (tmp_path / "results").exists() or records(tmp_path / "results") == []


def test_a_write_that_fails_during_the_commit_rolls_back_from_there(
    folder: Path, store: ResultStore
) -> None:
    rolled: list[str] = []

    @task(result_storage=str(folder), cache_key_fn=lambda ctx, p: f"w{p['n']}")
    def write(n: int) -> int:
        return n

    write.on_rollback(lambda txn: rolled.append(txn.key))
    (folder / "w2").mkdir()  # a folder where w2's record goes: its write fails
    with transaction() as txn:
        for n in (1, 2, 3):
            write(n)
    print(f"committed before the failure: {records(folder)}; rolled back: {rolled}")
    assert txn.is_rolled_back()
    assert store.read("w1").value == 1  # type: ignore[union-attr]  # written before: stays
    assert not (folder / "w3").exists()
    assert rolled == ["w2", "w3"]  # the one that failed to write, then the rest


def test_bad_options_are_clear_errors() -> None:
    from blocks.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"commit_mode must be one of CommitMode\.EAGER"):
        transaction(commit_mode="SOON").__enter__()  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="isolation_level must be one of"):
        Transaction(isolation_level="STRICT")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="key is a string"):
        Transaction(key=3)  # type: ignore[arg-type]
    assert Transaction(commit_mode="EAGER").commit_mode is CommitMode.EAGER  # type: ignore[arg-type]
    from blocks.errors import OptionTypeError

    with pytest.raises(OptionTypeError, match="on_commit takes a list of hooks"):
        task(on_commit=print)(lambda: None)  # type: ignore[call-overload]
    assert get_transaction() is None


def test_async_hooks_are_awaited() -> None:
    seen: list[str] = []

    async def hook(txn: Transaction) -> None:
        await asyncio.sleep(0)
        seen.append("committed")

    @task(on_commit=[hook])
    def step() -> int:
        return 1

    assert step() == 1
    assert seen == ["committed"]
    assert Transaction.get_active() is None
