"""The server fixtures hand out real, working servers (see servers.py)."""

from __future__ import annotations

import pickle

import pytest
import sqlalchemy as sa
from servers import GCSBucket, S3Bucket, S3Endpoint

pytestmark = pytest.mark.integration


def test_s3_bucket_stores_and_returns_an_object(s3_bucket: S3Bucket) -> None:
    s3_bucket.fs.pipe(f"{s3_bucket}/dir/hello.txt", b"hello s3")
    # A second, independent client sees the object: it is really on the server.
    fs = s3_bucket.endpoint.filesystem()
    assert fs.cat(f"{s3_bucket.url}/dir/hello.txt") == b"hello s3"
    assert fs.ls(f"{s3_bucket}/dir") == [f"{s3_bucket}/dir/hello.txt"]


def test_s3_endpoint_is_the_url_and_carries_credentials(s3_endpoint: S3Endpoint) -> None:
    assert s3_endpoint.startswith("http")
    assert s3_endpoint.endpoint_url == str(s3_endpoint)
    assert s3_endpoint.storage_options()["key"] == s3_endpoint.key
    assert pickle.loads(pickle.dumps(s3_endpoint)).secret == s3_endpoint.secret


def test_s3_buckets_are_fresh_per_test(s3_bucket: S3Bucket) -> None:
    assert s3_bucket.fs.ls(s3_bucket.name) == []


def test_secretsmanager_answers_on_the_s3_endpoint(s3_endpoint: S3Endpoint) -> None:
    if not s3_endpoint.startswith("http://127.0.0.1:4566"):
        pytest.skip("Secrets Manager is only promised by the LocalStack started here")
    client = s3_endpoint.client("secretsmanager")
    name = f"blocks-test-{id(client)}"
    client.create_secret(Name=name, SecretString="s3cr3t")
    try:
        assert client.get_secret_value(SecretId=name)["SecretString"] == "s3cr3t"
    finally:
        client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_gcs_bucket_stores_and_returns_an_object(gcs_bucket: GCSBucket) -> None:
    gcs_bucket.fs.pipe(f"{gcs_bucket}/dir/hello.txt", b"hello gcs")
    fs = gcs_bucket.endpoint.filesystem()
    assert fs.cat(f"{gcs_bucket.url}/dir/hello.txt") == b"hello gcs"
    assert fs.ls(f"{gcs_bucket}/dir") == [f"{gcs_bucket}/dir/hello.txt"]


def test_postgres_answers_select_version(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select version()")).scalar_one().startswith("PostgreSQL")
    engine.dispose()


def test_postgres_databases_are_fresh_per_test(postgres_db_url: str) -> None:
    engine = sa.create_engine(postgres_db_url)
    with engine.begin() as conn:
        tables = conn.execute(
            sa.text("select count(*) from pg_tables where schemaname = 'public'")
        ).scalar_one()
        assert tables == 0
        conn.execute(sa.text("create table t (x int)"))  # left behind on purpose: dropped after
    engine.dispose()
