"""Every error `blocks` raises on purpose: one short, typed hierarchy.

Each message says what happened and what to do next, and never carries a secret value.
Most are also a builtin (`ValueError`, `LookupError`, `OSError`, ...), so code written for
Prefect or for the standard library still catches them.

    BlocksError                  root (defined in `serializers.errors`, re-exported here)
    ├── SerializationError       ValueError; `serializers` raises it, imports nothing of ours
    ├── ConfigurationError       ValueError; a setting, variable or option we cannot use
    │   ├── OptionTypeError      TypeError too; an option of the wrong kind
    │   └── PluginConflict       two installed plugins claim one block type
    ├── InvalidName              ValueError
    ├── BlockNotFound            LookupError, ValueError
    ├── BlockAlreadyExists       ValueError
    ├── BlockInUse
    ├── UnknownBlockType         LookupError
    ├── IncompatibleSchema
    ├── InvalidBlockData         ValueError
    ├── DecryptionFailed
    │   └── TamperedDocument
    ├── SecretReferenceError     LookupError; a malformed or unresolvable secret reference
    ├── KeyManagementError
    │   └── KeyMismatch
    ├── UnsafePath               ValueError
    ├── StorageError             OSError
    ├── MissingDependency        ImportError
    ├── CorruptRecord
    ├── TaskTimeout              TimeoutError
    ├── UpstreamFailed
    ├── ParameterTypeError       TypeError
    ├── ScheduleError            ValueError; a cron, interval, rrule or time zone we cannot use
    ├── RemoteTaskError
    ├── MissingResult
    ├── RegistryCorrupt
    └── RegistryReadOnly         PermissionError

`tests/test_exported_members.py` checks that this drawing names every class of the module.

Example:
    >>> from blocks.errors import BlockNotFound
    >>> try:
    ...     Secret.load("missing")
    ... except BlockNotFound as exc:
    ...     print(exc)
"""

from __future__ import annotations

# `serializers` must not import `blocks`: the root and its error live there (same objects).
from serializers.errors import BlocksError, SerializationError


class ConfigurationError(BlocksError, ValueError):
    """A setting, environment variable or option has a value we cannot use."""


class OptionTypeError(ConfigurationError, TypeError):
    """An option is of the wrong kind (a function where a list of hooks goes, ...).

    Also a `TypeError`, which is what this raised before the error tree had it.
    """


class PluginConflict(ConfigurationError):
    """Two installed packages (or a package and `blocks` itself) define one block type slug.

    The message names both; uninstall one, or have one of them set another ``_block_type_slug``.
    """


class InvalidName(BlocksError, ValueError):
    """A block name or type slug is not lowercase letters, digits and dashes."""


class BlockNotFound(BlocksError, LookupError, ValueError):
    """No saved block document (or no registered type) has that name.

    Also a `ValueError`: Prefect raises one there, and code written for it catches that.
    """


class BlockAlreadyExists(BlocksError, ValueError):
    """A document with that name exists and `overwrite=True` was not given (a `ValueError`
    too, as in Prefect)."""


class BlockInUse(BlocksError):
    """The block is referenced by other blocks and cannot be deleted."""


class UnknownBlockType(BlocksError, LookupError):
    """No registered Block class has that type slug."""


class IncompatibleSchema(BlocksError):
    """A saved document cannot be loaded into the current class of its type."""


class InvalidBlockData(BlocksError, ValueError):
    """Field values do not validate against the block's schema."""


class DecryptionFailed(BlocksError):
    """A secret could not be decrypted: wrong or missing master key, or tampered data."""


class SecretReferenceError(BlocksError, LookupError):
    """A secret reference (``env:``, ``file:``, ``aws-sm:``) is malformed or cannot be resolved.

    The message names the reference, never a value.
    """


class KeyManagementError(BlocksError):
    """The master key could not be found, created, stored or rotated."""


class UnsafePath(BlocksError, ValueError):
    """A storage key would escape its base path (``..``, absolute path, NUL byte, symlink)."""


class StorageError(BlocksError, OSError):
    """A storage backend could not read or write (unreachable store, missing bucket, ...)."""


class MissingDependency(BlocksError, ImportError):
    """An optional package is needed; the message names the extra to install."""


class CorruptRecord(BlocksError):
    """A result record is truncated, tampered with or not a record at all."""


class TaskTimeout(BlocksError, TimeoutError):
    """A task or flow ran longer than its ``timeout_seconds``."""


class UpstreamFailed(BlocksError):
    """A result was requested from a run that did not complete."""


class ParameterTypeError(BlocksError, TypeError):
    """A flow's parameter does not validate against its type hint; the flow did not start.

    The message names each bad parameter and what was expected, never the value given (it may
    be a secret).
    """


class ScheduleError(BlocksError, ValueError):
    """A schedule cannot be built: a bad cron string, time zone, interval or rrule.

    The message says what was wrong and shows a value that works.
    """


class RemoteTaskError(BlocksError):
    """Stands in for an exception raised on a Dask worker that could not be sent back."""


class MissingResult(BlocksError):
    """A run's result is not held in memory (``cache_result_in_memory=False``) and its record
    is no longer in result storage."""


class RegistryCorrupt(BlocksError):
    """The registry file is not a SQLite database, or it is damaged (truncated, overwritten)."""


class RegistryReadOnly(BlocksError, PermissionError):
    """The registry can be read but not written (read-only file, folder or mount)."""


class KeyMismatch(KeyManagementError):
    """This process's key source holds a key other than the one the registry records."""


class TamperedDocument(DecryptionFailed):
    """A saved document's seal does not match: it was changed outside blocks."""


__all__ = [
    "BlockAlreadyExists",
    "BlockInUse",
    "BlockNotFound",
    "BlocksError",
    "ConfigurationError",
    "CorruptRecord",
    "DecryptionFailed",
    "IncompatibleSchema",
    "InvalidBlockData",
    "InvalidName",
    "KeyManagementError",
    "KeyMismatch",
    "MissingDependency",
    "MissingResult",
    "OptionTypeError",
    "ParameterTypeError",
    "PluginConflict",
    "RegistryCorrupt",
    "RegistryReadOnly",
    "RemoteTaskError",
    "ScheduleError",
    "SecretReferenceError",
    "SerializationError",
    "StorageError",
    "TamperedDocument",
    "TaskTimeout",
    "UnknownBlockType",
    "UnsafePath",
    "UpstreamFailed",
]
