"""Every environment variable `blocks` reads: its name, default and meaning, in one place.

Values are read when asked for (not at import), so tests and long-lived processes may change
the environment. The README's settings table mirrors `SETTINGS`.

Example:
    >>> from blocks import settings
    >>> settings.blocks_home()
    PosixPath('/home/me/.blocks')
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple


class Setting(NamedTuple):
    name: str
    default: str
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("BLOCKS_HOME", "~/.blocks", "Folder for the embedded registry, key file and results."),
    Setting(
        "BLOCKS_REGISTRY_URL",
        "sqlite:///$BLOCKS_HOME/registry.db",
        "SQLAlchemy URL of the registry; postgresql://... to share blocks across machines.",
    ),
    Setting(
        "BLOCKS_MASTER_KEY",
        "",
        "Master key(s) for secrets, comma-separated, the first one active. "
        "Unset: the OS keyring, else $BLOCKS_HOME/master.key.",
    ),
    Setting(
        "BLOCKS_KEY_SOURCE",
        "auto",
        "Where the master key lives: auto, env, keyring or file.",
    ),
    Setting(
        "BLOCKS_RESULTS_STORAGE",
        "$BLOCKS_HOME/storage",
        "Default result storage: a path, a URL, or a saved block slug such as s3/prod.",
    ),
    Setting("BLOCKS_RESULTS_SERIALIZER", "pickle", "Default result serializer."),
    Setting("BLOCKS_LOG_LEVEL", "INFO", "Level of the run loggers."),
    Setting(
        "BLOCKS_RESULTS_KEY",
        "",
        "Key(s) that sign result records (and seal secrets in them), comma-separated, the first "
        "signing. Unset: a saved results-key Secret block, else derived from the master key.",
    ),
    Setting(
        "BLOCKS_RESULTS_MAX_BYTES",
        "4294967296",
        "Ceiling on a result's payload and decoded size; past it a record is a miss.",
    ),
    Setting(
        "BLOCKS_DEBUG",
        "0",
        "1/true/yes/on: the block command prints the traceback of an unexpected error; "
        "0/false/no/off (or unset): one error line only.",
    ),
    Setting(
        "BLOCKS_SECRET_REF_TTL",
        "300",
        "Seconds a resolved secret reference (env:, file:, aws-sm:) is kept in memory before it "
        "is read again from its source; 0 reads it on every use.",
    ),
    Setting(
        "BLOCKS_UI_TOKEN",
        "",
        "Access token of `block ui` (scripts send it as 'Authorization: token T'; its sign-in "
        "page takes it). Unset: only the one-time URL it prints signs a browser in.",
    ),
)


def _get(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def blocks_home() -> Path:
    """The folder holding the embedded registry, the key file and default results."""
    return _home(_get("BLOCKS_HOME"))


def registry_url() -> str:
    """The registry's SQLAlchemy URL; a SQLite file under `blocks_home()` by default."""
    return _get("BLOCKS_REGISTRY_URL") or _default_registry_url(_get("BLOCKS_HOME"))


# Cached on the raw variable so the hot path (every Block.load) skips path parsing.
@lru_cache(maxsize=8)
def _home(raw: str | None) -> Path:
    return Path(raw or "~/.blocks").expanduser()


@lru_cache(maxsize=8)
def _default_registry_url(raw_home: str | None) -> str:
    return f"sqlite:///{_home(raw_home) / 'registry.db'}"


def master_keys() -> str | None:
    """The raw value of BLOCKS_MASTER_KEY, if set."""
    return _get("BLOCKS_MASTER_KEY")


def key_source() -> str:
    """Which key source to use: auto, env, keyring or file."""
    return (_get("BLOCKS_KEY_SOURCE") or "auto").lower()


def results_storage() -> str:
    """Default result storage for tasks and flows that name none."""
    return _get("BLOCKS_RESULTS_STORAGE") or str(blocks_home() / "storage")


def results_serializer() -> str:
    """Default result serializer shorthand."""
    return _get("BLOCKS_RESULTS_SERIALIZER") or "pickle"


def log_level() -> str:
    """Level of run loggers."""
    return (_get("BLOCKS_LOG_LEVEL") or "INFO").upper()


def results_key() -> str | None:
    """The raw value of BLOCKS_RESULTS_KEY, if set."""
    return _get("BLOCKS_RESULTS_KEY")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def flag(name: str) -> bool:
    """A boolean setting: 1/true/yes/on or 0/false/no/off (any case; unset or empty: off).

    `ConfigurationError` for any other value, naming the variable and the accepted words.
    """
    raw = _get(name)
    if raw is None:
        return False
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    from blocks.errors import ConfigurationError

    shown = repr(raw) if len(raw) <= 40 else repr(raw[:40] + "...")
    raise ConfigurationError(
        f"{name}={shown} is not a boolean: use 1, true, yes or on (or 0, false, no, off)."
    )


def debug() -> bool:
    """Whether the block command shows tracebacks of unexpected errors (BLOCKS_DEBUG)."""
    return flag("BLOCKS_DEBUG")


DEFAULT_SECRET_REF_TTL = 300.0


def secret_ref_ttl() -> float:
    """Seconds a resolved secret reference is cached in-process (BLOCKS_SECRET_REF_TTL)."""
    raw = _get("BLOCKS_SECRET_REF_TTL")
    if raw is None:
        return DEFAULT_SECRET_REF_TTL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        from blocks.errors import ConfigurationError

        raise ConfigurationError(
            f"BLOCKS_SECRET_REF_TTL={raw!r} is not a number of seconds (0 or more), e.g. 300."
        )
    return value


DEFAULT_RESULTS_MAX_BYTES = 4 * 1024**3


def results_max_bytes() -> int:
    """Ceiling on a result payload's size and on its decoded (decompressed) size."""
    # Read on every cache hit: parsed once per value of the variable.
    global _max_bytes_seen
    stamp = _MAX_BYTES_STAMP()
    seen = _max_bytes_seen
    if seen is not None and seen[0] == stamp:
        return seen[1]
    value = _parse_max_bytes()
    _max_bytes_seen = (stamp, value)
    return value


_max_bytes_seen: tuple[tuple[object, ...], int] | None = None


def _parse_max_bytes() -> int:
    raw = _get("BLOCKS_RESULTS_MAX_BYTES")
    if raw is None:
        return DEFAULT_RESULTS_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        from blocks.errors import ConfigurationError

        raise ConfigurationError(
            f"BLOCKS_RESULTS_MAX_BYTES={raw!r} is not a positive number of bytes."
        )
    return value


class EnvStamp:
    """The raw values of a few environment variables, read cheaply enough for a hot path.

    Calling it returns a tuple that is equal between two calls exactly when none of the
    variables changed, so a cache keyed on it (the results keys, resolved result stores) sees
    ``os.environ`` edits, ``monkeypatch.setenv`` and a replaced ``os.environ`` alike, for about
    0.2 µs instead of ~0.3 µs per ``os.environ.get``. The values are raw (bytes on POSIX): for
    comparing, not for reading - read a setting with its function above.

    Example:
        >>> home = EnvStamp("BLOCKS_HOME", "BLOCKS_REGISTRY_URL")
        >>> before = home()
        >>> os.environ["BLOCKS_HOME"] = "/tmp/other"
        >>> home() == before
        False
    """

    __slots__ = ("_bound", "names")

    def __init__(self, *names: str) -> None:
        self.names = names
        self._bound: tuple[object, Any, tuple[Any, ...]] = (None, None, ())

    def __call__(self) -> tuple[Any, ...]:
        env = os.environ
        bound = self._bound
        if bound[0] is not env:
            bound = self._bind(env)
        return tuple(map(bound[1], bound[2]))

    def _bind(self, env: Any) -> tuple[object, Any, tuple[Any, ...]]:
        # os.environ's own dict holds the encoded names and values: reading it skips the
        # per-call encode/decode of os.environ.get. Anything else (a replaced os.environ) is
        # read through its mapping interface. One tuple, swapped whole: thread-safe.
        data, encode = getattr(env, "_data", None), getattr(env, "encodekey", None)
        if isinstance(data, dict) and callable(encode):
            bound = (env, data.get, tuple(encode(n) for n in self.names))
        else:
            bound = (env, env.get, self.names)
        self._bound = bound
        return bound


_MAX_BYTES_STAMP = EnvStamp("BLOCKS_RESULTS_MAX_BYTES")

#: What chooses the registry and its master key: every `Block.load` keys its cached registry
#: and key manager on it (equal stamps: the same registry, key source and key).
registry_stamp = EnvStamp(
    "BLOCKS_REGISTRY_URL",
    "BLOCKS_HOME",
    "BLOCKS_MASTER_KEY",
    "BLOCKS_KEY_SOURCE",
)

#: What the results keys depend on: their own setting, the master key's sources and the
#: registry (a saved results-key block, the key file under the home); HOME for ``~``.
results_keys_stamp = EnvStamp(
    "BLOCKS_RESULTS_KEY",
    "BLOCKS_MASTER_KEY",
    "BLOCKS_KEY_SOURCE",
    "BLOCKS_HOME",
    "BLOCKS_REGISTRY_URL",
    "HOME",
)

#: What a result storage or serializer given as None (the defaults) or as a saved block's slug
#: resolves to.
result_store_stamp = EnvStamp(
    "BLOCKS_HOME",
    "BLOCKS_REGISTRY_URL",
    "BLOCKS_RESULTS_STORAGE",
    "BLOCKS_RESULTS_SERIALIZER",
    "HOME",
)
