"""orjson for `JSONSerializer(jsonlib="orjson")`, used only where it gives the same value.

orjson is faster than the standard library but differs from it on values that matter here:
it writes NaN and ±Infinity as ``null``, writes UUIDs, Enums, dataclasses and datetimes in its
own way (our tags would be skipped), refuses ints beyond 64 bits and lone surrogates, and reads
an int beyond 64 bits back as a float. So it is handed only what it cannot get wrong:

* **encoding**: a tree of exact ``dict`` (str keys), ``list``, ``str``, ``int``, ``float``,
  ``bool`` and ``None`` whose floats are all finite (checked level by level with C-level bulk
  operations). Anything else - a tagged type, a NaN, a subclass - is written by the standard
  encoder; an int or string orjson refuses falls back there too.
* **decoding**: data with no tag and no run of 19 digits (an int that may not fit 64 bits);
  whatever orjson rejects (``NaN``, ``Infinity``, an escaped lone surrogate, ``1e400``) is read
  by the standard decoder, which reads everything either encoder wrote.

The bytes differ from the standard encoder's only in spelling (``1e16`` for ``1e+16``); every
value reads back the same with either library (a hypothesis property in
``tests/core/test_parity_blocks_second_round.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ._plain import TAG, is_plain

__all__ = ["TAG", "available", "fast_dumps", "fast_loads"]

_JSON_LEAVES: frozenset[type] = frozenset({str, int, float, bool, type(None)})
#: An int literal orjson may read as a float (2**63 has 19 digits): 19 digits where a JSON
#: value or its minus sign may start (after ``[ , :``, whitespace or ``-``), so the digits of
#: a fraction (after ``.``) never match. Digits in strings or exponents may match too, which
#: only sends that record to the standard decoder. (A lookbehind would be ~20x slower.)
_LONG_INT = re.compile(rb"[\[,:\s-][0-9]{19}")
_LONG_INT_FIRST = re.compile(rb"\s*-?[0-9]{19}")
#: The tag key as it is written (plain ASCII: never escaped), found in any buffer.
_TAG_WRITTEN = re.compile(re.escape(b'"__blocks__"'))

_orjson: Any = None


def available() -> bool:
    """Whether orjson can be imported."""
    global _orjson
    if _orjson is None:
        try:
            import orjson
        except ImportError:
            _orjson = False
        else:
            _orjson = orjson
    return _orjson is not False


def fast_dumps(obj: Any) -> bytes | None:
    """`obj` encoded by orjson, or None when the standard encoder must write it."""
    if not is_plain(obj, _JSON_LEAVES, finite=True):
        return None
    try:
        data: bytes = _orjson.dumps(obj)
    except _orjson.JSONEncodeError:  # an int beyond 64 bits, a lone surrogate, deep nesting
        return None
    return data


def fast_loads(data: bytes, slow: Callable[[bytes], Any]) -> Any:
    """`data` (bytes, or any buffer: read in place) decoded by orjson where it reads the same
    value, else by `slow`."""
    if _TAG_WRITTEN.search(data) or _LONG_INT.search(data) or _LONG_INT_FIRST.match(data):
        return slow(data)
    try:
        return _orjson.loads(data)
    except _orjson.JSONDecodeError:  # NaN, Infinity, 1e400, an escaped lone surrogate...
        return slow(data)
