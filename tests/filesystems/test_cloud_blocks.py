"""Cloud blocks against real servers: S3 and Secrets Manager on LocalStack, GCS on its emulator.

Covers what the shared suite in test_filesystems.py does not: linked credentials, ambient
credentials, secrets masked and encrypted at rest, and failures (server down, missing bucket)
that become a `StorageError` naming the location and never a credential.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest
from servers import GCSEndpoint, S3Endpoint

from blocks.core._block import Block
from blocks.errors import ConfigurationError, StorageError
from blocks.filesystems import GCS, S3, AwsCredentials, AwsSecret, GcpCredentials

KEY_ID = "AKIABLOCKSTESTKEY0001"
SECRET_KEY = "s3cr3t-Access-Key-0f-blocks"
SESSION_TOKEN = "session-T0ken-0f-blocks-tests"
CREDENTIALS = (KEY_ID, SECRET_KEY, SESSION_TOKEN)


def _dead_endpoint() -> str:
    """An endpoint where nothing listens: what clients see when the server is stopped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _raw_registry(home: Path) -> str:
    return "".join(
        p.read_bytes().decode("latin-1") for p in home.glob("registry.db*") if p.is_file()
    )


def _full_text(exc: BaseException) -> str:
    """The message and the whole formatted chain, as a user would see it in a traceback."""
    return "".join(traceback.format_exception(exc))


def _assert_no_credentials(text: str) -> None:
    for value in CREDENTIALS:
        assert value not in text


def _lab_credentials(endpoint: S3Endpoint, **extra: Any) -> AwsCredentials:
    """Credentials that work on the test server."""
    return AwsCredentials(
        aws_access_key_id=endpoint.key,
        aws_secret_access_key=endpoint.secret,
        region_name=endpoint.region,
        **extra,
    )


@pytest.fixture
def s3(s3_endpoint: S3Endpoint, s3_bucket: str) -> S3:
    return S3(
        bucket_path=f"{s3_bucket}/cloud-{uuid.uuid4().hex[:10]}",
        credentials=_lab_credentials(s3_endpoint),
        endpoint_url=s3_endpoint.endpoint_url,
    )


# -- S3 -------------------------------------------------------------------------------------


def test_s3_linked_credentials_follow_updates(s3_endpoint: S3Endpoint, s3_bucket: str) -> None:
    dead = _dead_endpoint()
    _lab_credentials(s3_endpoint, endpoint_url=dead).save("lab")
    S3(bucket_path=f"{s3_bucket}/linked", credentials=AwsCredentials.load("lab")).save("lab")

    with pytest.raises(StorageError, match=dead):
        S3.load("lab").exists("k")

    creds = AwsCredentials.load("lab")
    creds.endpoint_url = s3_endpoint.endpoint_url
    creds.save("lab", overwrite=True)

    store = S3.load("lab")
    assert store.credentials is not None
    assert store.credentials.endpoint_url == s3_endpoint.endpoint_url
    store.write_path("k", b"through linked credentials")
    assert S3.load("lab").read_path("k") == b"through linked credentials"


def test_s3_block_loads_by_slug_in_a_fresh_process(s3: S3) -> None:
    s3.write_path("from-parent", b"hello")
    s3.save("fresh")
    code = (
        "from blocks.core._block import Block\n"
        "store = Block.load('s3/fresh')\n"
        "print(type(store).__name__, store.read_path('from-parent').decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=os.environ
    ).stdout
    assert out.strip() == "S3 hello"


def test_s3_secrets_are_masked_and_encrypted_at_rest(blocks_home: Path) -> None:
    creds = AwsCredentials(
        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET_KEY, aws_session_token=SESSION_TOKEN
    )
    store = S3(
        bucket_path="bucket/prefix",
        credentials=creds,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=SESSION_TOKEN,
    )
    for text in (repr(store), str(store), store.model_dump_json(), repr(creds), str(creds)):
        assert SECRET_KEY not in text and SESSION_TOKEN not in text
    assert dict(store.masked_items())["aws_secret_access_key"] == "**********"
    assert set(AwsCredentials.secret_fields()) == {"aws_secret_access_key", "aws_session_token"}

    store.save("masked")  # the unsaved credentials are stored inside, encrypted too
    raw = _raw_registry(blocks_home)
    assert SECRET_KEY not in raw and SESSION_TOKEN not in raw
    assert "bucket/prefix" in raw  # the plain fields are there: we looked at the right file

    loaded = S3.load("masked")
    assert loaded.credentials is not None
    assert loaded.credentials.aws_session_token is not None
    assert loaded.credentials.aws_session_token.get_secret_value() == SESSION_TOKEN


def test_s3_with_the_server_down_raises_storage_error_naming_bucket_and_endpoint() -> None:
    dead = _dead_endpoint()
    store = S3(
        bucket_path="results-bucket/etl",
        endpoint_url=dead,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=SESSION_TOKEN,
        region_name="us-east-1",
    )
    operations: dict[str, Any] = {
        "exists": lambda: store.exists("k"),
        "read": lambda: store.read_path("k"),
        "write": lambda: store.write_path("k", b"v"),
        "ls": lambda: store.ls(),
    }
    for name, operation in operations.items():
        with pytest.raises(StorageError) as info:
            operation()
        message = str(info.value)
        assert "s3://results-bucket/etl" in message, name
        assert dead in message, name
        _assert_no_credentials(_full_text(info.value))


def test_s3_client_config_is_applied_and_the_client_reused(s3: S3) -> None:
    fast = s3.model_copy(
        update={
            "client_config": {
                "connect_timeout": 1,
                "read_timeout": 2,
                "retries": {"max_attempts": 0},
            }
        }
    )
    fast.write_path("k", b"v")
    fs = fast.filesystem()
    assert fast.filesystem() is fs  # botocore's in-place rewrite of `retries` breaks no cache
    assert fs.retries == 1  # s3fs's own loop: one try, like botocore
    assert fast.client_config == {
        "connect_timeout": 1,
        "read_timeout": 2,
        "retries": {"max_attempts": 0},
    }
    assert fast.read_path("k") == b"v"
    assert s3.filesystem().retries == 5  # not given: s3fs's default


def test_s3_missing_bucket_is_a_storage_error(s3_endpoint: S3Endpoint) -> None:
    store = S3(
        bucket_path=f"no-such-bucket-{uuid.uuid4().hex[:8]}/x",
        credentials=_lab_credentials(s3_endpoint),
        endpoint_url=s3_endpoint.endpoint_url,
    )
    for operation in (
        lambda: store.exists("k"),
        lambda: store.read_path("k"),
        lambda: store.write_path("k", b"v"),
        lambda: store.ls(),
    ):
        with pytest.raises(StorageError, match="does not exist") as info:
            operation()
        assert store.bucket_path in str(info.value)
        assert s3_endpoint.endpoint_url in str(info.value)
        if len(s3_endpoint.secret) >= 6:  # LocalStack's "test" is in every bucket name
            assert s3_endpoint.secret not in _full_text(info.value)


def test_s3_uses_ambient_environment_credentials(
    s3_endpoint: S3Endpoint, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _isolate_aws_config(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_endpoint.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint.endpoint_url)
    store = S3(bucket_path=f"{s3_bucket}/ambient")  # as in the tutorial: nothing else given
    store.write_path("k", b"ambient")
    assert store.read_path("k") == b"ambient"
    assert s3_endpoint in store.describe()


def test_s3_uses_a_profile_from_the_shared_credentials_file(
    s3_endpoint: S3Endpoint, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _isolate_aws_config(monkeypatch, tmp_path)
    (tmp_path / "credentials").write_text(
        f"[blocks-lab]\naws_access_key_id = {s3_endpoint.key}\n"
        f"aws_secret_access_key = {s3_endpoint.secret}\n"
    )
    creds = AwsCredentials(
        profile_name="blocks-lab",
        region_name=s3_endpoint.region,
        endpoint_url=s3_endpoint.endpoint_url,
    )
    store = S3(bucket_path=f"{s3_bucket}/profile", credentials=creds)
    store.write_path("k", b"profile")
    assert store.read_path("k") == b"profile"


def _isolate_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials or config from the machine: only what the test sets."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# -- AWS Secrets Manager ------------------------------------------------------------------------


@pytest.fixture
def aws_lab_credentials(s3_endpoint: S3Endpoint) -> AwsCredentials:
    """LocalStack serves Secrets Manager on the same endpoint as S3."""
    _lab_credentials(s3_endpoint, endpoint_url=s3_endpoint.endpoint_url).save("secrets-lab")
    return AwsCredentials.load("secrets-lab")


def test_aws_secret_put_and_get(aws_lab_credentials: AwsCredentials) -> None:
    secret = AwsSecret(secret_name=f"blocks/{uuid.uuid4().hex}", credentials=aws_lab_credentials)
    secret.put("first")
    assert secret.get() == "first"
    secret.put({"user": "etl", "password": "pw"})  # an existing secret gets a new version
    assert secret.get_json() == {"user": "etl", "password": "pw"}
    assert json.loads(secret.get())["user"] == "etl"


def test_aws_secret_pickles_without_its_client(aws_lab_credentials: AwsCredentials) -> None:
    secret = AwsSecret(secret_name=f"blocks/{uuid.uuid4().hex}", credentials=aws_lab_credentials)
    secret.put("v")
    copy = pickle.loads(pickle.dumps(secret))  # e.g. sent to a worker process
    assert copy.get() == "v"


def test_aws_secret_saves_with_linked_credentials(aws_lab_credentials: AwsCredentials) -> None:
    name = f"blocks/{uuid.uuid4().hex}"
    AwsSecret(secret_name=name, credentials=aws_lab_credentials).save("db-password")
    AwsSecret.load("db-password").put("hunter2")
    loaded = Block.load("aws-secret/db-password")
    assert isinstance(loaded, AwsSecret)
    assert loaded.get() == "hunter2"
    assert loaded.credentials is not None
    assert loaded.credentials.block_document_name == "secrets-lab"


def test_aws_secret_missing_is_a_storage_error(s3_endpoint: S3Endpoint) -> None:
    secret = AwsSecret(
        secret_name="blocks/does-not-exist",
        credentials=AwsCredentials(
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET_KEY,
            aws_session_token=SESSION_TOKEN,
            region_name="us-east-1",
        ),
        endpoint_url=s3_endpoint.endpoint_url,
    )
    with pytest.raises(StorageError, match="no such secret") as info:
        secret.get()
    assert "blocks/does-not-exist" in str(info.value)
    _assert_no_credentials(_full_text(info.value))


def test_aws_secret_with_the_server_down_names_the_endpoint() -> None:
    dead = _dead_endpoint()
    secret = AwsSecret(
        secret_name="blocks/x",
        credentials=AwsCredentials(
            aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
        ),
        endpoint_url=dead,
    )
    with pytest.raises(StorageError, match=dead) as info:
        secret.get()
    _assert_no_credentials(_full_text(info.value))


def test_aws_secret_without_a_region_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _isolate_aws_config(monkeypatch, tmp_path)
    secret = AwsSecret(
        secret_name="x",
        credentials=AwsCredentials(aws_access_key_id="test", aws_secret_access_key="test"),
    )
    with pytest.raises(ConfigurationError, match="region"):
        secret.get()


# -- GCS ------------------------------------------------------------------------------------

SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "blocks-test",
    "private_key_id": "pk-id-0f-blocks-tests",
    "private_key": "-----BEGIN PRIVATE KEY-----\nNOT-A-REAL-KEY-blocks\n-----END PRIVATE KEY-----",
    "client_email": "etl@blocks-test.iam.gserviceaccount.com",
}


def test_gcs_linked_credentials_are_masked_and_encrypted(blocks_home: Path) -> None:
    GcpCredentials(service_account_info=SERVICE_ACCOUNT, project="blocks-test").save("gcp")
    store = GCS(bucket_path="gs://bucket/prefix", credentials=GcpCredentials.load("gcp"))
    store.save("linked")
    for text in (repr(store), str(store), store.model_dump_json()):
        assert "NOT-A-REAL-KEY" not in text and "pk-id-0f-blocks-tests" not in text
    raw = _raw_registry(blocks_home)
    assert "NOT-A-REAL-KEY" not in raw and "pk-id-0f-blocks-tests" not in raw

    GcpCredentials(service_account_info=SERVICE_ACCOUNT, project="other-project").save(
        "gcp", overwrite=True
    )
    loaded = GCS.load("linked")
    assert loaded.bucket_path == "bucket/prefix"
    assert loaded.credentials is not None and loaded.credentials.project == "other-project"
    assert loaded.credentials.service_account_info is not None
    assert loaded.credentials.service_account_info.get_secret_value() == SERVICE_ACCOUNT


def test_gcs_token_is_secret() -> None:
    store = GCS(bucket_path="b", token="ya29.raw-access-token-blocks")
    assert "ya29" not in repr(store) and "ya29" not in store.model_dump_json()
    assert "token" in GCS.secret_fields()


def test_gcs_missing_bucket_is_a_storage_error(gcs_endpoint: GCSEndpoint) -> None:
    store = GCS(
        bucket_path=f"no-such-bucket-{uuid.uuid4().hex[:8]}/x",
        endpoint_url=gcs_endpoint.endpoint_url,
        token=gcs_endpoint.token,
        project=gcs_endpoint.project,
    )
    for operation in (
        lambda: store.exists("k"),
        lambda: store.read_path("k"),
        lambda: store.write_path("k", b"v"),
        lambda: store.ls(),
    ):
        with pytest.raises(StorageError, match="does not exist") as info:
            operation()
        assert store.bucket_path.split("/")[0] in str(info.value)
        assert gcs_endpoint in str(info.value)


def test_gcs_round_trip_through_the_registry(gcs_endpoint: GCSEndpoint, gcs_bucket: str) -> None:
    GCS(
        bucket_path=f"{gcs_bucket}/saved",
        endpoint_url=gcs_endpoint.endpoint_url,
        token=gcs_endpoint.token,
        project=gcs_endpoint.project,
    ).save("emulator")
    store = Block.load("gcs/emulator")
    assert isinstance(store, GCS)
    store.write_path("a/b.bin", b"gcs")
    assert GCS.load("emulator").ls() == ["a/b.bin"]
