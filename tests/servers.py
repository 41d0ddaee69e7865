"""Real servers for the tests: LocalStack S3, the GCS emulator, Azurite, a throwaway PostgreSQL.

`tests/conftest.py` loads this module as a plugin (``pytest_plugins = ["servers"]``). Fixtures:

- ``s3_endpoint`` (session): an `S3Endpoint` - a ``str`` equal to the endpoint URL (so it drops
  into ``endpoint_url=``) with ``.key``, ``.secret``, ``.region``, ``.storage_options()``,
  ``.filesystem()`` and ``.client()``. LocalStack on 127.0.0.1:4566 (started with
  ``localstack/start.sh s3`` if it is not up), or any S3 named by ``BLOCKS_TEST_S3_ENDPOINT``
  (+ ``BLOCKS_TEST_S3_KEY`` / ``_SECRET`` / ``_REGION``).
- ``s3_bucket`` (function): an `S3Bucket` - a ``str`` equal to a fresh bucket's name, with
  ``.url`` (``s3://name``), ``.endpoint`` and ``.fs``; emptied and removed after the test.
- ``gcs_endpoint`` / ``gcs_bucket``: the same for the GCS emulator on 127.0.0.1:9023
  (``BLOCKS_TEST_GCS_ENDPOINT`` to use another); gcsfs with ``token="anon"``.
- ``azure_endpoint`` / ``azure_container``: the same for Azurite (Azure Blob Storage) on
  127.0.0.1:10000 with its well-known development account (``BLOCKS_TEST_AZURE_CONNECTION_STRING``
  to use another); ``azure_container.block(prefix)`` is an `AzureBlobStorageContainer`.
- ``postgres_server`` (session): a `PostgresServer` - a private PostgreSQL cluster per pytest
  (xdist) worker, or the server of ``BLOCKS_TEST_POSTGRES_URL``.
- ``postgres_url`` (session): URL of one database shared by the session's tests.
- ``postgres_db_url`` (function): URL of a fresh, empty ``test_<uuid>`` database, dropped after.

A server that cannot be reached or started skips the test, except under ``CI=true``, where it
fails it: in CI a missing service is an error, never a silent skip.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, Self, TypeVar

import pytest
from filelock import FileLock

if TYPE_CHECKING:
    import gcsfs
    import s3fs
    import sqlalchemy as sa

    from blocks.filesystems import GCS, S3, AzureBlobStorageContainer, WritableFileSystem

__all__ = [
    "AzureContainer",
    "AzureEndpoint",
    "GCSBucket",
    "GCSEndpoint",
    "PostgresServer",
    "S3Bucket",
    "S3Endpoint",
    "azure_container",
    "azure_endpoint",
    "gcs_bucket",
    "gcs_endpoint",
    "postgres_db_url",
    "postgres_server",
    "postgres_url",
    "s3_bucket",
    "s3_endpoint",
    "secret_service",
]

# gcsfs reads this when it is first imported; its experimental client does not talk to emulators.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

REPO = Path(__file__).resolve().parents[1]
SERVICES_DIR = Path(os.environ.get("BLOCKS_SERVICES_DIR") or REPO / ".localstack")
LOCALSTACK_URL = "http://127.0.0.1:4566"
GCS_EMULATOR_URL = "http://127.0.0.1:9023"
# Below pytest-timeout's 300 s, so a slow cold install is reported as such, not as a hang.
START_TIMEOUT = 280.0


def unavailable(reason: str) -> NoReturn:
    """Skip the test because a server is missing - or fail it under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} [CI=true: a missing test server is a failure]", pytrace=False)
    pytest.skip(reason)


def _start_service(which: str, is_up: Any) -> None:
    """Run ``localstack/start.sh WHICH`` once, under a lock shared by all xdist workers."""
    SERVICES_DIR.mkdir(parents=True, exist_ok=True)
    # Not start.sh's own lock file: it flocks that one itself, and would wait for us forever.
    with FileLock(str(SERVICES_DIR / f"pytest-{which}.lock"), timeout=START_TIMEOUT + 60):
        if is_up():  # another worker started it while we waited
            return
        try:
            proc = subprocess.run(
                ["bash", str(REPO / "localstack" / "start.sh"), which],
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            unavailable(f"localstack/start.sh {which} did not finish in {START_TIMEOUT:.0f}s")
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            unavailable(f"localstack/start.sh {which} failed (exit {proc.returncode}):\n{tail}")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _need(module: str) -> None:
    """Skip (fail under CI) unless `module`, a test dependency, imports."""
    try:
        __import__(module)
    except ImportError:
        unavailable(f"{module} is not installed (pip install -e '.[dev]')")


_Endpoint = TypeVar("_Endpoint", bound="_Answers")


class _Answers(Protocol):
    def is_up(self) -> bool: ...


def _reach(endpoint: _Endpoint, which: str, *, custom: str | None, ours: str) -> _Endpoint:
    """`endpoint` once it answers: started with ``localstack/start.sh WHICH`` if it is ours
    (`ours` describes it); one the environment names (`custom` says how) is never started."""
    if endpoint.is_up():
        return endpoint
    if custom:
        unavailable(f"{custom} does not answer")
    _start_service(which, endpoint.is_up)
    if not endpoint.is_up():
        unavailable(f"{ours} does not answer after localstack/start.sh {which}")
    return endpoint


@contextmanager
def _container(fs: Any, name: str) -> Iterator[None]:
    """Bucket or container `name` made on `fs` for one test, removed with its objects after."""
    fs.mkdir(name)
    try:
        yield
    finally:
        fs.invalidate_cache()
        fs.rm(name, recursive=True)


# -- S3 ----------------------------------------------------------------------------------------


class S3Endpoint(str):
    """An S3 endpoint URL (it *is* the URL string) plus the credentials that go with it."""

    key: str
    secret: str
    region: str

    def __new__(cls, endpoint_url: str, *, key: str, secret: str, region: str) -> S3Endpoint:
        self = super().__new__(cls, endpoint_url)
        self.key, self.secret, self.region = key, secret, region
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[str], dict[str, str]]:
        return (str(self),), {"key": self.key, "secret": self.secret, "region": self.region}

    @property
    def endpoint_url(self) -> str:
        return str(self)

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` / fsspec ``storage_options``."""
        return {
            "key": self.key,
            "secret": self.secret,
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": self.region},
        }

    def filesystem(self) -> s3fs.S3FileSystem:
        """A new s3fs filesystem (create buckets with `client`: s3fs's mkdir sends a
        LocationConstraint that us-east-1 rejects)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())

    def client(self, service: str = "s3") -> Any:
        """A boto3 client for ``service`` on this endpoint."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=self.region,
            config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2}),
        )

    def is_up(self) -> bool:
        try:
            self.client().list_buckets()
        except Exception:
            return False
        return True


class Bucket(str):
    """A bucket (it *is* the bucket name) on an endpoint whose `filesystem()` reaches it."""

    scheme = ""
    endpoint: Any

    def __new__(cls, name: str, *, endpoint: Any) -> Self:
        self = super().__new__(cls, name)
        self.endpoint = endpoint
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[str], dict[str, Any]]:
        return (str(self),), {"endpoint": self.endpoint}

    @property
    def name(self) -> str:
        return str(self)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self}"

    @cached_property
    def fs(self) -> Any:
        return self.endpoint.filesystem()


class S3Bucket(Bucket):
    """A bucket on an `S3Endpoint`."""

    scheme = "s3"
    endpoint: S3Endpoint

    def block(self, prefix: str) -> S3:
        """An `S3` block on `prefix` of this bucket, with the endpoint's explicit credentials."""
        from blocks.filesystems import S3

        return S3(
            bucket_path=f"{self}/{prefix}",
            endpoint_url=self.endpoint.endpoint_url,
            aws_access_key_id=self.endpoint.key,
            aws_secret_access_key=self.endpoint.secret,
            region_name=self.endpoint.region,
        )


@pytest.fixture(scope="session")
def s3_endpoint() -> S3Endpoint:
    """LocalStack's S3 (started if need be), or the S3 named by BLOCKS_TEST_S3_ENDPOINT."""
    _need("boto3")
    custom = os.environ.get("BLOCKS_TEST_S3_ENDPOINT")
    endpoint = S3Endpoint(
        custom or LOCALSTACK_URL,
        key=os.environ.get("BLOCKS_TEST_S3_KEY", "test"),
        secret=os.environ.get("BLOCKS_TEST_S3_SECRET", "test"),
        region=os.environ.get("BLOCKS_TEST_S3_REGION", "us-east-1"),
    )
    return _reach(
        endpoint,
        "s3",
        custom=custom and f"S3 at BLOCKS_TEST_S3_ENDPOINT={custom}",
        ours=f"LocalStack S3 at {LOCALSTACK_URL}",
    )


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> Iterator[S3Bucket]:
    """A fresh bucket for one test; emptied and deleted afterwards."""
    client = s3_endpoint.client()
    bucket = S3Bucket(_unique("blocks-test"), endpoint=s3_endpoint)
    params: dict[str, Any] = {"Bucket": bucket.name}
    if s3_endpoint.region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
        params["CreateBucketConfiguration"] = {"LocationConstraint": s3_endpoint.region}
    client.create_bucket(**params)
    try:
        yield bucket
    finally:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket.name):
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if doomed:
                client.delete_objects(Bucket=bucket.name, Delete={"Objects": doomed})
        client.delete_bucket(Bucket=bucket.name)


# -- GCS ---------------------------------------------------------------------------------------


class GCSEndpoint(str):
    """A GCS (emulator) endpoint URL (it *is* the URL string), used anonymously."""

    project: str
    token: str

    def __new__(cls, url: str, *, project: str = "test", token: str = "anon") -> GCSEndpoint:
        self = super().__new__(cls, url)
        self.project, self.token = project, token
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[str], dict[str, str]]:
        return (str(self),), {"project": self.project, "token": self.token}

    @property
    def endpoint_url(self) -> str:
        return str(self)

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``gcsfs.GCSFileSystem`` / fsspec ``storage_options``."""
        return {"endpoint_url": self.endpoint_url, "token": self.token, "project": self.project}

    def filesystem(self) -> gcsfs.GCSFileSystem:
        import gcsfs

        return gcsfs.GCSFileSystem(skip_instance_cache=True, **self.storage_options())

    def is_up(self) -> bool:
        url = f"{self.endpoint_url.rstrip('/')}/storage/v1/b?project={self.project}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except Exception:
            return False


class GCSBucket(Bucket):
    """A bucket on a `GCSEndpoint`."""

    scheme = "gs"
    endpoint: GCSEndpoint

    def block(self, prefix: str) -> GCS:
        """A `GCS` block on `prefix` of this bucket, on the emulator's endpoint."""
        from blocks.filesystems import GCS

        return GCS(
            bucket_path=f"{self}/{prefix}",
            endpoint_url=self.endpoint.endpoint_url,
            token=self.endpoint.token,
            project=self.endpoint.project,
        )


@pytest.fixture(scope="session")
def gcs_endpoint() -> GCSEndpoint:
    """The GCS emulator (started if need be), or the one named by BLOCKS_TEST_GCS_ENDPOINT."""
    _need("gcsfs")
    custom = os.environ.get("BLOCKS_TEST_GCS_ENDPOINT")
    return _reach(
        GCSEndpoint(custom or GCS_EMULATOR_URL),
        "gcs",
        custom=custom and f"GCS at BLOCKS_TEST_GCS_ENDPOINT={custom}",
        ours=f"GCS emulator at {GCS_EMULATOR_URL}",
    )


@pytest.fixture
def gcs_bucket(gcs_endpoint: GCSEndpoint) -> Iterator[GCSBucket]:
    """A fresh bucket for one test; deleted with its objects afterwards."""
    bucket = GCSBucket(_unique("blocks-test"), endpoint=gcs_endpoint)
    with _container(gcs_endpoint.filesystem(), bucket.name):
        yield bucket


# -- Azure Blob Storage (Azurite) -----------------------------------------------------------

# Azurite's documented development account: a public, well-known key, not a secret.
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


class AzureEndpoint(str):
    """An Azure Blob Storage connection string (it *is* the string)."""

    @property
    def connection_string(self) -> str:
        return str(self)

    @property
    def account_key(self) -> str:
        parts = dict(p.split("=", 1) for p in self.split(";") if "=" in p)
        return parts.get("AccountKey", "")

    def storage_options(self) -> dict[str, Any]:
        return {"connection_string": self.connection_string}

    def filesystem(self) -> Any:
        import adlfs

        return adlfs.AzureBlobFileSystem(skip_instance_cache=True, **self.storage_options())

    def is_up(self) -> bool:
        try:
            self.filesystem().ls("")
        except Exception:
            return False
        return True


class AzureContainer(Bucket):
    """A container on an `AzureEndpoint`."""

    scheme = "az"
    endpoint: AzureEndpoint

    def block(self, prefix: str) -> AzureBlobStorageContainer:
        """An `AzureBlobStorageContainer` on `prefix` of this container."""
        from blocks.filesystems import AzureBlobStorageContainer, AzureBlobStorageCredentials

        return AzureBlobStorageContainer(
            container_name=str(self),
            base_folder=prefix,
            credentials=AzureBlobStorageCredentials(
                connection_string=self.endpoint.connection_string
            ),
        )


@pytest.fixture(scope="session")
def azure_endpoint() -> AzureEndpoint:
    """Azurite (started if need be), or the account of BLOCKS_TEST_AZURE_CONNECTION_STRING."""
    _need("adlfs")
    custom = os.environ.get("BLOCKS_TEST_AZURE_CONNECTION_STRING")
    return _reach(
        AzureEndpoint(custom or AZURITE_CONNECTION_STRING),
        "azure",
        custom=custom and "Azure at BLOCKS_TEST_AZURE_CONNECTION_STRING",  # a secret: not shown
        ours="Azurite at 127.0.0.1:10000",
    )


@pytest.fixture
def azure_container(azure_endpoint: AzureEndpoint) -> Iterator[AzureContainer]:
    """A fresh container for one test; deleted with its blobs afterwards."""
    container = AzureContainer(_unique("blocks-test"), endpoint=azure_endpoint)
    with _container(azure_endpoint.filesystem(), container.name):
        yield container


# -- PostgreSQL --------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    host: str
    port: int
    user: str = "postgres"
    password: str | None = None
    _engine: sa.Engine | None = field(default=None, repr=False)

    def url(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``database`` on this server."""
        import sqlalchemy as sa

        return sa.URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def _admin(self) -> sa.Engine:
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(
                self.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
            )
        return self._engine

    def create_database(self, name: str) -> str:
        """Create an empty database (from template0: never busy) and return its URL."""
        import sqlalchemy as sa

        with self._admin().connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database even if a test left connections open to it."""
        import sqlalchemy as sa

        with self._admin().connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def is_up(self) -> bool:
        import sqlalchemy as sa

        try:
            with self._admin().connect() as conn:
                conn.execute(sa.text("select 1"))
        except Exception:
            return False
        return True

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _pg_bindir() -> Path | None:
    """Directory with initdb/pg_ctl: BLOCKS_TEST_PG_BINDIR, Debian's newest, or PATH."""
    if custom := os.environ.get("BLOCKS_TEST_PG_BINDIR"):
        return Path(custom)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cluster:
    """A throwaway cluster in a temp dir. PostgreSQL refuses to run as root, so as root every
    command runs as the ``postgres`` user, who owns the directory."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                self.owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no 'postgres' user to run PostgreSQL")
        # Not pytest's tmp_path: as root it is 0700, and the postgres user must get in.
        self.dir = Path(tempfile.mkdtemp(prefix="blocks-pg-", dir="/tmp"))
        if self.as_root:
            os.chown(self.dir, self.owner.pw_uid, self.owner.pw_gid)
        self.data = self.dir / "data"
        self.port = 0

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            runuser = shutil.which("runuser")
            cmd = (
                [runuser, "-u", "postgres", "--", *cmd]
                if runuser
                else ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]
            )
        return subprocess.run(
            cmd,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> None:
        proc = self.run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        if proc.returncode != 0:
            unavailable(f"initdb failed: {(proc.stdout + proc.stderr).strip()[-1500:]}")
        # A free port can be taken by someone else before we bind it: try a few.
        for _ in range(3):
            self.port = _free_port()
            # Durability is pointless for a throwaway cluster, speed is not.
            options = (
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            proc = self.run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.dir / "log"),
                "-w",
                "-t",
                "60",
                "start",
            )
            if proc.returncode == 0:
                return
        log = (
            (self.dir / "log").read_text(errors="replace")[-1500:]
            if (self.dir / "log").exists()
            else ""
        )
        unavailable(f"pg_ctl start failed: {(proc.stdout + proc.stderr).strip()}\n{log}")

    def stop(self) -> None:
        if self.data.exists():
            self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster for this pytest process (each xdist worker gets its own, so
    no cross-worker locking or shutdown order), or the server of BLOCKS_TEST_POSTGRES_URL."""
    try:
        import psycopg  # noqa: F401
        import sqlalchemy as sa
    except ImportError:
        unavailable("psycopg/sqlalchemy are not installed (pip install -e '.[dev]')")
    if custom := os.environ.get("BLOCKS_TEST_POSTGRES_URL"):
        url = sa.make_url(custom)
        server = PostgresServer(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
        )
        if not server.is_up():
            unavailable(f"PostgreSQL at BLOCKS_TEST_POSTGRES_URL ({url!r}) does not answer")
        yield server
        server.close()
        return
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install "
            "postgresql (Debian) or set BLOCKS_TEST_PG_BINDIR"
        )
    cluster = _Cluster(bindir)
    try:
        cluster.start()
        server = PostgresServer(host="127.0.0.1", port=cluster.port)
        if not server.is_up():
            unavailable(f"the PostgreSQL cluster in {cluster.dir} started but does not answer")
        yield server
        server.close()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of one database shared by this session's tests (``postgresql+psycopg://...``)."""
    name = _unique("blocks_session").replace("-", "_")
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def postgres_db_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database for one test; dropped (connections and all) after it."""
    name = _unique("test").replace("-", "_")
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


# -- one storage block per backend ----------------------------------------------------------

BACKENDS = ["local", "memory", "file", "s3", "gcs", "azure"]


def make_storage(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> WritableFileSystem:
    """A fresh, empty storage block of `kind` (one of `BACKENDS`)."""
    from blocks.filesystems import LocalFileSystem, RemoteFileSystem

    unique = uuid.uuid4().hex[:12]
    if kind == "local":
        return LocalFileSystem(basepath=str(tmp_path / "store"))
    if kind == "memory":
        return RemoteFileSystem(basepath=f"memory://suite-{unique}/base")
    if kind == "file":
        return RemoteFileSystem(basepath=f"file://{tmp_path}/remote-store")
    if kind in ("s3", "gcs"):
        bucket: S3Bucket | GCSBucket = request.getfixturevalue(f"{kind}_bucket")
        return bucket.block(f"suite-{unique}")
    if kind == "azure":
        container: AzureContainer = request.getfixturevalue("azure_container")
        return container.block(f"suite-{unique}")
    raise AssertionError(kind)


# -- a real Secret Service: gnome-keyring on a private D-Bus session bus ---------------------

# No service directories: a stopped keyring daemon stays stopped (the system bus config would
# D-Bus-activate a fresh, locked one), so a test decides when the keyring comes and goes.
_SESSION_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@dataclass
class SecretService:
    """gnome-keyring-daemon serving org.freedesktop.secrets on a bus of its own.

    The login keyring lives on disk under `root`, so `stop()` then `start()` is the same keyring
    coming back (unlocked with the same password), as after a desktop session restart.
    """

    root: Path
    _bus: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _daemon: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this keyring through `keyring`'s SecretService backend."""
        return {
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.root / 'bus'}",
            "PYTHON_KEYRING_BACKEND": "keyring.backends.SecretService.Keyring",
        }

    def _daemon_env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "HOME": str(self.root / "home"),
            "XDG_DATA_HOME": str(self.root / "data"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
        }

    def start_bus(self) -> None:
        for sub in ("home", "data", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        config = self.root / "bus.conf"
        config.write_text(_SESSION_BUS_CONFIG.format(socket=self.root / "bus"))
        self._bus = subprocess.Popen(
            ["dbus-daemon", "--nofork", f"--config-file={config}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: (self.root / "bus").exists(), "the D-Bus session bus")

    def start(self) -> None:
        """Start (or restart) the keyring daemon, unlocking the login keyring."""
        self._daemon = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._daemon_env(),
        )
        assert self._daemon.stdin is not None
        self._daemon.stdin.write(b"test-login-password")
        self._daemon.stdin.close()
        _wait_for(self.answers, "gnome-keyring's Secret Service")

    def stop(self) -> None:
        """SIGKILL the keyring daemon: the Secret Service is gone until `start()`."""
        if self._daemon is not None:
            self._daemon.kill()
            self._daemon.wait()
            self._daemon = None

    def answers(self) -> bool:
        """True when a fresh process can store and read an item."""
        probe = (
            "import keyring; keyring.set_password('blocks-probe', 'p', 'ok'); "
            "assert keyring.get_password('blocks-probe', 'p') == 'ok'"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env={**os.environ, **self.env},
            capture_output=True,
            timeout=60,
        )
        return done.returncode == 0

    def close(self) -> None:
        self.stop()
        if self._bus is not None:
            self._bus.kill()
            self._bus.wait()


def _wait_for(ready: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up in {timeout:.0f} s")
        time.sleep(0.05)


@pytest.fixture
def secret_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretService]:
    """A real Secret Service (gnome-keyring) on a private session bus, for one test."""
    if not (shutil.which("dbus-daemon") and shutil.which("gnome-keyring-daemon")):
        unavailable("gnome-keyring and dbus are not installed (apt-get install gnome-keyring dbus)")
    # A short path: the bus socket's path must fit in sun_path (108 bytes).
    service = SecretService(Path(tempfile.mkdtemp(prefix="blocks-ss-")))
    try:
        service.start_bus()
        service.start()
        yield service
    finally:
        service.close()
        shutil.rmtree(service.root, ignore_errors=True)
