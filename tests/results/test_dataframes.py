"""Data-native result records: frames as Parquet and arrays as .npy through the result store,
on local storage and on S3 (LocalStack), as task results that come back as cache hits, signed
before a byte reaches pyarrow or numpy, and readable under another Python version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from click.testing import CliRunner

from blocks import task
from blocks.cli.results import results
from blocks.errors import CorruptRecord
from blocks.filesystems import LocalFileSystem, Storage, WritableFileSystem
from blocks.results import CorruptRecordWarning, ResultStore
from blocks.results._record import PREFIX_SIZE, header_length
from blocks.tasks import task_input_hash
from serializers import NumpySerializer, ParquetSerializer, Serializer

ROOT = Path(__file__).resolve().parents[2]
PYTHON_313 = Path("/root/.pyenv/versions/3.13.0/bin/python")

# The frame both interpreters build (the 3.13 side compares what it reads with its own copy).
FRAME_CODE = """
import numpy as np
import pandas as pd

def make_frame():
    rows = 50
    return pd.DataFrame(
        {
            "id": pd.array([i if i % 7 else None for i in range(rows)], dtype="Int64"),
            "price": np.linspace(0.5, 99.5, rows),
            "city": pd.Categorical(["Séoul", "Paris", "東京", "Lima", "Oslo"] * 10),
            "at": pd.date_range("2024-03-30", periods=rows, freq="7h", tz="Europe/Paris"),
            "note": ["ok", None, "ünïcode", "x", "y"] * 10,
            "flag": [True, False] * 25,
        },
        index=pd.Index([f"r{i:03d}" for i in range(rows)], name="row"),
    )
"""
_namespace: dict[str, Any] = {}
exec(FRAME_CODE, _namespace)
make_frame: Callable[[], pd.DataFrame] = _namespace["make_frame"]


def _local(request: pytest.FixtureRequest, tmp: Path) -> WritableFileSystem:
    return LocalFileSystem(basepath=str(tmp / "results"))


def _s3(request: pytest.FixtureRequest, tmp: Path) -> WritableFileSystem:
    storage: WritableFileSystem = request.getfixturevalue("s3_bucket").block("results")
    return storage


STORAGES = {"local": _local, "s3": _s3}


@pytest.fixture(params=sorted(STORAGES))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> WritableFileSystem:
    return STORAGES[request.param](request, tmp_path)


def _payload_offset(storage: Storage, key: str) -> int:
    return PREFIX_SIZE + header_length(storage.read_range(key, 0, PREFIX_SIZE), key=key)


def _count_loads(monkeypatch: pytest.MonkeyPatch, cls: type[Serializer]) -> list[int]:
    """Count calls of `cls.load` and `cls.load_buffer` (the real ones still run)."""
    calls: list[int] = []

    def counting(real: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def counted(self: Any, source: Any) -> Any:
            calls.append(1)
            return real(self, source)

        return counted

    monkeypatch.setattr(cls, "load", counting(cls.load))
    monkeypatch.setattr(cls, "load_buffer", counting(cls.load_buffer))
    return calls


# -- the store, on every storage -------------------------------------------------------------------


def test_store_round_trips_parquet_npy_and_auto_records(storage: WritableFileSystem) -> None:
    frame = make_frame()
    parquet = ResultStore(storage, "parquet")
    started = time.perf_counter()
    header = parquet.write("frames/sales", frame, task="extract")
    assert header.serializer == {"type": "parquet", "level": 1}
    assert header.decoded_size is not None and header.decoded_size >= header.payload_size
    hit = parquet.read("frames/sales")
    assert hit is not None
    pd.testing.assert_frame_equal(hit.value, frame)

    lazy = pl.DataFrame({"a": [1, 2, 3], "b": ["x", "ÿ", None]}).lazy()
    parquet.write("frames/polars", lazy)
    back = parquet.read("frames/polars")
    assert back is not None and isinstance(back.value, pl.DataFrame)
    assert back.value.equals(lazy.collect())

    array = np.asfortranarray(np.random.default_rng(7).normal(size=(300, 200)))
    npy = ResultStore(storage, "npy")
    npy.write("arrays/normal", array)
    got = npy.read("arrays/normal")
    assert got is not None and np.array_equal(got.value, array) and got.value.flags.f_contiguous

    auto = ResultStore(storage, "auto")
    chosen = {
        name: auto.write(f"auto/{name}", value).serializer["type"]
        for name, value in {"frame": frame, "array": array, "json": {"rows": [1, 2]}}.items()
    }
    assert chosen == {"frame": "parquet", "array": "npy", "json": "json"}
    assert auto.read("auto/json").value == {"rows": [1, 2]}  # type: ignore[union-attr]
    pd.testing.assert_frame_equal(auto.read("auto/frame").value, frame)  # type: ignore[union-attr]
    print(
        f"{storage.describe()}: parquet record {header.payload_size} bytes "
        f"(decoded {header.decoded_size}), npy record {array.nbytes} bytes of data, "
        f"auto chose {chosen}, {time.perf_counter() - started:.2f} s"
    )


def test_task_with_parquet_results_is_a_cache_hit_read_from_storage(
    storage: WritableFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    @task(
        cache_key_fn=task_input_hash,
        persist_result=True,
        result_storage=storage,
        result_serializer="parquet",
    )
    def extract(source: str) -> pd.DataFrame:
        calls.append(source)
        return make_frame()

    first = extract("warehouse")
    loads = _count_loads(monkeypatch, ParquetSerializer)
    state: Any = extract("warehouse", return_state=True)
    assert state.is_cached()
    pd.testing.assert_frame_equal(state.result(), first)
    assert calls == ["warehouse"] and len(loads) == 1  # decoded from the stored record
    keys = [key for key, header in ResultStore(storage, "parquet").records() if header]
    assert len(keys) == 1
    header = ResultStore(storage, "parquet").header(keys[0])
    assert header is not None and header.serializer["type"] == "parquet"
    print(f"{storage.describe()}: 1 run, 1 cache hit from record {keys[0]!r}")


def test_auto_store_without_pickle_refuses_pickled_records(storage: WritableFileSystem) -> None:
    ResultStore(storage, "pickle").write("k", {"a": {1, 2}})
    with pytest.warns(CorruptRecordWarning, match="does not unpickle"):
        assert ResultStore(storage, "auto").read("k") is None
    allowing = ResultStore(storage, {"type": "auto", "fallback": "pickle"})
    assert allowing.read("k").value == {"a": {1, 2}}  # type: ignore[union-attr]


# -- verified before decoded -----------------------------------------------------------------------


@pytest.mark.parametrize(("serializer", "value"), [("parquet", "frame"), ("npy", "array")])
def test_flipped_payload_byte_is_a_miss_and_never_reaches_the_decoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serializer: str, value: str
) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path))
    store = ResultStore(storage, serializer)
    store.write("k", make_frame() if value == "frame" else np.arange(10_000.0))
    offset = _payload_offset(storage, "k")
    size = len(storage.read_path("k")) - offset
    loads = _count_loads(monkeypatch, ParquetSerializer if value == "frame" else NumpySerializer)
    flipped = 0
    for position in (0, size // 2, size - 1):  # magic, a column chunk, the footer
        data = bytearray(storage.read_path("k"))
        data[offset + position] ^= 0x40
        storage.write_path("k", bytes(data))
        with pytest.warns(CorruptRecordWarning, match="signature"):
            assert store.read("k") is None
        data[offset + position] ^= 0x40
        storage.write_path("k", bytes(data))
        flipped += 1
    assert loads == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.read("k") is not None
    print(
        f"{flipped} flipped bytes in a {size}-byte {serializer} payload: "
        f"{flipped} misses, 0 decodes"
    )


def test_large_parquet_record_is_verified_whole_then_decoded_column_by_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the first read, a Parquet payload is read into private memory while verified, then
    # decoded one column at a time, each column's compressed pages given back as it is done.
    # A changed byte anywhere is a miss before any column reaches pyarrow.
    import serializers._files as files_module
    import serializers.parquet as parquet_module

    monkeypatch.setattr(parquet_module, "_BY_COLUMN_FROM", 0)  # every size, column by column
    storage = LocalFileSystem(basepath=str(tmp_path))
    store = ResultStore(storage, "parquet")
    rng = np.random.default_rng(25)
    rows = 100_000
    frame = pd.DataFrame(
        {
            "id": pd.array(rng.integers(0, 10**9, rows), dtype="Int64"),
            "price": rng.random(rows),
            "city": pd.Categorical.from_codes(rng.integers(0, 3, rows), ["Séoul", "東京", "Lima"]),
            "note": [f"n{v}" for v in rng.integers(0, 10**6, rows)],
        }
    )
    frame.loc[::7, "id"] = pd.NA
    store.write("k", frame)
    offset = _payload_offset(storage, "k")
    size = len(storage.read_path("k")) - offset
    assert size > 16 * 64 * 1024  # past the store's first read: the in-memory path
    loads = _count_loads(monkeypatch, ParquetSerializer)
    given_back: list[int] = []
    real_discard = files_module.discard  # what parquet's own `discard` is

    def counting_discard(buffer: memoryview, start: int, end: int) -> int:
        given_back.append(real_discard(buffer, start, end))
        return given_back[-1]

    monkeypatch.setattr(parquet_module, "discard", counting_discard)
    whole = storage.read_path("k")
    for position in (0, size // 3, size // 2, size - 1):  # magic, column chunks, the footer
        data = bytearray(whole)
        data[offset + position] ^= 0x01
        storage.write_path("k", bytes(data))
        with pytest.warns(CorruptRecordWarning, match="signature"):
            assert store.read("k") is None
    assert loads == [] and given_back == []
    storage.write_path("k", whole)
    hit = store.read("k")
    assert hit is not None and loads == [1]
    pd.testing.assert_frame_equal(hit.value, frame)
    assert sum(given_back) > size // 2
    print(f"{size}-byte payload: 4 changed bytes, 4 misses; {sum(given_back)} bytes given back")


def test_large_npy_record_is_read_in_place_verified_and_whole(tmp_path: Path) -> None:
    # Past the first read, an npy payload is read straight into the array's own memory while
    # it is verified: truncated or padded records are misses, a good one a writable array.
    storage = LocalFileSystem(basepath=str(tmp_path))
    store = ResultStore(storage, "npy")
    shapes = {
        "c": np.arange(300_000.0).reshape(600, 500),
        "f": np.asfortranarray(np.arange(300_000, dtype=np.int32).reshape(500, 600)),
        # 8 MB: allocated on disk before it is written (the sink's `reserve`), to the byte.
        "big": np.arange(1_000_000.0).reshape(1000, 1000),
    }
    for name, array in shapes.items():
        header = store.write(name, array)
        assert storage.size(name) == _payload_offset(storage, name) + header.payload_size
        hit = store.read(name)
        assert hit is not None and np.array_equal(hit.value, array)
        assert hit.value.flags.writeable and hit.value.flags.aligned
        assert hit.value.flags.f_contiguous == (name == "f")
        hit.value[0, 0] = 7  # its own memory: the next read is unchanged
        assert store.read(name).value[0, 0] == 0  # type: ignore[union-attr]
    whole = storage.read_path("c")
    misses = 0
    for damaged in (whole[:-8], whole + b"\0" * 8):
        storage.write_path("c", damaged)
        with pytest.warns(CorruptRecordWarning, match="truncated or padded"):
            assert store.read("c") is None
        misses += 1
    print(f"3 arrays (2.4, 1.2, 8 MB) read in place; {misses} damaged records, {misses} misses")


# -- another Python --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def python_313(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python 3.13 venv with blocks (this worktree) and pandas: ``uv`` if on PATH, else
    ``python -m venv`` and pip. Skipped only if the interpreter is absent."""
    if not PYTHON_313.exists():
        pytest.skip(f"Python 3.13 is not installed at {PYTHON_313}: cross-version test skipped")
    venv = tmp_path_factory.mktemp("py313") / "venv"
    python = venv / "bin" / "python"
    spec = f"{ROOT}[dataframes]"
    started = time.perf_counter()
    uv = shutil.which("uv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    if uv is not None:
        subprocess.run([uv, "venv", "-q", "-p", str(PYTHON_313), str(venv)], check=True, env=env)
        install = [uv, "pip", "install", "-q", "--python", str(python), spec, "pandas"]
    else:
        subprocess.run([str(PYTHON_313), "-m", "venv", str(venv)], check=True, env=env)
        install = [str(python), "-m", "pip", "install", "-q", spec, "pandas"]
    subprocess.run(install, check=True, env=env, capture_output=True)
    print(
        f"Python 3.13 venv made with {'uv' if uv else 'venv + pip'} in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return python


def test_parquet_record_written_under_311_reads_under_313(python_313: Path, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    store = ResultStore(LocalFileSystem(basepath=str(folder)), "parquet")
    header = store.write("cross/sales", make_frame(), task="extract")
    assert header.versions["python"].startswith("3.11") or sys.version_info[:2] != (3, 11)
    reader = FRAME_CODE + textwrap.dedent(
        f"""
        import sys
        import pandas as pd
        from blocks.filesystems import LocalFileSystem
        from blocks.results import ResultStore

        store = ResultStore(LocalFileSystem(basepath={str(folder)!r}), "parquet")
        hit = store.read("cross/sales")
        assert hit is not None, "miss"
        pd.testing.assert_frame_equal(hit.value, make_frame())
        print(sys.version.split()[0], hit.header.versions["python"], hit.value.shape)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        [str(python_313), "-c", reader], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    here, written_under, shape = done.stdout.split(maxsplit=2)
    assert here.startswith("3.13") and written_under == header.versions["python"]
    print(f"record written under Python {written_under} read under Python {here}: {shape.strip()}")


# -- export and open_payload -----------------------------------------------------------------------


def test_export_writes_plain_files_other_tools_open(
    storage: WritableFileSystem, tmp_path: Path
) -> None:
    frame = make_frame()
    array = np.arange(24, dtype=np.int16).reshape(4, 6)
    ResultStore(storage, "parquet").write("out/sales", frame)
    ResultStore(storage, "npy").write("out/grid", array)
    ResultStore(storage, "json").write("out/meta", {"rows": 50, "at": "2024"})
    ResultStore(storage, "compressed/json").write("out/packed", {"k": ["v"] * 100})
    ResultStore(storage, "pickle").write("out/opaque", {1, 2})
    url = storage.describe().split(" ")[0]
    spec = url if url.startswith("s3://") else url.removeprefix("file://")
    if url.startswith("s3://"):
        spec = f"s3/{_save_block(storage)}"
    runner = CliRunner()
    exported: dict[str, int] = {}
    for key, name in [
        ("out/sales", "sales.parquet"),
        ("out/grid", "grid.npy"),
        ("out/meta", "meta.json"),
        ("out/packed", "packed.json"),
    ]:
        result = runner.invoke(results, ["export", key, str(tmp_path / name), "--storage", spec])
        assert result.exit_code == 0, result.output
        exported[name] = (tmp_path / name).stat().st_size
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sales.parquet"), frame)
    assert pl.read_parquet(tmp_path / "sales.parquet").height == 50
    assert np.array_equal(np.load(tmp_path / "grid.npy"), array)
    assert json.loads((tmp_path / "meta.json").read_text()) == {"rows": 50, "at": "2024"}
    assert json.loads((tmp_path / "packed.json").read_text()) == {"k": ["v"] * 100}

    refused = runner.invoke(results, ["export", "out/opaque", str(tmp_path), "--storage", spec])
    assert refused.exit_code == 1 and "no other tool reads safely" in refused.output
    again = runner.invoke(
        results, ["export", "out/sales", str(tmp_path / "sales.parquet"), "--storage", spec]
    )
    assert again.exit_code == 1 and "--force" in again.output
    folder = tmp_path / "exports"
    folder.mkdir()
    into_folder = runner.invoke(results, ["export", "out/grid", str(folder), "-s", spec])
    assert into_folder.exit_code == 0 and (folder / "grid.npy").exists()
    missing = runner.invoke(results, ["export", "out/nothing", str(tmp_path), "-s", spec])
    assert missing.exit_code == 1 and "No result record" in missing.output
    assert "Traceback" not in missing.output + refused.output
    print(f"{storage.describe()}: exported {exported} (bytes)")


def _save_block(storage: WritableFileSystem) -> str:
    name = f"results-{uuid.uuid4().hex[:8]}"
    storage.save(name)
    return name


def test_open_payload_is_verified_and_reads_like_a_file(
    storage: WritableFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    store = ResultStore(storage, "parquet")
    store.write("p/sales", make_frame())
    with store.open_payload("p/sales") as payload:
        assert payload.header.serializer["type"] == "parquet"
        table = pq.read_table(payload)  # seeks to the footer, reads column chunks
        assert payload.seek(0, os.SEEK_END) == payload.size
    assert table.num_rows == 50
    with pytest.raises(FileNotFoundError):
        store.open_payload("p/missing")
    if isinstance(storage, LocalFileSystem):
        key_path = Path(str(storage.basepath)) / "p" / "sales"
        data = bytearray(key_path.read_bytes())
        data[-20] ^= 0x01  # inside the Parquet footer
        key_path.write_bytes(bytes(data))
        with pytest.raises(CorruptRecord, match="signature"):
            store.open_payload("p/sales")
