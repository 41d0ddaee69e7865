"""Plugins: real packages under `tests/plugins/`, installed with pip into a fresh venv, add a
block type (``blocks.types``) and a serializer (``blocks.serializers``) with no `block register`.

The fresh venv holds only the plugins; `blocks` and its dependencies come from this venv through
a ``.pth`` file (so nothing is downloaded: pip runs with ``--no-index --no-deps
--no-build-isolation``, building with the `flit_core` of the dev extra).

Each test is the failure it guards against: an installed type unknown until registered, a
plugin serializer's record unreadable in the next process, a broken plugin that takes the CLI
down with a traceback, two packages silently overriding each other's type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"


def _make_venv(root: Path, *plugins: str) -> Path:
    """A fresh venv at `root` with `plugins` (folders of tests/plugins) installed by pip;
    returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    # Processed as a site dir (not just a path), so our editable install of blocks works there.
    Path(site, "zz_blocks_dev.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    for plugin in plugins:
        done = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                str(PLUGINS / plugin),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return python


@pytest.fixture(scope="module")
def demo_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo plugin and the broken one, installed."""
    return _make_venv(tmp_path_factory.mktemp("venv-demo"), "demo", "broken")


@pytest.fixture(scope="module")
def clash_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo plugin and a second package claiming its block type."""
    return _make_venv(tmp_path_factory.mktemp("venv-clash"), "demo", "clash")


def _block(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from blocks.cli import main; sys.argv[0] = 'block'; main()"
    return subprocess.run(
        [str(python), "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def _python(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def test_a_plugin_type_lists_is_created_and_loads_by_slug_without_register(
    demo_venv: Path,
) -> None:
    listed = _block(demo_venv, "type", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["slug"]: row for row in json.loads(listed.stdout)}
    assert rows["demo-webhook"]["source"] == "plugin blocks-plugin-demo 1.2.0"
    assert (
        rows["demo-webhook"]["description"] == "A webhook URL and its token, from the demo plugin."
    )

    created = _block(
        demo_venv,
        "create",
        "demo-webhook",
        "ops",
        "--set",
        "url=https://hooks.example/ops",
        "--set",
        "token=tok-0123456789",
    )
    assert created.returncode == 0, created.stdout + created.stderr

    loaded = _python(
        demo_venv,
        """
        from blocks import Block
        hook = Block.load("demo-webhook/ops")
        print(type(hook).__module__, hook.url, hook.token.get_secret_value())
        """,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == [
        "blocks_plugin_demo.types",
        "https://hooks.example/ops",
        "tok-0123456789",
    ]
    again = _block(demo_venv, "type", "ls")
    assert again.returncode == 0, again.stderr
    assert "plugin blocks-plugin-demo 1.2.0" in again.stdout
    print(f"listed {len(rows)} type(s); demo-webhook created and loaded in fresh processes")


def test_a_plugin_serializer_writes_and_reads_a_signed_record(
    demo_venv: Path, blocks_home: Path
) -> None:
    script = """
        from blocks import flow, task

        @task(persist_result=True, result_serializer="demo-reversed",
              cache_key_fn=lambda: "plugin-serializer-key")
        def produce() -> dict:
            return {"rows": 3, "source": "plugin"}

        @flow
        def run() -> None:
            state = produce(return_state=True)
            print(state.name, state.result())

        run()
        """
    first = _python(demo_venv, script)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "Completed {'rows': 3, 'source': 'plugin'}"
    second = _python(demo_venv, script)  # a new process: the record is read back through it
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "Cached {'rows': 3, 'source': 'plugin'}"

    records = [p for p in (blocks_home / "storage").rglob("*") if p.is_file()]
    written = b"".join(p.read_bytes() for p in records)
    assert b"demo-reversed" in written  # the header names the plugin's short type
    assert json.dumps({"rows": 3, "source": "plugin"}).encode()[::-1] in written
    print(f"{len(records)} record(s): written by one process, read (cached) by the next")


def test_a_broken_plugin_warns_once_by_name_and_breaks_nothing(demo_venv: Path) -> None:
    listed = _block(demo_venv, "type", "ls")
    assert listed.returncode == 0, listed.stderr
    assert "demo-webhook" in listed.stdout
    assert "Traceback" not in listed.stderr + listed.stdout
    assert listed.stderr.count("blocks-plugin-broken 0.1.0") == 1, listed.stderr
    assert "libdemo-missing" in listed.stderr

    loaded = _python(
        demo_venv,
        """
        import warnings
        from blocks.core._block import block_class_for
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                block_class_for("demo-webhook")
            try:
                block_class_for("no-such-type")
            except Exception as exc:
                print(type(exc).__name__)
        print(len([w for w in caught if "blocks-plugin-broken" in str(w.message)]))
        """,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["UnknownBlockType", "1"]
    print(f"stderr of `block type ls`: {listed.stderr.strip()!r}")


def test_two_plugins_claiming_one_slug_is_an_error_naming_both(clash_venv: Path) -> None:
    loaded = _python(
        clash_venv,
        """
        from blocks.core._block import block_class_for
        from blocks.errors import PluginConflict
        try:
            block_class_for("demo-webhook")
        except PluginConflict as exc:
            print(exc)
        """,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "blocks-plugin-demo 1.2.0" in loaded.stdout
    assert "blocks-plugin-clash 0.3.0" in loaded.stdout

    created = _block(clash_venv, "create", "demo-webhook", "x", "--set", "url=https://x.example")
    assert created.returncode != 0
    assert "Traceback" not in created.stderr
    assert "blocks-plugin-demo 1.2.0" in created.stderr
    assert "blocks-plugin-clash 0.3.0" in created.stderr
    print(f"error: {loaded.stdout.strip()}")
