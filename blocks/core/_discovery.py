"""Finding Block classes in a module or a ``.py`` file, and registering them.

What `block register -m MODULE | -f FILE` does, and how the CLI imports a type it has not
seen in this process: only from a module or file this user registered on this machine
(`$BLOCKS_HOME/registered-files`, private to the user), or a module an installed plugin names
(a ``blocks.types`` entry point). A module name or file path read from the registry alone is
never imported: whoever can write a shared registry must not choose the code another user's CLI
runs (importing a module runs it: ``antigravity`` opens a browser).

Example:
    >>> [cls.get_block_type_slug() for cls in register_blocks_from("my_project.blocks")]
    ['warehouse']
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import threading
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blocks.core._block import Block
from blocks.errors import ConfigurationError


def load_block_module(target: str) -> types.ModuleType:
    """Import a module by dotted name, or a ``.py`` file by path; `ConfigurationError` if not.

    A file is loaded once per process and marked with ``__blocks_file__`` (its absolute path),
    which `Block.register_type_and_schema` records as the type's module.
    """
    if target.endswith(".py") or "/" in target or "\\" in target:
        return _load_file(Path(target))
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == target or target.startswith(exc.name + ".")):
            raise ConfigurationError(
                f"No module named {target!r}: check the name, and that it is installed or "
                "importable from the current folder."
            ) from None
        raise ConfigurationError(
            f"Importing module {target!r} failed: it needs the missing module {exc.name!r}."
        ) from exc
    except Exception as exc:
        raise ConfigurationError(
            f"Importing module {target!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _load_file(path: Path) -> types.ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ConfigurationError(f"No such Python file: {str(path)!r}.")
    for module in list(sys.modules.values()):
        if getattr(module, "__blocks_file__", None) == str(path):
            return module
    name = path.stem if path.stem.isidentifier() else "blocks_file"
    if name in sys.modules:  # never shadow an imported module (a user file named json.py)
        name = f"blocks_file_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"Cannot import {str(path)!r}: not a Python source file.")
    module = importlib.util.module_from_spec(spec)
    module.__blocks_file__ = str(path)  # type: ignore[attr-defined]
    # In sys.modules before it runs: pydantic resolves annotations through it.
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # so that the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigurationError(
            f"Importing {str(path)!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def block_classes_in(module: types.ModuleType) -> list[type[Block]]:
    """The non-abstract Block classes defined in `module` itself (not those it imports)."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Block)
        and value.__module__ == module.__name__
        and not value._block_is_abstract
    ]


def register_blocks_from(
    target: str, progress: Callable[[int, int], None] | None = None
) -> list[type[Block]]:
    """Import a module or ``.py`` file and register every Block class it defines.

    `ConfigurationError` when it cannot be imported or defines no Block class.
    `progress(done, total)` is called after each class is registered.
    """
    module = load_block_module(target)
    found = block_classes_in(module)
    if not found:
        raise ConfigurationError(
            f"{target!r} defines no Block classes (subclasses of blocks.Block that are not "
            "abstract)."
        )
    for done, cls in enumerate(found, 1):
        cls.register_type_and_schema()
        if progress is not None:
            progress(done, len(found))
    remember_registered(getattr(module, "__blocks_file__", None) or module.__name__)
    return found


def _registered_files_path() -> Path:
    from blocks import settings

    return settings.blocks_home() / "registered-files"


def remember_registered(registered: str) -> None:
    """Record that this user registered the Block module or file `registered` on this machine (so
    the CLI may import it again)."""
    if registered in registered_here():
        return
    target = _registered_files_path()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (registered + "\n").encode())  # one small append: whole lines only
    finally:
        os.close(fd)


def registered_here() -> set[str]:
    """Modules and files this user registered here with `block register -m | -f` (read from a
    file only they may write)."""
    target = _registered_files_path()
    try:
        info = target.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return set()  # someone else could have written it: trust none of it
        return {line for line in target.read_text().splitlines() if line}
    except OSError:
        return set()


PLUGIN_GROUP = "blocks.types"
"""The entry point group through which installed packages add block types."""


def plugin_modules() -> set[str]:
    """Modules named by installed plugins' ``blocks.types`` entry points."""
    from importlib.metadata import entry_points

    return {entry.module for entry in entry_points(group=PLUGIN_GROUP)}


# -- loading plugins on first need ----------------------------------------------------------------
#
# Nothing here runs at import or on a load of a type already known (built in, or imported):
# `block_class_for` calls `load_plugins` for a slug it does not know, `block type ls` and
# `block create` call it, so start-up and warm loads never scan installed packages.

_plugins_lock = threading.Lock()
_plugin_sources: dict[str, str] | None = None  # slug -> "plugin PACKAGE VERSION"
_warned: set[str] = set()


def load_plugins() -> dict[str, str]:
    """Import every installed ``blocks.types`` plugin module once per process; return where
    each plugin type comes from (slug -> ``"plugin PACKAGE VERSION"``).

    A plugin that fails to import is named in one warning and skipped (the others load). A slug
    claimed by two packages (or by a package and `blocks` itself) is recorded as a conflict:
    `block_class_for` then raises `PluginConflict` naming both.
    """
    global _plugin_sources
    found = _plugin_sources
    if found is not None:
        return found
    with _plugins_lock:
        if _plugin_sources is not None:
            return _plugin_sources
        from importlib.metadata import entry_points

        from blocks.core._block import BUILTIN_BLOCK_MODULES, record_plugin_conflict

        claims: dict[str, list[str]] = {}
        for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: (e.module, e.name)):
            label = _package_label(entry)
            try:
                module = importlib.import_module(entry.module)
            except Exception as exc:  # any failure of a plugin is its own: skip it
                _warn_once(
                    label,
                    f"Block plugin {label} (entry point {entry.name!r} = {entry.value!r}) could "
                    f"not be imported and is skipped: {type(exc).__name__}: {exc}",
                )
                continue
            top = entry.module.split(".")[0]
            for value in list(vars(module).values()):
                if (
                    isinstance(value, type)
                    and issubclass(value, Block)
                    and not value._block_is_abstract
                    and (value.__module__ == top or value.__module__.startswith(top + "."))
                ):
                    holders = claims.setdefault(value.get_block_type_slug(), [])
                    if label not in holders:
                        holders.append(label)
        sources: dict[str, str] = {}
        for slug, holders in claims.items():
            if slug in BUILTIN_BLOCK_MODULES:
                holders = ["blocks (built in)", *holders]
            if len(holders) > 1:
                record_plugin_conflict(slug, holders)
            else:
                sources[slug] = f"plugin {holders[0]}"
        _plugin_sources = sources
        return sources


def _package_label(entry: Any) -> str:
    dist = getattr(entry, "dist", None)
    if dist is None:
        return f"module {entry.module}"
    return f"{dist.metadata['Name']} {dist.version}"


def _warn_once(key: str, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    # One line naming the plugin, with no source line of ours under it.
    warnings.warn_explicit(message, PluginWarning, filename="<installed plugin>", lineno=0)


class PluginWarning(UserWarning):
    """An installed plugin could not be used (it is skipped; the others still load)."""


def may_import(module: str) -> bool:
    """Whether the CLI may import `module` (a dotted name or a file path read from the
    registry) to find a block type: only if this user registered it on this machine, or an
    installed plugin names it (or a package it belongs to)."""
    if module == "__main__":
        return False
    if module in registered_here():
        return True
    return any(module == found or module.startswith(found + ".") for found in plugin_modules())
