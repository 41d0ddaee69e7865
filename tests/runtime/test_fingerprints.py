"""Code fingerprints: follow behaviour (constants, helpers, globals), ignore comments and
formatting, and agree across processes and Python versions (real subprocesses, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from blocks.runtime.keys import fingerprint

ROOT = Path(__file__).resolve().parents[2]

PRICING = '''\
import math

RATE = 0.5


def rate_for(x):
    return RATE * x


def price(x):
    """The price of x."""
    return rate_for(x) * 2 + math.floor(x)
'''

# Each edit: (description, old, new, whether the fingerprint must change).
EDITS = [
    ("a constant in the body", "rate_for(x) * 2", "rate_for(x) * 3", True),
    ("a called helper", "return RATE * x", "return RATE * x + 1", True),
    ("a read global", "RATE = 0.5", "RATE = 0.9", True),
    ("a comment", "def price(x):\n", "def price(x):  # the price\n    # ...\n", False),
    ("the docstring", '"""The price of x."""', '"""How much x costs."""', False),
    ("blank lines and spacing", "def rate_for(x):\n", "\n\ndef rate_for( x ):\n", False),
    (
        "an unrelated function",
        "def price(x):",
        "def other():\n    return 1\n\n\ndef price(x):",
        False,
    ),
]

PRINT_FINGERPRINT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from blocks.runtime.keys import fingerprint
    from blocks.hashing import digest
    import pricing
    f = fingerprint(pricing.price)
    print(json.dumps({"digest": f.digest, "parts": f.parts,
                      "values": digest([{"a": 1, "b": {2, 3}}, (1.5, -0.0, b"x"), "s", None])}))
    """
)


def run_fingerprint(
    folder: Path, python: str = sys.executable, seed: str = "0"
) -> dict[str, object]:
    """The fingerprint of ``pricing.price`` computed by a fresh interpreter."""
    env = {
        **os.environ,
        "PYTHONHASHSEED": seed,
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    out = subprocess.run(
        [python, "-c", PRINT_FINGERPRINT, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


@pytest.mark.parametrize(("what", "old", "new", "changes"), EDITS, ids=[e[0] for e in EDITS])
def test_an_edit_between_two_processes_changes_the_fingerprint_iff_behaviour_changes(
    tmp_path: Path, what: str, old: str, new: str, changes: bool
) -> None:
    (tmp_path / "pricing.py").write_text(PRICING)
    before = run_fingerprint(tmp_path, seed="1")
    assert old in PRICING
    (tmp_path / "pricing.py").write_text(PRICING.replace(old, new, 1))
    after = run_fingerprint(tmp_path, seed="2")
    print(f"{what}: {before['digest']} -> {after['digest']}")
    assert (before["digest"] != after["digest"]) is changes


def test_the_changed_part_is_named(tmp_path: Path) -> None:
    (tmp_path / "pricing.py").write_text(PRICING)
    before = run_fingerprint(tmp_path)
    (tmp_path / "pricing.py").write_text(PRICING.replace("RATE * x", "RATE * x * x"))
    after = run_fingerprint(tmp_path)
    parts_before, parts_after = before["parts"], after["parts"]
    assert isinstance(parts_before, dict) and isinstance(parts_after, dict)
    changed = {k for k in parts_before if parts_before[k] != parts_after.get(k)}
    assert changed == {"helper 'rate_for'"}
    assert "global 'RATE'" in parts_before and "package 'math'" in parts_before


PYTHONS = {
    version: Path.home() / ".pyenv" / "versions" / version / "bin" / "python"
    for version in ("3.12.1", "3.13.0")
}


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_the_same_code_gives_the_same_fingerprint_on_another_python_version(
    tmp_path: Path, version: str
) -> None:
    python = PYTHONS[version]
    if not python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Python {version} is missing at {python} (pyenv install {version})")
        pytest.skip(f"Python {version} is not installed at {python}")
    (tmp_path / "pricing.py").write_text(PRICING)
    here = run_fingerprint(tmp_path)
    there = run_fingerprint(tmp_path, python=str(python))
    print(f"{sys.version.split()[0]}: {here['digest']}  {version}: {there['digest']}")
    assert here == there  # code digest, every part, and value digests


def test_recursion_and_mutual_recursion_terminate() -> None:
    def even(n: int) -> bool:
        return n == 0 or odd(n - 1)

    def odd(n: int) -> bool:
        return n != 0 and even(n - 1)

    print_ = fingerprint(even)
    assert "helper 'odd'" in print_.parts


def test_closure_values_count() -> None:
    def make(factor: int):  # type: ignore[no-untyped-def]
        def scaled(x: int) -> int:
            return x * factor

        return scaled

    assert fingerprint(make(2)).digest != fingerprint(make(3)).digest
    assert fingerprint(make(2)).digest == fingerprint(make(2)).digest


def test_a_global_without_a_deterministic_digest_counts_by_type_with_a_warning(
    tmp_path: Path,
) -> None:
    (tmp_path / "locked.py").write_text(
        "import threading\nLOCK = threading.Lock()\n\ndef f():\n    with LOCK:\n        return 1\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import locked

        with pytest.warns(UserWarning, match="global 'LOCK'") as caught:
            print_ = fingerprint(locked.f)
        assert len(caught) == 1
        assert "global 'LOCK'" in print_.parts
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("locked", None)


def test_a_function_without_source_falls_back_to_its_bytecode_and_says_so() -> None:
    namespace: dict[str, object] = {}
    exec("def f(x):\n    return x + 1\n", namespace)  # no file: no source
    print_ = fingerprint(namespace["f"])  # type: ignore[arg-type]
    assert print_.note is not None and "bytecode" in print_.note
    builtin = fingerprint(len)
    assert builtin.note is not None and "qualified name" in builtin.note


def test_library_functions_count_by_package_version_not_source() -> None:
    import json as json_module

    def dumps(x: object) -> str:
        return json_module.dumps(x)

    parts = fingerprint(dumps).parts
    assert "package 'json'" in parts
    assert not any(name.startswith("helper") for name in parts)


def test_a_failing_registered_hasher_is_unhashable_not_a_crash() -> None:
    from blocks.hashing import Unhashable, digest, register_hasher

    class Broken:
        pass

    def explode(value: Broken) -> str:
        raise RuntimeError("boom")

    register_hasher(Broken, explode)
    with pytest.raises(Unhashable, match="RuntimeError: boom"):
        digest({"x": Broken()})
