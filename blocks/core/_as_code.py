"""Blocks as code: plan a blocks file against a registry, and apply it all or nothing.

`plan_blocks` compares a file with the registry (``+ create``, ``~ update`` naming the fields,
``= unchanged``, and ``- delete`` with `prune`) without writing anything; `apply_blocks` then
writes the plan in ONE registry transaction (`_registry_batch`): every document sealed as
`Block.save` seals it, a referenced block before the blocks referencing it, and nothing at all
if any document fails. Applying the same file again changes nothing. `export_blocks`
(`_blocks_export`) writes the files.

Example:
    >>> text = export_blocks(Registry.default())
    >>> plan = apply_blocks(read_blocks_file(text, "blocks.yaml", os.environ), Registry.default())
    >>> [change.line() for change in plan.changes]
    ['= unchanged secret/db-password', ...]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from blocks.core._block import open_secrets
from blocks.core._blocks_desired import Desired, desire, references
from blocks.core._blocks_export import dependency_order
from blocks.core._blocks_file import BlocksFile
from blocks.core._documents import secret_plaintext
from blocks.errors import InvalidBlocksFile

if TYPE_CHECKING:
    from blocks.core._backup_key import BackupKey
    from blocks.core._encryption import KeyManager
    from blocks.core._registry import DocumentRow, Registry
    from blocks.core._registry_batch import Batch

Action = Literal["create", "update", "unchanged", "delete"]
_SIGNS = {"create": "+", "update": "~", "unchanged": "=", "delete": "-"}
_ATTEMPTS = 5
"""Plans made again after a concurrent save of a planned block."""
_SEAL_ATTEMPTS = 50
"""Seals made again after a rotation committed first (as `Block.save` does, bounded)."""


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
    show: Callable[[Plan], object] | None = None,
) -> Plan:
    """Make the registry match the file in one transaction; the plan that was applied.

    Any error (a document that does not validate, a reference that does not resolve, a
    delete refused because a block left in place uses it) leaves the registry unchanged.
    `show(plan)` is called before the plan is written (again if it had to be made again).
    """
    from blocks.core._encryption import KeyManager
    from blocks.core._registry import StaleKey, _integrity_errors
    from blocks.core._registry_batch import open_batch
    from blocks.errors import KeyManagementError

    manager = manager or KeyManager.for_registry(registry.url)
    for _ in range(_ATTEMPTS):
        plan, planned, deletes = _plan(blocks_file, registry, prune, backup_key, manager)
        if show is not None:
            show(plan)
        if not plan.has_changes:
            return plan
        try:
            for _ in range(_SEAL_ATTEMPTS):
                keyset = manager.sealing_keyset(registry)
                try:
                    with open_batch(registry, keyset) as batch:
                        _write(batch, planned, deletes)
                    return plan
                except StaleKey:
                    manager.forget()  # a rotation committed meanwhile: seal under its key
        except _Moved:
            pass  # a planned block was saved meanwhile: plan again against it
        except _integrity_errors():
            pass  # PostgreSQL: another process created a planned name or type first: again
    raise KeyManagementError(
        f"Could not apply {blocks_file.source}: the registry kept changing under it (key "
        "rotations or saves of the same blocks running?). Nothing was written; run it again."
    )


class _Moved(Exception):
    """Internal: a block changed between the plan and its transaction."""


@dataclass
class _Planned:
    """A file document, its change, and the stored version the change was planned against."""

    desired: Desired
    change: Change
    version: int | None


def _write(batch: Batch, planned: list[_Planned], deletes: list[tuple[str, str, int]]) -> None:
    """The plan's writes, dependencies first; `_Moved` if a planned block changed since."""
    ids: dict[str, str] = {}
    for entry in planned:
        item, doc = entry.desired, entry.desired.document
        current = batch.current(doc.type_slug, doc.name)
        if (None if current is None else current[1]) != entry.version:
            raise _Moved(doc.slug)
        if entry.change.action == "unchanged":
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
) -> tuple[Plan, list[_Planned], list[tuple[str, str, int]]]:
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

    needs = {slug: set(references(doc.fields)) for slug, doc in documents.items()}
    order = dependency_order(needs, cycle)
    summaries = registry.list_document_summaries()
    slugs = {summary.id: summary.slug for summary in summaries}
    desired: dict[str, Desired] = {}
    planned: list[_Planned] = []
    plan = Plan()
    for slug in order:
        item = desired[slug] = desire(documents[slug], desired, registry, backup_key, manager)
        row = registry.get_document(item.document.type_slug, item.document.name)
        change = _compare(item, row, slugs, registry, manager)
        planned.append(_Planned(item, change, None if row is None else row.version))
        plan.changes.append(change)
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
        for slug in reversed(dependency_order(users, lambda _s, _d: None)):
            row = rows[slug]
            assert row is not None
            deletes.append((row.type_slug, row.name, row.version))
            plan.changes.append(Change("delete", row.type_slug, row.name))
    return plan, planned, deletes


def _compare(
    item: Desired,
    row: DocumentRow | None,
    slugs: Mapping[str, str],
    registry: Registry,
    manager: KeyManager | None,
) -> Change:
    """The change from the stored `row` (None: absent) to the desired document."""
    doc, note = item.document, item.note
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
