"""The installed ``block`` command, run for real in subprocesses with the per-test environment.

conftest.py gives each test its own BLOCKS_HOME and BLOCKS_MASTER_KEY; every run passes
os.environ on, so the command sees the same registry as the test.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from terminal import on_terminal

BLOCK = str(Path(sys.executable).with_name("block"))
SECRET = "s3cr3t-Zq8X"  # distinctive, so that finding it anywhere in output is meaningful


def block(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``block ARGS`` without a terminal (stdin is a pipe or /dev/null)."""
    return subprocess.run(
        [BLOCK, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        cwd=cwd,
        timeout=60,
    )


def ok(*args: str, **kwargs: object) -> str:
    done = block(*args, **kwargs)  # type: ignore[arg-type]
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0]


USER_BLOCKS = '''
from pydantic import Field, SecretStr

from blocks.core._block import Block


class ApiCredentials(Block):
    """Credentials of the orders API."""

    token: SecretStr = Field(min_length=8)
    user: str = "etl"


class OrdersApi(Block):
    url: str
    retries: int = 3
    credentials: ApiCredentials
'''


@pytest.fixture
def user_module(tmp_path: Path) -> Path:
    path = tmp_path / "project" / "orders_blocks.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(USER_BLOCKS))
    return path


# -- the walk-through -----------------------------------------------------------------


def test_walkthrough_register_create_load_ls_inspect_delete() -> None:
    registered = ok("register", "-m", "blocks.system")
    assert "secret" in registered and "blocks.system.Secret" in registered

    ok("create", "secret", "my-api-key", "--stdin", "value", input=SECRET + "\n")
    loaded = python('from blocks.system import Secret; print(Secret.load("my-api-key").get())')
    assert loaded.strip() == SECRET

    listed = block("ls")
    assert listed.returncode == 0 and "my-api-key" in listed.stdout and "secret" in listed.stdout
    assert SECRET not in listed.stdout + listed.stderr

    shown = block("inspect", "secret/my-api-key")
    assert shown.returncode == 0 and "**********" in shown.stdout
    assert SECRET not in shown.stdout + shown.stderr
    assert "sha256:" in shown.stdout  # schema checksum

    revealed = ok("inspect", "secret/my-api-key", "--show-secrets")
    assert SECRET in revealed

    assert "Deleted secret/my-api-key" in ok("delete", "secret/my-api-key", "--yes")
    assert "my-api-key" not in ok("ls")


def test_create_with_set_then_load_in_python() -> None:
    ok("create", "secret", "my-api-key", "--set", f"value={SECRET}")
    code = 'from blocks.system import Secret; print(Secret.load("my-api-key").get())'
    assert python(code).strip() == SECRET


def test_create_prompts_for_a_hidden_secret_on_a_terminal() -> None:
    code, transcript = on_terminal(
        "create",
        "secret",
        "my-api-key",
        answers=[("value (secret)", SECRET), ("Repeat for confirmation", SECRET)],
    )
    assert code == 0, transcript
    assert "Saved secret/my-api-key" in transcript
    assert SECRET not in transcript  # hidden input is not echoed
    load = 'from blocks.system import Secret; print(Secret.load("my-api-key").get())'
    assert python(load).strip() == SECRET

    code, transcript = on_terminal("delete", "secret/my-api-key", answers=[("Delete", "y")])
    assert code == 0 and "Deleted secret/my-api-key" in transcript, transcript


def test_create_without_terminal_names_the_missing_fields() -> None:
    line = assert_one_line_error(block("create", "secret", "my-api-key"), code=2)
    assert "--set value=VALUE" in line


def test_create_refuses_an_existing_name_unless_overwrite() -> None:
    ok("create", "string", "region", "--set", "value=eu-west-1")
    line = assert_one_line_error(block("create", "string", "region", "--set", "value=us-east-1"))
    assert "already exists" in line and "--overwrite" in line
    ok("create", "string", "region", "--set", "value=us-east-1", "--overwrite")
    assert json.loads(ok("inspect", "string/region", "--json"))["fields"] == {"value": "us-east-1"}


def test_set_values_parse_as_json_else_text() -> None:
    ok("create", "json", "config", "--set", 'value={"rows": [1, 2], "dry": true}')
    ok("create", "string", "number-text", "--set", "value=123")  # str field: stays text
    ok("create", "secret", "pin", "--set", "value=1234")  # secret str from digits
    assert json.loads(ok("inspect", "json/config", "--json"))["fields"]["value"] == {
        "rows": [1, 2],
        "dry": True,
    }
    assert json.loads(ok("inspect", "string/number-text", "--json"))["fields"]["value"] == "123"
    shown = json.loads(ok("inspect", "secret/pin", "--json", "--show-secrets"))
    assert shown["fields"]["value"] == "1234"


# -- no secret in machine-readable output -----------------------------------------------------


def test_json_outputs_hold_no_secret_values() -> None:
    ok("create", "secret", "api-key", "--set", f"value={SECRET}")
    login = ["--set", "value.user=etl", "--set", f"value.password={SECRET}"]
    ok("create", "secret", "db-login", *login)
    outputs = {
        "ls": ok("ls", "--json"),
        "inspect": ok("inspect", "secret/db-login", "--json"),
        "inspect-str": ok("inspect", "secret/api-key", "--json"),
        "type ls": ok("type", "ls", "--json"),
        "type inspect": ok("type", "inspect", "secret", "--json"),
    }
    for name, text in outputs.items():
        assert SECRET not in text, name
        json.loads(text)
    listed = json.loads(outputs["ls"])
    assert {row["slug"] for row in listed} == {"secret/api-key", "secret/db-login"}
    assert all(row["secret_fields"] == ["value"] for row in listed)
    # A dict-valued secret is masked as a whole, keys included.
    assert json.loads(outputs["inspect"])["fields"] == {"value": "**********"}
    assert "etl" not in outputs["inspect"]
    revealed = json.loads(ok("inspect", "secret/db-login", "--json", "--show-secrets"))
    assert revealed["fields"]["value"] == {"user": "etl", "password": SECRET}
    described = json.loads(outputs["type inspect"])
    assert described["documents"] == 2
    assert described["fields"][0]["name"] == "value" and described["fields"][0]["secret"]
    assert described["schemas"][0]["checksum"].startswith("sha256:")


# -- user blocks ------------------------------------------------------------------------------


def test_register_file_then_create_link_and_inspect(user_module: Path, tmp_path: Path) -> None:
    registered = ok("register", "-f", str(user_module))
    assert "api-credentials" in registered and "orders-api" in registered

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A new process in another folder imports the registered file again.
    ok("create", "api-credentials", "prod", "--set", f"token={SECRET}", cwd=elsewhere)
    ok(
        "create", "orders-api", "orders",
        "--set", "url=https://api.example.com",
        "--set", "credentials=api-credentials/prod",
        cwd=elsewhere,
    )  # fmt: skip

    shown = json.loads(ok("inspect", "orders-api/orders", "--json"))
    assert shown["fields"] == {
        "credentials": "api-credentials/prod",  # linked, shown by slug
        "retries": 3,
        "url": "https://api.example.com",
    }
    table = block("inspect", "api-credentials/prod")
    assert "**********" in table.stdout and SECRET not in table.stdout + table.stderr

    described = json.loads(ok("type", "inspect", "api-credentials", "--json"))
    assert described["description"] == "Credentials of the orders API."
    assert described["module"] == str(user_module.resolve())
    token = next(f for f in described["fields"] if f["name"] == "token")
    assert token["secret"] and token["required"] and token["type"] == "secret str"

    line = assert_one_line_error(block("delete", "api-credentials/prod", "--yes"))
    assert "referenced by orders-api/orders" in line


def test_register_module_by_name_from_the_current_folder(user_module: Path) -> None:
    out = ok("register", "-m", "orders_blocks", cwd=user_module.parent)
    assert "orders_blocks.OrdersApi" in out
    rows = json.loads(ok("type", "ls", "--json"))
    assert {"api-credentials", "orders-api"} <= {row["slug"] for row in rows}


def test_type_ls_lists_every_built_in_type_with_its_source_and_a_description() -> None:
    from blocks.core._block import BUILTIN_BLOCK_MODULES

    rows = {row["slug"]: row for row in json.loads(ok("type", "ls", "--json"))}
    missing = [slug for slug in BUILTIN_BLOCK_MODULES if not rows.get(slug, {}).get("description")]
    assert missing == []  # aws-credentials, gcs, s3, json ... showed none before
    assert all(rows[slug]["source"] == "built in" for slug in BUILTIN_BLOCK_MODULES)
    table = ok("type", "ls")
    assert "Store data in an S3 bucket" in table and "Any JSON-compatible value." in table
    print(f"{len(BUILTIN_BLOCK_MODULES)} built-in types listed, each with a description")


def test_invalid_value_names_the_field_but_not_the_value(user_module: Path) -> None:
    ok("register", "-f", str(user_module))
    short = "Sh0rt"  # fails min_length=8: must not be echoed, it is a secret
    line = assert_one_line_error(block("create", "api-credentials", "x", "--set", f"token={short}"))
    assert "'token'" in line and "at least 8" in line and short not in line
    line = assert_one_line_error(
        block("create", "orders-api", "x", "--set", "url=u", "--set", "retries=many-XYZ",
              "--set", "credentials=api-credentials/none")
    )  # fmt: skip
    assert "api-credentials" in line and "none" in line  # the missing linked block
    ok("create", "api-credentials", "prod", "--set", f"token={SECRET}")
    line = assert_one_line_error(
        block("create", "orders-api", "x", "--set", "url=u", "--set", "retries=many-XYZ",
              "--set", "credentials=prod")
    )  # fmt: skip
    assert "'retries'" in line and "integer" in line and "many-XYZ" not in line


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["create", "no-such-type", "x", "--set", "a=1"], 1, "no-such-type"),
        (["create", "secret", "Bad_Name", "--set", "value=x"], 1, "Invalid block name"),
        (["inspect", "secret"], 1, "TYPE/NAME"),
        (["inspect", "secret/missing"], 1, "No secret block named 'missing'"),
        (["delete", "secret/missing", "--yes"], 1, "No secret block named 'missing'"),
        (["register", "-m", "no_such_module_xyz"], 1, "No module named 'no_such_module_xyz'"),
        (["register", "-f", "/nonexistent/blocks.py"], 1, "No such Python file"),
        (["register"], 2, "-m MODULE or -f FILE"),
        (["type", "inspect", "no-such-type"], 1, "No block type 'no-such-type'"),
        (["create", "string", "s", "--set", "novalue"], 2, "FIELD=VALUE"),
        (["create", "secret", "x", "--set", "nope=1"], 1, "no field 'nope'"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_user_mistakes_are_one_error_line(args: list[str], code: int, expected: str) -> None:
    assert expected in assert_one_line_error(block(*args), code=code)


def test_register_module_without_blocks_and_failing_module(tmp_path: Path) -> None:
    (tmp_path / "empty_mod.py").write_text("X = 1\n")
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('boom at import')\n")
    line = assert_one_line_error(block("register", "-m", "empty_mod", cwd=tmp_path))
    assert "defines no Block" in line
    line = assert_one_line_error(block("register", "-f", str(tmp_path / "broken_mod.py")))
    assert "RuntimeError" in line and "boom at import" in line


SIDE_EFFECT_BLOCKS = """
import pathlib

pathlib.Path({marker!r}).write_text("imported")  # what `antigravity` does: run on import

from blocks.core._block import Block


class {cls}(Block):
    a: str = ""
"""


def _module_with_a_side_effect(folder: Path, name: str, cls: str) -> Path:
    marker = folder / f"{name}.imported"
    (folder / f"{name}.py").write_text(SIDE_EFFECT_BLOCKS.format(marker=str(marker), cls=cls))
    return marker


def _register_row(slug: str, module: str) -> None:
    """A type row naming `module`, written straight into the registry as anyone who can write
    a shared registry could."""
    from blocks.core._registry import Registry

    Registry.default().register_type(
        slug=slug,
        name=slug,
        description="",
        module=module,
        checksum=f"sha256:{slug}",
        version="1",
        fields={"properties": {}},
    )


def test_create_never_imports_a_module_named_only_by_the_registry(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    marker = _module_with_a_side_effect(code, "side_effect_blocks", "SideEffect")
    _register_row("side-effect", "side_effect_blocks")
    env = dict(os.environ, PYTHONPATH=str(code))  # importable: only the registry names it
    line = assert_one_line_error(block("create", "side-effect", "x", env=env, cwd=code))
    assert not marker.exists(), "a module name read from the registry was imported"
    assert "block register -m side_effect_blocks" in line
    print(f"\nrefused without importing: {line}")

    # Registered by this user on this machine: from then on `create` imports it.
    ok("register", "-m", "side_effect_blocks", env=env, cwd=code)
    marker.unlink()
    ok("create", "side-effect", "x", "--set", "a=1", env=env, cwd=tmp_path)
    assert marker.exists()


def test_create_imports_a_module_an_installed_plugin_names(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    marker = _module_with_a_side_effect(site, "plugin_blocks", "PluginBlock")
    info = site / "blocks_plugin_demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: blocks-plugin-demo\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text("[blocks.types]\nplugin = plugin_blocks\n")
    _register_row("plugin-block", "plugin_blocks")
    env = dict(os.environ, PYTHONPATH=str(site))
    ok("create", "plugin-block", "x", "--set", "a=1", env=env, cwd=tmp_path)
    assert marker.exists()


def test_unexpected_error_is_one_line_with_a_debug_hint(tmp_path: Path) -> None:
    # Nothing listens on port 1: the driver's connection error is not one of ours.
    env = dict(os.environ, BLOCKS_REGISTRY_URL="postgresql://blocks@127.0.0.1:1/blocks")
    line = assert_one_line_error(block("ls", env=env))
    assert "BLOCKS_DEBUG=1" in line
    debug = block("ls", env={**env, "BLOCKS_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.parametrize(
    ("value", "traceback"),
    [("0", False), ("false", False), ("OFF", False), ("no", False), ("yes", True), ("On", True)],
)
def test_blocks_debug_is_parsed_as_a_boolean(value: str, traceback: bool) -> None:
    env = dict(
        os.environ,
        BLOCKS_REGISTRY_URL="postgresql://blocks@127.0.0.1:1/blocks",  # an unexpected error
        BLOCKS_DEBUG=value,
    )
    done = block("ls", env=env)
    if traceback:
        assert done.returncode == 1 and "Traceback" in done.stderr
    else:
        assert "BLOCKS_DEBUG=1" in assert_one_line_error(done)


def test_an_invalid_blocks_debug_is_a_warning_and_off() -> None:
    env = dict(os.environ, BLOCKS_REGISTRY_URL="postgresql://blocks@127.0.0.1:1/blocks")
    done = block("ls", env={**env, "BLOCKS_DEBUG": "maybe"})
    assert done.returncode == 1 and "Traceback (most recent call last)" not in done.stderr
    warning, error = done.stderr.strip().splitlines()
    assert warning.startswith("Warning: BLOCKS_DEBUG='maybe' is not a boolean")
    assert "0, false, no, off" in warning and error.startswith("Error: ")
    print(f"\n{warning}")


def test_delete_without_terminal_needs_yes() -> None:
    ok("create", "string", "region", "--set", "value=eu")
    assert "--yes" in assert_one_line_error(block("delete", "string/region"), code=2)
    assert "region" in ok("ls")


# -- keys -------------------------------------------------------------------------------------


def test_key_rotate_in_key_file_then_load_still_works(blocks_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BLOCKS_MASTER_KEY"}
    env["BLOCKS_KEY_SOURCE"] = "file"
    assert "No master key yet" in ok("key", "info", env=env)
    ok("create", "secret", "my-api-key", "--set", f"value={SECRET}", env=env)
    before = json.loads(ok("key", "info", "--json", env=env))
    assert before["source"] == str(blocks_home / "master.key")
    material = (blocks_home / "master.key").read_text().strip()

    rotated = ok("key", "rotate", env=env)
    assert "1 block(s)" in rotated and before["active_key_id"] in rotated  # retired old id
    new_material = (blocks_home / "master.key").read_text().strip()
    for text in (rotated, ok("key", "info", env=env)):
        assert material not in text and new_material not in text
    after = json.loads(ok("key", "info", "--json", env=env))
    assert after["active_key_id"] != before["active_key_id"] and len(after["key_ids"]) == 1

    code = 'from blocks.system import Secret; print(Secret.load("my-api-key").get())'
    assert python(code, env=env).strip() == SECRET


def test_key_info_says_the_registry_has_a_key_no_source_here_provides() -> None:
    ok("create", "secret", "my-api-key", "--set", f"value={SECRET}")
    recorded = json.loads(ok("key", "info", "--json"))["active_key_id"]
    material = os.environ["BLOCKS_MASTER_KEY"]
    lacking = {k: v for k, v in os.environ.items() if k != "BLOCKS_MASTER_KEY"}
    lacking["BLOCKS_KEY_SOURCE"] = "file"  # an empty key file: no source has a key
    line = assert_one_line_error(block("key", "info", env=lacking))
    assert "No master key yet" not in line
    assert recorded in line and "fingerprint" in line and "no key source here provides it" in line
    assert "BLOCKS_MASTER_KEY" in line and "master.key" in line and material not in line
    other = ok("key", "generate").strip()
    line = assert_one_line_error(
        block("key", "info", "--json", env=dict(os.environ, BLOCKS_MASTER_KEY=other))
    )
    assert recorded in line and other not in line and material not in line
    print(f"\nkey info without the recorded key: {line}")


def test_key_rotate_with_env_key_re_encrypts_under_the_new_first_key() -> None:
    old = os.environ["BLOCKS_MASTER_KEY"]
    ok("create", "secret", "my-api-key", "--set", f"value={SECRET}")
    new = ok("key", "generate").strip()
    assert len(base64.urlsafe_b64decode(new)) == 32 and new != old
    rotated = ok("key", "rotate", env=dict(os.environ, BLOCKS_MASTER_KEY=f"{new},{old}"))
    assert "no longer needed" in rotated and new not in rotated and old not in rotated
    code = 'from blocks.system import Secret; print(Secret.load("my-api-key").get())'
    assert python(code, env=dict(os.environ, BLOCKS_MASTER_KEY=new)).strip() == SECRET


# -- the command itself -----------------------------------------------------------------------


def test_version_and_help() -> None:
    assert ok("--version").startswith("block ")
    assert all(name in ok("--help") for name in ("register", "inspect", "create", "key", "type"))


def test_ls_stays_light() -> None:
    """`block ls` must start fast: no pydantic, crypto, SQLAlchemy or results machinery."""
    from blocks.system import Secret

    Secret(value="listed").save("light")
    code = (
        "import sys\n"
        "sys.argv = ['block', 'ls']\n"
        "from blocks.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('pydantic', 'cryptography', 'blocks.results', 'fsspec', 'keyring',"
        " 'sqlalchemy')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = python(code)
    assert "light" in out and "HEAVY []" in out


def test_results_ls_reads_the_registry_without_sqlalchemy(tmp_path: Path) -> None:
    # Every `block results` command looks for a saved results-key block first; a miss must not
    # build the SQL engine just to say which secrets exist (it cost ~0.25 s per command).
    from blocks.results import ResultStore
    from blocks.system import Secret

    Secret(value="other").save("unrelated")  # a registry exists, without a results key
    ResultStore.resolve(str(tmp_path / "store"), serializer="pickle").write("k", 1)
    code = (
        "import sys\n"
        f"sys.argv = ['block', 'results', 'ls', '-s', {str(tmp_path / 'store')!r}]\n"
        "from blocks.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('SQLALCHEMY', 'sqlalchemy' in sys.modules)\n"
    )
    out = python(code)
    assert "k\t" in out and "SQLALCHEMY False" in out
