"""Secrets by reference (`blocks/core/_references.py`): a secret field holding ``env:``,
``file:`` or ``aws-sm:`` instead of a value, resolved when read, cached for a TTL, sealed like a
value, masked once resolved.

Each test is the failure it guards against: a stale value served forever after a rotation, a
reference that fails without saying which, a literal password read as a reference, a writer
without the key pointing a reference elsewhere, a value printed in a log.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretBytes, SecretStr
from stored_rows import row_columns, tamper

from blocks import Block, SecretDict, flow, get_run_logger
from blocks.core._references import forget_resolved
from blocks.errors import SecretReferenceError, TamperedDocument
from blocks.system import Secret, SecretRef

BLOCK = str(Path(sys.executable).with_name("block"))


class RefWarehouse(Block):
    """A test block whose password may be a reference."""

    host: str
    password: SecretStr


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    forget_resolved()
    yield
    forget_resolved()


def _value(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- env: and file: ------------------------------------------------------------------------------


def test_an_env_reference_is_read_when_used_and_never_stored(
    monkeypatch: pytest.MonkeyPatch, blocks_home: Path
) -> None:
    value = _value("env-pw")
    var = f"BLOCKS_TEST_REF_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(var, value)
    Secret(value=SecretRef(f"env:{var}")).save("api-key")
    RefWarehouse(host="db", password=SecretRef(f"env:{var}")).save("prod")

    assert Secret.load("api-key").get() == value
    loaded = RefWarehouse.load("prod")
    assert loaded.password.get_secret_value() == value
    assert repr(loaded.password) == f"SecretRef('env:{var}')"
    # The document holds neither the value nor the reference in clear (it is sealed).
    stored = b"".join(p.read_bytes() for p in blocks_home.rglob("registry.db*"))
    assert value.encode() not in stored
    assert var.encode() not in stored
    print(f"registry files: {len(stored)} bytes searched, no value and no reference in clear")


def test_a_literal_value_that_looks_like_a_reference_stays_a_literal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLOCKS_TEST_LOOKALIKE", "the environment's value")
    Secret(value="env:BLOCKS_TEST_LOOKALIKE").save("lookalike")
    assert Secret.load("lookalike").get() == "env:BLOCKS_TEST_LOOKALIKE"


def test_a_file_reference_drops_one_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "db-password"
    path.write_text("file-secret-value\n")
    Secret(value=SecretRef(f"file:{path}")).save("from-file")
    assert Secret.load("from-file").get() == "file-secret-value"


def test_a_rotated_value_is_seen_after_the_ttl_and_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rotating"
    path.write_text("first-value")
    Secret(value=SecretRef(f"file:{path}")).save("rotating")

    monkeypatch.setenv("BLOCKS_SECRET_REF_TTL", "600")
    assert Secret.load("rotating").get() == "first-value"
    path.write_text("second-value")
    assert Secret.load("rotating").get() == "first-value"  # cached: within the TTL

    monkeypatch.setenv("BLOCKS_SECRET_REF_TTL", "0.5")
    forget_resolved()
    assert Secret.load("rotating").get() == "second-value"
    path.write_text("third-value")
    time.sleep(0.6)  # past the TTL: the next read goes to the file
    assert Secret.load("rotating").get() == "third-value"

    monkeypatch.setenv("BLOCKS_SECRET_REF_TTL", "0")  # 0: read on every use
    path.write_text("fourth-value")
    assert Secret.load("rotating").get() == "fourth-value"


@pytest.mark.parametrize(
    ("reference", "why"),
    [
        ("env:BLOCKS_TEST_NEVER_SET_REF", "environment variable BLOCKS_TEST_NEVER_SET_REF"),
        ("file:/nonexistent/blocks-test/db-password", "no such file"),
    ],
)
def test_a_missing_reference_fails_with_its_name(reference: str, why: str) -> None:
    os.environ.pop("BLOCKS_TEST_NEVER_SET_REF", None)
    Secret(value=SecretRef(reference)).save("missing")
    secret = Secret.load("missing")  # loading does not resolve
    with pytest.raises(SecretReferenceError, match=why) as info:
        secret.get()
    assert reference in str(info.value)
    print(f"error: {info.value}")


@pytest.mark.parametrize(
    "bad", ["DB_PASSWORD", "vault:x", "env:", "env:not-a-name", "file:", "aws-sm:", "aws-sm:x#"]
)
def test_a_malformed_reference_is_refused_when_written(bad: str) -> None:
    with pytest.raises(SecretReferenceError, match="Secret reference"):
        SecretRef(bad)


def test_a_writer_without_the_key_cannot_redirect_a_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLOCKS_TEST_REF_REAL", "real-value-123")
    monkeypatch.setenv("BLOCKS_TEST_REF_ATTACKER", "attacker-value")
    Secret(value=SecretRef("env:BLOCKS_TEST_REF_REAL")).save("target")
    Secret(value=SecretRef("env:BLOCKS_TEST_REF_ATTACKER")).save("mallory")
    # The attacker copies the sealed token of a reference they control into the target row.
    tamper("secret", "target", secrets=row_columns("secret", "mallory")["secrets"])
    with pytest.raises(TamperedDocument):
        Secret.load("target")


def test_block_inspect_shows_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_TEST_REF_SHOWN", "shown-nowhere-value")
    RefWarehouse.register_type_and_schema()
    RefWarehouse(host="db", password=SecretRef("env:BLOCKS_TEST_REF_SHOWN")).save("shown")
    done = subprocess.run(
        [BLOCK, "inspect", "ref-warehouse/shown", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    assert "ref env:BLOCKS_TEST_REF_SHOWN" in done.stdout
    assert "shown-nowhere-value" not in done.stdout + done.stderr


def test_a_resolved_value_is_masked_in_run_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    value = _value("resolved-secret")
    monkeypatch.setenv("BLOCKS_TEST_REF_MASKED", value)
    Secret(value=SecretRef("env:BLOCKS_TEST_REF_MASKED")).save("masked")

    @flow
    def uses() -> None:
        get_run_logger().info("token is %s", Secret.load("masked").get())

    with caplog.at_level(logging.INFO):
        uses()
    assert "token is ***" in caplog.text
    assert value not in caplog.text


# -- aws-sm: against LocalStack's Secrets Manager ----------------------------------------


@pytest.fixture
def secrets_manager(ambient_s3: str, s3_endpoint: object) -> object:
    """A Secrets Manager client on the test server; the ambient AWS variables point there."""
    from blocks.filesystems import AwsCredentials

    return AwsCredentials().client("secretsmanager")


def test_aws_sm_references_read_values_and_json_keys_through_the_ambient_chain(
    secrets_manager: object,
) -> None:
    name = f"blocks-test/{uuid.uuid4().hex}"
    plain = _value("sm-plain")
    secrets_manager.create_secret(Name=name, SecretString=plain)  # type: ignore[attr-defined]
    login = {"user": "etl-user", "password": _value("sm-json"), "port": 5432}
    secrets_manager.create_secret(  # type: ignore[attr-defined]
        Name=f"{name}-json", SecretString=json.dumps(login)
    )
    Secret(value=SecretRef(f"aws-sm:{name}")).save("sm-plain")
    Secret(value=SecretRef(f"aws-sm:{name}-json#password")).save("sm-key")
    Secret(value=SecretRef(f"aws-sm:{name}-json#port")).save("sm-port")
    assert Secret.load("sm-plain").get() == plain
    assert Secret.load("sm-key").get() == login["password"]
    assert Secret.load("sm-port").get() == "5432"


def test_aws_sm_reference_through_a_saved_aws_credentials_block(
    s3_endpoint: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from blocks.filesystems import AwsCredentials

    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)  # nothing ambient: the block's credentials must be used
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    creds = AwsCredentials(
        aws_access_key_id=s3_endpoint.key,  # type: ignore[attr-defined]
        aws_secret_access_key=s3_endpoint.secret,  # type: ignore[attr-defined]
        region_name=s3_endpoint.region,  # type: ignore[attr-defined]
        endpoint_url=s3_endpoint.endpoint_url,  # type: ignore[attr-defined]
    )
    creds.save("sm-lab")
    name = f"blocks-test/{uuid.uuid4().hex}"
    value = _value("via-block")
    creds.client("secretsmanager").create_secret(Name=name, SecretString=value)
    Secret(value=SecretRef(f"aws-sm:{name}", aws_credentials="sm-lab")).save("via-block")
    assert Secret.load("via-block").get() == value


def test_aws_sm_missing_secret_or_key_fails_with_the_reference(secrets_manager: object) -> None:
    name = f"blocks-test/{uuid.uuid4().hex}"
    secrets_manager.create_secret(  # type: ignore[attr-defined]
        Name=name, SecretString=json.dumps({"password": "not-shown-value"})
    )
    for reference, why in (
        (f"aws-sm:{name}-absent", "no such secret"),
        (f"aws-sm:{name}#user", "has no key 'user'"),
    ):
        with pytest.raises(SecretReferenceError, match=why) as info:
            SecretRef(reference).get_secret_value()
        assert reference in str(info.value)
        assert "not-shown-value" not in str(info.value)
        print(f"error: {info.value}")


# -- SecretBytes and SecretDict fields -----------------------------------------------------------


class RefKeys(Block):
    """A test block with bytes and dict secrets, each possibly a reference."""

    private_key: SecretBytes
    login: SecretDict
    spare: SecretBytes | None = None


def test_bytes_and_dict_fields_hold_references_read_when_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blocks_home: Path
) -> None:
    key_text = _value("-----BEGIN KEY-----")
    login = {"user": "etl", "token": _value("dict-token")}
    (tmp_path / "key.pem").write_text(key_text + "\n")
    monkeypatch.setenv("BLOCKS_TEST_REF_LOGIN", json.dumps(login))
    RefKeys(
        private_key=SecretRef(f"file:{tmp_path / 'key.pem'}"),
        login=SecretRef("env:BLOCKS_TEST_REF_LOGIN"),
    ).save("keys")
    loaded = RefKeys.load("keys")
    assert repr(loaded.private_key) == f"SecretBytesRef('file:{tmp_path / 'key.pem'}')"
    assert repr(loaded.login) == "SecretDictRef('env:BLOCKS_TEST_REF_LOGIN')"
    assert loaded.private_key.get_secret_value() == key_text.encode()
    assert loaded.login.get_secret_value() == login
    # Rotation is seen at once with a TTL of 0; saving again keeps the references.
    monkeypatch.setenv("BLOCKS_SECRET_REF_TTL", "0")
    rotated = {**login, "token": _value("rotated")}
    monkeypatch.setenv("BLOCKS_TEST_REF_LOGIN", json.dumps(rotated))
    assert loaded.login.get_secret_value() == rotated
    loaded.save("keys", overwrite=True)
    assert RefKeys.load("keys").login == SecretRef("env:BLOCKS_TEST_REF_LOGIN").as_kind("dict")
    stored = b"".join(p.read_bytes() for p in blocks_home.rglob("registry.db*"))
    assert rotated["token"].encode() not in stored and key_text.encode() not in stored
    # Plain values still work beside them; a reference may be assigned to a loaded block.
    RefKeys(private_key=b"raw", login={"a": "b"}).save("plain")
    plain = RefKeys.load("plain")
    assert plain.login.get_secret_value() == {"a": "b"}
    # Typed as the fields' types for mypy; converted on assignment at run time.
    plain.private_key = SecretRef(f"file:{tmp_path / 'key.pem'}")  # type: ignore[assignment]
    plain.login = SecretRef("env:BLOCKS_TEST_REF_LOGIN")  # type: ignore[assignment]
    assert plain.private_key.get_secret_value() == key_text.encode()
    assert plain.login.get_secret_value() == rotated


def test_a_dict_reference_that_is_not_a_json_object_fails_with_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLOCKS_TEST_REF_NOT_JSON", "plain-text-value")
    block = RefKeys(private_key=b"k", login=SecretRef("env:BLOCKS_TEST_REF_NOT_JSON"))
    with pytest.raises(SecretReferenceError, match="not a JSON object") as info:
        block.login.get_secret_value()
    assert "env:BLOCKS_TEST_REF_NOT_JSON" in str(info.value)
    assert "plain-text-value" not in str(info.value)


def test_a_whole_dict_by_aws_sm_reference_masks_each_leaf(
    secrets_manager: object, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"blocks-test/{uuid.uuid4().hex}"
    login = {"user": "etl-user", "password": _value("sm-dict")}
    secrets_manager.create_secret(  # type: ignore[attr-defined]
        Name=name, SecretString=json.dumps(login)
    )
    RefKeys(private_key=b"k", login=SecretRef(f"aws-sm:{name}")).save("sm-dict")

    @flow
    def connects() -> None:
        got = RefKeys.load("sm-dict").login.get_secret_value()
        get_run_logger().info("connecting with %s", got["password"])

    with caplog.at_level(logging.INFO):
        connects()
    assert RefKeys.load("sm-dict").login.get_secret_value() == login
    assert "connecting with ***" in caplog.text and login["password"] not in caplog.text
