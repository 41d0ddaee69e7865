"""The README's code runs as written (bucket names aside): the front page must not lie."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def snippet(containing: str) -> str:
    (found,) = [code for code in python_blocks() if containing in code]
    return found


@pytest.mark.integration
def test_the_opening_example_caches_its_task_in_s3(ambient_s3: str) -> None:
    code = snippet("my-bucket/results").replace("my-bucket/results", ambient_s3)
    calls: list[str] = []
    code = code.replace(
        '    get_run_logger().info("extracting %s", source)',
        '    calls.append(source)\n    get_run_logger().info("extracting %s", source)',
    )
    namespace: dict[str, Any] = {"calls": calls}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["api_key"] == "s3cr3t"
    first = namespace["etl"]()
    second = namespace["etl"]()  # within the hour: read from S3, not recomputed
    assert first == second == {"source": "database", "records": [1, 2, 3]}
    assert calls == ["database"]


def test_the_block_example_round_trips_a_secret_field() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(snippet("class Warehouse(Block)"), "README.md", "exec"), namespace)
    loaded = namespace["Warehouse"].load("prod")
    assert loaded.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(loaded)
