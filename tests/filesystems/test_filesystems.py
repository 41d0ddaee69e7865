"""Filesystem blocks: one abstract suite run against every backend, plus key-safety properties.

Backends: `LocalFileSystem` on the real disk; `RemoteFileSystem` over fsspec's ``memory://``
and ``file://`` (the second exercises the upload-then-rename path of non-object stores);
`S3` against a real LocalStack; `GCS` against the real GCS emulator (fixtures in servers.py).
"""

from __future__ import annotations

import os
import pickle
import posixpath
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from servers import BACKENDS, make_storage

from blocks.core._block import Block
from blocks.errors import ConfigurationError, MissingDependency, UnsafePath
from blocks.filesystems import (
    GCS,
    S3,
    LocalFileSystem,
    RemoteFileSystem,
    WritableFileSystem,
    validate_key,
)
from blocks.filesystems import remote as remote_module
from blocks.filesystems.base import TEMP_PREFIX


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> WritableFileSystem:
    """A fresh, empty storage block of each kind."""
    made: WritableFileSystem = make_storage(request.param, request, tmp_path)
    return made


# -- the protocol -----------------------------------------------------------------------------


def test_write_then_read_returns_the_same_bytes(storage: WritableFileSystem) -> None:
    storage.write_path("a.bin", b"\x00\x01payload\xff")
    assert storage.read_path("a.bin") == b"\x00\x01payload\xff"
    assert storage.exists("a.bin")


def test_empty_content_is_an_object(storage: WritableFileSystem) -> None:
    storage.write_path("empty", b"")
    assert storage.exists("empty")
    assert storage.read_path("empty") == b""
    assert storage.size("empty") == 0


def test_overwrite_replaces_the_content(storage: WritableFileSystem) -> None:
    storage.write_path("k", b"old content, longer")
    storage.write_path("k", b"new")
    assert storage.read_path("k") == b"new"
    assert storage.size("k") == 3


def test_nested_keys_are_listed_relative_to_the_base_path(storage: WritableFileSystem) -> None:
    for key in ["top.bin", "a/one.bin", "a/b/two.bin", "a/b/c/three.bin", "ab/other.bin"]:
        storage.write_path(key, key.encode())
    assert storage.ls() == sorted(
        ["top.bin", "a/one.bin", "a/b/two.bin", "a/b/c/three.bin", "ab/other.bin"]
    )
    assert storage.ls("a") == ["a/b/c/three.bin", "a/b/two.bin", "a/one.bin"]
    assert storage.ls("a/b/") == ["a/b/c/three.bin", "a/b/two.bin"]
    assert storage.ls("a/b/two.bin") == ["a/b/two.bin"]
    assert sorted(storage.walk_keys("a/b")) == ["a/b/c/three.bin", "a/b/two.bin"]
    assert storage.read_path("a/b/c/three.bin") == b"a/b/c/three.bin"


def test_listing_a_missing_prefix_is_empty(storage: WritableFileSystem) -> None:
    assert storage.ls() == []
    assert storage.ls("nothing/here") == []
    assert list(storage.walk_keys("nothing")) == []


def test_keys_are_normalised(storage: WritableFileSystem) -> None:
    storage.write_path("x//./y.bin", b"1")
    assert storage.ls() == ["x/y.bin"]
    assert storage.read_path("x/y.bin") == b"1"


def test_a_folder_is_not_an_object(storage: WritableFileSystem) -> None:
    storage.write_path("dir/file", b"1")
    assert not storage.exists("dir")
    with pytest.raises(FileNotFoundError):
        storage.read_path("dir")
    storage.delete("dir")  # not an object: nothing to do, no error
    assert storage.exists("dir/file")


def test_delete_removes_and_tolerates_missing(storage: WritableFileSystem) -> None:
    storage.write_path("d/k", b"1")
    storage.delete("d/k")
    assert not storage.exists("d/k")
    assert storage.ls() == []
    storage.delete("d/k")
    storage.delete("never/was")


def test_missing_key_raises_file_not_found(storage: WritableFileSystem) -> None:
    assert not storage.exists("missing")
    with pytest.raises(FileNotFoundError):
        storage.read_path("missing")
    with pytest.raises(FileNotFoundError):
        storage.size("missing")
    with pytest.raises(FileNotFoundError):
        storage.read_range("missing", 0, 10)
    with pytest.raises(FileNotFoundError):
        storage.read_range("missing", 3, 3)
    with pytest.raises(FileNotFoundError), storage.open_read("missing"):
        pass


def test_size_and_read_range(storage: WritableFileSystem) -> None:
    data = bytes(range(256)) * 4
    storage.write_path("r.bin", data)
    assert storage.size("r.bin") == 1024
    assert storage.read_range("r.bin", 0, 16) == data[:16]
    assert storage.read_range("r.bin", 100, 300) == data[100:300]
    assert storage.read_range("r.bin", 1000, 2000) == data[1000:]
    assert storage.read_range("r.bin", 5, 5) == b""
    assert storage.read_range("r.bin", 1024, 1100) == b""
    assert storage.read_range("r.bin", 5000, 6000) == b""
    with pytest.raises(ValueError):
        storage.read_range("r.bin", 10, 5)
    with pytest.raises(ValueError):
        storage.read_range("r.bin", -1, 5)


def test_open_read_is_seekable(storage: WritableFileSystem) -> None:
    storage.write_path("s.bin", b"0123456789")
    with storage.open_read("s.bin") as f:
        assert f.read(3) == b"012"
        f.seek(7)
        assert f.read() == b"789"
        f.seek(0)
        assert f.read() == b"0123456789"


def test_open_atomic_write_publishes_on_clean_exit(storage: WritableFileSystem) -> None:
    with storage.open_atomic_write("w/out.bin") as f:
        f.write(b"part one, ")
        assert not storage.exists("w/out.bin")
        f.write(b"part two")
    assert storage.read_path("w/out.bin") == b"part one, part two"
    assert storage.ls() == ["w/out.bin"]


def test_open_atomic_write_large_payload_spilled_to_disk(
    storage: WritableFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny spool limit sends the streamed write through the upload-a-file path.
    monkeypatch.setattr(remote_module, "SPOOL_MAX_MEMORY", 1024)
    chunk = os.urandom(64 * 1024)
    with storage.open_atomic_write("big.bin") as f:
        for _ in range(16):
            f.write(chunk)
    assert storage.size("big.bin") == 16 * len(chunk)
    assert storage.read_range("big.bin", len(chunk), 2 * len(chunk)) == chunk


def test_exception_inside_atomic_write_leaves_nothing(storage: WritableFileSystem) -> None:
    with pytest.raises(RuntimeError, match="boom"), storage.open_atomic_write("fail.bin") as f:
        f.write(b"half a record")
        raise RuntimeError("boom")
    assert not storage.exists("fail.bin")
    assert storage.ls() == []
    _assert_no_temp_files(storage)


def test_exception_inside_atomic_overwrite_keeps_the_old_object(
    storage: WritableFileSystem,
) -> None:
    storage.write_path("keep.bin", b"old")
    with pytest.raises(KeyboardInterrupt), storage.open_atomic_write("keep.bin") as f:
        f.write(b"new but unfinished")
        raise KeyboardInterrupt
    assert storage.read_path("keep.bin") == b"old"
    assert storage.ls() == ["keep.bin"]
    _assert_no_temp_files(storage)


def _assert_no_temp_files(storage: WritableFileSystem) -> None:
    if isinstance(storage, LocalFileSystem):
        leftovers = [p for p in storage.root().rglob("*") if p.name.startswith(TEMP_PREFIX)]
        assert leftovers == []
    elif isinstance(storage, RemoteFileSystem):
        fs = storage.filesystem()
        root = storage._root()
        found = fs.find(root) if fs.exists(root) else []
        assert [p for p in found if TEMP_PREFIX in p] == []


UNSAFE_KEYS = [
    "../escape",
    "a/../../escape",
    "a/..",
    "..",
    "/etc/passwd",
    "//server/share",
    "C:\\Windows\\win.ini",
    "c:/windows",
    "\\\\server\\share",
    "a\\..\\..\\b",
    "nul\x00byte",
    "line\nbreak",
    "",
    "/",
    ".",
    "./.",
    f"a/{TEMP_PREFIX}123",
]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused_by_every_operation(storage: WritableFileSystem, key: str) -> None:
    operations: list[Callable[[], object]] = [
        lambda: storage.read_path(key),
        lambda: storage.write_path(key, b"x"),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
        lambda: storage.size(key),
        lambda: storage.read_range(key, 0, 1),
        lambda: storage.open_read(key),
        lambda: storage.open_atomic_write(key).__enter__(),
    ]
    if key not in ("", ".", "./."):  # these mean "everything" for a listing prefix
        operations += [lambda: storage.ls(key), lambda: list(storage.walk_keys(key))]
    for operation in operations:
        with pytest.raises(UnsafePath, match="Refused key"):
            operation()


def test_empty_prefix_lists_everything(storage: WritableFileSystem) -> None:
    storage.write_path("a", b"1")
    assert storage.ls("") == storage.ls(".") == list(storage.walk_keys()) == ["a"]
    with pytest.raises(UnsafePath):
        storage.ls("/")


def test_describe_names_the_location_without_secrets(storage: WritableFileSystem) -> None:
    text = storage.describe()
    assert "://" in text
    for word in ("secret", "key", "token", "**********"):
        assert word not in text.lower()


# -- save / load through the registry ----------------------------------------------------------


def test_block_round_trips_through_the_registry(storage: WritableFileSystem) -> None:
    storage.write_path("saved.bin", b"v")
    storage.save("suite-store")
    loaded = Block.load(f"{type(storage).get_block_type_slug()}/suite-store")
    assert type(loaded) is type(storage)
    assert loaded.model_dump() == storage.model_dump()
    assert isinstance(loaded, WritableFileSystem)
    assert loaded.read_path("saved.bin") == b"v"
    assert loaded.describe() == storage.describe()


# -- local specifics ------------------------------------------------------------------------


def test_local_default_basepath_is_under_blocks_home(blocks_home: Path) -> None:
    fs = LocalFileSystem()
    assert fs.root() == (blocks_home / "storage").absolute()
    fs.write_path("x", b"1")
    assert (blocks_home / "storage" / "x").read_bytes() == b"1"
    LocalFileSystem().save("default")
    assert LocalFileSystem.load("default").basepath is None


def test_the_default_folder_follows_blocks_home_and_home_within_a_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default folder is cached on the raw BLOCKS_HOME (and HOME): each change is seen.
    # (A "~" is expanded once per BLOCKS_HOME value by `settings.blocks_home`.)
    fs = LocalFileSystem()
    monkeypatch.setenv("HOME", str(tmp_path / "a"))
    monkeypatch.setenv("BLOCKS_HOME", str(tmp_path / "one"))
    assert fs.root() == tmp_path / "one" / "storage"
    monkeypatch.setenv("BLOCKS_HOME", str(tmp_path / "two"))
    assert fs.root() == tmp_path / "two" / "storage"
    monkeypatch.setenv("BLOCKS_HOME", f"~/homes-{tmp_path.name}")
    assert fs.root() == tmp_path / "a" / f"homes-{tmp_path.name}" / "storage"
    monkeypatch.setenv("BLOCKS_HOME", str(tmp_path / "one"))
    assert fs.root() == tmp_path / "one" / "storage"


def test_local_basepath_expands_user_and_file_url(tmp_path: Path) -> None:
    assert LocalFileSystem(basepath=f"file://{tmp_path}").root() == tmp_path
    assert LocalFileSystem(basepath="~/x").root() == Path("~/x").expanduser()


def test_local_atomic_write_uses_temp_file_fsync_and_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = LocalFileSystem(basepath=str(tmp_path))
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        calls.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def rename(src: str, dst: str, *, src_dir_fd: int, dst_dir_fd: int) -> None:
        # Renamed inside the folder held open (no path looked up again), from a temp name.
        calls.append(f"rename in one folder {src_dir_fd == dst_dir_fd}")
        assert src.startswith(TEMP_PREFIX) and dst == "k.bin"
        real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    with fs.open_atomic_write("deep/k.bin") as f:
        f.write(b"abc")
        f.seek(0)  # a real, seekable file
        f.write(b"A")
        (pending,) = (tmp_path / "deep").iterdir()
        assert pending.name.startswith(TEMP_PREFIX)
    # The new folder "deep" made durable in the base, the file, the rename, then its folder.
    assert calls == ["fsync folder", "fsync file", "rename in one folder True", "fsync folder"]
    assert (tmp_path / "deep" / "k.bin").read_bytes() == b"Abc"


def test_local_fsync_false_skips_the_flush_but_stays_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = LocalFileSystem(basepath=str(tmp_path), fsync=False)
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    fs.write_path("a.bin", b"old")
    with pytest.raises(RuntimeError), fs.open_atomic_write("a.bin") as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert calls == []
    assert fs.read_path("a.bin") == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_local_symlink_out_of_the_base_path_is_refused(tmp_path: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"outside")
    (base / "link-dir").symlink_to(outside, target_is_directory=True)
    (base / "link-file").symlink_to(outside / "secret.txt")
    fs = LocalFileSystem(basepath=str(base))
    for key in ["link-dir/secret.txt", "link-file", "link-dir/new.txt"]:
        with pytest.raises(UnsafePath, match="outside the base path"):
            fs.read_path(key)
        with pytest.raises(UnsafePath):
            fs.write_path(key, b"pwned")
    assert (outside / "secret.txt").read_bytes() == b"outside"
    assert not (outside / "new.txt").exists()
    assert fs.ls() == []  # links leading out are not listed


def test_local_symlink_inside_the_base_path_is_allowed(tmp_path: Path) -> None:
    fs = LocalFileSystem(basepath=str(tmp_path))
    fs.write_path("real/data.bin", b"1")
    (tmp_path / "alias").symlink_to(tmp_path / "real" / "data.bin")
    assert fs.read_path("alias") == b"1"
    assert "alias" in fs.ls()


def test_local_basepath_that_is_a_symlink_works(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "base").symlink_to(tmp_path / "target", target_is_directory=True)
    fs = LocalFileSystem(basepath=str(tmp_path / "base"))
    fs.write_path("k", b"1")
    assert (tmp_path / "target" / "k").read_bytes() == b"1"
    assert fs.ls() == ["k"]


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_concurrent_readers_see_whole_objects_only(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    fs = make_storage(kind, request, tmp_path)
    size = 256 * 1024
    fs.write_path("hot", b"a" * size)
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            data = fs.read_path("hot")
            if len(data) != size or len(set(data)) != 1:
                errors.append(f"torn read: {len(data)} bytes, {len(set(data))} distinct")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(100):
            fs.write_path("hot", (b"b" if i % 2 else b"c") * size)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []


# -- key safety as a property -------------------------------------------------------------

KEY_ALPHABET = st.sampled_from(
    ["a", "b", ".", "..", "/", "\\", ":", "C:", "\x00", "~", " ", "%2e", "out", "in"]
)
keys = st.lists(KEY_ALPHABET, max_size=12).map("".join) | st.text(max_size=30)
TMP_PATH_IS_FINE = HealthCheck.function_scoped_fixture  # examples only resolve paths


@settings(max_examples=500, deadline=None, suppress_health_check=[TMP_PATH_IS_FINE])
@given(key=keys)
def test_property_local_keys_stay_under_the_base_path(tmp_path: Path, key: str) -> None:
    # The base holds a symlink leading out ("out") and one leading to a sibling inside ("in").
    base, outside = tmp_path / "prop-base", tmp_path / "prop-outside"
    if not base.exists():
        (base / "sub").mkdir(parents=True)
        outside.mkdir()
        (base / "out").symlink_to(outside, target_is_directory=True)
        (base / "in").symlink_to(base / "sub", target_is_directory=True)
    fs = LocalFileSystem(basepath=str(base))
    try:
        resolved = fs._resolve(key)
    except UnsafePath:
        return
    real_base = os.path.realpath(base)
    assert os.path.realpath(resolved).startswith(real_base + os.sep)


@settings(max_examples=400, deadline=None, suppress_health_check=[TMP_PATH_IS_FINE])
@given(key=keys)
def test_property_remote_keys_stay_under_the_base_path(key: str) -> None:
    for block in (
        RemoteFileSystem(basepath="memory://prop/base"),
        S3(bucket_path="bucket/base"),
        GCS(bucket_path="bucket/base"),
    ):
        root = block._root()
        try:
            full = block._full(key)
        except UnsafePath:
            continue
        normal = posixpath.normpath(full)
        assert normal == full
        assert full.startswith(root + "/")
        assert len(full) > len(root) + 1


@given(key=keys)
@example(key="./s3://b/k")
@example(key="./C:x")
def test_property_validate_key_is_idempotent_and_safe(key: str) -> None:
    try:
        clean = validate_key(key)
    except UnsafePath as exc:
        assert "Refused key" in str(exc)
        return
    assert validate_key(clean) == clean
    parts = clean.split("/")
    assert ".." not in parts and "" not in parts and "." not in parts
    assert "\x00" not in clean and "\\" not in clean and not clean.startswith("/")


# -- configuration and packaging --------------------------------------------------------------


def test_remote_basepath_needs_a_protocol() -> None:
    with pytest.raises(ValueError, match="protocol"):
        RemoteFileSystem(basepath="/tmp/no-protocol")


def test_remote_describe_hides_url_userinfo() -> None:
    fs = RemoteFileSystem(basepath="ftp://etl:hunter2@files.example.com/results/")
    assert fs.describe() == "ftp://***@files.example.com/results"


def test_unknown_protocol_is_a_configuration_error() -> None:
    fs = RemoteFileSystem(basepath="nosuchproto://x")
    with pytest.raises(ConfigurationError, match="nosuchproto"):
        fs.write_path("k", b"1")


def test_fsspec_filesystem_is_cached_per_instance() -> None:
    fs = RemoteFileSystem(basepath="memory://cache-test")
    assert fs.filesystem() is fs.filesystem()
    s3 = S3(bucket_path="b", aws_access_key_id="k1", aws_secret_access_key="s1")
    first = s3.filesystem()
    assert s3.filesystem() is first
    s3.aws_access_key_id = "k2"  # new options: a new filesystem
    assert s3.filesystem() is not first


def test_pickled_block_drops_its_cached_client(storage: WritableFileSystem) -> None:
    storage.write_path("p", b"pickled")
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.model_dump() == storage.model_dump()
    if isinstance(copy, RemoteFileSystem | S3 | GCS):
        assert copy._fs_cache is None
    assert copy.read_path("p") == b"pickled"


def test_missing_optional_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(MissingDependency, match=r"pip install 'blocks\[s3\]'"):
        S3(bucket_path="b").exists("k")
    with pytest.raises(MissingDependency, match=r"pip install 'blocks\[gcs\]'"):
        GCS(bucket_path="b").exists("k")


def test_importing_filesystems_does_not_import_backends() -> None:
    code = (
        "import sys, blocks.filesystems\n"
        "heavy = ('fsspec', 's3fs', 'gcsfs', 'boto3', 'botocore')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_remote_settings_are_secret(blocks_home: Path) -> None:
    fs = RemoteFileSystem(basepath="memory://s", settings={"key": "AKIA-remote-key-123"})
    for text in (repr(fs), str(fs), fs.model_dump_json()):
        assert "AKIA-remote-key-123" not in text
    fs.save("with-settings")
    assert "AKIA-remote-key-123" not in _raw_registry(blocks_home)
    loaded = RemoteFileSystem.load("with-settings")
    assert loaded.settings.get_secret_value() == {"key": "AKIA-remote-key-123"}


def _raw_registry(home: Path) -> str:
    """Every byte of the SQLite registry (WAL and journal included), as latin-1 text."""
    return "".join(
        p.read_bytes().decode("latin-1") for p in home.glob("registry.db*") if p.is_file()
    )
