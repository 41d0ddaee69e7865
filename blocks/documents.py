"""How a block becomes a registry document, and back: secret codec and field paths.

A document keeps plain field values as JSON, each secret as a token at a dotted *path*
(``credentials.password``, ``tokens.0``; a dot or tilde inside a dict key is escaped as
``~1`` / ``~0``), and nested saved blocks as references by path. Secret plaintexts carry a
one-byte kind so that str, bytes and JSON values come back as they went in.

Example:
    >>> data = {"tokens": [SecretStr("a")]}
    >>> secrets: dict[str, bytes] = {}
    >>> pull_secrets(data, "", secrets)
    {'tokens': [None]}
    >>> secrets
    {'tokens.0': b'sa'}
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
from pydantic import SecretBytes, SecretStr, ValidationError

SECRET_TYPES = (SecretStr, SecretBytes, pydantic.Secret)
"""The pydantic types whose values are encrypted at rest and masked on display."""


def secret_aad(type_slug: str, name: str, path: str) -> bytes:
    """What a secret token is bound to: its block and field, so it cannot be moved."""
    return f"{type_slug}/{name}#{path}".encode()


def secret_plaintext(value: Any) -> bytes:
    raw = value.get_secret_value()
    if isinstance(raw, bytes):
        return b"b" + raw
    if isinstance(raw, str):
        return b"s" + raw.encode()
    return b"j" + json.dumps(raw, separators=(",", ":"), default=str).encode()


def secret_value(plaintext: bytes) -> Any:
    kind, body = plaintext[:1], plaintext[1:]
    if kind == b"b":
        return body
    if kind == b"s":
        return body.decode()
    return json.loads(body)


def _path_part(part: str | int) -> str:
    return str(part).replace("~", "~0").replace(".", "~1")


def join_path(prefix: str, part: str | int) -> str:
    """Dotted paths; a dot or tilde inside a dict key is escaped (``~1``, ``~0``)."""
    return f"{prefix}.{_path_part(part)}" if prefix else _path_part(part)


def set_path(data: Any, path: str, value: Any) -> None:
    """Set `value` at a dotted path made by `join_path`, through dicts and lists."""
    *parents, leaf = (p.replace("~1", ".").replace("~0", "~") for p in path.split("."))
    for part in parents:
        data = data[int(part)] if isinstance(data, list) else data.setdefault(part, {})
    if isinstance(data, list):
        data[int(leaf)] = value
    else:
        data[leaf] = value


def pull_secrets(value: Any, path: str, secrets: dict[str, bytes]) -> Any:
    """Replace secrets anywhere inside containers by None, keeping their plaintext by path."""
    if isinstance(value, SECRET_TYPES):
        secrets[path] = secret_plaintext(value)
        return None
    if isinstance(value, dict):
        return {k: pull_secrets(v, join_path(path, k), secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [pull_secrets(v, join_path(path, i), secrets) for i, v in enumerate(value)]
    return value


def field_problems(exc: ValidationError) -> list[str]:
    """One ``'field': what is expected`` per field; never the input value (it may be secret)."""
    by_field: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False, include_input=False):
        parts: list[str] = []
        for part in err["loc"]:
            if isinstance(part, str) and ("[" in part or "(" in part):
                break  # a union member's tag, e.g. 'function-after[SecretStr(), str]'
            parts.append(str(part))
        messages = by_field.setdefault(".".join(parts) or "(root)", [])
        if err["msg"] not in messages:
            messages.append(err["msg"])
    return [f"'{field}': {' or '.join(messages)}" for field, messages in by_field.items()]
