"""The public surface: `blocks.__all__` and `serializers.__all__` are locked, every name in them
imports, and the error tree drawn in `blocks/errors.py` is the real one (httpx's
`tests/test_exported_members.py`, plus a check of the drawing).

Changing a public name is a decision: update the list here, the README and the CHANGELOG.
"""

from __future__ import annotations

import builtins
import re
import subprocess
import sys

import pytest

import blocks
import blocks.errors
import serializers

BLOCKS_ALL = [
    "Block",
    "BlocksError",
    "Flow",
    "ParameterTypeError",
    "SecretDict",
    "State",
    "Task",
    "allow_failure",
    "deploy",
    "exponential_backoff",
    "flow",
    "get_run_logger",
    "mask_secret",
    "opaque",
    "quote",
    "run_deployment",
    "serve",
    "task",
    "task_input_hash",
    "unmapped",
]

SERIALIZERS_ALL = [
    "AutoSerializer",
    "CompressedSerializer",
    "JSONSerializer",
    "NumpySerializer",
    "ParquetSerializer",
    "PickleSerializer",
    "SerializationError",
    "Serializer",
    "register_json_type",
    "resolve_serializer",
]


def test_blocks_all_is_locked() -> None:
    assert blocks.__all__ == BLOCKS_ALL


def test_serializers_all_is_locked() -> None:
    assert serializers.__all__ == SERIALIZERS_ALL


@pytest.mark.parametrize(
    ("package", "names"), [("blocks", BLOCKS_ALL), ("serializers", SERIALIZERS_ALL)]
)
def test_every_exported_name_imports_in_a_fresh_interpreter(package: str, names: list[str]) -> None:
    # A fresh process: blocks' names are imported lazily, and this suite has imported most
    # modules already, which would hide a broken lazy path.
    code = f"from {package} import {', '.join(names)}; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_every_exported_name_is_an_attribute_and_in_dir() -> None:
    for name in BLOCKS_ALL:
        assert getattr(blocks, name) is not None, name
    for name in SERIALIZERS_ALL:
        assert getattr(serializers, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        blocks.Nope  # noqa: B018


def test_serialization_error_is_a_blocks_error_and_one_class() -> None:
    assert issubclass(serializers.SerializationError, blocks.BlocksError)
    assert issubclass(serializers.SerializationError, ValueError)
    assert blocks.errors.SerializationError is serializers.SerializationError
    assert blocks.errors.BlocksError is blocks.BlocksError
    with pytest.raises(blocks.BlocksError):
        serializers.JSONSerializer().dumps(object())


# -- the drawing at the top of blocks/errors.py -------------------------------------------------

_ENTRY = re.compile(r"^(?P<indent>[ │├└─]*?)(?P<name>[A-Z]\w+)(?P<rest>.*)$")


def _drawn() -> list[tuple[int, str, str]]:
    """(column, class name, annotation) for each line of the tree in the module docstring."""
    doc = blocks.errors.__doc__ or ""
    start = doc.index("    BlocksError")
    entries = []
    for line in doc[start:].splitlines():
        if not line.strip():
            break
        match = _ENTRY.match(line)
        assert match, f"unreadable tree line: {line!r}"
        entries.append((len(match["indent"]), match["name"], match["rest"]))
    return entries


def _error_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(blocks.errors).items()
        if isinstance(value, type) and issubclass(value, blocks.errors.BlocksError)
    }


def test_the_error_tree_drawing_names_every_class_and_nothing_else() -> None:
    drawn = [name for _, name, _ in _drawn()]
    assert len(drawn) == len(set(drawn)), "a class is drawn twice"
    assert sorted(drawn) == sorted(_error_classes())
    assert sorted(blocks.errors.__all__) == sorted(_error_classes())


def test_the_error_tree_drawing_shows_each_class_under_its_real_parent() -> None:
    classes = _error_classes()
    stack: list[tuple[int, str]] = []
    for column, name, rest in _drawn():
        while stack and stack[-1][0] >= column:
            stack.pop()
        cls = classes[name]
        if stack:
            assert classes[stack[-1][1]] in cls.__bases__, f"{name} is not under {stack[-1][1]}"
        else:
            assert cls is blocks.errors.BlocksError
        stack.append((column, name))
        # The builtins named beside a class are exactly its builtin bases.
        named = {
            w
            for w in re.findall(r"\b[A-Z]\w*Error\b", rest)
            if isinstance(getattr(builtins, w, None), type)
        }
        builtin_bases = {b.__name__ for b in cls.__bases__ if b.__module__ == "builtins"}
        assert named == builtin_bases - {"Exception"}, name


def test_bad_options_are_configuration_errors_and_keep_their_builtin_type() -> None:
    from blocks import flow, task
    from blocks.errors import ConfigurationError, OptionTypeError

    with pytest.raises(ConfigurationError, match="retries must be 0 or more"):
        task(retries=-1)(lambda: None)
    with pytest.raises(ValueError, match="timeout_seconds must be positive"):
        flow(timeout_seconds=0)(lambda: None)
    with pytest.raises(OptionTypeError, match="list of hooks") as info:
        task(on_failure=print)(lambda: None)  # type: ignore[call-overload]
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, blocks.BlocksError)


def _layered_modules(container: str) -> tuple[set[str], set[str]]:
    """(modules listed, modules marked optional) in the layers contract of `container`."""
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(
        c["layers"] for c in contracts if c["type"] == "layers" and c["containers"] == [container]
    )
    listed = {m for layer in layers for m in re.split(r"[\s:|()]+", layer) if m}
    optional = {m for layer in layers for m in re.findall(r"\((\w+)\)", layer)}
    return listed, optional


@pytest.mark.parametrize("container", ["blocks", "blocks.runtime"])
def test_no_module_is_left_out_of_the_layers_contract(container: str) -> None:
    # Every module of `blocks` and of `blocks.runtime` sits in one layer of an import-linter
    # contract, so a new module cannot slip past the arrows check unnoticed.
    import importlib
    import pkgutil

    listed, optional = _layered_modules(container)
    package = importlib.import_module(container)
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert modules - listed == set(), "add these modules to a layer in pyproject.toml"
    assert listed - optional - modules == set(), "these layers name no module"


def test_the_version_is_written_once() -> None:
    # pyproject.toml reads `blocks.__version__` ([tool.hatch.version]) rather than repeating it,
    # so the installed metadata and the module always agree.
    import importlib.metadata
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert importlib.metadata.version("blocks") == blocks.__version__


# -- old import paths ---------------------------------------------------------------------------

COMPAT_PATHS = {
    "blocks.tasks": "blocks.runtime._tasks",
    "blocks.flows": "blocks.runtime._flows",
    "blocks.states": "blocks.runtime._states",
    "blocks.futures": "blocks.runtime._futures",
    "blocks.context": "blocks.runtime._context",
    "blocks.logging": "blocks.runtime._logging",
    "blocks.annotations": "blocks.runtime._annotations",
    "blocks.utilities.annotations": "blocks.runtime._annotations",
    "blocks.task_runners": "blocks.runtime.runners._base",
    "blocks.cache_policies": "blocks.runtime.keys._policies",
    "blocks.hashing": "blocks.runtime.keys._hashing",
    "blocks.dask": "blocks.runtime.runners._dask",
    "blocks.registry": "blocks.core._registry",
    "blocks.schedules": "blocks.deployments.schedules",
    "blocks.transactions": "blocks.runtime.engine._transactions",
}


MOVED_RUNNER_NAMES = {
    "DaskTaskRunner": "blocks.runtime.runners._dask",
    "call_with_timeout": "blocks.runtime.engine._steps",
}


@pytest.mark.parametrize("old", sorted(COMPAT_PATHS))
def test_old_module_paths_give_the_runtime_objects(old: str) -> None:
    # Code written against the flat layout (and Prefect's module names) keeps importing the same
    # objects the runtime uses, not copies.
    import importlib

    shim = importlib.import_module(old)
    assert shim.__all__, old
    for name in shim.__all__:
        value = getattr(shim, name)
        home = importlib.import_module(COMPAT_PATHS[old])
        if old == "blocks.task_runners" and name in MOVED_RUNNER_NAMES:
            home = importlib.import_module(MOVED_RUNNER_NAMES[name])
        assert value is getattr(home, name), f"{old}.{name}"


def test_the_runtime_facade_exports_what_the_old_paths_did() -> None:
    import blocks.runtime

    for name in blocks.runtime.__all__:
        assert getattr(blocks.runtime, name) is not None, name
    for name in ("task", "flow", "State", "TaskFuture", "ConcurrentTaskRunner", "allow_failure"):
        assert name in blocks.runtime.__all__
    assert blocks.task is blocks.runtime.task


SCHEDULES_ALL = [
    "MAX_ITERATIONS",
    "MAX_RRULE_LENGTH",
    "SCHEDULE_TYPES",
    "AnySchedule",
    "Cron",
    "CronSchedule",
    "Interval",
    "IntervalSchedule",
    "RRule",
    "RRuleSchedule",
    "Schedule",
    "construct_schedule",
    "schedule_from_json",
]


def test_blocks_schedules_all_is_locked() -> None:
    import blocks.schedules

    assert blocks.schedules.__all__ == SCHEDULES_ALL
