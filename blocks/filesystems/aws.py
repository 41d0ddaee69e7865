"""AWS blocks: `AwsCredentials`, the `S3` bucket storage (over s3fs) and `AwsSecret`.

s3fs and boto3 are optional (``pip install 'blocks[s3]'``) and imported on first use.
With no credentials given, the ambient ones are used (environment variables, ``~/.aws``,
instance roles), so ``S3(bucket_path="my-bucket/results")`` works as in the tutorial.

Example:
    >>> creds = AwsCredentials(aws_access_key_id="AKIA...", aws_secret_access_key="...")
    >>> creds.save("prod")
    >>> S3(bucket_path="my-bucket/results", credentials=AwsCredentials.load("prod")).save("prod")
    >>> S3.load("prod").write_path("hello.txt", b"hi")
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

from pydantic import Field, PrivateAttr, SecretStr, field_validator

from blocks.core._block import Block
from blocks.core._documents import mask_userinfo, userinfo_strings
from blocks.errors import ConfigurationError, MissingDependency, StorageError
from blocks.filesystems.base import scrub, secret_strings
from blocks.filesystems.remote import FsspecFileSystem, _without_private

S3_EXTRA = "pip install 'blocks[s3]'"

# Fail fast when the endpoint is down; s3fs adds its own retries for throttling.
_BOTO_CONFIG: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 60,
    "retries": {"max_attempts": 3, "mode": "standard"},
}

# Bounding writes (see `s3_write_options`).
_MIB = 1024 * 1024
_MAX_BACKOFF = 20.0  # botocore's longest sleep between two attempts (standard mode)
_ROUNDS = 3  # a multipart upload is three rounds of requests: create, parts, complete
_EXPECT_HOOK_ID = "blocks-no-expect-100-continue"


class AwsCredentials(Block):
    """AWS credentials (secret key and session token encrypted at rest) and client settings.

    Every field is optional: what is not given comes from the ambient AWS configuration.

    Example:
        >>> AwsCredentials(aws_access_key_id="AKIA...", aws_secret_access_key="...",
        ...                region_name="eu-west-1").save("prod")
        >>> S3(bucket_path="bucket/results", credentials=AwsCredentials.load("prod"))
    """

    _block_type_name = "AWS Credentials"
    _description = "AWS access key, secret key, session token, profile, region and endpoint."

    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    profile_name: str | None = None
    region_name: str | None = None
    endpoint_url: str | None = None
    """A custom endpoint (LocalStack, MinIO, ...); ``None`` for AWS itself."""

    def boto3_session(self) -> Any:
        """A ``boto3.Session`` with these credentials."""
        boto3 = _import("boto3")
        return boto3.session.Session(
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=_plain(self.aws_secret_access_key),
            aws_session_token=_plain(self.aws_session_token),
            profile_name=self.profile_name,
            region_name=self.region_name,
        )

    def client(self, service: str, endpoint_url: str | None = None) -> Any:
        """A boto3 client for `service` (e.g. ``"secretsmanager"``)."""
        botocore_config = _import("botocore.config")
        return self.boto3_session().client(
            service,
            endpoint_url=endpoint_url or self.endpoint_url,
            config=botocore_config.Config(**_BOTO_CONFIG),
        )


class S3(FsspecFileSystem):
    """Storage in an S3 bucket (or an S3-compatible store such as LocalStack or MinIO).

    Credentials come from the fields given here, else from `credentials` (a saved
    `AwsCredentials` stays linked), else from the ambient AWS configuration.
    Writes are a single PUT (or a multipart upload that S3 publishes only when complete).

    Example:
        >>> S3(bucket_path="my-bucket/results")              # ambient credentials
        >>> S3(bucket_path="test-bucket/results", endpoint_url="http://127.0.0.1:4566",
        ...    aws_access_key_id="test", aws_secret_access_key="test").write_path("k", b"v")
    """

    _block_is_abstract = False
    _block_type_slug = "s3"
    _block_type_name = "S3"
    _description = "Store data in an S3 bucket, with linked or ambient AWS credentials."

    bucket_path: str
    """``bucket`` or ``bucket/prefix`` (an ``s3://`` prefix is accepted)."""
    credentials: AwsCredentials | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    endpoint_url: str | None = None
    region_name: str | None = None
    client_config: dict[str, Any] = Field(default_factory=dict)
    """botocore ``Config`` options laid over the defaults (connect 5 s, read 60 s, 3 retries),
    e.g. ``{"connect_timeout": 1, "read_timeout": 5, "retries": {"max_attempts": 0}}`` to fail
    fast. ``retries.max_attempts`` (retries after the first try), when given, also caps the
    retry loop s3fs runs on top of botocore's (default: 5 tries). They bound writes too: a
    server that stops answering fails a write after about (connect + read timeout) x attempts,
    or, while a large payload is stuck on its way, at a deadline that allows read_timeout per
    MiB on top (see `s3_write_options`)."""

    @field_validator("bucket_path")
    @classmethod
    def _valid_bucket_path(cls, value: str) -> str:
        path = value.removeprefix("s3://").removeprefix("s3a://").strip("/")
        if not path or path.startswith("."):
            raise ValueError("bucket_path must be 'bucket' or 'bucket/prefix'")
        return path

    def _protocol(self) -> str:
        return "s3"

    def _root(self) -> str:
        return self.bucket_path

    def _base_url(self) -> str:
        return f"s3://{self.bucket_path}"

    def _endpoint(self) -> str | None:
        return self.endpoint_url or (self.credentials.endpoint_url if self.credentials else None)

    def describe(self) -> str:
        # The ambient endpoint (AWS_ENDPOINT_URL...) too: an error must say where it went.
        endpoint = (
            self._endpoint()
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        where = f"s3://{self.bucket_path}"
        return f"{where} (endpoint {mask_userinfo(endpoint)})" if endpoint else where

    def _storage_options(self) -> dict[str, Any]:
        creds = self.credentials
        options: dict[str, Any] = {
            # Other processes write too: never answer exists() from a stale listing.
            "use_listings_cache": False,
            "config_kwargs": {**_BOTO_CONFIG, **self.client_config},
        }
        if self.aws_access_key_id or self.aws_secret_access_key:
            options["key"] = self.aws_access_key_id
            options["secret"] = _plain(self.aws_secret_access_key)
            options["token"] = _plain(self.aws_session_token)
        elif creds is not None:
            if creds.aws_access_key_id or creds.aws_secret_access_key:
                options["key"] = creds.aws_access_key_id
                options["secret"] = _plain(creds.aws_secret_access_key)
                options["token"] = _plain(creds.aws_session_token)
            if creds.profile_name:
                options["profile"] = creds.profile_name
        endpoint = self._endpoint()
        if endpoint:
            options["endpoint_url"] = endpoint
        region = self.region_name or (creds.region_name if creds else None)
        if region:
            options["client_kwargs"] = {"region_name": region}
        return options

    def _make_filesystem(self, options: dict[str, Any]) -> Any:
        s3fs = _import("s3fs")
        retries = _max_retries(self.client_config)
        if retries is None:
            return s3fs.S3FileSystem(**options)
        # s3fs retries timeouts itself, on top of botocore: honour the cap on both layers.
        # Its own instance (not fsspec's shared one), since `retries` is no s3fs option.
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
        fs.retries = 1 + retries  # s3fs counts tries
        return fs

    def secret_values(self) -> list[str]:
        options = self._storage_options()
        return secret_strings(
            {k: options.get(k) for k in ("key", "secret", "token")}
        ) + userinfo_strings([options, self])

    def _is_missing_root(self, exc: BaseException) -> bool:
        code = _error_code(exc.__cause__) or _error_code(exc)
        return code == "NoSuchBucket" or "bucket does not exist" in str(exc).lower()

    def _write_options(self, fs: Any, nbytes: int) -> dict[str, Any]:
        return s3_write_options(fs, nbytes)


def s3_write_options(fs: Any, nbytes: int) -> dict[str, Any]:
    """Make an s3fs write of `nbytes` bytes fail in bounded time when the server stops
    answering; the keyword arguments for the (sync) write call.

    Unbounded otherwise, for two reasons:

    - botocore sends every PUT/POST body with ``Expect: 100-continue`` and aiohttp waits for the
      server's "100 Continue" with no timeout at all (its read timeout starts only once the body
      is sent). So the header is dropped on this client: the body goes at once and
      read_timeout covers the wait for the answer - enough for a payload that fits in the
      socket buffers (a few MiB). S3 takes bodies without it; an early rejection (e.g. a
      wrong key) may now cost sending (part of) the body first.
    - A larger body stalls in aiohttp's write once those buffers are full: no timeout covers
      that either. Hence an overall deadline (fsspec's ``timeout=``, which cancels the call):
      every attempt timing out on its connect and read, in each of the rounds of a multipart
      upload, plus read_timeout per MiB of payload (with the default 60 s, a floor of
      ~17 KiB/s: normal uploads never get near it). A cancelled multipart upload is not
      aborted: S3 keeps its parts (never a visible object) until a lifecycle rule removes them.
    """
    from fsspec.asyn import sync

    client = sync(fs.loop, _client_without_expect_continue, fs)
    config = client.meta.config
    return {"timeout": _write_deadline(config, int(getattr(fs, "retries", 5)), nbytes)}


async def _client_without_expect_continue(fs: Any) -> Any:
    # On the event loop, where the client emits its events: no registration races an emit.
    # set_session (re)builds the client if needed: the hook must be on the one that writes.
    client = await fs.set_session()
    client.meta.events.register_last(
        "before-call.s3", _drop_expect_continue, unique_id=_EXPECT_HOOK_ID
    )
    return client


def _drop_expect_continue(params: dict[str, Any], **_: Any) -> None:
    params.get("headers", {}).pop("Expect", None)


def _write_deadline(config: Any, s3fs_tries: int, nbytes: int) -> float:
    """Seconds a write of `nbytes` bytes may take, retries included (see `s3_write_options`)."""
    connect = float(config.connect_timeout or 60)
    read = float(config.read_timeout or 60)
    retries = config.retries or {}
    if "total_max_attempts" in retries:
        attempts = int(retries["total_max_attempts"])
    elif "max_attempts" in retries:
        attempts = int(retries["max_attempts"]) + 1
    else:
        attempts = 5  # botocore's default in legacy mode (3 in the others)
    attempts = max(1, attempts)
    one_try = attempts * (connect + read) + (attempts - 1) * _MAX_BACKOFF
    s3fs_sleeps = sum(min(1.7**i * 0.1, 15) for i in range(s3fs_tries))  # s3fs's own backoff
    fixed = max(1, s3fs_tries) * one_try + s3fs_sleeps
    return _ROUNDS * fixed + read * nbytes / _MIB


class AwsSecret(Block):
    """A secret stored in AWS Secrets Manager, read on demand with boto3.

    Example:
        >>> secret = AwsSecret(secret_name="prod/db-password",
        ...                    credentials=AwsCredentials.load("prod"))
        >>> secret.put("hunter2")
        >>> secret.get()
        'hunter2'
    """

    _block_type_name = "AWS Secret"
    _description = "A secret value kept in AWS Secrets Manager."

    secret_name: str
    credentials: AwsCredentials | None = None
    endpoint_url: str | None = None
    region_name: str | None = None

    _client_cache: tuple[tuple[Any, ...], Any] | None = PrivateAttr(default=None)

    def __getstate__(self) -> dict[Any, Any]:
        return _without_private(super().__getstate__(), _client_cache=None)

    def _client(self) -> Any:
        creds = self.credentials or AwsCredentials()
        region = self.region_name or creds.region_name
        endpoint = self.endpoint_url or creds.endpoint_url
        fingerprint = (
            creds.model_dump_json(),
            _plain(creds.aws_secret_access_key),
            _plain(creds.aws_session_token),
            region,
            endpoint,
        )
        cached = self._client_cache
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        if region is not None:
            creds = creds.model_copy(update={"region_name": region})
        try:
            client = creds.client("secretsmanager", endpoint_url=endpoint)
        except Exception as exc:
            if type(exc).__name__ == "NoRegionError":
                raise ConfigurationError(
                    f"AWS secret {self.secret_name!r} needs a region: set region_name on the "
                    "AwsSecret or its AwsCredentials, or AWS_DEFAULT_REGION."
                ) from None
            raise self._error("connect for", exc) from None
        self._client_cache = (fingerprint, client)
        return client

    def _describe(self) -> str:
        creds = self.credentials
        endpoint = self.endpoint_url or (creds.endpoint_url if creds else None)
        return f"{self.secret_name!r}" + (f" at {endpoint}" if endpoint else "")

    def _error(self, action: str, exc: BaseException) -> StorageError:
        creds = self.credentials or AwsCredentials()
        secrets = secret_strings(
            [creds.aws_access_key_id, creds.aws_secret_access_key, creds.aws_session_token]
        )
        code = _error_code(exc)
        if code == "ResourceNotFoundException":
            why = "no such secret in AWS Secrets Manager"
        elif code in ("AccessDeniedException", "UnrecognizedClientException"):
            why = "access denied (check the credentials)"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return StorageError(
            scrub(f"Could not {action} AWS secret {self._describe()}: {why}", secrets)
        )

    def get(self) -> str:
        """The secret's value (a binary secret is decoded as UTF-8)."""
        try:
            response = self._client().get_secret_value(SecretId=self.secret_name)
        except StorageError:
            raise
        except ConfigurationError:
            raise
        except Exception as exc:
            raise self._error("read", exc) from None
        if "SecretString" in response:
            return cast(str, response["SecretString"])
        return cast(bytes, response["SecretBinary"]).decode()

    def get_json(self) -> Any:
        """The secret's value parsed as JSON (e.g. a dict of database settings)."""
        return json.loads(self.get())

    def put(self, value: str | dict[str, Any]) -> None:
        """Store `value` (a dict is stored as JSON), creating the secret if needed."""
        text = value if isinstance(value, str) else json.dumps(value)
        client = self._client()
        try:
            try:
                client.put_secret_value(SecretId=self.secret_name, SecretString=text)
            except Exception as exc:
                if _error_code(exc) != "ResourceNotFoundException":
                    raise
                client.create_secret(Name=self.secret_name, SecretString=text)
        except Exception as exc:
            raise self._error("write", exc) from None


def _max_retries(config: dict[str, Any]) -> int | None:
    retries = config.get("retries")
    count = retries.get("max_attempts") if isinstance(retries, dict) else None
    return max(0, int(count)) if count is not None else None


def _plain(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _error_code(exc: BaseException | None) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(
            f"{module.split('.')[0]} is needed for AWS blocks: {S3_EXTRA}"
        ) from None


__all__ = ["S3", "AwsCredentials", "AwsSecret"]
