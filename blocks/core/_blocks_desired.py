"""What a blocks file's document makes: its class, the validated block, the stored form.

Markers in the fields are resolved first: ``{$secret: REF}`` becomes a `SecretRef`,
``{$sealed: ...}`` the secret opened with the backup key, ``{$block: TYPE/NAME}`` the block of
that name (from the file, or saved), marked as saved under that TYPE/NAME so that the document
references it. Then the class validates the fields, and the block is split into the data,
secret plaintexts and references `Block.save` would store. Every error names the file, line,
document and field, never a value.

Example:
    >>> desired = desire(document, {}, Registry.default(), None, None)
    >>> desired.refs
    {'credentials': 'aws-credentials/prod'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from blocks.core._block import Block, _set_document, block_class_for
from blocks.core._blocks_file import BLOCK, SEALED, SECRET, FileDocument, Path
from blocks.core._documents import field_problems, join_path, secret_aad, secret_value
from blocks.core._references import SecretRef
from blocks.errors import BlocksError, InvalidBlocksFile, SecretReferenceError

if TYPE_CHECKING:
    from blocks.core._backup_key import BackupKey
    from blocks.core._encryption import KeyManager
    from blocks.core._registry import Registry


@dataclass
class Desired:
    """One file document as the registry would store it (secrets in plaintext)."""

    document: FileDocument
    cls: type[Block]
    block: Block
    data: dict[str, Any]
    secrets: dict[str, bytes]
    refs: dict[str, str]  # path -> TYPE/NAME
    types: list[dict[str, Any]]
    note: str = ""
    """How the file's schema version differs from the class's, if it does."""


class _TypeRecorder:
    """Stands in for the registry while a block is split into a document: records the types
    and schemas `register_type_and_schema` would write, so the batch writes them instead."""

    def __init__(self) -> None:
        self.types: list[dict[str, Any]] = []

    def knows_schema(self, checksum: str) -> bool:
        return any(t["checksum"] == checksum for t in self.types)

    def register_type(self, **described: Any) -> None:
        self.types.append(described)


def references(value: Any) -> Iterable[str]:
    """The TYPE/NAME of every ``{$block: ...}`` inside a document's fields."""
    if isinstance(value, dict):
        if BLOCK in value and isinstance(value[BLOCK], str):
            yield value[BLOCK]
            return
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def desire(
    doc: FileDocument,
    desired: Mapping[str, Desired],
    registry: Registry,
    backup_key: BackupKey | None,
    manager: KeyManager | None,
) -> Desired:
    """The document `doc` makes: its class, validated block, and the stored form of it."""
    try:
        cls = block_class_for(doc.type_slug, import_registered=True)
    except BlocksError as exc:
        raise InvalidBlocksFile(f"{doc.where()}: {exc}") from None
    fields = _resolve(doc, doc.fields, (), desired, registry, backup_key, manager)
    version = cls._block_schema_version
    try:
        block = cls.model_validate(fields)
    except ValidationError as exc:
        # Point at the first problem written in the file (a missing field has no line).
        located = [tuple(p for p in e["loc"] if isinstance(p, str | int)) for e in exc.errors()]
        located.sort(key=lambda where: where[:1] not in doc.lines)
        path = located[0] if located else ()
        problems = field_problems(exc)
        if len(problems) == 1 and path:  # `where` names the field already
            problems = [problems[0].split(": ", 1)[-1]]
        schema = ""
        if doc.schema_version is not None and doc.schema_version != version:
            schema = (
                f" The file was written for schema version {doc.schema_version} of "
                f"{doc.type_slug}; this {cls.__name__} is version {version}: update the file "
                "to its fields."
            )
        raise InvalidBlocksFile(f"{doc.where(path)}: {'; '.join(problems)}.{schema}") from None
    recorder = _TypeRecorder()
    cls.register_type_and_schema(cast("Registry", recorder))
    data, secrets, refs = block._to_document(cast("Registry", recorder))
    note = ""
    if doc.schema_version is not None and doc.schema_version != version:
        note = f"schema version {doc.schema_version} in the file, {version} here"
    return Desired(doc, cls, block, data, secrets, refs, recorder.types, note)


def _resolve(
    doc: FileDocument,
    value: Any,
    path: Path,
    desired: Mapping[str, Desired],
    registry: Registry,
    backup_key: BackupKey | None,
    manager: KeyManager | None,
) -> Any:
    """Fields with each marker replaced: a secret object, or the referenced block."""
    if isinstance(value, list):
        return [
            _resolve(doc, item, (*path, i), desired, registry, backup_key, manager)
            for i, item in enumerate(value)
        ]
    if not isinstance(value, dict):
        return value
    if BLOCK in value:
        return _referenced(doc, value, path, desired, registry, manager)
    if SECRET in value:
        return _secret_reference(doc, value, path)
    if SEALED in value:
        if backup_key is None or set(value) != {SEALED}:
            raise InvalidBlocksFile(
                f"{doc.where(path)}: a sealed value is {{$sealed: ...}} alone, in a backup."
            )
        dotted = ""
        for part in path:
            dotted = join_path(dotted, part)
        plain = backup_key.open(
            value[SEALED], aad=secret_aad(doc.type_slug, doc.name, dotted), what=doc.where(path)
        )
        return secret_value(plain, what=doc.where(path))
    return {
        key: _resolve(doc, item, (*path, key), desired, registry, backup_key, manager)
        for key, item in value.items()
    }


def _secret_reference(doc: FileDocument, value: dict[str, Any], path: Path) -> SecretRef:
    reference = value[SECRET]
    extra = set(value) - {SECRET, "aws_credentials", "required"}
    if reference is None:
        raise InvalidBlocksFile(
            f"{doc.where(path)}: a secret to fill: write where its value lives, e.g. "
            "{$secret: env:NAME}, {$secret: file:PATH} or {$secret: aws-sm:NAME}, or the value "
            "itself from the environment (${NAME})."
        )
    if extra:
        raise InvalidBlocksFile(
            f"{doc.where(path)}: unknown key {sorted(extra)[0]!r} beside $secret "
            "(it takes aws_credentials only)."
        )
    try:
        return SecretRef(reference, aws_credentials=value.get("aws_credentials"))
    except SecretReferenceError as exc:
        raise InvalidBlocksFile(f"{doc.where(path)}: {exc}") from None


def _referenced(
    doc: FileDocument,
    value: dict[str, Any],
    path: Path,
    desired: Mapping[str, Desired],
    registry: Registry,
    manager: KeyManager | None,
) -> Block:
    """The block a ``{$block: TYPE/NAME}`` names, marked as saved under that TYPE/NAME (the
    document's reference becomes its id when written)."""
    from blocks.core._block import split_slug

    slug = value[BLOCK]
    if set(value) != {BLOCK} or not isinstance(slug, str):
        raise InvalidBlocksFile(f"{doc.where(path)}: a reference is {{$block: TYPE/NAME}} alone.")
    try:
        type_slug, name = split_slug(slug)
    except BlocksError as exc:
        raise InvalidBlocksFile(f"{doc.where(path)}: {exc}") from None
    if slug in desired:
        child = desired[slug].block
    else:
        row = registry.get_document(type_slug, name)
        if row is None:
            raise InvalidBlocksFile(
                f"{doc.where(path)}: references {slug}, which is neither in this file nor in "
                f"the registry ({registry.describe()}). Add it to the file, or save it first."
            )
        try:
            child = Block._from_document(registry, row, manager=manager)
        except BlocksError as exc:
            raise InvalidBlocksFile(f"{doc.where(path)}: {slug} cannot be loaded: {exc}") from None
    marked = child.model_copy()
    _set_document(marked, slug, name)
    return marked
