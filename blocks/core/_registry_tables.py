"""The registry's SQLAlchemy tables and the statements built from them once.

Kept apart from `blocks.core._registry` so that loading from a SQLite registry (raw `sqlite3`, see
`blocks.core._sqlite_reads`) never imports SQLAlchemy (~0.13 s of a cold start): this module is
imported on the first write, or on any use of a PostgreSQL registry.
"""

from __future__ import annotations

import sqlalchemy as sa

from blocks.core._registry import META_KEY_FINGERPRINT, META_KEY_ID, META_KEY_SOURCE, META_SEALED

metadata = sa.MetaData()

registry_meta = sa.Table(
    "registry_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

block_types = sa.Table(
    "block_types",
    metadata,
    sa.Column("slug", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("module", sa.String(512), nullable=False, default=""),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
)

block_schemas = sa.Table(
    "block_schemas",
    metadata,
    sa.Column("checksum", sa.String(80), primary_key=True),
    sa.Column("type_slug", sa.String(128), sa.ForeignKey("block_types.slug"), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
)

block_documents = sa.Table(
    "block_documents",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("type_slug", sa.String(128), sa.ForeignKey("block_types.slug"), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("schema_checksum", sa.String(80), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("secrets", sa.Text, nullable=False),
    sa.Column("refs", sa.Text, nullable=False),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("mac", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("type_slug", "name", name="uq_block_documents_type_name"),
)

block_references = sa.Table(
    "block_references",
    metadata,
    sa.Column(
        "parent_id",
        sa.String(32),
        sa.ForeignKey("block_documents.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("field", sa.String(256), primary_key=True),
    sa.Column(
        "child_id",
        sa.String(32),
        sa.ForeignKey("block_documents.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
)


_DOC_COLUMNS = (
    block_documents.c.id,
    block_documents.c.type_slug,
    block_documents.c.name,
    block_documents.c.schema_checksum,
    block_documents.c.data,
    block_documents.c.secrets,
    block_documents.c.refs,
    block_documents.c.created,
    block_documents.c.updated,
    block_documents.c.version,
    block_documents.c.mac,
)


# Built once: constructing a select costs more than running it on the hot path.
_GET_DOCUMENT = sa.select(*_DOC_COLUMNS).where(
    block_documents.c.type_slug == sa.bindparam("type_slug"),
    block_documents.c.name == sa.bindparam("name"),
)
_LOAD_DOCUMENT = sa.select(
    block_documents.c.id,
    block_documents.c.schema_checksum,
    block_documents.c.data,
    block_documents.c.secrets,
    block_documents.c.refs,
    block_documents.c.version,
    block_documents.c.mac,
).where(
    block_documents.c.type_slug == sa.bindparam("type_slug"),
    block_documents.c.name == sa.bindparam("name"),
)
_GET_DOCUMENT_BY_ID = sa.select(*_DOC_COLUMNS).where(
    block_documents.c.id == sa.bindparam("document_id")
)


# The save path's statements, built once too (a save runs 4-6 of them in one transaction).
# Values travel as parameters: the insert/update take their SET columns from the keys given.
# Fixed parameters, not `in_()`: an IN list is re-expanded into SQL on every execution.
_KEY_RECORD = sa.text(
    "SELECT key, value FROM registry_meta WHERE key IN (:key_id, :fingerprint, :source, :sealed)"
).bindparams(
    key_id=META_KEY_ID, fingerprint=META_KEY_FINGERPRINT, source=META_KEY_SOURCE, sealed=META_SEALED
)
_CURRENT_DOCUMENT = sa.select(
    block_documents.c.id, block_documents.c.version, block_documents.c.refs
).where(
    block_documents.c.type_slug == sa.bindparam("type_slug"),
    block_documents.c.name == sa.bindparam("name"),
)
_INSERT_DOCUMENT = block_documents.insert()
_UPDATE_DOCUMENT = block_documents.update().where(
    block_documents.c.id == sa.bindparam("document_id")
)
_DELETE_REFERENCES = block_references.delete().where(
    block_references.c.parent_id == sa.bindparam("document_id")
)
_INSERT_REFERENCES = block_references.insert()
_SCHEMA_VERSION = sa.select(registry_meta.c.value).where(registry_meta.c.key == "schema_version")
