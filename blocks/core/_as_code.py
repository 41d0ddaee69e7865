"""Blocks as code: export the registry to a blocks file, and make a registry match one.

`export_blocks` writes every document (or those of some types) as YAML (`_blocks_file`):
plain fields as they are stored, another saved block as ``{$block: TYPE/NAME}``, a secret as
the reference it holds (``{$secret: env:NAME}``) or, when it holds a value, as a placeholder
``{$secret: null, required: true}`` — never the value. With a `BackupKey` every secret is
written sealed under it instead (``{$sealed: ...}``): a full backup.

`plan_blocks` compares a file with the registry (``+ create``, ``~ update`` naming the fields,
``= unchanged``, and ``- delete`` with `prune`) without writing anything; `apply_blocks` then
writes the plan in ONE registry transaction (`_registry_batch`): every document sealed as
`Block.save` seals it, a referenced block before the blocks referencing it, and nothing at all
if any document fails. Applying the same file again changes nothing.

Example:
    >>> text = export_blocks(Registry.default())
    >>> plan = apply_blocks(read_blocks_file(text, "blocks.yaml", os.environ), Registry.default())
    >>> [change.line() for change in plan.changes]
    ['= unchanged secret/db-password', ...]
"""

from __future__ import annotations

import copy
import heapq
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import ValidationError

from blocks.core._block import Block, _set_document, block_class_for, open_secrets
from blocks.core._blocks_file import (
    BLOCK,
    SEALED,
    SECRET,
    BlocksFile,
    FileDocument,
    Marker,
    Path,
    dump_blocks_file,
)
from blocks.core._documents import (
    field_problems,
    secret_aad,
    secret_plaintext,
    secret_value,
    set_path,
)
from blocks.core._references import SecretRef
from blocks.errors import BlocksError, InvalidBlocksFile, SecretReferenceError

if TYPE_CHECKING:
    from blocks.core._backup_key import BackupKey
    from blocks.core._encryption import KeyManager
    from blocks.core._registry import DocumentRow, Registry

Action = Literal["create", "update", "unchanged", "delete"]
_SIGNS = {"create": "+", "update": "~", "unchanged": "=", "delete": "-"}
_ATTEMPTS = 5
"""Plans written again after a rotation or a concurrent save of a planned block."""


# -- export -----------------------------------------------------------------------------------


def export_blocks(
    registry: Registry,
    types: Iterable[str] = (),
    backup: BackupKey | None = None,
    manager: KeyManager | None = None,
) -> str:
    """The registry's documents (of `types`, if any) as a blocks file's text.

    Documents come in dependency order (a block before those referencing it), then by type and
    name, so exporting the same registry twice gives the same text.
    """
    wanted = set(types)
    rows = [row for row in registry.list_documents() if not wanted or row.type_slug in wanted]
    slugs = {summary.id: summary.slug for summary in registry.list_document_summaries()}
    versions: dict[str, tuple[str, list[str]]] = {}
    for slug in sorted({row.type_slug for row in rows}):
        for schema in registry.list_schemas(slug):
            order = list(schema.fields.get("properties", {}))
            versions[schema.checksum] = (schema.version, order)
    by_slug = {row.slug: row for row in rows}
    order = _dependency_order(
        {row.slug: {slugs[c] for c in row.refs.values() if c in slugs} for row in rows},
        lambda slug, _deps: None,
    )
    documents = [
        _exported(by_slug[slug], slugs, versions, registry, backup, manager) for slug in order
    ]
    # No date nor registry URL: exporting equal registries gives equal files (a clean git diff).
    comment = "Blocks written by `block export`; make a registry match with `block apply -f`.\n"
    if backup is not None:
        comment += (
            "A FULL BACKUP: every secret value is sealed under the backup key given to "
            "--encrypt-to.\nRestore it with `block apply -f FILE --decrypt-with REF`.\n"
        )
    else:
        comment += (
            "No secret value is in this file: a secret is a reference ({$secret: env:NAME}) "
            "or a placeholder\n({$secret: null, required: true}) to fill before `block apply`.\n"
        )
    return dump_blocks_file(documents, None if backup is None else backup.header(), comment)


def _exported(
    row: DocumentRow,
    slugs: Mapping[str, str],
    versions: Mapping[str, tuple[str, list[str]]],
    registry: Registry,
    backup: BackupKey | None,
    manager: KeyManager | None,
) -> dict[str, Any]:
    fields = copy.deepcopy(row.data)
    opened = open_secrets(registry, row, manager) if row.secrets else {}
    for path, secret in opened.items():
        marker: Marker
        if backup is not None:
            aad = secret_aad(row.type_slug, row.name, path)
            marker = Marker({SEALED: backup.seal(secret_plaintext(secret), aad=aad)})
        elif isinstance(secret, SecretRef):
            marker = Marker({SECRET: secret.reference})
            if secret.aws_credentials is not None:
                marker["aws_credentials"] = secret.aws_credentials
        else:
            marker = Marker({SECRET: None, "required": True})
        set_path(fields, path, marker)
    for path, child in row.refs.items():
        set_path(fields, path, Marker({BLOCK: slugs.get(child, "?")}))
    version, order = versions.get(row.schema_checksum, (None, []))
    position = {name: i for i, name in enumerate(order)}
    fields = dict(sorted(fields.items(), key=lambda kv: position.get(kv[0], len(position))))
    document: dict[str, Any] = {"type": row.type_slug, "name": row.name}
    if version is not None:
        document["schema_version"] = version
    document["fields"] = fields
    return document


def _dependency_order(
    depends_on: Mapping[str, set[str]], on_cycle: Callable[[str, set[str]], None]
) -> list[str]:
    """Slugs with each one's dependencies (those present) first, ties by slug; `on_cycle` is
    called with a slug left in a cycle and its open dependencies (and may raise)."""
    waiting = {s: {d for d in deps if d in depends_on and d != s} for s, deps in depends_on.items()}
    users: dict[str, list[str]] = {slug: [] for slug in depends_on}
    for slug, deps in waiting.items():
        for dep in deps:
            users[dep].append(slug)
    ready = [slug for slug, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        slug = heapq.heappop(ready)
        order.append(slug)
        for user in users[slug]:
            waiting[user].discard(slug)
            if not waiting[user]:
                heapq.heappush(ready, user)
    for slug in sorted(set(depends_on) - set(order)):
        on_cycle(slug, waiting[slug])
        order.append(slug)
    return order


# -- plan -------------------------------------------------------------------------------------


@dataclass
class Change:
    """What applying a file does to one block."""

    action: Action
    type_slug: str
    name: str
    fields: tuple[str, ...] = ()
    note: str = ""

    @property
    def slug(self) -> str:
        return f"{self.type_slug}/{self.name}"

    def line(self) -> str:
        """``~ update s3/results: bucket_path, credentials`` (names only, never values)."""
        detail = f": {', '.join(self.fields)}" if self.fields else ""
        note = f" ({self.note})" if self.note else ""
        return f"{_SIGNS[self.action]} {self.action} {self.slug}{detail}{note}"


@dataclass
class Plan:
    """Every change applying a file makes, in the order they are written."""

    changes: list[Change] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return any(change.action != "unchanged" for change in self.changes)

    def count(self, action: Action) -> int:
        return sum(change.action == action for change in self.changes)

    def summary(self) -> str:
        return (
            f"{self.count('create')} to create, {self.count('update')} to update, "
            f"{self.count('delete')} to delete, {self.count('unchanged')} unchanged"
        )


@dataclass
class _Desired:
    """One file document as the registry would store it (secrets in plaintext)."""

    document: FileDocument
    cls: type[Block]
    block: Block
    data: dict[str, Any]
    secrets: dict[str, bytes]
    refs: dict[str, str]  # path -> TYPE/NAME
    types: list[dict[str, Any]]
    version: int | None = None  # the stored version the plan was made against
    change: Change | None = None


class _TypeRecorder:
    """Stands in for the registry while a block is split into a document: records the types
    and schemas `register_type_and_schema` would write, so the batch writes them instead."""

    def __init__(self) -> None:
        self.types: list[dict[str, Any]] = []

    def knows_schema(self, checksum: str) -> bool:
        return any(t["checksum"] == checksum for t in self.types)

    def register_type(self, **described: Any) -> None:
        self.types.append(described)


def plan_blocks(
    blocks_file: BlocksFile,
    registry: Registry,
    *,
    prune: bool = False,
    backup_key: BackupKey | None = None,
    manager: KeyManager | None = None,
) -> Plan:
    """What `apply_blocks` would change; reads the registry, writes nothing."""
    return _plan(blocks_file, registry, prune, backup_key, manager)[0]


def apply_blocks(
    blocks_file: BlocksFile,
    registry: Registry,
    *,
    prune: bool = False,
    backup_key: BackupKey | None = None,
    manager: KeyManager | None = None,
) -> Plan:
    """Make the registry match the file in one transaction; the plan that was applied.

    Any error (a document that does not validate, a reference that does not resolve, a
    delete refused because a block left in place uses it) leaves the registry unchanged.
    """
    from blocks.core._encryption import KeyManager
    from blocks.core._registry import StaleKey
    from blocks.core._registry_batch import open_batch
    from blocks.errors import KeyManagementError

    manager = manager or KeyManager.for_registry(registry.url)
    for _ in range(_ATTEMPTS):
        plan, desired, deletes = _plan(blocks_file, registry, prune, backup_key, manager)
        if not plan.has_changes:
            return plan
        keyset = manager.sealing_keyset(registry)
        try:
            with open_batch(registry, keyset) as batch:
                _write(batch, desired, deletes)
            return plan
        except StaleKey:
            manager.forget()  # a rotation committed meanwhile: seal under its key
        except _Moved:
            pass  # a planned block was saved meanwhile: plan again against it
    raise KeyManagementError(
        f"Could not apply {blocks_file.source}: the registry kept changing under it (key "
        "rotations or saves of the same blocks running?). Nothing was written; run it again."
    )


class _Moved(Exception):
    """Internal: a block changed between the plan and its transaction."""


def _write(batch: Any, desired: list[_Desired], deletes: list[tuple[str, str, int]]) -> None:
    ids: dict[str, str] = {}
    for item in desired:
        doc = item.document
        current = batch.current(doc.type_slug, doc.name)
        if (None if current is None else current[1]) != item.version:
            raise _Moved(doc.slug)
        if item.change is None or item.change.action == "unchanged":
            continue
        for described in item.types:
            batch.register_type(**described)
        refs = {}
        for path, slug in item.refs.items():
            if slug not in ids:
                type_slug, _, name = slug.partition("/")
                found = batch.current(type_slug, name)
                if found is None:
                    raise InvalidBlocksFile(
                        f"{doc.where()}: {slug}, which it references, was deleted meanwhile."
                    )
                ids[slug] = found[0]
            refs[path] = ids[slug]
        ids[doc.slug] = batch.save(
            doc.type_slug,
            doc.name,
            item.cls.get_schema_checksum(),
            item.data,
            item.secrets,
            refs,
        )
    for type_slug, name, version in deletes:
        current = batch.current(type_slug, name)
        if current is None or current[1] != version:
            raise _Moved(f"{type_slug}/{name}")
        batch.delete(type_slug, name)


def _plan(
    blocks_file: BlocksFile,
    registry: Registry,
    prune: bool,
    backup_key: BackupKey | None,
    manager: KeyManager | None,
) -> tuple[Plan, list[_Desired], list[tuple[str, str, int]]]:
    if blocks_file.backup is not None and backup_key is None:
        raise InvalidBlocksFile(
            f"{blocks_file.source}:{blocks_file.backup_line}: this is an encrypted backup: give "
            "the key it was exported with (--decrypt-with env:NAME or file:PATH)."
        )
    if blocks_file.backup is None and backup_key is not None:
        raise InvalidBlocksFile(
            f"{blocks_file.source}: --decrypt-with is for a backup written by `block export "
            "--with-secrets`; this file has no backup header."
        )
    documents = {doc.slug: doc for doc in blocks_file.documents}

    def cycle(slug: str, deps: set[str]) -> None:
        raise InvalidBlocksFile(
            f"{documents[slug].where()}: a reference cycle: {slug} needs "
            f"{', '.join(sorted(deps))}, which need it back. Break the cycle."
        )

    needs = {slug: set(_references(doc.fields)) for slug, doc in documents.items()}
    order = _dependency_order(needs, cycle)
    summaries = registry.list_document_summaries()
    slugs = {summary.id: summary.slug for summary in summaries}
    desired: dict[str, _Desired] = {}
    plan = Plan()
    for slug in order:
        item = _desire(documents[slug], desired, registry, backup_key, manager)
        desired[slug] = item
        row = registry.get_document(item.document.type_slug, item.document.name)
        item.change = _compare(item, row, slugs, registry, manager)
        item.version = None if row is None else row.version
        plan.changes.append(item.change)
    deletes: list[tuple[str, str, int]] = []
    if prune:
        kinds = {doc.type_slug for doc in blocks_file.documents}
        doomed = [s for s in summaries if s.type_slug in kinds and s.slug not in documents]
        rows = {s.slug: registry.get_document(s.type_slug, s.name) for s in doomed}
        users = {
            slug: {slugs[c] for c in row.refs.values() if c in slugs}
            for slug, row in rows.items()
            if row is not None
        }
        # Users before the blocks they use: the reverse of the dependency order.
        for slug in reversed(_dependency_order(users, lambda _s, _d: None)):
            row = rows[slug]
            assert row is not None
            deletes.append((row.type_slug, row.name, row.version))
            plan.changes.append(Change("delete", row.type_slug, row.name))
    return plan, list(desired.values()), deletes


def _references(value: Any) -> Iterable[str]:
    """The TYPE/NAME of every ``{$block: ...}`` inside a document's fields."""
    if isinstance(value, dict):
        if BLOCK in value and isinstance(value[BLOCK], str):
            yield value[BLOCK]
            return
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _desire(
    doc: FileDocument,
    desired: Mapping[str, _Desired],
    registry: Registry,
    backup_key: BackupKey | None,
    manager: KeyManager | None,
) -> _Desired:
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
    item = _Desired(doc, cls, block, data, secrets, refs, recorder.types)
    item.change = Change("unchanged", doc.type_slug, doc.name, note=note)
    return item


def _resolve(
    doc: FileDocument,
    value: Any,
    path: Path,
    desired: Mapping[str, _Desired],
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
        from blocks.core._documents import join_path

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
    desired: Mapping[str, _Desired],
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


def _compare(
    item: _Desired,
    row: DocumentRow | None,
    slugs: Mapping[str, str],
    registry: Registry,
    manager: KeyManager | None,
) -> Change:
    """The change from the stored `row` (None: absent) to the desired document."""
    doc, note = item.document, item.change.note if item.change else ""
    if row is None:
        return Change("create", doc.type_slug, doc.name, note=note)
    opened = open_secrets(registry, row, manager) if row.secrets else {}
    stored = {path: secret_plaintext(secret) for path, secret in opened.items()}
    stored_refs = {path: slugs.get(child, "?") for path, child in row.refs.items()}
    changed: set[str] = set()
    for key in set(row.data) | set(item.data):
        if _canonical(row.data.get(key, _ABSENT)) != _canonical(item.data.get(key, _ABSENT)):
            changed.add(key)
    for before, after in ((stored, item.secrets), (stored_refs, item.refs)):
        for path in set(before) | set(after):
            if before.get(path) != after.get(path):
                changed.add(_top(path))
    if row.schema_checksum != item.cls.get_schema_checksum():
        note = note or "schema changed"
    if not changed and row.schema_checksum == item.cls.get_schema_checksum():
        return Change("unchanged", doc.type_slug, doc.name, note=note)
    order = list(type(item.block).model_fields)
    position = {name: i for i, name in enumerate(order)}
    ordered = tuple(sorted(changed, key=lambda f: (position.get(f, len(order)), f)))
    return Change("update", doc.type_slug, doc.name, ordered, note)


_ABSENT = object()


def _canonical(value: Any) -> str:
    """Stored JSON compared by value and type (1, 1.0 and true differ; key order does not)."""
    if value is _ABSENT:
        return "\0absent"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _top(path: str) -> str:
    return path.split(".", 1)[0].replace("~1", ".").replace("~0", "~")
