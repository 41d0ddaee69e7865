"""Export the registry as a blocks file (`_blocks_file`), never a secret value in clear.

Plain fields are written as they are stored, another saved block as ``{$block: TYPE/NAME}``,
a secret as the reference it holds (``{$secret: env:NAME}``) or, when it holds a value, as a
placeholder ``{$secret: null, required: true}``. With a `BackupKey` every secret is written
sealed under it instead (``{$sealed: ...}``): a full backup.

Example:
    >>> print(export_blocks(Registry.default(), types=["secret"]))
    ---
    type: secret
    name: db-password
    schema_version: '1'
    fields:
      value: {$secret: 'env:DB_PASSWORD'}
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from blocks.core._block import open_secrets
from blocks.core._blocks_file import BLOCK, SEALED, SECRET, Marker, dump_blocks_file
from blocks.core._documents import secret_aad, secret_plaintext, set_path
from blocks.core._references import SecretRef

if TYPE_CHECKING:
    from blocks.core._backup_key import BackupKey
    from blocks.core._encryption import KeyManager
    from blocks.core._registry import DocumentRow, Registry


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
    order = dependency_order(
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


def dependency_order(
    depends_on: Mapping[str, set[str]], on_cycle: Callable[[str, set[str]], None]
) -> list[str]:
    """Slugs with each one's dependencies (those present) first, ties by slug; `on_cycle` is
    called with a slug left in a cycle and its open dependencies (and may raise)."""
    # A block naming itself stays waiting: a cycle of one.
    waiting = {slug: {d for d in deps if d in depends_on} for slug, deps in depends_on.items()}
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
