"""Blocks as text: built from ``field=value`` strings, shown with secrets masked.

What `block create --set` and `block inspect` need, kept apart from the model itself.

Example:
    >>> block_from_text(Secret, {"value": "s3cr3t"}).save("my-api-key")
    >>> inspect_block("secret/my-api-key")[1]
    {'value': '**********'}
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from blocks.core._block import (
    SECRET_MASK,
    Block,
    _registry,
    block_class_for,
    open_secrets,
    split_slug,
)
from blocks.core._documents import field_problems, set_path
from blocks.core._references import is_reference
from blocks.errors import BlockNotFound, BlocksError, InvalidBlockData

if TYPE_CHECKING:
    from blocks.core._registry import DocumentRow

B = TypeVar("B", bound=Block)


def _parse_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def missing_fields(cls: type[Block], given: Iterable[str]) -> tuple[str, ...]:
    """Required fields not among `given` (dotted keys count for their field).

    `InvalidBlockData` when a given name is not a field at all.
    """
    named = {key.split(".")[0] for key in given}
    unknown = sorted(named - set(cls.model_fields))
    if unknown:
        raise InvalidBlockData(
            f"{cls.get_block_type_slug()} has no field {unknown[0]!r}. "
            f"Its fields: {', '.join(cls.model_fields)}."
        )
    required = (name for name, info in cls.model_fields.items() if info.is_required())
    return tuple(name for name in required if name not in named)


def block_from_text(cls: type[B], fields: Mapping[str, str]) -> B:
    """Build a block from ``field=value`` text as typed on a command line.

    A value is read as JSON when it parses and validates (``3``, ``true``, ``{"a": 1}``),
    else as the plain string; ``a.b=v`` sets key ``b`` of dict field ``a``; a field that
    holds a block takes a saved block's ``type/name`` (or name), linked, not copied.
    `InvalidBlockData` names each bad field and what it expects, never the value.

    Example:
        >>> block_from_text(Secret, {"value": "s3cr3t"}).save("my-api-key")
    """
    slug = cls.get_block_type_slug()
    references = cls.block_fields()
    missing_fields(cls, fields)  # unknown names first
    data: dict[str, Any] = {}
    as_text: dict[str, str] = {}  # dotted key -> text, to retry as a plain string
    for key, text in fields.items():
        field = key.split(".")[0]
        if field in references and key == field and not text.lstrip().startswith("{"):
            set_path(data, key, _load_reference(slug, field, text, references[field]))
            continue
        value = _parse_text(text)
        set_path(data, key, value)
        if value != text:
            as_text[key] = text
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        failing = [tuple(str(p) for p in err["loc"]) for err in exc.errors()]
        retry = {
            key: text
            for key, text in as_text.items()
            if any(loc[: key.count(".") + 1] == tuple(key.split(".")) for loc in failing)
        }
        if not retry:
            raise InvalidBlockData(_invalid(slug, exc)) from None
    for key, text in retry.items():
        set_path(data, key, text)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidBlockData(_invalid(slug, exc)) from None


def _invalid(slug: str, exc: ValidationError) -> str:
    return f"Invalid {slug} block: " + "; ".join(field_problems(exc)) + "."


def _load_reference(slug: str, field: str, text: str, allowed: list[str]) -> Block:
    if "/" in text:
        child = Block.load(text)
        if type(child).get_block_type_slug() not in allowed:
            raise InvalidBlockData(
                f"Field {field!r} of {slug} holds a {' or '.join(allowed)} block, "
                f"not a {type(child).get_block_type_slug()} block."
            )
        return child
    if len(allowed) == 1:
        return block_class_for(allowed[0]).load(text)
    raise InvalidBlockData(
        f"Field {field!r} of {slug} takes a saved block as TYPE/NAME, TYPE one of "
        f"{', '.join(allowed)}."
    )


def inspect_block(slug: str, *, reveal_secrets: bool = False) -> tuple[DocumentRow, dict[str, Any]]:
    """A saved block's registry row and its field values, read without importing its class.

    Secrets read `SECRET_MASK` unless `reveal_secrets` (which needs the master key; bytes are
    shown decoded); referenced blocks read as their ``type/name``.

    Example:
        >>> row, values = inspect_block("secret/my-api-key")
        >>> values
        {'value': '**********'}
    """
    type_slug, name = split_slug(slug)
    registry = _registry()
    row = registry.get_document(type_slug, name)
    if row is None:
        existing = registry.document_names(type_slug)
        known = ", ".join(existing[:20]) if existing else "none yet"
        raise BlockNotFound(
            f"No {type_slug} block named '{name}'. Saved {type_slug} blocks: {known}."
        )
    values = copy.deepcopy(row.data)
    # Revealing checks the document's seal first: a tampered block is never shown in clear.
    # Without revealing, secrets are still opened (when this process has the key) to show
    # which are references (`ref env:NAME`): a reference is where a value lives, not a value.
    if reveal_secrets:
        opened = open_secrets(registry, row)
    else:
        try:
            opened = open_secrets(registry, row) if row.secrets else {}
        except BlocksError:
            opened = {}
    for path in row.secrets:
        shown: Any = SECRET_MASK
        if is_reference(opened.get(path)):
            shown = opened[path].describe()
        elif reveal_secrets and path in opened:
            shown = opened[path].get_secret_value()
            if isinstance(shown, bytes):
                shown = shown.decode("utf-8", "backslashreplace")
        set_path(values, path, shown)
    for path, child_id in row.refs.items():
        child = registry.get_document_by_id(child_id)
        set_path(values, path, child.slug if child is not None else None)
    # Secrets and references were stored apart: show every field where the class declares it.
    for schema in registry.list_schemas(type_slug):
        if schema.checksum == row.schema_checksum:
            order = {field: i for i, field in enumerate(schema.fields.get("properties", {}))}
            values = dict(sorted(values.items(), key=lambda kv: order.get(kv[0], len(order))))
            break
    return row, values
