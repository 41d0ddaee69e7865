"""Attacks on code fingerprints (issue 20): an edit that changes what a task computes must change
its key, so that a cached task never returns the value of the code it had before.

Each cross-process case writes a small package into a temporary folder, runs a cached task in a
fresh interpreter (a miss that stores a record), edits one file (or an environment variable the
code reads at import), and runs again in another fresh interpreter: the second run must MISS and
return the new value. Same-process cases change a helper or a global between two calls. The last
case edits a file under a running process, between its import and its first call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from blocks import task
from blocks.results import ResultStore
from blocks.runtime.keys import fingerprint

ROOT = Path(__file__).resolve().parents[2]

#: Imports the task module given on the command line, calls ``compute(3)`` once and prints
#: the value and whether it came from the cache.
RUNNER = textwrap.dedent(
    """
    import importlib, json, sys
    sys.path.insert(0, sys.argv[1])
    module = importlib.import_module(sys.argv[2])
    state = module.compute(3, return_state=True)
    print(json.dumps({"value": state.result(), "cached": state.is_cached()}))
    """
)

TASK_HEADER = """\
import os
from blocks import task
from blocks.tasks import task_input_hash

cached = task(cache_key_fn=task_input_hash, result_storage=os.environ["APP_STORE"])
"""

DECO = """\
import functools


def times(n):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs) * n

        return wrapper

    return decorate
"""

HELPERS = """\
def double(x):
    return x * 2


class Impl:
    def run(self, x):
        return x * 2


class Pricer:
    def __init__(self, rate):
        self.rate = rate

    def price(self, x):
        return x * self.rate
"""


@dataclass
class Case:
    """A package, one edit (file, old, new) or an environment change, and the two values."""

    files: dict[str, str]
    edit: tuple[str, str, str] | None
    values: tuple[int, int]
    env: tuple[dict[str, str], dict[str, str]] = field(default_factory=lambda: ({}, {}))


CASES: dict[str, Case] = {
    "a user decorator's argument on the task": Case(
        {
            "app/deco.py": DECO,
            "app/tasks.py": TASK_HEADER
            + "from app.deco import times\n\n\n@cached\n@times(2)\ndef compute(x):\n"
            "    return x\n",
        },
        ("app/tasks.py", "@times(2)", "@times(3)"),
        (6, 9),
    ),
    "a decorator's body in another module": Case(
        {
            "app/deco.py": DECO,
            "app/tasks.py": TASK_HEADER
            + "from app.deco import times\n\n\n@cached\n@times(2)\ndef compute(x):\n"
            "    return x\n",
        },
        ("app/deco.py", "* n\n", "* n + 1\n"),
        (6, 7),
    ),
    "functools.partial arguments": Case(
        {
            "app/helpers.py": "def scale(x, factor):\n    return x * factor\n",
            "app/tasks.py": TASK_HEADER + "import functools\nfrom app.helpers import scale\n\n"
            "SCALE = functools.partial(scale, factor=2)\n\n\n"
            "@cached\ndef compute(x):\n    return SCALE(x)\n",
        },
        ("app/tasks.py", "factor=2", "factor=3"),
        (6, 9),
    ),
    "a class attribute computed at class definition": Case(
        {
            "app/config.py": "import os\n\n\nclass Config:\n"
            '    RATE = int(os.environ["APP_RATE"])\n',
            "app/tasks.py": TASK_HEADER
            + "from app.config import Config\n\n\n@cached\ndef compute(x):\n"
            "    return x * Config.RATE\n",
        },
        None,
        (6, 9),
        ({"APP_RATE": "2"}, {"APP_RATE": "3"}),
    ),
    "a method of a module-level instance": Case(
        {
            "app/helpers.py": HELPERS,
            "app/tasks.py": TASK_HEADER
            + "from app.helpers import Pricer\n\nPRICER = Pricer(2)\n\n\n"
            "@cached\ndef compute(x):\n    return PRICER.price(x)\n",
        },
        ("app/helpers.py", "return x * self.rate", "return x * self.rate + 1"),
        (6, 7),
    ),
    "an inherited method whose base class lives in another module": Case(
        {
            "app/base.py": "class Base:\n    def rate(self):\n        return 2\n",
            "app/tasks.py": TASK_HEADER
            + "from app.base import Base\n\n\nclass Child(Base):\n    pass\n\n\n"
            "@cached\ndef compute(x):\n    return x * Child().rate()\n",
        },
        ("app/base.py", "return 2", "return 3"),
        (6, 9),
    ),
    "a helper called by a dotted path": Case(
        {
            "app/sub/__init__.py": "",
            "app/sub/mathx.py": "def double(x):\n    return x * 2\n",
            "app/tasks.py": TASK_HEADER + "import app.sub.mathx\n\n\n@cached\ndef compute(x):\n"
            "    return app.sub.mathx.double(x)\n",
        },
        ("app/sub/mathx.py", "x * 2", "x * 3"),
        (6, 9),
    ),
    'getattr(module, "name")': Case(
        {
            "app/helpers.py": HELPERS,
            "app/tasks.py": TASK_HEADER + "from app import helpers\n\n\n@cached\ndef compute(x):\n"
            '    return getattr(helpers, "double")(x)\n',
        },
        ("app/helpers.py", "return x * 2\n\n\nclass", "return x * 3\n\n\nclass"),
        (6, 9),
    ),
    "a class given as a default argument": Case(
        {
            "app/helpers.py": HELPERS,
            "app/tasks.py": TASK_HEADER
            + "from app.helpers import Impl\n\n\n@cached\ndef compute(x, impl=Impl):\n"
            "    return impl().run(x)\n",
        },
        (
            "app/helpers.py",
            "def run(self, x):\n        return x * 2",
            "def run(self, x):\n        return x * 3",
        ),
        (6, 9),
    ),
    "a dict of classes": Case(
        {
            "app/helpers.py": HELPERS,
            "app/tasks.py": TASK_HEADER
            + "from app.helpers import Impl\n\nIMPLS = {'a': Impl}\n\n\n"
            "@cached\ndef compute(x):\n    return IMPLS['a']().run(x)\n",
        },
        (
            "app/helpers.py",
            "def run(self, x):\n        return x * 2",
            "def run(self, x):\n        return x * 3",
        ),
        (6, 9),
    ),
    "a list of functions": Case(
        {
            "app/helpers.py": HELPERS,
            "app/tasks.py": TASK_HEADER + "from app.helpers import double\n\nSTEPS = [double]\n\n\n"
            "@cached\ndef compute(x):\n    for step in STEPS:\n        x = step(x)\n    return x\n",
        },
        ("app/helpers.py", "return x * 2\n\n\nclass", "return x * 3\n\n\nclass"),
        (6, 9),
    ),
    "exec'd code without source reading a global": Case(
        {
            "app/tasks.py": TASK_HEADER + "namespace = {'RATE': int(os.environ['APP_RATE'])}\n"
            "exec('def compute(x):\\n    return x * RATE\\n', namespace)\n"
            "compute = cached(namespace['compute'])\n",
        },
        None,
        (6, 9),
        ({"APP_RATE": "2"}, {"APP_RATE": "3"}),
    ),
}


def run_task(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """``app.tasks.compute(3)`` in a fresh interpreter: its value and whether it was cached."""
    full = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "BLOCKS_HOME": str(folder / "home"),
        "APP_STORE": str(folder / "results"),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(folder / "src"), "app.tasks"],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    init = folder / "src" / "app" / "__init__.py"
    if not init.exists():
        init.write_text("")


@pytest.mark.parametrize("what", sorted(CASES))
def test_an_edit_to_code_the_task_runs_misses_in_the_next_process(
    tmp_path: Path, what: str
) -> None:
    case = CASES[what]
    write(tmp_path, case.files)
    first = run_task(tmp_path, case.env[0])
    again = run_task(tmp_path, case.env[0])
    if case.edit is not None:
        name, old, new = case.edit
        path = tmp_path / "src" / name
        assert old in path.read_text(), old
        path.write_text(path.read_text().replace(old, new, 1))
    edited = run_task(tmp_path, case.env[1])
    print(f"{what}: first {first}, again {again}, after the edit {edited}")
    assert first == {"value": case.values[0], "cached": False}
    assert again == {"value": case.values[0], "cached": True}  # the cache works at all
    assert edited == {"value": case.values[1], "cached": False}


def test_two_tasks_with_one_name_that_differ_by_decorator_get_two_keys(tmp_path: Path) -> None:
    write(tmp_path, {"app/deco.py": DECO})
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        from app.deco import times

        def base(x: int) -> int:
            return x

        storage = str(tmp_path / "results")
        by_two = task(name="same", cache_key_fn=_input_hash(), result_storage=storage)(
            times(2)(base)
        )
        by_three = task(name="same", cache_key_fn=_input_hash(), result_storage=storage)(
            times(3)(base)
        )
        values = (by_two(3), by_three(3))
        print(f"two tasks named 'same': {values}, {len(_records(tmp_path))} records")
        assert values == (6, 9)
        assert len(_records(tmp_path)) == 2
    finally:
        sys.path.remove(str(tmp_path / "src"))
        for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
            del sys.modules[name]


def _input_hash() -> Any:
    from blocks.tasks import task_input_hash

    return task_input_hash


def _records(folder: Path) -> list[str]:
    return sorted(key for key, _ in ResultStore.resolve(str(folder / "results")).records())


def test_another_programs_text_under_a_pseudo_file_name_is_not_the_source() -> None:
    """Python 3.13's ``python -c`` (how pytest-xdist starts its workers) puts its program into
    linecache under "<string>"; every function exec'd from a string then "had" a line of it as
    source, so two different functions got one key. The text must compile to the loaded code."""
    import linecache

    other = "def f(x):\n    return x * 100\n"
    saved = linecache.cache.get("<string>")
    linecache.cache["<string>"] = (len(other), None, other.splitlines(True), "<string>")
    try:
        prints = []
        for body in ("x + 1", "x + 2"):
            namespace: dict[str, Any] = {}
            exec(f"def f(x):\n    return {body}\n", namespace)
            prints.append(fingerprint(namespace["f"]))
    finally:
        if saved is None:
            linecache.cache.pop("<string>", None)
        else:
            linecache.cache["<string>"] = saved
    print(f"two exec'd functions under a poisoned '<string>': {[p.digest for p in prints]}")
    assert prints[0].digest != prints[1].digest
    assert all(p.note is not None and "bytecode" in p.note for p in prints)


# -- same-process changes ----------------------------------------------------------------------


RATE = 2


def _rate_helper(x: int) -> int:
    return x * RATE


def test_a_reassigned_global_is_seen_by_the_next_call(tmp_path: Path) -> None:
    global RATE

    @task(cache_key_fn=_input_hash(), result_storage=str(tmp_path / "results"))
    def priced(x: int) -> int:
        return x * RATE

    before = priced(3)
    RATE = 3
    try:
        state = priced(3, return_state=True)
        print(f"reassigned global: {before} then {state.result()} (cached={state.is_cached()})")
        assert before == 6 and state.result() == 9 and not state.is_cached()
    finally:
        RATE = 2


def test_a_monkeypatched_helper_is_seen_by_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @task(cache_key_fn=_input_hash(), result_storage=str(tmp_path / "results"))
    def priced(x: int) -> int:
        return _rate_helper(x) + 1

    before = priced(3)
    monkeypatch.setitem(globals(), "_rate_helper", lambda x: x * 10)
    state = priced(3, return_state=True)
    print(f"monkeypatched helper: {before} then {state.result()} (cached={state.is_cached()})")
    assert before == 7 and state.result() == 31 and not state.is_cached()


def test_a_notebook_cell_run_again_is_seen_by_the_next_call(tmp_path: Path) -> None:
    """Cells share one namespace; re-running the helper's cell with new code replaces it."""
    from blocks.tasks import task_input_hash

    notebook: dict[str, Any] = {"task": task, "task_input_hash": task_input_hash}
    storage = str(tmp_path / "results")
    cells = [
        "def helper(x):\n    return x * 2\n",
        "@task(cache_key_fn=task_input_hash, result_storage=STORAGE)\n"
        "def compute(x):\n    return helper(x)\n",
    ]
    notebook["STORAGE"] = storage
    for n, cell in enumerate(cells):
        exec(compile(cell, f"<cell-{n}>", "exec"), notebook)
    before = notebook["compute"](3)
    exec(compile("def helper(x):\n    return x * 3\n", "<cell-2>", "exec"), notebook)
    state = notebook["compute"](3, return_state=True)
    print(f"cell run again: {before} then {state.result()} (cached={state.is_cached()})")
    assert before == 6 and state.result() == 9 and not state.is_cached()


def test_a_replaced_class_attribute_and_instance_attribute_change_the_fingerprint() -> None:
    class Config:
        rate = 2

    class Pricer:
        def __init__(self) -> None:
            self.rate = 2

    pricer = Pricer()

    def by_class(x: int) -> int:
        return x * Config.rate

    def by_instance(x: int) -> int:
        return x * pricer.rate

    prints = [fingerprint(by_class).digest, fingerprint(by_instance).digest]
    Config.rate = 3
    pricer.rate = 3
    after = [fingerprint(by_class).digest, fingerprint(by_instance).digest]
    print(f"class attribute: {prints[0]} -> {after[0]}; instance: {prints[1]} -> {after[1]}")
    assert prints[0] != after[0] and prints[1] != after[1]


def test_a_method_replaced_on_its_class_changes_the_fingerprint() -> None:
    class Pricer:
        def price(self, x: int) -> int:
            return x * 2

    def priced(x: int) -> int:
        return Pricer().price(x)

    before = fingerprint(priced).digest
    Pricer.price = lambda self, x: x * 3  # type: ignore[method-assign]
    after = fingerprint(priced).digest
    print(f"method replaced on its class: {before} -> {after}")
    assert before != after


def test_a_class_based_decorator_counts_its_arguments() -> None:
    class Times:
        def __init__(self, fn: Any, n: int) -> None:
            self.fn, self.n = fn, n

        def __call__(self, x: int) -> int:
            return int(self.fn(x)) * self.n

    def base(x: int) -> int:
        return x

    prints = [fingerprint(Times(base, n)).digest for n in (2, 3, 2)]
    print(f"Times(base, 2), Times(base, 3), Times(base, 2): {prints}")
    assert prints[0] != prints[1] and prints[0] == prints[2]


# -- a file edited under a running process ------------------------------------------------------

#: Imports the task module, then rewrites its file (a `git pull` under a running worker), then
#: calls the task: it computes with the code it loaded and stores the record.
STALE_RUNNER = textwrap.dedent(
    """
    import importlib, json, pathlib, sys
    sys.path.insert(0, sys.argv[1])
    module = importlib.import_module("app.tasks")
    path = pathlib.Path(module.__file__)
    path.write_text(path.read_text().replace("x * 2", "x * 3"))
    state = module.compute(3, return_state=True)
    print(json.dumps({"value": state.result(), "cached": state.is_cached()}))
    """
)


@pytest.mark.parametrize("where", ["the task", "a helper"])
def test_a_file_edited_under_a_running_process_never_serves_the_old_value(
    tmp_path: Path, where: str
) -> None:
    body = (
        "@cached\ndef compute(x):\n    return x * 2\n"
        if where == "the task"
        else "def helper(x):\n    return x * 2\n\n\n"
        "@cached\ndef compute(x):\n    return helper(x)\n"
    )
    write(tmp_path, {"app/tasks.py": TASK_HEADER + "\n\n" + body})
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "BLOCKS_HOME": str(tmp_path / "home"),
        "APP_STORE": str(tmp_path / "results"),
    }
    stale = subprocess.run(
        [sys.executable, "-c", STALE_RUNNER, str(tmp_path / "src")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert stale.returncode == 0, stale.stderr
    old = json.loads(stale.stdout.strip().splitlines()[-1])
    fresh = run_task(tmp_path, {})
    print(f"edited under {where}: running process {old}; fresh process {fresh}")
    assert old == {"value": 6, "cached": False}  # the loaded code ran
    assert fresh == {"value": 9, "cached": False}  # never the old code's value


# -- the same code, another Python ------------------------------------------------------------

RICH = """\
import dataclasses
import enum
import functools


def times(n):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs) * n

        return wrapper

    return decorate


class Mode(enum.Enum):
    FAST = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: int = 1

    def norm(self):
        return abs(self.x)


class Base:
    RATE = 2

    def rate(self):
        return self.RATE


class Child(Base):
    pass


def scale(x, factor):
    return x * factor


SCALE = functools.partial(scale, factor=2)
IMPLS = {"child": Child, "point": Point}
POINT = Point(3)


@times(2)
def compute(x, impl=Child):
    return SCALE(x) + impl().rate() + POINT.norm() + Mode.FAST.value + len(IMPLS)
"""

PRINT_RICH = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from blocks.runtime.keys import fingerprint
    import rich
    f = fingerprint(rich.compute)
    print(json.dumps({"digest": f.digest, "parts": f.parts, "note": f.note}))
    """
)

PYTHONS = {
    version: Path.home() / ".pyenv" / "versions" / version / "bin" / "python"
    for version in ("3.12.1", "3.13.0")
}


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_decorators_dataclasses_enums_and_partials_agree_across_python_versions(
    tmp_path: Path, version: str
) -> None:
    python = PYTHONS[version]
    if not python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Python {version} is missing at {python} (pyenv install {version})")
        pytest.skip(f"Python {version} is not installed at {python}")
    (tmp_path / "rich.py").write_text(RICH)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    prints = {}
    for label, interpreter in (("here", sys.executable), (version, str(python))):
        done = subprocess.run(
            [interpreter, "-c", PRINT_RICH, str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        prints[label] = json.loads(done.stdout)
    print(f"{sys.version.split()[0]}: {prints['here']['digest']}  {version}: {prints[version]}")
    assert prints["here"]["note"] is None
    assert prints["here"] == prints[version]


def test_a_task_that_reaches_hundreds_of_classes_is_keyed_and_stored(tmp_path: Path) -> None:
    """A registry of classes: every class counts, the record header names a bounded number."""
    classes = int(os.environ.get("BLOCKS_TEST_REGISTRY_CLASSES", "300"))
    text = "".join(
        f"class C{i}:\n    def run(self):\n        return {i}\n\n\n" for i in range(classes)
    )
    text += "REGISTRY = {" + ", ".join(f"'c{i}': C{i}" for i in range(classes)) + "}\n"
    write(tmp_path, {"app/registry.py": text})
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        from app import registry

        def run(name: str) -> int:
            return int(registry.REGISTRY[name]().run())

        printed = fingerprint(run)
        storage = str(tmp_path / "results")
        cached = task(cache_key_fn=_input_hash(), result_storage=storage)(run)
        assert cached("c7") == 7
        [(_, header)] = list(ResultStore.resolve(storage).records())
        assert header is not None and header.components is not None
        named = [k for k in header.components if k.startswith("code:")]
        print(f"{classes} classes: {len(printed.parts)} parts, {len(named)} named in the header")
        assert len(printed.parts) >= 2 * classes  # each class and its method
        assert len(named) <= 130
    finally:
        sys.path.remove(str(tmp_path / "src"))
        for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
            del sys.modules[name]
