"""Blocks as YAML: the file `block export` writes and `block apply` reads, with line numbers.

One YAML document per block::

    ---
    type: s3
    name: results
    schema_version: '1'
    fields:
      bucket_path: my-bucket/results
      credentials: {$block: aws-credentials/prod}     # another block, by TYPE/NAME
    ---
    type: aws-credentials
    name: prod
    schema_version: '1'
    fields:
      aws_access_key_id: AKIA...
      aws_secret_access_key: {$secret: env:AWS_SECRET_ACCESS_KEY}   # a secret reference
      region_name: ${AWS_REGION:-eu-west-1}                         # from the environment

A secret with no reference is exported as ``{$secret: null, required: true}``, which `apply`
refuses until it is filled; a full backup holds ``{$sealed: ...}`` values and starts with a
``backup:`` header document (`blocks.core._backup_key`).

Reading uses PyYAML's safe loader only (no Python tags), node by node, so every error names
the file, line, document and field. ``${VAR}`` and ``${VAR:-default}`` in a string value are
replaced from the environment after parsing (a value can never add YAML structure); ``$${`` is
a literal ``${``. A variable that is unset (with no default) is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from blocks.errors import InvalidBlocksFile

BLOCK = "$block"
SECRET = "$secret"
SEALED = "$sealed"
BACKUP = "backup"
_DOCUMENT_KEYS = ("type", "name", "schema_version", "fields")
_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")

Path = tuple[str | int, ...]
"""Where a value sits inside a document's fields: keys and list indexes."""


@dataclass
class FileDocument:
    """One block as the file describes it, and where each of its values is written."""

    source: str
    index: int
    line: int
    type_slug: str
    name: str
    schema_version: str | None
    fields: dict[str, Any]
    lines: dict[Path, int] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return f"{self.type_slug}/{self.name}"

    def where(self, path: Path = ()) -> str:
        """``file:line: document N (type/name), field 'a.b'`` for the deepest known place."""
        line = self.line
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                line = self.lines[path[:end]]
                break
        shown = ".".join(str(part) for part in path)
        at = f", field '{shown}'" if shown else ""
        return f"{self.source}:{line}: document {self.index} ({self.slug}){at}"


@dataclass
class BlocksFile:
    """A parsed blocks file: its documents in file order, and a backup's header if any."""

    source: str
    documents: list[FileDocument]
    backup: dict[str, Any] | None = None
    backup_line: int = 0


def read_blocks_file(text: str, source: str, environ: Mapping[str, str]) -> BlocksFile:
    """Parse a blocks file; `InvalidBlocksFile` naming file, line, document and field."""
    import yaml

    result = BlocksFile(source, [])
    seen: dict[tuple[str, str], int] = {}
    try:
        # libyaml's parser when PyYAML has it (~10x faster); the same safe constructor.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
        try:
            index = 0
            while loader.check_node():
                node = loader.get_node()
                if node is None or (isinstance(node, yaml.ScalarNode) and node.value == ""):
                    continue
                index += 1
                reader = _NodeReader(loader, source, index, environ)
                document = reader.document(node, first=not result.documents)
                if isinstance(document, dict):  # the backup header
                    if result.backup is not None or result.documents:
                        raise InvalidBlocksFile(
                            f"{source}:{node.start_mark.line + 1}: a backup header must be the "
                            "first document, and only one."
                        )
                    result.backup, result.backup_line = document, node.start_mark.line + 1
                    continue
                key = (document.type_slug, document.name)
                if key in seen:
                    raise InvalidBlocksFile(
                        f"{document.where()}: {document.slug} is also described at line "
                        f"{seen[key]}: keep one."
                    )
                seen[key] = document.line
                result.documents.append(document)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise InvalidBlocksFile(
            f"{source}{line}: not valid YAML ({exc.problem or exc.context}). Fix the file."
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidBlocksFile(f"{source}: not valid YAML ({type(exc).__name__}).") from None
    return result


class _NodeReader:
    """Builds one document's Python values from its YAML nodes, noting each value's line."""

    def __init__(self, loader: Any, source: str, index: int, environ: Mapping[str, str]) -> None:
        self.loader = loader
        self.source = source
        self.index = index
        self.environ = environ
        self.lines: dict[Path, int] = {}
        self.label = f"{source}:{{line}}: document {index}"

    def fail(self, node: Any, message: str, path: Path = ()) -> InvalidBlocksFile:
        shown = ".".join(str(part) for part in path)
        at = f", field '{shown}'" if shown else ""
        where = self.label.format(line=node.start_mark.line + 1)
        return InvalidBlocksFile(f"{where}{at}: {message}")

    def document(self, node: Any, *, first: bool) -> FileDocument | dict[str, Any]:
        import yaml

        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, "a document is a mapping with type, name and fields.")
        top = self.mapping(node, ())
        if first and set(top) == {BACKUP}:
            header = self.value(top[BACKUP][1], ("backup",), substitute=False)
            if not isinstance(header, dict):
                raise self.fail(node, "the backup header is a mapping.")
            return header
        if "deployments" in top:
            raise self.fail(
                node,
                "this is a deployments project file (`block deploy` reads it), not a blocks "
                "file: give `block apply` a file written by `block export`.",
            )
        unknown = [key for key in top if key not in _DOCUMENT_KEYS]
        if unknown:
            raise self.fail(
                top[unknown[0]][0],
                f"unknown key {unknown[0]!r}; a document has {', '.join(_DOCUMENT_KEYS)}.",
            )
        values: dict[str, Any] = {}
        for key in ("type", "name", "schema_version"):
            if key in top:
                values[key] = self.value(top[key][1], (), substitute=True)
        for key in ("type", "name"):
            if not isinstance(values.get(key), str) or not values[key]:
                raise self.fail(node, f"'{key}' is required (text).")
        version = values.get("schema_version")
        if version is not None and not isinstance(version, str | int | float):
            raise self.fail(top["schema_version"][1], "'schema_version' is text, such as '1'.")
        fields: Any = {}
        if "fields" in top:
            fields_node = top["fields"][1]
            fields = self.value(fields_node, (), substitute=True)
            if fields is None:
                fields = {}
            if not isinstance(fields, dict):
                raise self.fail(fields_node, "'fields' is a mapping of field names to values.")
        from blocks.core._block import validate_name
        from blocks.errors import InvalidName

        document = FileDocument(
            self.source,
            self.index,
            node.start_mark.line + 1,
            values["type"],
            values["name"],
            None if version is None else str(version),
            fields,
            self.lines,
        )
        try:
            validate_name(document.type_slug, what="block type slug")
            validate_name(document.name)
        except InvalidName as exc:
            raise InvalidBlocksFile(f"{document.where()}: {exc}") from None
        return document

    def mapping(self, node: Any, path: Path) -> dict[str, tuple[Any, Any]]:
        """A mapping node's keys, each with its key node and value node (merges flattened)."""
        import yaml

        self.loader.flatten_mapping(node)
        found: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "a key must be text.", path)
            key = self.loader.construct_object(key_node)
            if not isinstance(key, str | int | float | bool):
                raise self.fail(key_node, "a key must be text.", path)
            key = str(key)
            if key in found:
                raise self.fail(key_node, f"the key {key!r} is given twice.", path)
            found[key] = (key_node, value_node)
        return found

    def value(self, node: Any, path: Path, *, substitute: bool, depth: int = 0) -> Any:
        import yaml

        if depth > 100:
            raise self.fail(node, "nested too deeply (an alias that refers to itself?).", path)
        if path:
            self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            return {
                key: self.value(value_node, (*path, key), substitute=substitute, depth=depth + 1)
                for key, (_, value_node) in self.mapping(node, path).items()
            }
        if isinstance(node, yaml.SequenceNode):
            return [
                self.value(item, (*path, i), substitute=substitute, depth=depth + 1)
                for i, item in enumerate(node.value)
            ]
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, datetime | date):
            return value.isoformat()  # as a JSON document holds it; the field's type parses it
        if isinstance(value, str) and substitute:
            return self.substitute(value, node, path)
        return value

    def substitute(self, text: str, node: Any, path: Path) -> str:
        """``${VAR}`` / ``${VAR:-default}`` from the environment; ``$${`` is a literal."""
        if "${" not in text:
            return text

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            if name is None:
                raise self.fail(
                    node,
                    "a '${' that is not ${NAME} or ${NAME:-default} (write $${ for a literal "
                    "'${').",
                    path,
                )
            value = self.environ.get(name)
            if match.group(2) is not None and not value:
                return match.group(2)
            if value is None:
                raise self.fail(
                    node,
                    f"the environment variable {name} is not set (give it a value, or a "
                    f"default: ${{{name}:-default}}).",
                    path,
                )
            return value

        return _VARIABLE.sub(replace, text)


# -- writing ----------------------------------------------------------------------------------


class Marker(dict[str, Any]):
    """A ``{$block: ...}``, ``{$secret: ...}`` or ``{$sealed: ...}`` value: written on one line."""


def escape(value: Any) -> Any:
    """Values as `read_blocks_file` reads them back unchanged: ``${`` written as ``$${``."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, Marker):
        return Marker({key: escape(item) for key, item in value.items()})
    if isinstance(value, dict):
        return {key: escape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [escape(item) for item in value]
    return value


def dump_blocks_file(
    documents: list[dict[str, Any]], backup: dict[str, Any] | None = None, comment: str = ""
) -> str:
    """The YAML text of `documents` (each: type, name, schema_version, fields)."""
    import yaml

    dumper_class: Any = type("BlocksDumper", (yaml.SafeDumper,), {})  # its own representers

    def marker(dumper: Any, data: Marker) -> Any:
        return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)

    dumper_class.add_representer(Marker, marker)
    head = "".join(f"# {line}\n".replace("# \n", "#\n") for line in comment.splitlines())
    parts: Iterator[dict[str, Any]] = iter(
        ([{BACKUP: backup}] if backup is not None else [])
        + [{**doc, "fields": escape(doc["fields"])} for doc in documents]
    )
    body = yaml.dump_all(
        parts,
        Dumper=dumper_class,
        explicit_start=True,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )
    return head + str(body)
