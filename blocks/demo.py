"""End-to-end demo on the embedded defaults: run ``python -m blocks.demo``.

It uses the SQLite registry and local storage under ``$BLOCKS_HOME`` (default ``~/.blocks``),
needs no cloud account, and only touches blocks whose names start with ``demo-``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from blocks import flow, settings, task
from blocks.core._registry import Registry
from blocks.filesystems import LocalFileSystem
from blocks.logging import get_run_logger
from blocks.states import State
from blocks.system import Secret
from blocks.task_runners import ConcurrentTaskRunner
from blocks.tasks import exponential_backoff, task_input_hash
from serializers import JSONSerializer

CALLS = {"extract": 0}


@task(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=0.01),
    cache_key_fn=task_input_hash,
    cache_expiration=timedelta(hours=1),
    persist_result=True,
    result_storage="local-file-system/demo-results",
    result_serializer=JSONSerializer(),
)
def extract(source: str) -> dict[str, Any]:
    """Pretend to fetch rows; cached for an hour per source."""
    CALLS["extract"] += 1
    api_key = Secret.load("demo-api-key").get()
    get_run_logger().info("extracting %s with key %s...", source, api_key[:4])
    time.sleep(0.2)  # the "expensive" part the cache saves
    return {"source": source, "records": [1, 2, 3, 4, 5]}


@task
def transform(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "records": [x * 2 for x in data["records"]], "transformed": True}


@task
def load(data: dict[str, Any], destination: str) -> int:
    get_run_logger().info("loading %d records to %s", len(data["records"]), destination)
    return len(data["records"])


@flow(name="ETL Pipeline", task_runner=ConcurrentTaskRunner())
def etl(sources: list[str], destination: str = "warehouse") -> int:
    futures = [extract.submit(source) for source in sources]
    counts = [load(transform(future.result()), destination) for future in futures]
    return sum(counts)


def main() -> None:
    home = settings.blocks_home()
    print(f"blocks demo — registry {Registry.default().describe()}")

    print("\n1. An encrypted secret")
    Secret(value="sk-demo-0123456789").save("demo-api-key", overwrite=True)
    loaded = Secret.load("demo-api-key")
    print(f"   saved and loaded: {loaded!r}  (the value is never shown in repr)")
    print(f"   .get() gives it back: {loaded.get()[:7]}...")

    print("\n2. A storage block for task results")
    LocalFileSystem(basepath=str(home / "demo-results")).save("demo-results", overwrite=True)
    print(f"   local-file-system/demo-results -> {home / 'demo-results'}")

    print("\n3. A flow whose extract task is cached for an hour (JSON results on disk)")
    for attempt in (1, 2):
        CALLS["extract"] = 0
        start = time.perf_counter()
        total = etl(["orders", "customers", "payments"])
        took = time.perf_counter() - start
        print(
            f"   run {attempt}: {total} records loaded in {took:.3f} s, "
            f"extract ran {CALLS['extract']} time(s)"
        )

    print("\n4. States instead of exceptions, when asked")
    state: State = extract("orders", return_state=True)
    print(f"   extract('orders') -> {state.name}: {state.result()['source']}")

    print("\n5. What is saved (as `block ls` shows it)")
    for row in Registry.default().list_documents():
        if row.name.startswith("demo-"):
            print(f"   {row.slug:<36} updated {row.updated:%Y-%m-%d %H:%M:%S}")
    print(
        "\nTry: block ls · block inspect secret/demo-api-key · block results ls "
        "--storage local-file-system/demo-results"
    )


if __name__ == "__main__":
    main()
