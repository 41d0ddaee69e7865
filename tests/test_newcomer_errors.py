"""The errors a newcomer meets in the first hour: one line, what to do, no traceback.

Each case runs the real ``block`` command in a subprocess on a registry broken the way a user
breaks it (a text file, a truncated copy, a read-only mount, a typo'd URL).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.errors import ConfigurationError
from blocks.filesystems import RemoteFileSystem
from blocks.results._storage import TypoWarning

BLOCK = str(Path(sys.executable).with_name("block"))


def block(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLOCK, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single ``Error: ...`` line; fails on a traceback, a zero exit or a second line."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert "unexpected" not in lines[0] and "BLOCKS_DEBUG" not in lines[0], lines[0]
    return lines[0]


def saved_registry(home: Path) -> Path:
    """A real registry file holding one secret, closed (its WAL folded into the file)."""
    done = block("create", "secret", "api-key", "--set", "value=s3cr3t")
    assert done.returncode == 0, done.stderr
    registry = home / "registry.db"
    assert not (home / "registry.db-wal").exists()
    return registry


def test_a_registry_file_that_is_not_sqlite_says_to_move_it_aside(blocks_home: Path) -> None:
    blocks_home.mkdir()
    (blocks_home / "registry.db").write_text("name,value\napi-key,s3cr3t\n" * 100)
    line = one_line_error(block("ls"))
    assert "is not a SQLite database or is damaged" in line
    assert f"mv {blocks_home / 'registry.db'}" in line


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_registry_says_so_and_what_to_do(blocks_home: Path, damage: str) -> None:
    registry = saved_registry(blocks_home)
    data = registry.read_bytes()
    if damage == "truncated":
        registry.write_bytes(data[:3000])
    else:  # every page overwritten, the 100-byte file header intact
        registry.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    line = one_line_error(block("ls"))
    assert "is not a SQLite database or is damaged" in line, line
    assert "restore it from a backup" in line


@pytest.mark.parametrize("home", ["a-file", "/dev/null"])
def test_blocks_home_pointing_at_a_file(tmp_path: Path, home: str) -> None:
    path = tmp_path / home if not home.startswith("/") else Path(home)
    if not path.exists():
        path.write_text("not a folder")
    line = one_line_error(block("ls", env={"BLOCKS_HOME": str(path)}))
    assert f"{path} is a file, not a folder" in line
    assert "Point BLOCKS_HOME" in line


@pytest.mark.parametrize("url", ["mysql://me:pw@db.example/blocks", "mysql+pymysql://db/b"])
def test_an_unsupported_registry_url_names_the_supported_ones(url: str) -> None:
    line = one_line_error(block("ls", env={"BLOCKS_REGISTRY_URL": url}))
    assert "uses mysql://, which blocks does not support" in line
    assert "sqlite:///" in line and "postgresql://" in line
    assert "pw" not in line.replace("support", "")  # never the password


def test_a_registry_url_that_names_a_folder(tmp_path: Path) -> None:
    line = one_line_error(block("ls", env={"BLOCKS_REGISTRY_URL": f"sqlite:///{tmp_path}"}))
    assert "is a folder" in line and "must name a file" in line


@pytest.mark.parametrize("older_than", ["99999999999999d", "999999999w"])
def test_prune_older_than_forever_is_a_usage_error(older_than: str) -> None:
    line = one_line_error(block("results", "prune", "--older-than", older_than), code=2)
    assert "is too long" in line and "36500d" in line


def test_an_ftp_url_without_a_host_says_where_the_host_goes() -> None:
    line = one_line_error(block("results", "ls", "--storage", "ftp:///results"))
    assert "cannot be set up" in line and "ftp://host/path" in line


def test_remote_filesystem_errors_say_what_to_do() -> None:
    with pytest.raises(ConfigurationError, match=r"missing a required argument: .host."):
        RemoteFileSystem(basepath="ftp:///results").exists("x")
    # The host comes from the URL, as fsspec.url_to_fs does (nobody listens on port 1). Run
    # apart: fsspec's FTPFileSystem.__del__ complains about its half-built self.
    code = (
        "from blocks.filesystems import RemoteFileSystem\n"
        "RemoteFileSystem(basepath='ftp://127.0.0.1:1/results').exists('x')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "StorageError: Cannot reach ftp://127.0.0.1:1/results: Connection refused" in (
        done.stderr
    )


# -- a read-only registry: reading works, writing says the path is read-only -------------------


def read_only(home: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` with `home` read-only. As root (CI), file modes stop nothing, so the
    folder is bind-mounted read-only in a private mount namespace; otherwise chmod does it."""
    if os.geteuid() == 0:
        assert shutil.which("unshare"), "unshare (util-linux) is needed to mount read-only"
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(home)]
    else:
        (home / "registry.db").chmod(0o444)
        home.chmod(0o555)
        argv = []
    try:
        return subprocess.run(
            [*argv, *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        home.chmod(0o700)


def test_a_read_only_registry_lists_and_loads(blocks_home: Path) -> None:
    saved_registry(blocks_home)
    before = (blocks_home / "registry.db").read_bytes()

    listed = read_only(blocks_home, BLOCK, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == ["api-key"]

    loaded = read_only(
        blocks_home,
        sys.executable,
        "-c",
        "from blocks.system import Secret; print(Secret.load('api-key').get())",
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "s3cr3t"

    types = read_only(blocks_home, BLOCK, "type", "ls")
    assert types.returncode == 0, types.stderr

    for write in (
        ("create", "secret", "other", "--set", "value=x"),
        ("delete", "secret/api-key", "--yes"),
    ):
        line = one_line_error(read_only(blocks_home, BLOCK, *write))
        assert f"The registry {blocks_home / 'registry.db'} is read-only" in line, line
        assert "listing and loading work" in line
    assert (blocks_home / "registry.db").read_bytes() == before
    assert block("ls").returncode == 0  # writable again once the mount is gone


# -- a typo'd storage slug is a local folder, said once ----------------------------------------


@pytest.fixture(autouse=True)
def _fresh_typo_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: no spec checked yet."""
    import blocks.results._storage

    monkeypatch.setattr(blocks.results._storage, "_TYPO_CHECKED", set())


def test_a_typod_slug_in_result_storage_warns_once_and_uses_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blocks import flow, task

    monkeypatch.chdir(tmp_path)

    @task(persist_result=True, result_storage="locl-file-system/prod", result_serializer="json")
    def double(x: int) -> int:
        return 2 * x

    @flow
    def pipeline() -> list[int]:
        return [double(1), double(2), double(3)]

    with pytest.warns(TypoWarning) as caught:
        assert pipeline() == [2, 4, 6]
    typos = [w for w in caught if issubclass(w.category, TypoWarning)]
    assert len(typos) == 1, [str(w.message) for w in typos]
    message = str(typos[0].message)
    print(message)
    assert "did you mean 'local-file-system/prod'?" in message
    assert "write './locl-file-system/prod' to silence this" in message
    assert (tmp_path / "locl-file-system" / "prod").is_dir()


def test_a_typod_slug_of_a_user_block_type_in_the_setting_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blocks.filesystems import LocalFileSystem
    from blocks.results import resolve_storage

    class S3Bucket(LocalFileSystem):  # a user's own storage type, slug s3-bucket
        pass

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BLOCKS_RESULTS_STORAGE", "s3-bukcet/prod")
    with pytest.warns(TypoWarning, match=r"did you mean 's3-bucket/prod'\? .*local folder"):
        storage = resolve_storage(None)
    assert storage.describe().endswith("/s3-bukcet/prod")


@pytest.mark.parametrize("spec", ["./locl-file-system/prod", "results/daily", "data/prod"])
def test_folders_that_do_not_look_like_typos_are_quiet(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from blocks.results import resolve_storage

    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_storage(spec)


def test_a_block_given_positional_arguments_says_to_name_the_fields() -> None:
    with pytest.raises(TypeError, match=r"takes its fields by name, e\.g\. RemoteFileSystem\("):
        RemoteFileSystem("ftp://host/results")  # type: ignore[call-arg, misc, unused-ignore]
