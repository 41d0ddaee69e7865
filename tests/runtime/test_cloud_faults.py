"""Result storage faults against a real server: a private LocalStack stopped or frozen mid-flow.

Each test starts its own LocalStack (S3 only, on a free port, state in a temporary folder) with
the Python of ``.localstack/venv`` - never the shared one on 4566, which other runs may be using.

- *Stopped* (the process exits: connections are refused): the task that persists next fails
  after its retries, with a `StorageError` naming bucket and endpoint and no credential anywhere;
  once a server is back, the same flow runs again. LocalStack's free edition keeps no state across
  a restart, so the restarted server starts empty (the bucket is created again, as an operator
  would); what is listed there must still be whole records only.
- *Frozen* (SIGSTOP: the kernel still accepts connections and buffers what is sent, but nothing
  answers - the state survives): every write fails in bounded time with the same `StorageError`,
  small (answer never comes: read timeout) and large (the body stalls once the socket buffers are
  full: the write's deadline); after SIGCONT what the bucket holds is whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import traceback
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from servers import SERVICES_DIR, _start_service, unavailable

from blocks import flow, task
from blocks.errors import StorageError
from blocks.filesystems import S3, remote
from blocks.results import ResultStore
from blocks.states import State
from blocks.tasks import task_input_hash

pytestmark = pytest.mark.integration

# Distinctive fake credentials: LocalStack accepts any, so they work - and are easy to look for.
KEY_ID = "AKIAFAULTTESTKEY7Q2Z"
SECRET_KEY = "fault-Secret-kX9pW2vL7mQ4-never-shown"
CREDENTIALS = (KEY_ID, SECRET_KEY)
# Fail fast: a refused connection or a silent server costs ~1 s per request, not minutes.
FAST = {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 0}}
VENV_PYTHON = SERVICES_DIR / "venv" / "bin" / "python"


class PrivateLocalStack:
    """A LocalStack of our own (S3 only) that a test may stop, freeze and restart."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "localstack.log"

    def start(self, timeout: float = 90) -> None:
        env = {
            **os.environ,
            "SERVICES": "s3",
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "LOCALSTACK_VOLUME_DIR": str(self.root / "volume"),
            "FILESYSTEM_ROOT": str(self.root / "fs"),
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DNS_ADDRESS": "0",
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_PYTHON), "-m", "localstack.runtime.main"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                self.stop()
                unavailable(f"private LocalStack on {self.endpoint} did not start:\n{tail}")
            time.sleep(0.2)

    def is_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/_localstack/health", timeout=1) as r:
                return bool(r.status == 200)
        except Exception:
            return False

    def stop(self) -> None:
        """Terminate the server (its whole session), waiting until its port is closed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)

    def freeze(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2}),
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)


class CuttingProxy:
    """A TCP forwarder in front of the server. For a client, `cut_after_upload` is the server
    going away mid-request (in-flight connections reset, new ones refused) - while the server
    itself keeps its state, so what it stored can be checked afterwards."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.was_cut = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._budget: int | None = None  # upload bytes to forward before cutting

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut_after_upload(self, nbytes: int) -> None:
        with self._lock:
            self._budget = nbytes

    def stop(self) -> None:
        """Refuse new connections and reset every open one."""
        with self._lock:
            listener, self._listener = self._listener, None
            doomed, self._sockets = self._sockets, set()
            self._budget = None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread
            listener.close()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for src, dst, upload in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, upload), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        try:
            while data := src.recv(65536):
                if upload:
                    with self._lock:
                        if self._budget is not None:
                            send, self._budget = data[: self._budget], self._budget - len(data)
                            cut = self._budget <= 0
                        else:
                            send, cut = data, False
                    if cut:
                        dst.sendall(send)
                        self.was_cut.set()
                        self.stop()
                        return
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateLocalStack]:
    if not VENV_PYTHON.exists():
        # start.sh creates the venv (and starts the shared LocalStack, which is harmless).
        _start_service("s3", VENV_PYTHON.exists)
    if not VENV_PYTHON.exists():
        unavailable(f"{VENV_PYTHON} is missing: run `bash localstack/start.sh s3` once")
    root = Path(tmp_path / "private-localstack")
    root.mkdir()
    stack = PrivateLocalStack(root)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def _storage(
    server: PrivateLocalStack,
    bucket: str,
    endpoint: str | None = None,
    config: dict[str, Any] = FAST,
) -> S3:
    return S3(
        bucket_path=f"{bucket}/results",
        endpoint_url=endpoint or server.endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        client_config=config,
    )


def _pipeline(
    storage: S3, on_transform: Callable[[], None], blob: int = 0
) -> tuple[Any, dict[str, int]]:
    """A two-task flow; `on_transform` runs inside the second task, before it returns a
    record of ~`blob` bytes more."""
    calls = {"extract": 0, "transform": 0}

    @task(
        cache_key_fn=task_input_hash,
        cache_expiration=timedelta(hours=1),
        result_storage=storage,
        result_serializer="json",
    )
    def extract(source: str) -> dict[str, Any]:
        calls["extract"] += 1
        return {"source": source, "records": list(range(100))}

    @task(
        cache_key_fn=task_input_hash,
        cache_expiration=timedelta(hours=1),
        result_storage=storage,
        result_serializer="json",
        retries=2,
        retry_delay_seconds=0.01,
    )
    def transform(data: dict[str, Any]) -> dict[str, Any]:
        calls["transform"] += 1
        on_transform()
        records = [2 * r for r in data["records"]]
        return {"source": data["source"], "records": records, "blob": "x" * blob}

    @flow(name="etl")
    def etl(source: str) -> dict[str, Any]:
        return transform(extract(source))

    return etl, calls


def _all_text(exc: BaseException, state: State, caplog: pytest.LogCaptureFixture) -> str:
    """Everything a user could see: message, chain, traceback, state, every log record."""
    parts = ["".join(traceback.format_exception(exc)), repr(exc), str(state.message)]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        parts.append(formatter.format(record))  # includes the formatted exc_info traceback
        parts.append(repr(record.args))
    return "\n".join(parts)


def _assert_failed_on_storage(
    state: State, storage: S3, endpoint: str, caplog: pytest.LogCaptureFixture
) -> StorageError:
    assert state.is_failed()
    exc = state.exception
    assert isinstance(exc, StorageError), repr(exc)
    message = str(exc)
    assert f"s3://{storage.bucket_path}" in message
    assert endpoint in message
    text = _all_text(exc, state, caplog)
    for value in CREDENTIALS:
        assert value not in text
    assert "after 3 attempt(s)" in caplog.text  # 1 try + 2 retries, then the task failed
    return exc


def _assert_only_whole_records(storage: S3) -> dict[str, Any]:
    """Every object under the base path is a complete record that reads back without warning."""
    store = ResultStore(storage, "json")
    found: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CorruptRecordWarning (partial object) fails the test
        for key in storage.ls():
            assert store.exists(key), key
            hit = store.read(key)
            assert hit is not None, key
            found[key] = hit.value
    return found


def test_server_stopped_mid_flow_fails_the_task_without_leaking_credentials(
    server: PrivateLocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    server.create_bucket(bucket)
    storage = _storage(server, bucket)
    stop_once = [True]

    def stop_the_server() -> None:
        if stop_once[0]:
            stop_once[0] = False
            server.stop()

    etl, calls = _pipeline(storage, stop_the_server)
    with caplog.at_level(logging.DEBUG, logger="blocks"), caplog.at_level(logging.INFO):
        state = etl("database", return_state=True)
    _assert_failed_on_storage(state, storage, server.endpoint, caplog)
    assert calls == {"extract": 1, "transform": 1}  # retries failed at the cache lookup
    assert "Attempt 1 failed with StorageError: Could not write" in caplog.text

    # The server comes back (empty: see the module docstring); the same flow now succeeds.
    server.start()
    server.create_bucket(bucket)
    assert _assert_only_whole_records(storage).keys() <= {k for k in storage.ls()}
    result = etl("database")
    assert result == {"source": "database", "records": [2 * r for r in range(100)], "blob": ""}
    records = _assert_only_whole_records(storage)
    assert sorted(v["source"] for v in records.values()) == ["database", "database"]
    assert etl("database") == result
    assert calls == {"extract": 2, "transform": 2}  # the third run was two cache hits
    assert time.monotonic() - started < 60


def test_connection_cut_mid_upload_leaves_no_partial_object_and_the_rerun_hits_the_cache(
    server: PrivateLocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    server.create_bucket(bucket)
    proxy = CuttingProxy(server.port)
    proxy.start()
    try:
        storage = _storage(server, bucket, endpoint=proxy.endpoint)
        cut_once = [True]

        def cut_during_the_next_upload() -> None:
            if cut_once[0]:
                cut_once[0] = False
                proxy.cut_after_upload(1024 * 1024)  # ~1 MiB into the ~8 MiB record

        etl, calls = _pipeline(storage, cut_during_the_next_upload, blob=8 * 1024 * 1024)
        with caplog.at_level(logging.DEBUG, logger="blocks"), caplog.at_level(logging.INFO):
            state = etl("api", return_state=True)
        assert proxy.was_cut.is_set()
        _assert_failed_on_storage(state, storage, proxy.endpoint, caplog)
        assert calls == {"extract": 1, "transform": 1}

        # The server kept its state: the half-sent record is not there, the first one is whole.
        proxy.start()
        records = _assert_only_whole_records(storage)
        assert len(records) == 1
        assert [v["source"] for v in records.values()] == ["api"]

        result = etl("api")
        assert result["source"] == "api" and len(result["blob"]) == 8 * 1024 * 1024
        assert calls == {"extract": 1, "transform": 2}  # extract was a cache hit
        assert len(_assert_only_whole_records(storage)) == 2
    finally:
        proxy.stop()
    assert time.monotonic() - started < 60


def test_frozen_server_fails_small_and_large_writes_in_bounded_time(
    server: PrivateLocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore sends PUT bodies with ``Expect: 100-continue``, which aiohttp would wait for
    forever; and a body larger than the socket buffers stalls in the write, which no socket
    timeout covers. Against a frozen server, each write must still fail within ~30 s."""
    started = time.monotonic()
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    server.create_bucket(bucket)
    storage = _storage(server, bucket)
    storage.write_path("before", b"whole")  # the client is built and the bucket works
    # Large writes through open_atomic_write spool to disk past this: s3fs's put_file.
    monkeypatch.setattr(remote, "SPOOL_MAX_MEMORY", 1024 * 1024)
    big = os.urandom(10 * 1024 * 1024)  # well over what the socket buffers take (~4 MiB here)

    def write_spooled() -> None:
        with storage.open_atomic_write("big-spooled") as out:
            out.write(big)

    writes: dict[str, Callable[[], object]] = {
        "small": lambda: storage.write_path("small", b"tiny"),  # one PutObject (pipe_file)
        "big": lambda: storage.write_path("big", big),  # one 10 MiB PutObject (pipe_file)
        "big-spooled": write_spooled,  # put_file from the spool file
    }
    outcomes: dict[str, tuple[BaseException | None, float]] = {}

    def attempt(name: str) -> None:
        begun = time.monotonic()
        try:
            writes[name]()
            outcomes[name] = (None, time.monotonic() - begun)
        except BaseException as exc:
            outcomes[name] = (exc, time.monotonic() - begun)

    threads = [threading.Thread(target=attempt, args=(name,), daemon=True) for name in writes]
    server.freeze()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(0.1, 60 - (time.monotonic() - started)))
    finally:
        server.thaw()  # the fixture stops it
    assert not any(thread.is_alive() for thread in threads), f"a write hung: {outcomes}"

    for name, (exc, took) in sorted(outcomes.items()):
        assert isinstance(exc, StorageError), (name, exc)
        message = str(exc)
        assert f"s3://{storage.bucket_path}" in message and server.endpoint in message, message
        text = "".join(traceback.format_exception(exc)) + repr(exc)
        for value in CREDENTIALS:
            assert value not in text
        assert took < 30, (name, took, message)
    # Small: the read timeout fires (the body went at once, no waiting for "100 Continue").
    assert "deadline" not in str(outcomes["small"][0])

    # Thawed, the server catches up on what it had buffered: whatever it kept is whole.
    relaxed = _storage(server, bucket, config={"read_timeout": 20, "retries": {"max_attempts": 2}})
    assert relaxed.read_path("before") == b"whole"
    expected = {"before": b"whole", "small": b"tiny", "big": big, "big-spooled": big}
    for key in relaxed.ls():
        assert relaxed.read_path(key) == expected[key], key
    relaxed.write_path("after", b"back")
    assert relaxed.read_path("after") == b"back"
    assert time.monotonic() - started < 40
