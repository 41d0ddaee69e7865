"""Every secret value this process has seen, and `mask` that hides them in text (Airflow's
secrets masker, which Prefect does not have).

Core records what it opens (each secret field of a loaded block, `Secret.get()`, a resolved
secret reference); the runtime's run loggers and failed states call `mask` on what they are
about to show. A user adds a value of their own with `mask_secret`.

Values shorter than `MIN_LENGTH` characters are not masked: hiding every ``"1"`` or ``"etl"``
in every log line would make logs unreadable and would hint at the value anyway. A structured
secret (a dict or list) has each string leaf recorded on its own.

Cost: recording a value already known is a set lookup; nothing is compiled when a value is
recorded. The first line masked after the set changed compiles one regular expression, every
value in one trie-shaped pattern (see `_trie_pattern`); later lines pay one ``pattern.sub``
each. While nothing is recorded `mask` returns its input.

Example:
    >>> from blocks import mask_secret
    >>> mask_secret("hunter2-token")
    >>> mask("login with hunter2-token")
    'login with ***'
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["MASK", "MIN_LENGTH", "mask", "mask_exception", "mask_secret", "note"]

MASK = "***"
"""What a masked value becomes in logs, state messages and tracebacks."""

MIN_LENGTH = 5
"""Values shorter than this are not masked (see the module docstring)."""

_lock = threading.Lock()
_values: set[str] = set()
# None while the set changed since the last compile; read without the lock (one attribute
# read is atomic), replaced under it.
_pattern: re.Pattern[str] | None = None


def mask_secret(value: Any) -> None:
    """Mask `value` (a str, bytes, a dict or list of them, or a pydantic secret) in every run
    log line, printed line, state message and traceback from now on in this process.

    Strings shorter than 5 characters are not masked; a dict or list has each leaf masked.

    Example:
        >>> from blocks import mask_secret
        >>> mask_secret(os.environ["PARTNER_TOKEN"])
    """
    note(value)


def note(value: Any) -> None:
    """Record a secret value core has opened (see `mask_secret`)."""
    if type(value) is str:  # the common case, kept to a length check and a set lookup
        if len(value) >= MIN_LENGTH and value not in _values:
            _add(_leaves(value))
        return
    _add(_leaves(value))


def known() -> bool:
    """Whether any value is recorded (nothing to mask otherwise)."""
    return bool(_values)


def mask(text: str) -> str:
    """`text` with every recorded value replaced by ``***``."""
    if not _values:
        return text
    pattern = _pattern
    if pattern is None:
        pattern = _compile()
    return pattern.sub(MASK, text)


def mask_exception(exc: BaseException | None) -> None:
    """Mask recorded values in the string arguments and notes of `exc` and of the exceptions
    it was raised from (``__cause__`` / ``__context__``), in place, as Airflow's masker does:
    a traceback formatted from it later shows ``***``.

    An exception whose ``__str__`` ignores its ``args`` keeps its text; the run loggers mask
    formatted tracebacks and failed states mask their messages as text as well.
    """
    if not _values:
        return
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        try:
            args = exc.args
            masked = tuple(mask(a) if isinstance(a, str) else a for a in args)
            if masked != args:
                exc.args = masked
            notes = getattr(exc, "__notes__", None)
            if isinstance(notes, list):
                notes[:] = [mask(n) if isinstance(n, str) else n for n in notes]
        except Exception:  # an exception type that refuses new args keeps them
            pass
        exc = exc.__cause__ or exc.__context__


def forget_all() -> None:
    """Forget every recorded value (tests: each starts with an empty masker, so a secret one
    test saved, say ``"after"``, does not mask that word in another test's logs)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def _leaves(value: Any) -> Iterator[str]:
    """The strings to hide for `value`: each string leaf and its escaped form in a repr."""
    if isinstance(value, str):
        if len(value) >= MIN_LENGTH:
            yield value
            escaped = repr(value)[1:-1]  # a value with a quote or newline, shown by %r
            if escaped != value:
                yield escaped
    elif isinstance(value, bytes | bytearray):
        try:
            text = bytes(value).decode()
        except UnicodeDecodeError:
            text = ""
        yield from _leaves(text)
        escaped = repr(bytes(value))[2:-1]
        if len(escaped) >= MIN_LENGTH:
            yield escaped
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item)
    elif getattr(value, "_blocks_reference", False):
        return  # a SecretRef: its value is recorded when it is resolved, not when loaded
    elif hasattr(value, "get_secret_value"):  # SecretStr, SecretBytes, pydantic.Secret[...]
        yield from _leaves(value.get_secret_value())


def _add(candidates: Iterator[str]) -> None:
    global _pattern
    new = [c for c in candidates if c not in _values]
    if not new:
        return
    with _lock:
        _values.update(new)
        _pattern = None


def _compile() -> re.Pattern[str]:
    global _pattern
    with _lock:
        pattern = _pattern
        if pattern is None:
            try:
                pattern = re.compile(_trie_pattern(_values))
            except (RecursionError, re.error):  # pathological nesting: the flat alternation
                ordered = sorted(_values, key=len, reverse=True)
                pattern = re.compile("|".join(map(re.escape, ordered)))
            _pattern = pattern
    return pattern


# Why a trie and not ``"|".join(values)`` (Airflow's pattern): `re` tries an alternation's
# branches one after another at every position of the line, so a line costs time in
# proportion to the number of values (measured: ~200 µs a line with 1,000 values known). The
# same values as a trie-shaped pattern (``ab(?:c|d(?:e)?)``) are tried one character at a time
# whatever their number (~6 µs a line with 1,000). A greedy optional tail prefers the longer
# value, so a value containing another is masked whole.


def _trie_pattern(values: set[str]) -> str:
    root: dict[str, Any] = {}
    for value in values:
        node = root
        for char in value:
            node = node.setdefault(char, {})
        node[""] = {}  # a value ends here
    return _node_pattern(root)


def _node_pattern(node: dict[str, Any]) -> str:
    run: list[str] = []
    while len(node) == 1 and "" not in node:  # a chain: one literal, not nested groups
        ((char, node),) = node.items()
        run.append(char)
    literal = re.escape("".join(run))
    branches = [re.escape(char) + _node_pattern(child) for char, child in node.items() if char]
    if not branches:
        return literal
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if "" in node:
        body = f"(?:{body})?"
    return literal + body
