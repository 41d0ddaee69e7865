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
from collections.abc import Callable
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
        "BLOCKS_TASK_DEFAULT_RETRIES",
        "0",
        "Retries of a task that sets none (Prefect's PREFECT_TASK_DEFAULT_RETRIES); read when "
        "the task is decorated.",
    ),
    Setting(
        "BLOCKS_TASK_DEFAULT_RETRY_DELAY_SECONDS",
        "0",
        "Seconds before each retry of a task that sets none: a number or a comma-separated "
        "list, one per retry (PREFECT_TASK_DEFAULT_RETRY_DELAY_SECONDS).",
    ),
    Setting(
        "BLOCKS_FLOW_DEFAULT_RETRIES",
        "0",
        "Retries of a flow that sets none (PREFECT_FLOW_DEFAULT_RETRIES).",
    ),
    Setting(
        "BLOCKS_FLOW_DEFAULT_RETRY_DELAY_SECONDS",
        "0",
        "Seconds before each retry of a flow that sets none: a number or a comma-separated "
        "list (PREFECT_FLOW_DEFAULT_RETRY_DELAY_SECONDS).",
    ),
    Setting(
        "BLOCKS_TASKS_REFRESH_CACHE",
        "0",
        "1/true: every task recomputes and overwrites its cached result, as refresh_cache=True "
        "(PREFECT_TASKS_REFRESH_CACHE); read when the task is decorated.",
    ),
    Setting(
        "BLOCKS_TASKS_DEFAULT_NO_CACHE",
        "0",
        "1/true: a task that sets no cache_policy gets NO_CACHE (PREFECT_TASKS_DEFAULT_NO_CACHE).",
    ),
    Setting(
        "BLOCKS_RESULTS_PERSIST_BY_DEFAULT",
        "0",
        "1/true: results persist unless a task or flow says persist_result=False "
        "(PREFECT_RESULTS_PERSIST_BY_DEFAULT); read when a flow run starts or a task is "
        "decorated.",
    ),
    Setting(
        "BLOCKS_SECRET_REF_TTL",
        "300",
        "Seconds a resolved secret reference (env:, file:, aws-sm:) is kept in memory before it "
        "is read again from its source; 0 reads it on every use.",
    ),
    Setting(
        "BLOCKS_NOTIFY_TIMEOUT",
        "10",
        "Seconds one notification may take, its retries included; a state hook's notification "
        "still undelivered then is logged and abandoned.",
    ),
    Setting(
        "BLOCKS_NOTIFY_RETRIES",
        "2",
        "Retries of a notification that failed to send (unreachable, timed out, HTTP 429 or "
        "5xx), after 0.5 s, 1 s, 2 s ... while BLOCKS_NOTIFY_TIMEOUT allows.",
    ),
    Setting(
        "BLOCKS_UI_TOKEN",
        "",
        "Access token of `block ui` (scripts send it as 'Authorization: token T'; its sign-in "
        "page takes it). Unset: only the one-time URL it prints signs a browser in.",
    ),
    Setting(
        "BLOCKS_LOCK_TIMEOUT",
        "300",
        "Seconds a cached task waits for another run computing the same key (a compute-once "
        "lock) before computing it itself; inf waits forever.",
    ),
    Setting(
        "BLOCKS_RESULTS_LEASES",
        "auto",
        "Compute once across machines: auto (a lease object in shared result storage: object "
        "stores and local folders outside BLOCKS_HOME), storage (every storage), postgres "
        "(advisory locks on the PostgreSQL registry) or off (one machine only).",
    ),
    Setting(
        "BLOCKS_RESULTS_LEASE_SECONDS",
        "30",
        "How long a compute-once lease lasts without a heartbeat (renewed every third): the "
        "longest a crashed holder keeps other machines waiting.",
    ),
    Setting(
        "BLOCKS_RESULTS_LEASE_WAIT",
        "300",
        "Seconds a cached task waits for another machine's lease on its key before computing "
        "it itself (never a wrong value); inf waits forever.",
    ),
    Setting(
        "BLOCKS_RESULTS_OVERWRITE_FOREIGN",
        "off",
        "Let a write replace a record signed by a results key this process does not have "
        "(refused by default: the workers that wrote it could not read the new one).",
    ),
    Setting(
        "BLOCKS_MACHINE_ID",
        "boot id + PID namespace",
        "Names this machine in compute-once leases: a lease whose holder ran here and is gone "
        "is taken over at once, not after the lease length.",
    ),
    Setting(
        "BLOCKS_LEASE_SECONDS",
        "30",
        "How long a worker holds a claimed run without a heartbeat; past it the run is Crashed.",
    ),
    Setting(
        "BLOCKS_LATE_AFTER_SECONDS",
        "15",
        "A scheduled run not started this long after its slot is Late (the catch-up policy).",
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


def lease_seconds() -> float:
    """How long a worker's claim on a run lasts without a heartbeat (it renews at a third)."""
    return _positive_seconds("BLOCKS_LEASE_SECONDS", 30.0)


def late_after_seconds() -> float:
    """How long after its slot an unstarted scheduled run counts as missed (Late)."""
    return _positive_seconds("BLOCKS_LATE_AFTER_SECONDS", 15.0)


DEFAULT_RUN_LOG_LINES = 1000
DEFAULT_RUN_TASK_RUNS = 10_000


def run_log_lines() -> int:
    """Log lines kept per deployment flow run (BLOCKS_RUN_LOG_LINES); later ones are counted
    and dropped, and one WARNING line says so."""
    return _positive_int("BLOCKS_RUN_LOG_LINES", DEFAULT_RUN_LOG_LINES)


def run_task_runs() -> int:
    """Task-run summaries kept per deployment flow run (BLOCKS_RUN_TASK_RUNS); later ones are
    counted, not kept (``block flow-run inspect`` shows how many were left out)."""
    return _positive_int("BLOCKS_RUN_TASK_RUNS", DEFAULT_RUN_TASK_RUNS)


def _positive_int(name: str, default: int) -> int:
    raw = _get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        from blocks.errors import ConfigurationError

        raise ConfigurationError(f"{name}={raw!r} is not a whole number of 1 or more, e.g. 1000.")
    return value


def notify_timeout() -> float:
    """Seconds one notification may take, retries included (BLOCKS_NOTIFY_TIMEOUT)."""
    return _positive_seconds("BLOCKS_NOTIFY_TIMEOUT", 10.0)


def notify_retries() -> int:
    """Retries of a notification that failed to send (BLOCKS_NOTIFY_RETRIES, default 2)."""
    return 2 if _get("BLOCKS_NOTIFY_RETRIES") is None else _count("BLOCKS_NOTIFY_RETRIES")


def _positive_seconds(name: str, default: float) -> float:
    raw = _get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        from blocks.errors import ConfigurationError

        raise ConfigurationError(f"{name}={raw!r} is not a positive number of seconds.")
    return value


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


LEASE_MODES = ("auto", "storage", "postgres", "off")


def results_leases() -> str:
    """How cached tasks compute once across machines (BLOCKS_RESULTS_LEASES, see `SETTINGS`)."""
    raw = (_get("BLOCKS_RESULTS_LEASES") or "auto").strip().lower()
    if raw not in LEASE_MODES:
        from blocks.errors import ConfigurationError

        raise ConfigurationError(
            f"BLOCKS_RESULTS_LEASES={raw!r} is not one of {', '.join(LEASE_MODES)}."
        )
    return raw


def results_lease_seconds() -> float:
    """How long a compute-once lease lasts without a heartbeat."""
    return _positive_seconds("BLOCKS_RESULTS_LEASE_SECONDS", 30.0)


def results_lease_wait() -> float:
    """Seconds a waiter for another machine's lease waits before computing; ``inf``: forever."""
    raw = _get("BLOCKS_RESULTS_LEASE_WAIT")
    return 300.0 if raw is None else _parse_seconds(raw, "BLOCKS_RESULTS_LEASE_WAIT")


DEFAULT_LOCK_TIMEOUT = 300.0


def lock_timeout() -> float:
    """Seconds a waiter for a key's compute-once lock waits before computing the key itself
    (a holder that is stopped or hung); ``inf`` for no limit."""
    global _lock_timeout_seen
    stamp = _LOCK_TIMEOUT_STAMP()
    seen = _lock_timeout_seen
    if seen is not None and seen[0] == stamp:
        return seen[1]
    raw = _get("BLOCKS_LOCK_TIMEOUT")
    value = DEFAULT_LOCK_TIMEOUT if raw is None else _parse_seconds(raw)
    _lock_timeout_seen = (stamp, value)
    return value


_lock_timeout_seen: tuple[tuple[object, ...], float] | None = None


def _parse_seconds(raw: str, name: str = "BLOCKS_LOCK_TIMEOUT") -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # negative or nan
        from blocks.errors import ConfigurationError

        raise ConfigurationError(f"{name}={raw!r} is not a number of seconds (0 or more, or inf).")
    return value


class RuntimeDefaults(NamedTuple):
    """The defaults of tasks and flows that the environment sets (Prefect's meanings)."""

    task_retries: int = 0
    task_retry_delay_seconds: float | tuple[float, ...] = 0.0
    flow_retries: int = 0
    flow_retry_delay_seconds: float | tuple[float, ...] = 0.0
    refresh_cache: bool = False
    no_cache: bool = False
    persist_by_default: bool = False


def runtime_defaults() -> RuntimeDefaults:
    """The task and flow defaults from the BLOCKS_TASK*/FLOW*/RESULTS_PERSIST* variables.

    Parsed once per value of the variables (an `EnvStamp` check, ~0.3 µs): read when a task or
    flow is decorated and when a flow run starts, never on a plain task call.

    Example:
        >>> os.environ["BLOCKS_TASK_DEFAULT_RETRIES"] = "2"
        >>> runtime_defaults().task_retries
        2
    """
    global _defaults_seen
    stamp = _DEFAULTS_STAMP()
    seen = _defaults_seen
    if seen is not None and seen[0] == stamp:
        return seen[1]
    value = RuntimeDefaults(
        task_retries=_count("BLOCKS_TASK_DEFAULT_RETRIES"),
        task_retry_delay_seconds=_delays("BLOCKS_TASK_DEFAULT_RETRY_DELAY_SECONDS"),
        flow_retries=_count("BLOCKS_FLOW_DEFAULT_RETRIES"),
        flow_retry_delay_seconds=_delays("BLOCKS_FLOW_DEFAULT_RETRY_DELAY_SECONDS"),
        refresh_cache=flag("BLOCKS_TASKS_REFRESH_CACHE"),
        no_cache=flag("BLOCKS_TASKS_DEFAULT_NO_CACHE"),
        persist_by_default=flag("BLOCKS_RESULTS_PERSIST_BY_DEFAULT"),
    )
    _defaults_seen = (stamp, value)
    return value


_defaults_seen: tuple[tuple[object, ...], RuntimeDefaults] | None = None


def _count(name: str) -> int:
    raw = _get(name)
    if raw is None:
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        _bad(name, raw, "a whole number, 0 or more (such as 3)")
    return value


def _delays(name: str) -> float | tuple[float, ...]:
    raw = _get(name)
    if raw is None:
        return 0.0
    text = raw.strip().removeprefix("[").removesuffix("]")
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = (-1.0,)
    if not values or any(not v >= 0 or v == float("inf") for v in values):
        _bad(name, raw, "seconds, 0 or more: a number (10) or a comma-separated list (1,10,60)")
    return values[0] if len(values) == 1 else values


def _bad(name: str, raw: str, expected: str) -> None:
    from blocks.errors import ConfigurationError

    shown = repr(raw) if len(raw) <= 40 else repr(raw[:40] + "...")
    raise ConfigurationError(f"{name}={shown} is not {expected}.")


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
        self._bound: tuple[object, Callable[[], tuple[Any, ...]]] = (None, tuple)

    def __call__(self) -> tuple[Any, ...]:
        bound = self._bound
        if bound[0] is not os.environ:
            bound = self._bind(os.environ)
        return bound[1]()

    def _bind(self, env: Any) -> tuple[object, Callable[[], tuple[Any, ...]]]:
        # os.environ's own dict holds the encoded names and values: reading it skips the
        # per-call encode/decode of os.environ.get. Anything else (a replaced os.environ) is
        # read through its mapping interface. One tuple, swapped whole: thread-safe.
        data, encode = getattr(env, "_data", None), getattr(env, "encodekey", None)
        if isinstance(data, dict) and callable(encode):
            bound = (env, _tuple_of(data.get, tuple(encode(n) for n in self.names)))
        else:
            bound = (env, _tuple_of(env.get, self.names))
        self._bound = bound
        return bound


def _tuple_of(get: Callable[[Any], Any], names: tuple[Any, ...]) -> Callable[[], tuple[Any, ...]]:
    """``lambda: (get(names[0]), get(names[1]), ...)``, written out (as `namedtuple` writes
    its methods): about a third of ``tuple(map(get, names))``'s cost, read several times
    per cache hit."""
    params = ", ".join(f"_{i}" for i in range(len(names)))
    calls = "".join(f"get(_{i}), " for i in range(len(names)))
    scope: dict[str, Any] = {}
    exec(f"def make(get, {params}):\n    return lambda: ({calls})", scope)
    made: Callable[[], tuple[Any, ...]] = scope["make"](get, *names)
    return made


_MAX_BYTES_STAMP = EnvStamp("BLOCKS_RESULTS_MAX_BYTES")
_LOCK_TIMEOUT_STAMP = EnvStamp("BLOCKS_LOCK_TIMEOUT")

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

#: What the task and flow defaults of `runtime_defaults` are read from.
_DEFAULTS_STAMP = EnvStamp(
    "BLOCKS_TASK_DEFAULT_RETRIES",
    "BLOCKS_TASK_DEFAULT_RETRY_DELAY_SECONDS",
    "BLOCKS_FLOW_DEFAULT_RETRIES",
    "BLOCKS_FLOW_DEFAULT_RETRY_DELAY_SECONDS",
    "BLOCKS_TASKS_REFRESH_CACHE",
    "BLOCKS_TASKS_DEFAULT_NO_CACHE",
    "BLOCKS_RESULTS_PERSIST_BY_DEFAULT",
)
