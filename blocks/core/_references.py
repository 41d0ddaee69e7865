"""Secret references: a secret field that says where its value lives instead of holding it.

``SecretRef("env:DB_PASSWORD")``, ``SecretRef("file:/run/secrets/db")`` and
``SecretRef("aws-sm:prod/db#password")`` (AWS Secrets Manager, optionally one key of a JSON
secret) go wherever a `SecretStr` goes: a block's `SecretStr` field, ``Secret(value=...)``. The
reference is sealed and encrypted with the document like a value, so whoever can write the
registry but lacks the key cannot point it elsewhere. It is resolved when read
(``get_secret_value()``, ``Secret.get()``), kept in memory for ``BLOCKS_SECRET_REF_TTL``
seconds (default 300), read again after that, and the value is masked in run logs from then on.

Why a type and not a prefix inside a plain string: a password that happens to start with
``env:`` must stay a password. Only a `SecretRef` object is a reference; a `str` never is.

Example:
    >>> Secret(value=SecretRef("env:DB_PASSWORD")).save("db-password")
    >>> Secret.load("db-password").get()      # os.environ["DB_PASSWORD"], read now
    >>> SecretRef("aws-sm:prod/db#password", aws_credentials="prod")  # a saved AwsCredentials
"""

from __future__ import annotations

import importlib
import json
import os
import re
import threading
import time
import typing
from pathlib import Path
from typing import Any, TypeGuard

import pydantic
from pydantic import SecretBytes, SecretStr

from blocks import settings
from blocks.core._masking import note
from blocks.errors import BlocksError, SecretReferenceError

__all__ = [
    "SCHEMES",
    "SecretBytesRef",
    "SecretDictRef",
    "SecretRef",
    "as_field_kind",
    "forget_resolved",
    "is_reference",
    "resolve",
]

SCHEMES = ("env", "file", "aws-sm")
"""The kinds of reference, by the prefix before the first colon."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_LENGTH = 2048


class _Reference:
    """What the three reference kinds share: the reference, how it is shown and sealed."""

    # Seen by the masker, which must not resolve a reference just because it was loaded.
    _blocks_reference = True
    _kind: str = "str"  # what the sealed form records, so a load rebuilds the same kind
    _reference: str
    _aws_credentials: str | None

    def _set_reference(self, reference: str, aws_credentials: str | None) -> None:
        self._reference = _checked(reference)
        if aws_credentials is not None:
            if not self._reference.startswith("aws-sm:"):
                raise SecretReferenceError(
                    f"Secret reference {self._reference!r}: aws_credentials applies to aws-sm: "
                    "references only."
                )
            if not isinstance(aws_credentials, str) or not re.fullmatch(
                r"[a-z0-9]+(?:-[a-z0-9]+)*", aws_credentials
            ):
                raise SecretReferenceError(
                    f"Secret reference {self._reference!r}: aws_credentials is the name of a "
                    "saved AwsCredentials block (lowercase letters, digits, dashes)."
                )
        self._aws_credentials = aws_credentials

    @property
    def reference(self) -> str:
        """The reference as written, e.g. ``"env:DB_PASSWORD"`` (not a secret)."""
        return self._reference

    @property
    def aws_credentials(self) -> str | None:
        """The saved `AwsCredentials` block an ``aws-sm:`` reference reads with, if any."""
        return self._aws_credentials

    def describe(self) -> str:
        """How `block inspect` shows it: ``ref env:DB_PASSWORD``."""
        via = f" (aws-credentials/{self._aws_credentials})" if self._aws_credentials else ""
        return f"ref {self._reference}{via}"

    def _resolved(self) -> str:
        value = resolve(self._reference, self._aws_credentials)
        note(value)
        return value

    def _display(self) -> str:
        return "**********"

    def __repr__(self) -> str:
        via = f", aws_credentials={self._aws_credentials!r}" if self._aws_credentials else ""
        return f"{type(self).__name__}({self._reference!r}{via})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, _Reference)
            and other._kind == self._kind
            and other._reference == self._reference
            and other._aws_credentials == self._aws_credentials
        )

    def __hash__(self) -> int:
        return hash((self._kind, self._reference, self._aws_credentials))

    def __len__(self) -> int:
        return len(self._reference)

    def encode(self) -> bytes:
        """What is sealed in the document (the reference, never a value)."""
        sealed: dict[str, Any] = {"ref": self._reference, "aws_credentials": self._aws_credentials}
        if self._kind != "str":
            sealed["as"] = self._kind
        return json.dumps(sealed, separators=(",", ":")).encode()

    def as_kind(self, kind: str) -> _Reference:
        """The same reference, read as ``str``, ``bytes`` or ``dict``."""
        if kind == self._kind:
            return self
        made: _Reference = _KINDS[kind](self._reference, aws_credentials=self._aws_credentials)
        return made


class SecretRef(_Reference, SecretStr):
    """A reference to a secret kept elsewhere: ``env:NAME``, ``file:PATH`` or
    ``aws-sm:NAME[#json-key]``; a `SecretStr` whose value is read from there when asked for.

    Given to a `SecretBytes` field it is read as UTF-8 bytes, to a `SecretDict` field as a JSON
    object (a whole dict by reference, e.g. an ``aws-sm:`` secret holding JSON).

    `aws_credentials` names a saved `AwsCredentials` block for ``aws-sm:`` (its keys, region
    and endpoint); without it boto3's ambient chain (environment, profile, instance role) is
    used.

    Example:
        >>> class Warehouse(Block):
        ...     password: SecretStr
        >>> Warehouse(password=SecretRef("env:WAREHOUSE_PASSWORD")).save("prod")
        >>> Warehouse.load("prod").password.get_secret_value()   # read from the environment
    """

    def __init__(self, reference: str, *, aws_credentials: str | None = None) -> None:
        super().__init__("")
        self._set_reference(reference, aws_credentials)

    def get_secret_value(self) -> str:
        """The value, read from the reference (or from the in-memory cache within its TTL).

        `SecretReferenceError` naming the reference when it cannot be read.
        """
        return self._resolved()

    @classmethod
    def decode(cls, body: bytes) -> _Reference:
        """The reference `encode` wrote, of the kind it was (`ValueError` if not one)."""
        data = json.loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("ref"), str):
            raise ValueError("not a secret reference")
        kind = _KINDS.get(data.get("as", "str"))
        if kind is None:
            raise ValueError("not a secret reference")
        try:
            made: _Reference = kind(data["ref"], aws_credentials=data.get("aws_credentials"))
            return made
        except SecretReferenceError as exc:
            raise ValueError(str(exc)) from None


class SecretBytesRef(_Reference, SecretBytes):  # type: ignore[misc]
    """A `SecretRef` in a `SecretBytes` field: the referenced text, as UTF-8 bytes."""

    _kind = "bytes"

    def __init__(self, reference: str, *, aws_credentials: str | None = None) -> None:
        super().__init__(b"")
        self._set_reference(reference, aws_credentials)

    def get_secret_value(self) -> bytes:
        """The referenced value as bytes (`SecretReferenceError` naming it if unreadable)."""
        return self._resolved().encode()


class SecretDictRef(_Reference, pydantic.Secret[dict[str, Any]]):
    """A `SecretRef` in a `SecretDict` field: the referenced text must be a JSON object
    (e.g. ``aws-sm:prod/api`` holding ``{"user": ..., "token": ...}``); each leaf is masked."""

    _kind = "dict"

    def __init__(self, reference: str, *, aws_credentials: str | None = None) -> None:
        super().__init__({})
        self._set_reference(reference, aws_credentials)

    def get_secret_value(self) -> dict[str, Any]:
        """The referenced JSON object, a fresh dict per call (`SecretReferenceError` naming the
        reference if it cannot be read or is not a JSON object)."""
        data = _json_object(self._resolved())
        if data is None:
            raise SecretReferenceError(
                f"Secret reference {self._reference!r} is read into a dict field, but its value "
                "is not a JSON object. Store a JSON object there, or point at one key with "
                "#KEY in a text field."
            )
        note(data)
        return data


_KINDS: dict[str, Any] = {"str": SecretRef, "bytes": SecretBytesRef, "dict": SecretDictRef}


def is_reference(value: Any) -> TypeGuard[_Reference]:
    """Whether `value` is a secret reference (of any kind), not a value."""
    return isinstance(value, _Reference)


def as_field_kind(value: Any, annotation: Any) -> Any:
    """`value`, a `SecretRef` given to a field typed `annotation`, as the kind that field holds
    (`SecretBytesRef` for `SecretBytes`); anything else unchanged."""
    if (
        isinstance(value, SecretRef)
        and _accepts(annotation, SecretBytes)
        and not _accepts(annotation, SecretStr)
    ):
        return value.as_kind("bytes")
    return value


def _accepts(annotation: Any, kind: type) -> bool:
    if annotation is kind:
        return True
    return any(_accepts(arg, kind) for arg in typing.get_args(annotation))


def _checked(reference: Any) -> str:
    if not isinstance(reference, str):
        raise SecretReferenceError(
            f"A secret reference is a string such as 'env:DB_PASSWORD', not a "
            f"{type(reference).__name__}."
        )
    shown = reference if len(reference) <= 80 else reference[:77] + "..."
    scheme, sep, rest = reference.partition(":")
    if not sep or scheme not in SCHEMES:
        raise SecretReferenceError(
            f"Secret reference {shown!r} does not start with one of "
            f"{', '.join(s + ':' for s in SCHEMES)} (e.g. 'env:DB_PASSWORD', "
            "'file:/run/secrets/db', 'aws-sm:prod/db#password')."
        )
    if len(reference) > _MAX_LENGTH or "\x00" in reference:
        raise SecretReferenceError(f"Secret reference {shown!r} is too long or holds NUL.")
    if scheme == "env" and not _ENV_NAME.match(rest):
        raise SecretReferenceError(
            f"Secret reference {shown!r}: env: takes an environment variable name "
            "(letters, digits, underscores), e.g. 'env:DB_PASSWORD'."
        )
    if scheme == "file" and not rest:
        raise SecretReferenceError(f"Secret reference {shown!r}: file: takes a path.")
    if scheme == "aws-sm":
        name, hashed, key = rest.partition("#")
        if not name or (hashed and not key):
            raise SecretReferenceError(
                f"Secret reference {shown!r}: aws-sm: takes a secret name and optionally "
                "#KEY of a JSON secret, e.g. 'aws-sm:prod/db#password'."
            )
    return reference


# -- resolution, cached with a TTL ---------------------------------------------------------------

_lock = threading.Lock()
_resolved: dict[tuple[str, str | None], tuple[float, str]] = {}


def resolve(reference: str, aws_credentials: str | None = None) -> str:
    """The value `reference` points at, from the cache while younger than the TTL (read at
    each use, so a lowered ``BLOCKS_SECRET_REF_TTL`` applies to values already cached)."""
    key = (reference, aws_credentials)
    ttl = settings.secret_ref_ttl()
    now = time.monotonic()
    cached = _resolved.get(key)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    value = _read(reference, aws_credentials)
    with _lock:
        if len(_resolved) >= 4096:
            _resolved.clear()
        _resolved[key] = (now, value)
    return value


def forget_resolved() -> None:
    """Drop every cached resolution (the next read goes to the source)."""
    with _lock:
        _resolved.clear()


def _read(reference: str, aws_credentials: str | None) -> str:
    scheme, _, rest = reference.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise SecretReferenceError(
                f"Secret reference {reference!r} cannot be resolved: the environment variable "
                f"{rest} is not set in this process."
            )
        return value
    if scheme == "file":
        return _read_file(reference, rest)
    return _read_aws(reference, rest, aws_credentials)


def _read_file(reference: str, path: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        why = "no such file"
    except IsADirectoryError:
        why = "it is a folder"
    except PermissionError:
        why = "permission denied"
    except UnicodeDecodeError:
        why = "the file is not UTF-8 text"
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
    else:
        # One trailing newline is how `echo` and editors end a file, not part of the secret.
        return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    raise SecretReferenceError(f"Secret reference {reference!r} cannot be resolved: {why}.")


def _read_aws(reference: str, rest: str, aws_credentials: str | None) -> str:
    name, _, key = rest.partition("#")
    # `blocks.filesystems.aws` sits a layer above core: named here, imported on first use,
    # like the built-in block modules.
    aws = importlib.import_module("blocks.filesystems.aws")
    try:
        credentials = aws.AwsCredentials.load(aws_credentials) if aws_credentials else None
        text = aws.AwsSecret(secret_name=name, credentials=credentials).get()
    except BlocksError as exc:  # their messages name the secret and never hold a value
        raise SecretReferenceError(
            f"Secret reference {reference!r} cannot be resolved: {exc}"
        ) from None
    if not key:
        return str(text)
    data = _json_object(text)
    if data is None:
        raise SecretReferenceError(
            f"Secret reference {reference!r} cannot be resolved: the secret {name!r} is not a "
            "JSON object, so it has no key to pick (drop the #KEY to read it whole)."
        )
    if key not in data:
        raise SecretReferenceError(
            f"Secret reference {reference!r} cannot be resolved: the JSON secret {name!r} has "
            f"no key {key!r}."
        )
    value = data[key]
    note(data)  # its other leaves were read into this process too
    return value if isinstance(value, str) else json.dumps(value)


def _json_object(text: str) -> dict[str, Any] | None:
    """`text` parsed as a JSON object, or None if it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
