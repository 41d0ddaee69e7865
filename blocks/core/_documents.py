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

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic import SecretBytes, SecretStr, ValidationError

from blocks.core._references import SecretRef, is_reference

SECRET_TYPES = (SecretStr, SecretBytes, pydantic.Secret)
"""The pydantic types whose values are encrypted at rest and masked on display."""


def secret_aad(type_slug: str, name: str, path: str) -> bytes:
    """What a secret token is bound to: its block and field, so it cannot be moved."""
    return f"{type_slug}/{name}#{path}".encode()


def secret_plaintext(value: Any) -> bytes:
    if is_reference(value):  # the reference is sealed, never resolved to be saved
        return b"r" + value.encode()
    raw = value.get_secret_value()
    if isinstance(raw, bytes):
        return b"b" + raw
    if isinstance(raw, str):
        return b"s" + raw.encode()
    return b"j" + json.dumps(raw, separators=(",", ":"), default=str).encode()


def secret_value(plaintext: bytes, *, what: str = "a secret") -> Any:
    """The value `secret_plaintext` made, as the secret type it was: `SecretStr`,
    `SecretBytes` or `pydantic.Secret` (so a secret nested in ``Any`` stays secret).

    `DecryptionFailed` if the plaintext is not one we wrote.
    """
    kind, body = plaintext[:1], plaintext[1:]
    try:
        if kind == b"b":
            return SecretBytes(body)
        if kind == b"s":
            return SecretStr(body.decode())
        if kind == b"j":
            return pydantic.Secret(json.loads(body))
        if kind == b"r":
            return SecretRef.decode(body)
    except ValueError:
        pass
    from blocks.errors import DecryptionFailed  # here: an import statement costs on every load

    raise DecryptionFailed(f"Cannot decrypt {what}: the decrypted value is not a blocks secret.")


def plain_secret(plaintext: bytes, *, what: str = "a secret") -> Any:
    """The plain value inside a secret plaintext (str, bytes or JSON)."""
    return secret_value(plaintext, what=what).get_secret_value()


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


def refuse_hidden_secrets(value: Any, path: str) -> None:
    """`InvalidBlockData` if a secret sits where it cannot be sealed (a set, an object).

    `pull_secrets` takes secrets out of dicts, lists and tuples; one left anywhere else would
    be stored as its mask, i.e. lost, so the save is refused, naming the field.
    """
    from blocks.errors import InvalidBlockData

    if isinstance(value, SECRET_TYPES):
        raise InvalidBlockData(
            f"Field '{path}' holds a secret inside a container blocks cannot seal (a set or an "
            "object). Keep secrets in SecretStr/SecretBytes fields, dicts or lists."
        )
    if isinstance(value, dict):
        for key, item in value.items():
            refuse_hidden_secrets(item, join_path(path, key))
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            refuse_hidden_secrets(item, join_path(path, index))
    elif isinstance(value, pydantic.BaseModel):
        for name in type(value).model_fields:
            refuse_hidden_secrets(getattr(value, name, None), join_path(path, name))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            refuse_hidden_secrets(getattr(value, item.name, None), join_path(path, item.name))


# Error contexts that quote the input itself (a discriminated union's tag value).
_INPUT_CONTEXT = ("tag",)
INPUT_MASK = "**********"


def safe_message(error: Mapping[str, Any]) -> str:
    """A pydantic error's message with any quoted piece of the input masked."""
    message = str(error.get("msg", ""))
    for name in _INPUT_CONTEXT:
        value = (error.get("ctx") or {}).get(name)
        if value is not None and str(value):
            message = message.replace(repr(str(value)), repr(INPUT_MASK))
            message = message.replace(str(value), INPUT_MASK)
    return message


def without_inputs(exc: ValidationError) -> ValidationError:
    """The same validation error with every input (and input quoted in messages) masked,
    so ``str()``, ``.errors()`` and ``.json()`` never carry a secret that was passed in."""
    from pydantic_core import PydanticCustomError

    return ValidationError.from_exception_data(
        exc.title,
        [
            {
                "type": PydanticCustomError(
                    err["type"], safe_message(err).replace("{", "{{").replace("}", "}}")
                ),
                "loc": err["loc"],
                "input": INPUT_MASK,
            }
            for err in exc.errors(include_url=False)
        ],
        hide_input=True,
    )


_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@\s]*)@")


def mask_userinfo(text: str) -> str:
    """A URL's ``user:password@`` shown as ``***@``, anywhere in `text`."""
    return _USERINFO.sub(r"\1***@", text) if "@" in text else text


def userinfo_strings(value: Any) -> list[str]:
    """The userinfo parts (``user:password``, ``password``) of URLs anywhere in `value`: what an
    error message naming the URL must not contain."""
    if isinstance(value, str):
        found = []
        for match in _USERINFO.finditer(value):
            userinfo = match.group(2)
            found += [part for part in (userinfo, *userinfo.split(":", 1)[1:]) if len(part) >= 4]
        return found
    if isinstance(value, dict):
        return [s for item in value.values() for s in userinfo_strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in userinfo_strings(item)]
    if isinstance(value, pydantic.BaseModel):
        return [
            s
            for name in type(value).model_fields
            for s in userinfo_strings(getattr(value, name, None))
        ]
    return []


def field_problems(exc: ValidationError) -> list[str]:
    """One ``'field': what is expected`` per field; never the input value (it may be secret)."""
    by_field: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False, include_input=False):
        err["msg"] = safe_message(err)
        parts: list[str] = []
        for part in err["loc"]:
            if isinstance(part, str) and ("[" in part or "(" in part):
                break  # a union member's tag, e.g. 'function-after[SecretStr(), str]'
            parts.append(str(part))
        messages = by_field.setdefault(".".join(parts) or "(root)", [])
        if err["msg"] not in messages:
            messages.append(err["msg"])
    return [f"'{field}': {' or '.join(messages)}" for field, messages in by_field.items()]
