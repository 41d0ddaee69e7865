"""Result records under attack: forged, swapped, foreign, bombs, secrets, versions.

Each test plays someone who can write to the result storage but does not hold the results
key (or, for bombs, someone who does): every attempt must be a miss with a warning, and
nothing may reach a deserializer before the signature verifies.
"""

from __future__ import annotations

import base64
import bz2
import dataclasses
import functools
import json
import lzma
import os
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xxhash
from pydantic import SecretStr
from test_results import UNPICKLED, Tripwire  # proof of whether a payload was unpickled

from blocks.errors import ResultsKeyMissing
from blocks.filesystems import LocalFileSystem
from blocks.results import CorruptRecordWarning, RecordHeader, ResultStore
from blocks.results._record import PREFIX_SIZE, checksum_string, encode_prefix, header_length
from blocks.results._signing import ResultsKeys, results_keys
from blocks.system import Secret
from serializers import JSONSerializer
from serializers.errors import SerializationError


@pytest.fixture(autouse=True)
def _reset() -> None:
    UNPICKLED.clear()


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(LocalFileSystem(basepath=str(tmp_path / "results")), "pickle")


def _other_keys() -> ResultsKeys:
    return ResultsKeys.of([os.urandom(32)], "test")


def _split(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(prefix, header, payload) of a record."""
    length = header_length(raw, key="k")
    return raw[:PREFIX_SIZE], raw[PREFIX_SIZE : PREFIX_SIZE + length], raw[PREFIX_SIZE + length :]


def _resign_with(keys: ResultsKeys, header: RecordHeader, payload: bytes) -> bytes:
    """What an attacker with *their own* key produces: a well-formed, self-consistent record."""
    signer = keys.active
    hasher = signer.payload_hasher()
    hasher.update(payload)
    header = dataclasses.replace(header, signer=signer.key_id, checksum=checksum_string(hasher))
    return encode_prefix(header, width=header.width(), signer=signer) + payload


# -- forgeries ---------------------------------------------------------------------------------


def test_json_value_changed_and_checksum_recomputed_is_a_miss(tmp_path: Path) -> None:
    store = ResultStore(LocalFileSystem(basepath=str(tmp_path)), "json")
    store.write("k", {"amount": 10})
    header = store.load_header("k")
    forged = json.dumps({"amount": 1_000_000}).encode()
    # 1. An attacker recomputes every checksum they can (they do not hold the key).
    store.storage.write_path("k", _resign_with(_other_keys(), header, forged))
    with pytest.warns(CorruptRecordWarning, match="signature"):
        assert store.read("k") is None
    # 2. Or keeps our header (and its tag) and swaps the payload: the payload tag fails.
    store.storage.delete("k")  # the forgery claims another key: never overwritten
    store.write("k", {"amount": 10})
    prefix, body, _ = _split(store.storage.read_path("k"))
    store.storage.write_path("k", prefix + body + b'{"amount":99}')
    with pytest.warns(CorruptRecordWarning, match="signature"):
        assert store.read("k") is None
    print("forged JSON records: 2 attempts, 2 misses")


def test_pickle_payload_swapped_is_a_miss_and_never_unpickled(store: ResultStore) -> None:
    store.write("a", "harmless")
    store.write("b", Tripwire("evil"))
    prefix, body, _ = _split(store.storage.read_path("a"))
    _, _, evil = _split(store.storage.read_path("b"))
    # Same size is not needed: the header's size check comes first, so match it too.
    store.storage.write_path("a", prefix + body + evil)
    with pytest.warns(CorruptRecordWarning, match="signature|truncated or padded"):
        assert store.read("a") is None
    # A payload of the right size but other bytes: the payload tag catches it.
    header = store.load_header("a")
    evil_same_size = Tripwire("x" * 10)
    from serializers import PickleSerializer

    payload = PickleSerializer().dumps(evil_same_size)
    payload = payload[: header.payload_size].ljust(header.payload_size, b".")
    store.storage.write_path("a", prefix + body + payload)
    with pytest.warns(CorruptRecordWarning, match="bad payload signature"):
        assert store.read("a") is None
    assert UNPICKLED == []


@pytest.mark.parametrize(
    "field, value",
    [
        ("expires", "2999-01-01T00:00:00+00:00"),
        ("task", "someone-else"),
        ("serializer", {"type": "json"}),
        ("payload_size", 3),
        ("decoded_size", 10**12),
        ("versions", {"python": "3.11.0"}),
    ],
)
def test_header_field_changed_is_a_miss(store: ResultStore, field: str, value: Any) -> None:
    store.write("k", Tripwire("t"), task="extract")
    prefix, body, payload = _split(store.storage.read_path("k"))
    raw = json.loads(body)
    raw[field] = value
    new_body = json.dumps(raw, separators=(",", ":")).encode().ljust(len(body), b" ")
    new_prefix = prefix[:5] + len(new_body).to_bytes(4, "big") + prefix[9:]
    store.storage.write_path("k", new_prefix + new_body + payload)
    with pytest.warns(CorruptRecordWarning, match="signature"):
        assert store.read("k") is None
    with pytest.warns(CorruptRecordWarning, match="signature"):
        assert store.exists("k") is False
    assert UNPICKLED == []


def test_record_copied_between_keys_is_a_miss(store: ResultStore) -> None:
    store.write("a", Tripwire("a"))
    store.storage.write_path("b", store.storage.read_path("a"))
    with pytest.warns(CorruptRecordWarning, match="written for key 'a'"):
        assert store.read("b") is None
    assert UNPICKLED == []


def test_record_copied_between_stores_with_different_keys_is_a_miss(tmp_path: Path) -> None:
    ours = ResultStore(LocalFileSystem(basepath=str(tmp_path / "ours")), "pickle")
    theirs = ResultStore(
        LocalFileSystem(basepath=str(tmp_path / "theirs")), "pickle", keys=_other_keys()
    )
    theirs.write("k", Tripwire("theirs"))
    ours.storage.write_path("k", theirs.storage.read_path("k"))
    with pytest.warns(CorruptRecordWarning, match="signature by results key .* does not hold"):
        assert ours.read("k") is None
    assert UNPICKLED == []
    assert theirs.read("k") is not None  # their own key reads it
    assert UNPICKLED == ["theirs"]


@pytest.mark.parametrize("size", [10, 200_000], ids=["one read", "streamed"])
def test_a_verifying_header_naming_a_signer_outside_the_keyset_is_a_miss(
    store: ResultStore, size: int
) -> None:
    """Signed with our key, but its ``signer`` names an id we do not hold: a miss with a
    warning, never a `KeyError` out of ``read`` (issue 20)."""
    store.write("k", Tripwire("x" * size))
    prefix, header, payload = _split(store.storage.read_path("k"))
    parsed = json.loads(header)
    parsed["signer"] = "f" * 16
    body = json.dumps(parsed, separators=(",", ":")).encode().ljust(len(header))
    start = prefix[:9]
    tag = results_keys().active.header_tag(start + body)
    store.storage.write_path("k", start + tag + body + payload)
    with pytest.warns(CorruptRecordWarning, match="names signer 'ffffffffffffffff'"):
        assert store.read("k") is None
    assert UNPICKLED == []
    print(f"foreign signer id in a verifying header ({size}-byte value): a miss")


def test_a_rotated_master_key_still_verifies_old_records(
    store: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write("k", "before rotation")
    old = os.environ["BLOCKS_MASTER_KEY"]
    new = base64.urlsafe_b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("BLOCKS_MASTER_KEY", f"{new},{old}")
    hit = store.read("k")
    assert hit is not None and hit.value == "before rotation"
    assert store.write("k2", 1).signer == results_keys().active.key_id != hit.header.signer
    monkeypatch.setenv("BLOCKS_MASTER_KEY", new)  # old key dropped: old records are misses
    with pytest.warns(CorruptRecordWarning, match="signature"):
        assert store.read("k") is None


def test_results_key_setting_lets_workers_share_storage_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = base64.urlsafe_b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("BLOCKS_RESULTS_KEY", shared)
    base = tmp_path / "shared"
    store = ResultStore(LocalFileSystem(basepath=str(base)), "pickle")
    store.write("k", {"from": "worker 1"})
    # Another machine: other BLOCKS_HOME, other master key, same BLOCKS_RESULTS_KEY.
    env = {
        **os.environ,
        "BLOCKS_HOME": str(tmp_path / "other-home"),
        "BLOCKS_MASTER_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    code = (
        "import sys; from blocks.filesystems import LocalFileSystem; "
        "from blocks.results import ResultStore; "
        "print(ResultStore(LocalFileSystem(basepath=sys.argv[1]), 'pickle').read('k').value)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(base)], env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "{'from': 'worker 1'}", out.stderr
    assert not (tmp_path / "other-home" / "registry.db").exists()  # no registry touched
    env.pop("BLOCKS_RESULTS_KEY")
    raw = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, str(base)], env=env, capture_output=True
    )
    assert b"signature by results key" in raw.stderr  # without the key: a miss


def test_results_key_secret_block(store: ResultStore) -> None:
    from blocks.results import _signing as signing

    store.write("k", 1)  # registry now exists; signed with the master-derived key
    Secret(value=base64.urlsafe_b64encode(os.urandom(32)).decode()).save("results-key")
    signing.forget()
    assert results_keys().active.source == "block"
    with pytest.warns(CorruptRecordWarning, match="signature"):
        assert store.read("k") is None
    with pytest.raises(ResultsKeyMissing, match="BLOCKS_RESULTS_OVERWRITE_FOREIGN"):
        store.write("k", 2)  # the old key's record: not overwritten unless asked
    os.environ["BLOCKS_RESULTS_OVERWRITE_FOREIGN"] = "1"
    try:
        store.write("k", 2)
    finally:
        del os.environ["BLOCKS_RESULTS_OVERWRITE_FOREIGN"]
    hit = store.read("k")
    assert hit is not None and hit.value == 2
    signing.forget()


def test_unsigned_format_1_record_is_a_miss_then_rewritten_signed(store: ResultStore) -> None:
    header = json.dumps({"format_version": 1, "key": "k", "serializer": {"type": "pickle"}})
    body = header.encode()
    payload = b"\x80\x05K\x01."
    v1 = (
        b"BLKR\x01"
        + len(body).to_bytes(4, "big")
        + xxhash.xxh3_64_intdigest(body).to_bytes(8, "big")
        + body
        + payload
    )
    store.storage.write_path("k", v1)
    with pytest.warns(CorruptRecordWarning, match="unsigned"):
        assert store.read("k") is None
    store.write("k", 1)  # what the task does after the miss
    hit = store.read("k")
    assert hit is not None and hit.value == 1 and hit.header.format_version == 2


# -- versions ----------------------------------------------------------------------------------


def _forge(store: ResultStore, key: str, spec: dict[str, Any], payload: bytes, **kw: Any) -> None:
    signer = store.keys.active
    draft = RecordHeader.new(key, spec, expires=None, task=None, signer=signer.key_id)
    hasher = signer.payload_hasher()
    hasher.update(payload)
    header = draft.finish(len(payload), checksum_string(hasher), kw.pop("decoded_size", None))
    header = dataclasses.replace(header, **kw)
    store.storage.write_path(
        key,
        encode_prefix(header, width=max(draft.width(), header.width()), signer=signer) + payload,
    )


@pytest.mark.parametrize(
    "versions, why",
    [
        ({"python": "3.9.1", "cloudpickle": "99.0.0"}, "pickled under python 3.9.1"),
        ({"python": "{py}", "cloudpickle": "2.2.1"}, "pickled under cloudpickle 2.2.1"),
        ({}, "does not say which python"),
    ],
)
def test_pickle_from_another_version_is_a_miss_that_says_why(
    store: ResultStore, versions: dict[str, str], why: str
) -> None:
    versions = {
        k: v.format(py=".".join(map(str, sys.version_info[:3]))) for k, v in versions.items()
    }
    from serializers import PickleSerializer

    _forge(
        store,
        "k",
        {"type": "pickle", "picklelib": "cloudpickle"},
        PickleSerializer().dumps(Tripwire("v")),
        versions=versions,
    )
    with pytest.warns(CorruptRecordWarning, match=why):
        assert store.read("k") is None
    assert UNPICKLED == []


# -- secrets at rest ---------------------------------------------------------------------------


PLAINTEXT = "pl41ntext-s3cr3t-value"


@pytest.mark.parametrize("serializer", ["pickle", "compressed/pickle", "json", "compressed/json"])
def test_a_block_returned_by_a_task_leaves_no_plaintext_in_the_record(
    tmp_path: Path, serializer: str
) -> None:
    from blocks import flow, task

    if "json" in serializer:
        inner = JSONSerializer(types=[Secret])
        chosen: Any = (
            inner if serializer == "json" else __import__("serializers").CompressedSerializer(inner)
        )
    else:
        chosen = serializer
    calls: list[int] = []

    @task(
        cache_key_fn=lambda *_: "static",
        persist_result=True,
        result_storage=str(tmp_path / "res"),
        result_serializer=chosen,
    )
    def make() -> dict[str, Any]:
        calls.append(1)
        return {"block": Secret(value=PLAINTEXT), "raw": SecretStr(PLAINTEXT + "-2")}

    @flow
    def run() -> Any:
        return make()

    first, second = run(), run()
    assert calls == [1]  # the second run was a cache hit, read back from the record
    assert second["block"].get() == PLAINTEXT
    assert second["raw"].get_secret_value() == PLAINTEXT + "-2"
    assert first["block"].get() == PLAINTEXT
    # The records (the compute-once lease folder's lock file stays while this process lives).
    files = [
        p for p in (tmp_path / "res").rglob("*") if p.is_file() and ".blocks-leases" not in p.parts
    ]
    assert files
    for path in files:
        data = path.read_bytes()
        for needle in (PLAINTEXT.encode(), base64.b64encode(PLAINTEXT.encode())):
            assert needle not in data, f"plaintext found in {path}"
        if "compressed" in serializer:
            continue
        assert b"sealed" in data or b"open_sealed" in data
    print(f"{serializer}: {len(files)} record(s) grepped, no plaintext; value read back")


def test_a_secret_outside_a_store_is_refused_naming_its_path() -> None:
    from serializers import PickleSerializer

    value = {"rows": [1, 2], "conn": {"password": SecretStr("x")}}
    for serializer in (PickleSerializer(), JSONSerializer()):
        with pytest.raises(SerializationError, match=r"value\['conn'\]\['password'\] is a secret"):
            serializer.dumps(value)


def test_sealed_secrets_do_not_open_under_another_key(tmp_path: Path) -> None:
    store = ResultStore(LocalFileSystem(basepath=str(tmp_path)), "pickle")
    store.write("k", SecretStr(PLAINTEXT))
    hit = store.read("k")
    assert hit is not None and hit.value.get_secret_value() == PLAINTEXT
    assert PLAINTEXT.encode() not in store.storage.read_path("k")


# -- bombs -------------------------------------------------------------------------------------

BOMB_CHILD = textwrap.dedent(
    """
    import json, sys, threading, time, warnings
    import psutil
    from blocks.filesystems import LocalFileSystem
    from blocks.results import ResultStore
    store = ResultStore(LocalFileSystem(basepath=sys.argv[1]), sys.argv[3])
    store.read("warm-up")  # imports and key lookup, outside the measurement
    me = psutil.Process()
    before = peak = me.memory_info().rss
    done = threading.Event()
    def sample():
        global peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.0005)
    sampler = threading.Thread(target=sample)
    sampler.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hit = store.read(sys.argv[2])
    done.set()
    sampler.join()
    peak = max(peak, me.memory_info().rss)
    print(json.dumps({"hit": hit is not None, "grew_kib": (peak - before) // 1024,
                      "warnings": [str(w.message) for w in caught]}))
    """
)

MIB = 1024 * 1024
BOMB_SIZE = 128 * MIB  # what each bomb expands to: twice the memory bound


@functools.cache
def _compress_zeros(lib: str, prefix: bytes, size: int, suffix: bytes) -> bytes:
    compressors: dict[str, Callable[[], Any]] = {
        "zlib": lambda: zlib.compressobj(9),
        "bz2": lambda: bz2.BZ2Compressor(9),
        "lzma": lambda: lzma.LZMACompressor(preset=0),
    }
    compressor = compressors[lib]()
    out = [compressor.compress(prefix)]
    block = b"a" * MIB
    for _ in range(size // MIB):
        out.append(compressor.compress(block))
    out.append(compressor.compress(suffix))
    out.append(compressor.flush())
    return b"".join(out)


def _run_bomb(base: Path, key: str, serializer: str, **env: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, str(base), key, serializer],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


BOMBS: dict[str, Callable[[], tuple[str, bytes, dict[str, Any]]]] = {
    # (serializer spec type, payload, header fields the bomb's writer declared)
    "zlib": lambda: ("zlib", _compress_zeros("zlib", b'"', BOMB_SIZE, b'"'), {}),
    "bz2": lambda: ("bz2", _compress_zeros("bz2", b'"', BOMB_SIZE, b'"'), {}),
    "lzma": lambda: ("lzma", _compress_zeros("lzma", b'"', BOMB_SIZE, b'"'), {}),
    "nested-json": lambda: ("zlib", _compress_zeros("zlib", b"", 0, b"[" * 4 * MIB), {}),
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
@pytest.mark.parametrize("declared", ["small", "honest"])
def test_bombs_are_misses_with_bounded_memory(tmp_path: Path, bomb: str, declared: str) -> None:
    lib, payload, _ = BOMBS[bomb]()
    expands_to = BOMB_SIZE + 2 if bomb != "nested-json" else 4 * MIB
    base = tmp_path / "res"
    store = ResultStore(LocalFileSystem(basepath=str(base)), "json")
    spec = {
        "type": "compressed/json",
        "serializer": {"type": "json"},
        "compressionlib": lib,
        "level": None,
    }
    # Written by someone holding the key: the signature verifies, only the bounds protect.
    decoded = 1 * MIB if declared == "small" else expands_to
    _forge(store, "bomb", spec, payload, decoded_size=decoded)
    env = {"BLOCKS_RESULTS_MAX_BYTES": str(32 * MIB)} if declared == "honest" else {}
    result = _run_bomb(base, "bomb", "json", **env)
    grew = result["grew_kib"] / 1024
    print(
        f"{bomb} bomb, {len(payload)} bytes expanding to {expands_to // MIB} MiB, declared "
        f"{decoded // MIB} MiB: hit={result['hit']}, peak RSS +{grew:.1f} MiB over baseline; "
        f"warning: {result['warnings'][0][:110] if result['warnings'] else None}"
    )
    assert result["hit"] is False
    assert grew < 64, f"peak RSS grew by {grew:.1f} MiB"
    assert result["warnings"], "a bomb must warn"
    if bomb == "nested-json" and declared == "honest":
        assert "deserialized" in result["warnings"][0]  # the depth ceiling (recursion limit)
    elif declared == "honest":
        assert "BLOCKS_RESULTS_MAX_BYTES" in result["warnings"][0]
    else:
        assert "exceeds its limit" in result["warnings"][0]


def test_deep_json_nesting_is_a_miss(tmp_path: Path) -> None:
    store = ResultStore(LocalFileSystem(basepath=str(tmp_path)), "json")
    _forge(store, "deep", {"type": "json"}, b"[" * 200_000 + b"]" * 200_000)
    with pytest.warns(CorruptRecordWarning, match="cannot be deserialized"):
        assert store.read("deep") is None


def test_payload_over_the_ceiling_is_a_miss(
    store: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write("k", b"x" * 4096)
    monkeypatch.setenv("BLOCKS_RESULTS_MAX_BYTES", "1000")
    with pytest.warns(CorruptRecordWarning, match="BLOCKS_RESULTS_MAX_BYTES=1000"):
        assert store.read("k") is None
    monkeypatch.setenv("BLOCKS_RESULTS_MAX_BYTES", "lots")
    from blocks.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="BLOCKS_RESULTS_MAX_BYTES"):
        store.read("k")


def test_compressed_record_declares_its_decoded_size(tmp_path: Path) -> None:
    store = ResultStore(LocalFileSystem(basepath=str(tmp_path)), "compressed/json")
    header = store.write("k", "x" * 100_000)
    assert header.decoded_size == 100_002 and header.payload_size < 1000
    hit = store.read("k")
    assert hit is not None and hit.value == "x" * 100_000
