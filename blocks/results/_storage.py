"""Where results go: storage specs, result keys and ``result_storage_key`` templates.

A storage *spec* is whatever a user may pass as ``result_storage``:

- a `WritableFileSystem` instance, saved or not: used as is;
- ``"type-slug/name"`` of a saved block, e.g. ``"local-file-system/results"`` or ``"s3/prod"``:
  loaded with `Block.load`;
- a URL ``"proto://..."``: a `RemoteFileSystem` over fsspec (``file://`` gives a
  `LocalFileSystem`);
- anything else, or an `os.PathLike`: a local folder, ``LocalFileSystem(basepath=path)``;
- ``None``: the ``BLOCKS_RESULTS_STORAGE`` setting, resolved by these same rules.

**Slug or path?** A string is a block slug only when it contains exactly one ``/``, both sides
are valid names (lowercase letters, digits, dashes) *and* the left side is a known block type
(shipped with blocks, imported, or registered). Otherwise it is a path: ``"results/daily"`` is a
folder, ``"s3/prod"`` is the saved S3 block. To mean a folder that looks like a slug, write
``"./s3/prod"``.

Example:
    >>> resolve_storage("s3/prod")                  # the saved S3 block named prod
    >>> resolve_storage("~/results")                # LocalFileSystem(basepath="/home/me/results")
    >>> resolve_storage("memory://scratch")         # RemoteFileSystem(basepath="memory://scratch")
    >>> render_storage_key("{parameters[x]}/out.json", parameters={"x": 3})
    '3/out.json'
"""

from __future__ import annotations

import os
import re
import string
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from blocks import settings
from blocks.errors import ConfigurationError
from blocks.filesystems._keys import validate_key

if TYPE_CHECKING:
    from blocks.filesystems._folder import LocalFolder
    from blocks.filesystems.base import WritableFileSystem

_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@overload
def resolve_storage(
    spec: WritableFileSystem | str | os.PathLike[str] | None = None,
    *,
    plain_local: Literal[False] = False,
) -> WritableFileSystem: ...


@overload
def resolve_storage(
    spec: WritableFileSystem | str | os.PathLike[str] | None = None,
    *,
    plain_local: bool,
) -> WritableFileSystem | LocalFolder: ...


def resolve_storage(
    spec: WritableFileSystem | str | os.PathLike[str] | None = None,
    *,
    plain_local: bool = False,
) -> WritableFileSystem | LocalFolder:
    """Turn a storage spec (block, slug, URL, path or None) into a filesystem block.

    With `plain_local`, a local path (or ``file://`` URL) comes back as a plain `LocalFolder`
    (same files, same guarantees, no Block): for commands that only read and delete records
    (``block results``), which then start without importing pydantic.

    Example:
        >>> resolve_storage("/tmp/results").describe()
        'file:///tmp/results'
    """
    if spec is None:
        spec = settings.results_storage()
    if isinstance(spec, os.PathLike):
        return _local(os.fspath(spec), plain_local)
    if not isinstance(spec, str):
        from blocks.filesystems.base import WritableFileSystem

        if isinstance(spec, WritableFileSystem):
            return spec
        raise ConfigurationError(
            f"Result storage must be a filesystem block, a block slug, a URL or a path; "
            f"got a {type(spec).__name__}."
        )
    if not spec.strip():
        raise ConfigurationError("Result storage is an empty string: give a path, URL or slug.")
    url = _URL.match(spec)
    if url:
        if url.group(1).lower() == "file":
            return _local(spec[len("file://") :], plain_local)
        from blocks.filesystems import RemoteFileSystem

        return RemoteFileSystem(basepath=spec)
    if is_block_slug(spec):
        from blocks.core._block import Block
        from blocks.filesystems.base import WritableFileSystem

        block = Block.load(spec)
        if not isinstance(block, WritableFileSystem):
            raise ConfigurationError(
                f"{spec!r} is a {type(block).__name__} block, not a filesystem: result storage "
                "needs local-file-system, remote-file-system, s3 or gcs."
            )
        return block
    local = _local(spec, plain_local)
    _warn_if_typo(spec, local.describe())
    return local


def is_block_slug(spec: str) -> bool:
    """Whether `spec` reads as ``type-slug/name`` of a known block type (see module docs)."""
    type_slug, sep, name = spec.partition("/")
    if not sep or "/" in name or not _NAME.match(type_slug) or not _NAME.match(name):
        return False
    from blocks.core._block import BUILTIN_BLOCK_MODULES, block_classes

    if type_slug in BUILTIN_BLOCK_MODULES or type_slug in block_classes():
        return True
    from blocks.core._registry import Registry

    return Registry.default().get_type(type_slug) is not None


#: Specs already checked for a typo'd slug: each warns once per process, and the check (which
#: may list the registry's types) runs once per spec, not on every task call.
_TYPO_CHECKED: set[str] = set()


def _warn_if_typo(spec: str, where: str) -> None:
    """Warn when a spec taken as a folder reads like a saved block slug with a typo'd type."""
    if spec in _TYPO_CHECKED:
        return
    _TYPO_CHECKED.add(spec)
    type_slug, sep, name = spec.partition("/")
    if not sep or "/" in name or not _NAME.match(type_slug) or not _NAME.match(name):
        return
    from blocks.core._block import BUILTIN_BLOCK_MODULES, block_classes
    from blocks.core._registry import Registry

    known = {*BUILTIN_BLOCK_MODULES, *block_classes()}
    known.update(row.slug for row in Registry.default().list_types())
    import difflib  # here: only slug-shaped folder names get this far

    close = difflib.get_close_matches(type_slug, sorted(known), n=1, cutoff=0.8)
    if close:
        warnings.warn(
            f"Result storage {spec!r}: did you mean '{close[0]}/{name}'? No block type "
            f"{type_slug!r} exists, so using the local folder {where}; write "
            f"'./{spec}' to silence this.",
            TypoWarning,
            stacklevel=3,
        )


class TypoWarning(UserWarning):
    """A storage spec looks like a mistyped block slug (it is used as a local folder)."""


def _local(path: str, plain: bool = False) -> WritableFileSystem | LocalFolder:
    # Absolute now, so a later chdir does not move where results go.
    base = str(Path(path).expanduser().absolute())
    if plain:
        from blocks.filesystems._folder import LocalFolder

        return LocalFolder(base)
    from blocks.filesystems.local import LocalFileSystem

    return LocalFileSystem(basepath=base)


class _KeyFormatter(string.Formatter):
    """`str.format` that also reads mapping keys as attributes and refuses private names."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        first, rest = _split_field(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, part in rest:
            if is_attr:
                if part.startswith("_"):
                    raise ConfigurationError(
                        f"Storage key template field {field_name!r} reads a private attribute."
                    )
                obj = obj[part] if isinstance(obj, Mapping) else getattr(obj, part)
            else:
                obj = obj[part]
        return obj, first

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        if isinstance(key, int):
            raise ConfigurationError(
                "Storage key templates take named fields only, like {flow_run.id}."
            )
        return kwargs[key]


def _split_field(field_name: str) -> tuple[str, list[tuple[bool, Any]]]:
    import _string  # the parser str.format itself uses

    first, rest = _string.formatter_field_name_split(field_name)
    return first, list(rest)


def render_storage_key(template: str, **context: Any) -> str:
    """Fill a ``result_storage_key`` template; return it validated and normalised as a key.

    Fields use `str.format` syntax; mapping keys may also be read as attributes, private
    attributes (``_x``) are refused. The result follows the storage key rule
    (`blocks.filesystems.base.validate_key`): ``../``, absolute paths, NUL... raise `UnsafePath`.

    Example:
        >>> render_storage_key("{flow_run.name}/{parameters[x]}.json",
        ...                    flow_run={"name": "etl"}, parameters={"x": 3})
        'etl/3.json'
    """
    try:
        key = _KeyFormatter().format(template, **context)
    except ConfigurationError:
        raise
    except (KeyError, AttributeError, IndexError, TypeError) as exc:
        available = ", ".join(sorted(context)) or "none"
        raise ConfigurationError(
            f"Storage key template {template!r} cannot be filled ({type(exc).__name__}: {exc}); "
            f"available fields: {available}."
        ) from None
    except ValueError as exc:
        raise ConfigurationError(f"Storage key template {template!r} is malformed: {exc}") from None
    return validate_key(key)
